"""One hidden ReLU layer with dropout, trained by Adam or plain SGD in NumPy."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xferbench.head import ProgressCallback
from xferbench.step_curve import StepCurve
from xferbench_heads import MLP_OPTIONS
from xferbench_heads._dense import (
    DenseLayer,
    NumpyTrainedHead,
    check_training_data,
    fold_standardization,
    forward,
    softmax,
    standardizer,
)


class _Adam:
    """Adam (Kingma & Ba) with the usual defaults; ``sgd`` mode is a plain step."""

    def __init__(self, params: list[np.ndarray], lr: float, adam: bool) -> None:
        self.lr, self.adam, self.t = lr, adam, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if not self.adam:
            for p, g in zip(params, grads, strict=True):
                p -= self.lr * g
            return
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        lr_t = self.lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (lr_t * m / (np.sqrt(v) + eps)).astype(p.dtype)


class MLPHead(NumpyTrainedHead):
    """``softmax(relu(z @ W1 + b1) @ W2 + b2)`` on standardised features ``z``.

    Training: float32 NumPy, He-initialised hidden layer, Glorot output layer, inverted
    dropout on the hidden units, shuffled mini-batches, all drawn from one seeded generator,
    so a seed fixes the result. Validation accuracy is measured after every epoch; with
    ``keep_best`` the best epoch's weights are kept. The scaler (fitted on train only) is
    folded into the first exported Dense layer.
    """

    name = "mlp"
    OPTIONS = MLP_OPTIONS

    def _fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             num_classes: int, seed: int, on_progress: ProgressCallback | None) -> None:
        x, y, xv, yv = check_training_data(self.name, x_train, y_train, x_val, y_val, num_classes)
        opts = self.options
        rng = np.random.default_rng(seed)
        mean, scale = standardizer(x)
        xs = ((x - mean) / scale).astype(np.float32)
        dim, hidden = x.shape[1], opts["hidden"]
        w1 = (rng.standard_normal((dim, hidden)) * np.sqrt(2.0 / dim)).astype(np.float32)
        limit = np.sqrt(6.0 / (hidden + num_classes))
        w2 = rng.uniform(-limit, limit, (hidden, num_classes)).astype(np.float32)
        b1, b2 = np.zeros(hidden, np.float32), np.zeros(num_classes, np.float32)
        params = [w1, b1, w2, b2]
        optimizer = _Adam(params, opts["learning_rate"], opts["optimizer"] == "adam")
        keep, wd, batch = 1.0 - opts["dropout"], opts["weight_decay"], opts["batch_size"]
        best: tuple[tuple[float, float], int, list[np.ndarray]] | None = None
        self.eval_seconds = 0.0
        self.step_curve = StepCurve()
        started = time.perf_counter()
        steps = 0
        for epoch in range(1, opts["epochs"] + 1):
            order = rng.permutation(len(xs))
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                xb, yb, n = xs[idx], y[idx], len(idx)
                pre = xb @ w1 + b1
                mask = (rng.random(pre.shape) < keep).astype(np.float32) / np.float32(keep)
                h = np.maximum(pre, 0) * mask
                grad_logits = softmax(h @ w2 + b2)
                rows = np.arange(n)
                # the batch's cross-entropy and accuracy as training saw them (dropout on), before the update
                self.step_curve.add(steps + 1, -np.mean(np.log(np.clip(grad_logits[rows, yb], 1e-30, None))),
                                    np.mean(grad_logits.argmax(axis=1) == yb))
                grad_logits[rows, yb] -= 1.0
                grad_logits /= n
                grad_h = (grad_logits @ w2.T) * mask * (pre > 0)
                grads = [xb.T @ grad_h + wd * w1, grad_h.sum(axis=0), h.T @ grad_logits + wd * w2,
                         grad_logits.sum(axis=0)]
                optimizer.step(params, [g.astype(np.float32) for g in grads])
                steps += 1
            val_acc = None
            eval_started = time.perf_counter()
            if len(yv):
                probs = forward(self._layers(params, mean, scale), xv)
                val_acc = float(np.mean(probs.argmax(axis=1) == yv))
                # Ties in accuracy are common on easy data; the lower cross-entropy breaks them.
                val_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(yv)), yv], 1e-300, None))))
                if best is None or (val_acc, -val_loss) > best[0]:
                    best = ((val_acc, -val_loss), epoch, [p.copy() for p in params])
            self.eval_seconds += time.perf_counter() - eval_started
            if on_progress is not None:  # the curve's clock leaves evaluation out
                on_progress(steps, val_acc, time.perf_counter() - started - self.eval_seconds)
        info: dict[str, Any] = {"epochs": opts["epochs"], "steps": steps, "standardized": True}
        if opts["keep_best"] and best is not None:
            info["best_epoch"] = best[1]
            params = best[2]
        self.layers = self._layers(params, mean, scale)
        info["val_accuracy"] = float(np.mean(self.predict(xv) == yv)) if len(yv) else None
        info["seconds"] = round(time.perf_counter() - started, 4)
        self._info = info

    @staticmethod
    def _layers(params: list[np.ndarray], mean: np.ndarray, scale: np.ndarray) -> list[DenseLayer]:
        w1, b1 = fold_standardization(mean, scale, params[0].astype(np.float64), params[1].astype(np.float64))
        return [DenseLayer(w1, b1, "relu"), DenseLayer(params[2].astype(np.float64), params[3].astype(np.float64),
                                                        "softmax")]
