"""The three components together, as a run would use them: bars -> pixels -> centroid."""

from __future__ import annotations

import numpy as np

from xferbench.context import RunContext
from xferbench.extraction import extract_features


def test_pixels_and_centroid_beat_chance_on_bars_and_features_are_cached(context: RunContext) -> None:
    catalog = context.catalog
    dataset = context.load_dataset("bars")
    spec, _ = catalog.backbones.resolve("pixels")
    backbone = spec.load_factory()(None, spec.validate({}), context)
    backbone.prepare(context)

    extraction = extract_features(backbone, dataset, context.subdir("bottlenecks"), context.progress)
    assert extraction.failed == [] and extraction.computed == len(dataset.examples)
    again = extract_features(backbone, dataset, context.subdir("bottlenecks"), context.progress)
    assert again.cache_hits == len(dataset.examples) and again.computed == 0
    np.testing.assert_array_equal(again.features, extraction.features)

    def part(split: str) -> tuple[np.ndarray, np.ndarray]:
        index = [i for i, ex in enumerate(dataset.examples) if ex.split == split]
        return extraction.features[index], np.array([dataset.examples[i].label for i in index])

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = part("train"), part("val"), part("test")
    head_spec, _ = catalog.heads.resolve("centroid")
    accuracy = {}
    for metric in ("cosine", "euclidean"):
        head = head_spec.load_factory()(head_spec.validate({"metric": metric}))
        head.fit(x_train, y_train, x_val, y_val, num_classes=3, seed=0)
        accuracy[metric] = float((head.predict(x_test) == y_test).mean())
    # Three balanced classes: chance is 1/3. Raw pixels separate the bar orientations well.
    assert min(accuracy.values()) > 0.7, accuracy
