"""Head ``centroid``: classify by the nearest class mean of the training features.

Nothing is optimised, so it is instant and has no hyperparameters to tune on validation
data: a useful floor for the trained heads, and a direct probe of how well a backbone's
feature space clusters the classes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from xferbench.errors import UserError
from xferbench.head import Head, ProgressCallback

_EPS = 1e-12


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)  # an all-zero row stays zero instead of becoming NaN


class CentroidHead(Head):
    """Nearest class centroid.

    ``metric=cosine``: rows (after optional centring) are scaled to unit length, each class
    centroid is the normalised mean of its rows, and the distance is ``1 - cosine similarity``.
    ``metric=euclidean``: the centroid is the plain mean and the distance is the L2 norm.
    Probabilities are ``softmax(-distance / temperature)``; a class without training
    examples gets probability 0.
    """

    name = "centroid"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.metric = str(options["metric"])
        self.center = bool(options["center"])
        self.temperature = float(options["temperature"])
        if self.metric not in ("cosine", "euclidean"):
            raise UserError(f"head 'centroid': metric {self.metric!r} must be cosine or euclidean")
        if not self.temperature > 0:
            raise UserError(f"head 'centroid': temperature={self.temperature} must be > 0")
        self._mean: np.ndarray | None = None
        self._centroids: np.ndarray | None = None
        self._present: np.ndarray | None = None
        self._counts: list[int] = []

    def _transform(self, x: np.ndarray) -> np.ndarray:
        assert self._mean is not None
        x = np.asarray(x, dtype=np.float64) - self._mean
        return _unit_rows(x) if self.metric == "cosine" else x

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            num_classes: int, seed: int, on_progress: ProgressCallback | None = None) -> None:
        started = time.perf_counter()
        x = np.asarray(x_train, dtype=np.float64)
        y = np.asarray(y_train, dtype=np.int64)
        if x.ndim != 2 or len(x) == 0 or len(x) != len(y):
            raise UserError(f"head 'centroid': needs a non-empty 2-D training matrix with one label per row, "
                            f"got features {x.shape} and {len(y)} labels")
        if y.min() < 0 or y.max() >= num_classes:
            raise UserError(f"head 'centroid': labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
        if not np.isfinite(x).all():
            raise UserError("head 'centroid': training features contain NaN or infinity")
        self._mean = x.mean(axis=0) if self.center else np.zeros(x.shape[1])
        z = self._transform(x)
        counts = np.bincount(y, minlength=num_classes)
        centroids = np.zeros((num_classes, x.shape[1]))
        np.add.at(centroids, y, z)
        present = counts > 0
        centroids[present] /= counts[present, None]
        if self.metric == "cosine":
            centroids = _unit_rows(centroids)
        self._centroids, self._present, self._counts = centroids, present, counts.tolist()
        if on_progress is not None:
            # One "step": report validation accuracy so the results curve has a point.
            x_val = np.asarray(x_val)
            val_acc = float((self.predict(x_val) == np.asarray(y_val)).mean()) if len(x_val) else None
            on_progress(1, val_acc, time.perf_counter() - started)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """``[len(x), num_classes]`` distances to each centroid; inf for classes never seen."""
        if self._centroids is None or self._present is None:
            raise RuntimeError("CentroidHead.fit() must be called before predicting")
        z = self._transform(x)
        if self.metric == "cosine":
            dist = 1.0 - z @ self._centroids.T
        else:
            # |z - c|^2 = |z|^2 - 2 z.c + |c|^2, clipped at 0 against rounding.
            sq = (z * z).sum(1)[:, None] - 2.0 * z @ self._centroids.T + (self._centroids ** 2).sum(1)[None, :]
            dist = np.sqrt(np.maximum(sq, 0.0))
        dist[:, ~self._present] = np.inf
        return dist

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = -self.distances(x) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)  # the nearest class has logit 0: no overflow
        weights = np.exp(logits)
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # argmin of the distances directly: the same class as argmax of the probabilities,
        # without the float32 ties a tiny temperature could cause.
        return self.distances(x).argmin(axis=1)

    def info(self) -> dict[str, Any]:
        return {"metric": self.metric, "center": self.center, "temperature": self.temperature,
                "train_examples_per_class": self._counts}
