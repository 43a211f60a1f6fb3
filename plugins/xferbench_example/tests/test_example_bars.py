"""Dataset ``bars`` loaded the way the harness loads it: ``context.load_dataset("bars")``."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from xferbench.context import RunContext
from xferbench.data import ImageDataset
from xferbench.errors import OptionError, UserError
from xferbench.splits import which_split


def pixels(dataset: ImageDataset) -> dict[str, np.ndarray]:
    return {ex.key: dataset.read(ex) for ex in dataset.examples}


def test_default_dataset(context: RunContext) -> None:
    dataset = context.load_dataset("bars")
    assert dataset.name == "bars"
    assert dataset.class_names == ["horizontal", "vertical", "diagonal"]
    assert len(dataset.examples) == 180
    assert Counter(ex.label for ex in dataset.examples) == {0: 60, 1: 60, 2: 60}
    for ex in dataset.examples:
        folder, name = ex.key.split("/")
        assert folder == dataset.class_names[ex.label]
        assert re.fullmatch(r"bar_\d{4}\.png", name)
        assert ex.split == which_split(ex.key)  # retrain.py's rule, default 10% / 10%
        image = dataset.read(ex)
        assert image.dtype == np.uint8
        assert image.shape == (32, 32)
    assert len({ex.key for ex in dataset.examples}) == 180
    sizes = dataset.split_sizes()
    assert sizes["train"] > sizes["test"] > 0 and sizes["val"] > 0


def test_splits_are_the_same_in_every_class(context: RunContext) -> None:
    dataset = context.load_dataset("bars")
    per_class = [Counter(ex.split for ex in dataset.examples if ex.label == label) for label in range(3)]
    assert per_class[0] == per_class[1] == per_class[2]


def test_the_seed_fixes_the_images_and_nothing_else(context: RunContext) -> None:
    first = context.load_dataset("bars", {"split_seed": "3"})
    again = context.load_dataset("bars", {"split_seed": "3"})
    other = context.load_dataset("bars", {"split_seed": "4"})
    a, b, c = pixels(first), pixels(again), pixels(other)
    assert all(np.array_equal(a[key], b[key]) for key in a)
    assert sum(np.array_equal(a[key], c[key]) for key in a) == 0
    assert [(ex.key, ex.split) for ex in first.examples] == [(ex.key, ex.split) for ex in other.examples]


def test_more_images_per_class_keeps_the_existing_ones(context: RunContext) -> None:
    small = pixels(context.load_dataset("bars", {"n_per_class": "5"}))
    large = pixels(context.load_dataset("bars", {"n_per_class": "8"}))
    assert len(small) == 15 and len(large) == 24
    assert all(np.array_equal(small[key], large[key]) for key in small)


def test_without_noise_each_class_has_its_orientation(context: RunContext) -> None:
    dataset = context.load_dataset("bars", {"noise": "0", "n_per_class": "20"})
    for ex in dataset.examples:
        image = dataset.read(ex).astype(int)
        row_constant = np.ptp(image, axis=1).max() == 0
        column_constant = np.ptp(image, axis=0).max() == 0
        assert image.max() >= 0.6 * 255 * 0.9, ex.key  # a bright bar is there
        assert image.min() <= 0.2 * 255 + 1, ex.key  # on a dark background
        name = dataset.class_names[ex.label]
        assert row_constant == (name == "horizontal"), ex.key
        assert column_constant == (name == "vertical"), ex.key


def test_noise_makes_images_differ_from_the_clean_ones(context: RunContext) -> None:
    clean = pixels(context.load_dataset("bars", {"noise": "0", "n_per_class": "3"}))
    noisy = pixels(context.load_dataset("bars", {"noise": "0.3", "n_per_class": "3"}))
    for key in clean:
        difference = noisy[key].astype(float) - clean[key].astype(float)
        assert 0.1 * 255 < difference.std() < 0.4 * 255


def test_class_subset_by_name(context: RunContext) -> None:
    dataset = context.load_dataset("bars:horizontal,diagonal", {"n_per_class": "4"})
    assert dataset.class_names == ["horizontal", "diagonal"]
    assert {ex.key.split("/")[0]: ex.label for ex in dataset.examples} == {"horizontal": 0, "diagonal": 1}


def test_split_percentages(context: RunContext) -> None:
    dataset = context.load_dataset("bars", {"test_pct": "40", "val_pct": "20", "n_per_class": "50"})
    assert all(ex.split == which_split(ex.key, test_pct=40, val_pct=20) for ex in dataset.examples)
    sizes = dataset.split_sizes()
    assert 0.25 < sizes["test"] / 150 < 0.55 and 0.08 < sizes["val"] / 150 < 0.35


@pytest.mark.parametrize(("options", "error", "fragment"), [
    ({"test_pct": "60", "val_pct": "40"}, UserError, "leaves no training images"),
    ({"n_per_class": "0"}, OptionError, "must be >= 1"),
    ({"noise": "2"}, OptionError, "must be <= 1"),
    ({"n_per_clas": "3"}, OptionError, "did you mean 'n_per_class'"),
])
def test_bad_options(context: RunContext, options: dict[str, str], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        context.load_dataset("bars", options)
