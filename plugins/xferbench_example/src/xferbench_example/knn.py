"""``knn``: a k-nearest-neighbour probe on the cached bottlenecks, a method of this plugin's own.

Nothing is trained: each test image takes the majority class of its ``k`` nearest training
images (cosine or euclidean). It is a common, cheap measure of how well a backbone's
features separate classes (DINO, for one, reports a k-NN accuracy beside the linear probe).
With ``k=0`` the probe picks ``k`` on the validation split.
"""

from __future__ import annotations

import time

import numpy as np

from xferbench import Method, MethodContext, RunRecord

CANDIDATE_K = (1, 3, 5, 7, 9, 15, 21)


class KNNProbe(Method):
    """Majority vote of the k nearest training bottlenecks (ties go to the nearest neighbour's class)."""

    def run(self, context: MethodContext) -> RunRecord:
        train, val, test = (context.features(split) for split in ("train", "val", "test"))
        context.require_splits(train, test)
        metric = self.options["metric"]
        started = time.perf_counter()
        bank = _prepare(train.x, metric)
        k = self.options["k"]
        curve = []
        if k == 0:  # choose k on validation: one point of the curve per candidate
            scores = {}
            for candidate in (c for c in CANDIDATE_K if c <= len(train)):
                predicted = vote(bank, train.y, _prepare(val.x, metric), candidate, context.num_classes)
                scores[candidate] = float(np.mean(predicted == val.y)) if len(val) else 0.0
                curve.append({"step": candidate, "seconds": time.perf_counter() - started,
                              "val_accuracy": scores[candidate] if len(val) else None})
            k = max(scores, key=lambda c: (scores[c], -c))
        fit_seconds = time.perf_counter() - started
        context.score(test, vote(bank, train.y, _prepare(test.x, metric), min(k, len(train)), context.num_classes))
        context.record_features()
        return context.record.update(
            status="ok", n_train=len(train), n_val=len(val), n_test=len(test), train_seconds=fit_seconds,
            curve=curve, method_info={"k": k, "metric": metric, "chosen_on_validation": self.options["k"] == 0})


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def vote(bank: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int, num_classes: int,
         chunk: int = 1024) -> np.ndarray:
    """The majority class among each query's ``k`` nearest rows of ``bank`` (prepared by ``_prepare``)."""
    out = np.empty(len(queries), dtype=np.int64)
    bank_sq = (bank ** 2).sum(axis=1)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        # Squared euclidean distance; on unit vectors (cosine) it orders like 1 - cos.
        distance = bank_sq[None, :] - 2 * q @ bank.T + (q ** 2).sum(axis=1)[:, None]
        nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
        votes = np.zeros((len(q), num_classes))
        # Weights 1 + tiny rank bonus: the majority wins; among equal counts the nearer neighbours do.
        np.add.at(votes, (np.arange(len(q))[:, None], labels[nearest]), 1.0 + 1e-6 * (k - np.arange(k)))
        out[start:start + chunk] = votes.argmax(axis=1)
    return out
