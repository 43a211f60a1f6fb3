"""The retrain.py head: one new fully-connected layer + softmax, plain mini-batch SGD."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xferbench.head import ProgressCallback
from xferbench.step_curve import StepCurve
from xferbench_heads import SOFTMAX_OPTIONS
from xferbench_heads._dense import DenseLayer, NumpyTrainedHead, check_training_data, softmax


def truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], stddev: float) -> np.ndarray:
    """Normal samples redrawn until within two standard deviations, like ``tf.truncated_normal``."""
    out = rng.standard_normal(shape)
    outside = np.abs(out) > 2.0
    while outside.any():
        out[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(out) > 2.0
    return out * stddev


def accuracy_of(kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((x @ kernel + bias).argmax(axis=1) == y))


class SoftmaxHead(NumpyTrainedHead):
    """retrain.py's final layer: ``softmax(x @ W + b)``, cross-entropy, plain SGD.

    As in retrain.py the features are used as given (no standardisation), the weights start
    from a truncated normal with stddev 0.001 and zero bias, and every step draws
    ``batch_size`` training examples at random with replacement. Validation accuracy is
    computed on the whole validation split every ``eval_every`` steps and after the last.
    """

    name = "softmax"
    OPTIONS = SOFTMAX_OPTIONS

    @property
    def total_steps(self) -> int:  # type: ignore[override]
        return self.options["steps"]

    def _fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             num_classes: int, seed: int, on_progress: ProgressCallback | None) -> None:
        # out_of_core: a batch of rows is all a step reads, so a matrix larger than memory trains too
        x, y, xv, yv = check_training_data(self.name, x_train, y_train, x_val, y_val, num_classes,
                                           out_of_core=True)
        opts = self.options
        rng = np.random.default_rng(seed)
        kernel = truncated_normal(rng, (x.shape[1], num_classes), 0.001)
        bias = np.zeros(num_classes)
        lr, batch, steps, every = opts["learning_rate"], opts["batch_size"], opts["steps"], opts["eval_every"]
        early = opts["early_stopping"] and len(yv) > 0
        best: tuple[float, int, np.ndarray, np.ndarray] | None = None
        since_best = 0
        self.eval_seconds = 0.0
        self.step_curve = StepCurve()
        rows = np.arange(batch)
        started = time.perf_counter()
        step = 0
        for step in range(1, steps + 1):
            idx = rng.integers(0, len(x), size=batch)
            xb = x[idx]
            # d(mean cross-entropy)/d(logits) = (softmax - one_hot) / batch
            grad = softmax(xb @ kernel + bias)
            yb = y[idx]
            # the batch's cross-entropy and accuracy before this step's update (the train curve)
            self.step_curve.add(step, -np.mean(np.log(np.clip(grad[rows, yb], 1e-300, None))),
                                np.mean(grad.argmax(axis=1) == yb))
            grad[rows, yb] -= 1.0
            grad /= batch
            kernel -= lr * (xb.T @ grad)
            bias -= lr * grad.sum(axis=0)
            if step % every and step != steps:
                continue
            eval_started = time.perf_counter()
            val_acc = accuracy_of(kernel, bias, xv, yv) if len(yv) else None
            self.eval_seconds += time.perf_counter() - eval_started
            elapsed = time.perf_counter() - started - self.eval_seconds  # the curve's clock leaves evaluation out
            if on_progress is not None:
                on_progress(step, val_acc, elapsed)
            if not early or val_acc is None:
                continue
            if best is None or val_acc > best[0]:
                best = (val_acc, step, kernel.copy(), bias.copy())
                since_best = 0
            else:
                since_best += 1
                if since_best >= opts["patience"]:
                    break
        info: dict[str, Any] = {"steps": step, "seconds": round(time.perf_counter() - started, 4),
                                "standardized": False}
        if early and best is not None:
            # Keep the weights that did best on validation, not the last ones.
            _, best_step, kernel, bias = best
            info.update(early_stopped=step < steps, best_step=best_step)
        info["final_val_accuracy"] = accuracy_of(kernel, bias, xv, yv) if len(yv) else None
        self.layers = [DenseLayer(kernel, bias, "softmax")]
        self._info = info
