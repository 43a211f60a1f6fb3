"""xferbench.metrics against values worked out by hand."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xferbench import metrics

# 6 examples, 3 classes: class 0 -> 2/3 right, class 1 -> 1/2, class 2 -> 1/1.
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]
NAMES = ["cat", "dog", "eel"]


def test_accuracy_counts_exact_matches() -> None:
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert metrics.accuracy(np.array([3, 1]), np.array([3, 1])) == 1.0


def test_confusion_matrix_rows_are_true_classes() -> None:
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype.kind == "i"
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_per_class_accuracy_with_an_absent_class() -> None:
    assert metrics.per_class_accuracy(Y_TRUE, Y_PRED, 4) == pytest.approx([2 / 3, 0.5, 1.0, None])


def test_misclassified_names_both_classes() -> None:
    keys = [f"img{i}.jpg" for i in range(6)]
    assert metrics.misclassified(keys, Y_TRUE, Y_PRED, NAMES) == [
        {"key": "img2.jpg", "true": "cat", "predicted": "dog"},
        {"key": "img4.jpg", "true": "dog", "predicted": "eel"},
    ]


def test_summarize_collects_everything() -> None:
    keys = [f"k{i}" for i in range(6)]
    out = metrics.summarize(Y_TRUE, Y_PRED, NAMES, keys=keys)
    assert out["test_accuracy"] == pytest.approx(4 / 6)
    assert out["test_examples"] == 6
    assert out["per_class_accuracy"] == pytest.approx({"cat": 2 / 3, "dog": 0.5, "eel": 1.0})
    assert out["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert [m["key"] for m in out["misclassified"]] == ["k2", "k4"]
    low, high = out["test_accuracy_ci"]
    assert 0.0 <= low <= 4 / 6 <= high <= 1.0
    assert metrics.summarize(Y_TRUE, Y_PRED, NAMES)["misclassified"] == []


def test_bootstrap_degenerate_cases_are_exact() -> None:
    assert metrics.bootstrap_ci([1, 2, 3], [1, 2, 3]) == (1.0, 1.0)
    assert metrics.bootstrap_ci([1, 2, 3], [0, 0, 0]) == (0.0, 0.0)


def test_bootstrap_matches_explicit_resampling_and_is_seeded() -> None:
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 10, 400)
    y_pred = np.where(rng.random(400) < 0.8, y_true, (y_true + 1) % 10)
    correct = y_true == y_pred
    # The textbook percentile bootstrap, resampling indices.
    idx = np.random.default_rng(99).integers(0, 400, size=(4000, 400))
    explicit = np.quantile(correct[idx].mean(axis=1), [0.025, 0.975])
    low, high = metrics.bootstrap_ci(y_true, y_pred, n_boot=4000, seed=1)
    assert low == pytest.approx(explicit[0], abs=0.01)
    assert high == pytest.approx(explicit[1], abs=0.01)
    # The normal approximation gives the same width to within a few per cent.
    acc = correct.mean()
    half = 1.96 * np.sqrt(acc * (1 - acc) / 400)
    assert high - low == pytest.approx(2 * half, rel=0.1)
    assert metrics.bootstrap_ci(y_true, y_pred, seed=1) == metrics.bootstrap_ci(y_true, y_pred, seed=1)
    assert metrics.bootstrap_ci(y_true, y_pred, level=0.5)[1] - metrics.bootstrap_ci(y_true, y_pred, level=0.5)[0] \
        < high - low


def test_bootstrap_is_fast_on_ten_thousand_samples() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 10_000)
    pred = np.where(rng.random(10_000) < 0.9, y, 0)
    start = time.perf_counter()
    low, high = metrics.bootstrap_ci(y, pred, n_boot=10_000)
    assert time.perf_counter() - start < 0.5
    assert low < metrics.accuracy(y, pred) < high


@pytest.mark.parametrize("call", [
    lambda: metrics.accuracy([0, 1], [0]),
    lambda: metrics.accuracy([], []),
    lambda: metrics.confusion_matrix([0, 3], [0, 1], 3),
    lambda: metrics.bootstrap_ci([0], [0], level=1.5),
    lambda: metrics.misclassified(["a"], [0, 1], [0, 1], NAMES),
])
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
