"""The file-name split rule, checked against an independent copy of TensorFlow's formula."""

from __future__ import annotations

import hashlib
import re

import pytest

from xferbench.errors import OptionError
from xferbench.splits import hash_percentage, which_split


def reference_split(path: str, test_pct: float, val_pct: float) -> str:
    """retrain.py / speech_commands which_set, written out again from the TensorFlow source."""
    max_num = 2**27 - 1
    base = path.rsplit("/", 1)[-1]
    hash_name = re.sub(r"_nohash_.*$", "", base)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (max_num + 1)) * (100.0 / max_num)
    if percentage < val_pct:
        return "val"
    if percentage < test_pct + val_pct:
        return "test"
    return "train"


NAMES = [f"img_{i:05d}.jpg" for i in range(3000)] + ["100080576_f52e8ee070_n.jpg", "ünïcødé_phöto.JPG", "a b.png"]


@pytest.mark.parametrize(("test_pct", "val_pct"), [(10, 10), (20, 5), (0, 0), (0, 30), (33.3, 33.3)])
def test_matches_tensorflow_formula(test_pct: float, val_pct: float) -> None:
    for name in NAMES:
        assert which_split(name, test_pct, val_pct) == reference_split(name, test_pct, val_pct), name


def test_depends_on_base_name_only() -> None:
    for name in NAMES[:200]:
        assert which_split(f"/data/a/{name}") == which_split(name) == which_split(f"other/dir/{name}")
        assert which_split(f"C:\\photos\\{name}") == which_split(name)


def test_nohash_suffix_groups_files() -> None:
    for stem in (f"speaker{i}" for i in range(200)):
        splits = {which_split(f"{stem}_nohash_{k}.jpg") for k in range(5)}
        assert splits == {which_split(stem)}


def test_proportions_follow_percentages() -> None:
    names = [f"photo_{i}.jpg" for i in range(20000)]
    counts = {s: 0 for s in ("train", "val", "test")}
    for name in names:
        counts[which_split(name, test_pct=20, val_pct=10)] += 1
    assert counts["val"] / len(names) == pytest.approx(0.10, abs=0.01)
    assert counts["test"] / len(names) == pytest.approx(0.20, abs=0.01)
    assert all(0 <= hash_percentage(n) <= 100 for n in names[:1000])


def test_zero_percentages_put_everything_in_train() -> None:
    assert {which_split(n, 0, 0) for n in NAMES} == {"train"}


@pytest.mark.parametrize(("test_pct", "val_pct"), [(50, 50), (-1, 10), (10, 101), (99, 1.5)])
def test_bad_percentages_are_rejected(test_pct: float, val_pct: float) -> None:
    with pytest.raises(OptionError) as info:
        which_split("x.jpg", test_pct, val_pct)
    assert "\n" not in str(info.value)
