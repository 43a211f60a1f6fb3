"""Scores of a classifier on the test split: accuracy, its bootstrap interval, per-class views.

Plain NumPy, so the results document can be computed without TensorFlow or scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _labels(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).astype(np.int64, copy=False).ravel()
    p = np.asarray(y_pred).astype(np.int64, copy=False).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no predictions to score (the test split is empty)")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of exact matches (top-1 accuracy)."""
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` int counts; row = true class, column = predicted class."""
    t, p = _labels(y_true, y_pred)
    for name, labels in (("y_true", t), ("y_pred", p)):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"{name} holds a label outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(y_true: Any, y_pred: Any, num_classes: int) -> list[float | None]:
    """Recall of each class; ``None`` for a class with no true examples."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    return [float(cm[c, c] / support[c]) if support[c] else None for c in range(num_classes)]


def bootstrap_ci(y_true: Any, y_pred: Any, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of top-1 accuracy.

    Resampling n predictions with replacement and counting the correct ones is exactly a
    Binomial(n, k/n) draw (k = correct in the sample), so the replicates are drawn as
    binomials: the same distribution as index resampling, in O(n_boot) instead of
    O(n_boot * n) time and memory.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    t, p = _labels(y_true, y_pred)
    n = t.size
    correct = int(np.sum(t == p))
    rng = np.random.default_rng(seed)
    replicates = rng.binomial(n, correct / n, size=n_boot) / n
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def misclassified(keys: Sequence[str], y_true: Any, y_pred: Any, class_names: Sequence[str]) -> list[dict[str, str]]:
    """``{"key", "true", "predicted"}`` (class names) for each wrong prediction, in input order."""
    t, p = _labels(y_true, y_pred)
    if len(keys) != t.size:
        raise ValueError(f"{len(keys)} keys for {t.size} predictions")
    wrong = np.flatnonzero(t != p)
    return [{"key": keys[i], "true": class_names[t[i]], "predicted": class_names[p[i]]} for i in wrong]


def summarize(y_true: Any, y_pred: Any, class_names: Sequence[str], keys: Sequence[str] | None = None,
              seed: int = 0) -> dict[str, Any]:
    """The test-split block of a results document (JSON-ready: plain lists, floats and ints)."""
    num_classes = len(class_names)
    per_class = per_class_accuracy(y_true, y_pred, num_classes)
    low, high = bootstrap_ci(y_true, y_pred, seed=seed)
    return {
        "test_examples": int(np.asarray(y_true).size),
        "test_accuracy": accuracy(y_true, y_pred),
        "test_accuracy_ci": [low, high],
        "per_class_accuracy": dict(zip(class_names, per_class, strict=True)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, num_classes).tolist(),
        "misclassified": misclassified(keys, y_true, y_pred, class_names) if keys is not None else [],
    }
