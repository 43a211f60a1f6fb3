"""Head ``centroid`` through the catalog's factory and the Head contract."""

from __future__ import annotations

import numpy as np
import pytest

from xferbench.errors import UserError
from xferbench.head import Head
from xferbench.plugin_manager import Catalog


def make_head(catalog: Catalog, **options: str) -> Head:
    spec, _ = catalog.heads.resolve("centroid")
    head = spec.load_factory()(spec.validate(options))
    assert isinstance(head, Head)
    return head


def blobs(seed: int, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian clusters in 5-D."""
    rng = np.random.default_rng(seed)
    centres = np.array([[5, 0, 0, 0, 0], [0, 5, 0, 0, 0], [0, 0, 5, 0, 0]], dtype=float)
    y = np.repeat(np.arange(3), n)
    x = centres[y] + rng.normal(0, 0.5, (len(y), 5))
    return x.astype(np.float32), y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("center", ["true", "false"])
def test_separable_clusters_are_classified_perfectly(catalog: Catalog, metric: str, center: str) -> None:
    x, y = blobs(0)
    xt, yt = blobs(1)
    head = make_head(catalog, metric=metric, center=center)
    head.fit(x, y, xt[:0], yt[:0], num_classes=3, seed=0)
    np.testing.assert_array_equal(head.predict(xt), yt)
    proba = head.predict_proba(xt)
    assert proba.shape == (len(xt), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), yt)


def test_cosine_ignores_length_and_euclidean_does_not(catalog: Catalog) -> None:
    x = np.array([[1, 0], [1.2, 0], [10, 10], [12, 12]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    probe = np.array([[5, 5]], dtype=np.float32)  # the direction of class 1, the length of neither
    predictions = {}
    for metric in ("cosine", "euclidean"):
        head = make_head(catalog, metric=metric, center="false")
        head.fit(x, y, x[:0], y[:0], num_classes=2, seed=0)
        predictions[metric] = int(head.predict(probe)[0])
    assert predictions == {"cosine": 1, "euclidean": 0}


def test_temperature_changes_confidence_not_predictions(catalog: Catalog) -> None:
    x, y = blobs(2)
    xt, _ = blobs(3)
    sharp, soft = make_head(catalog, temperature="0.01"), make_head(catalog, temperature="10")
    for head in (sharp, soft):
        head.fit(x, y, x[:0], y[:0], num_classes=3, seed=0)
    np.testing.assert_array_equal(sharp.predict(xt), soft.predict(xt))
    assert sharp.predict_proba(xt).max(axis=1).mean() > soft.predict_proba(xt).max(axis=1).mean()


def test_a_class_missing_from_training_gets_probability_zero(catalog: Catalog) -> None:
    x, y = blobs(4)
    keep = y != 1
    head = make_head(catalog)
    head.fit(x[keep], y[keep], x[:0], y[:0], num_classes=3, seed=0)
    xt, _ = blobs(5)
    proba = head.predict_proba(xt)
    assert (proba[:, 1] == 0).all()
    assert 1 not in set(head.predict(xt).tolist())
    assert head.info()["train_examples_per_class"] == [30, 0, 30]


def test_reports_validation_accuracy_once(catalog: Catalog) -> None:
    x, y = blobs(6)
    xv, yv = blobs(7, n=4)
    yv = yv.copy()
    yv[:3] = 2  # three of twelve validation labels are wrong on purpose
    calls = []
    head = make_head(catalog, metric="euclidean")
    head.fit(x, y, xv, yv, num_classes=3, seed=0, on_progress=lambda *args: calls.append(args))
    assert len(calls) == 1
    step, val_accuracy, seconds = calls[0]
    assert step == 1 and val_accuracy == pytest.approx(9 / 12) and seconds >= 0
    assert head.info()["metric"] == "euclidean"


def test_zero_vectors_do_not_produce_nan(catalog: Catalog) -> None:
    x = np.array([[0, 0], [0, 0], [1, 1], [2, 2]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    head = make_head(catalog, center="false")
    head.fit(x, y, x[:0], y[:0], num_classes=2, seed=0)
    assert not np.isnan(head.predict_proba(x)).any()


def test_predicting_before_fitting_is_a_programming_error(catalog: Catalog) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        make_head(catalog).predict(np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize(("x", "y", "fragment"), [
    (np.full((2, 3), np.nan), np.array([0, 1]), "NaN"),
    (np.zeros((0, 3)), np.zeros(0, dtype=int), "non-empty"),
    (np.zeros((2, 3)), np.array([0, 5]), "labels must lie in 0..2"),
])
def test_unusable_training_data_is_a_one_line_error(catalog: Catalog, x: np.ndarray, y: np.ndarray,
                                                    fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        make_head(catalog).fit(x, y, x[:0], y[:0], num_classes=3, seed=0)
