"""L2-regularised multinomial logistic regression with C chosen on the validation split."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from xferbench.errors import OptionError, UserError
from xferbench.head import ProgressCallback
from xferbench.step_curve import StepCurve
from xferbench_heads import LOGREG_OPTIONS
from xferbench_heads._dense import (
    ROW_CHUNK,
    DenseHead,
    DenseLayer,
    OutOfCoreRows,
    check_training_data,
    fold_standardization,
    softmax,
    standardizer,
)

#: passes of SGD over a training matrix too large for memory
OUT_OF_CORE_EPOCHS = 5
# Logit given to classes absent from the training split: exp() of it is exactly 0 in float32.
_ABSENT_LOGIT = -1e4


def parse_grid(text: str) -> list[float]:
    """``"1e-4,1,100"`` -> sorted distinct positive floats, or a one-line OptionError."""
    values: set[float] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise OptionError(f"head 'logreg': option grid: {part!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise OptionError(f"head 'logreg': option grid: C={part} must be a positive finite number")
        values.add(value)
    if not values:
        raise OptionError("head 'logreg': option grid is empty; give comma-separated C values such as 0.1,1,10")
    return sorted(values)


class LogRegHead(DenseHead):
    """Multinomial logistic regression fitted by L-BFGS (scikit-learn) on standardised features.

    Protocol: the scaler is fitted on the training split only; one model per C of ``grid``
    is fitted on the training split and scored on the validation split; the C with the best
    validation accuracy wins (ties: lower validation cross-entropy, then smaller C). The test
    split never reaches ``fit``. With ``refit=train`` (default) the winning model is kept as
    it is; with ``refit=train+val`` it is refitted on train and validation together (scaler too),
    as in Kornblith et al. 2019. The scaler is folded into the exported Dense layer.
    """

    name = "logreg"
    OPTIONS = LOGREG_OPTIONS

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.grid = parse_grid(self.options["grid"])

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            num_classes: int, seed: int, on_progress: ProgressCallback | None = None) -> None:
        x, y, xv, yv = check_training_data(self.name, x_train, y_train, x_val, y_val, num_classes,
                                           out_of_core=True)
        if len(np.unique(y)) < 2:
            raise UserError("head 'logreg': the training split holds only one class; it needs at least two")
        if len(self.grid) > 1 and len(yv) == 0:
            raise UserError("head 'logreg': choosing C needs a validation split, and it is empty; "
                            "give the dataset validation images or pass a single value, e.g. grid=1")
        if isinstance(x, OutOfCoreRows):
            self._fit_out_of_core(x, y, xv, yv, num_classes, seed, on_progress)
            return
        started = time.perf_counter()
        mean, scale = standardizer(x)
        xs = (x - mean) / scale
        choice = _Choice(x, y, xv, yv, on_progress, started)
        self.step_curve = choice.train_curve
        model = self._new_model(self.grid[0], seed)
        for c in self.grid:
            # Small to large C with warm starts: each fit starts near its neighbour's optimum.
            model.set_params(C=c)
            converged = self._fit_quietly(model, xs, y)
            choice.consider(c, self._layer(model, num_classes, mean, scale), converged)
        chosen_c, layer = choice.c, choice.layer
        scores = choice.scores
        if self.options["refit"] == "train+val" and len(yv):
            both_x, both_y = np.concatenate([x, xv]), np.concatenate([y, yv])
            mean, scale = standardizer(both_x)
            model = self._new_model(chosen_c, seed)
            self._fit_quietly(model, (both_x - mean) / scale, both_y)
            layer = self._layer(model, num_classes, mean, scale)
        self.layers = [layer]
        chosen = next(s for s in scores if s["C"] == chosen_c)
        self._info = {
            "C": chosen_c,
            "selected_on": "validation" if len(self.grid) > 1 else "fixed",
            "refit": self.options["refit"] if len(yv) else "train",
            "val_accuracy": chosen["val_accuracy"],
            "standardized": "scaler fitted on the refit data, folded into the layer",
            "grid": scores,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def _fit_out_of_core(self, x: OutOfCoreRows, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, num_classes: int,
                         seed: int, on_progress: ProgressCallback | None) -> None:
        """Features too large for memory: the same L2-regularised log loss, by SGD over chunks of rows.

        scikit-learn's L-BFGS needs the whole matrix in memory; ``SGDClassifier(loss="log_loss")`` with
        ``alpha = 1 / (C n)`` minimises the same objective a chunk at a time (``partial_fit``), for
        OUT_OF_CORE_EPOCHS passes in a seeded chunk order. C is chosen on validation as in memory.
        """
        from sklearn.linear_model import SGDClassifier

        if self.options["refit"] == "train+val" and len(yv):
            raise UserError(f"head 'logreg': refit=train+val is not available for features larger than memory "
                            f"({x.shape[0]} x {x.shape[1]}); use refit=train")
        started = time.perf_counter()
        mean, scale = _chunked_standardizer(x)
        classes = np.unique(y)
        rng = np.random.default_rng(seed)
        starts = [start for start, _ in _chunk_bounds(len(x))]
        choice = _Choice(x, y, xv, yv, on_progress, started)
        self.step_curve = choice.train_curve
        for c in self.grid:
            model = SGDClassifier(loss="log_loss", alpha=1.0 / (c * len(x)), random_state=seed)
            for _ in range(OUT_OF_CORE_EPOCHS):
                for start in rng.permutation(starts):
                    rows = x[start:start + ROW_CHUNK]
                    model.partial_fit((rows - mean) / scale, y[start:start + ROW_CHUNK], classes=classes)
            choice.consider(c, self._layer(model, num_classes, mean, scale), None)
        scores = choice.scores
        chosen = next(s for s in scores if s["C"] == choice.c)
        self.layers = [choice.layer]
        self._info = {"C": choice.c, "selected_on": "validation" if len(self.grid) > 1 else "fixed",
                      "refit": "train", "val_accuracy": chosen["val_accuracy"],
                      "solver": f"sgd log loss, out of core ({OUT_OF_CORE_EPOCHS} passes)",
                      "standardized": "scaler fitted on the training data, folded into the layer", "grid": scores,
                      "seconds": round(time.perf_counter() - started, 4)}

    def _new_model(self, c: float, seed: int) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, solver="lbfgs", max_iter=self.options["max_iter"], warm_start=True,
                                  random_state=seed)

    @staticmethod
    def _fit_quietly(model: Any, x: np.ndarray, y: np.ndarray) -> bool:
        """Fit and report convergence in info() instead of printing a warning."""
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        return bool(np.all(model.n_iter_ < model.max_iter))

    @staticmethod
    def _layer(model: Any, num_classes: int, mean: np.ndarray, scale: np.ndarray) -> DenseLayer:
        """The fitted model as one softmax Dense layer over raw features and all ``num_classes``."""
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.asarray(model.intercept_, dtype=np.float64)
        classes = np.asarray(model.classes_)
        if len(classes) == 2:
            # scikit-learn keeps one logit z for class 1; softmax over (0, z) is the same sigmoid.
            coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
            intercept = np.array([0.0, intercept[0]])
        kernel = np.zeros((coef.shape[1], num_classes))
        bias = np.full(num_classes, _ABSENT_LOGIT)
        kernel[:, classes] = coef.T
        bias[classes] = intercept
        # Absent classes have zero kernel columns, so folding leaves their bias at _ABSENT_LOGIT.
        kernel, bias = fold_standardization(mean, scale, kernel, bias)
        return DenseLayer(kernel, bias, "softmax")


def _chunk_bounds(n: int) -> list[tuple[int, int]]:
    return [(start, min(start + ROW_CHUNK, n)) for start in range(0, n, ROW_CHUNK)]


def _chunked_standardizer(x: OutOfCoreRows) -> tuple[np.ndarray, np.ndarray]:
    """:func:`standardizer` in two passes over chunks (mean, then variance about it)."""
    total = np.zeros(x.shape[1])
    for _, rows in x.chunks():
        total += rows.sum(axis=0)
    mean = total / len(x)
    squares = np.zeros(x.shape[1])
    for _, rows in x.chunks():
        squares += ((rows - mean) ** 2).sum(axis=0)
    scale = np.sqrt(squares / len(x))
    scale[scale < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale


def _scores(layer: DenseLayer, x: np.ndarray | OutOfCoreRows, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of one candidate on raw features ``x`` (read a chunk at a time)."""
    correct, log_loss = 0.0, 0.0
    for start in range(0, len(x), ROW_CHUNK):
        rows, labels = x[start:start + ROW_CHUNK], y[start:start + ROW_CHUNK]
        probs = softmax(rows @ layer.kernel + layer.bias)
        correct += float(np.sum(probs.argmax(axis=1) == labels))
        log_loss -= float(np.sum(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None))))
    return correct / len(y), log_loss / len(y)


class _Choice:
    """The C values tried, each one point of the head's curves, and the best of them.

    Point ``i`` (1-based, the i-th C of the grid from small to large) of the validation curve is the
    candidate's validation accuracy; of the train curve its cross-entropy (the L2 term left out) and
    accuracy on the whole training split. Best: the highest validation accuracy, then the lowest
    validation loss, then the smallest C.
    """

    def __init__(self, x: np.ndarray | OutOfCoreRows, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                 on_progress: ProgressCallback | None, started: float) -> None:
        self.x, self.y, self.xv, self.yv, self.on_progress, self.started = x, y, xv, yv, on_progress, started
        self.scores: list[dict[str, Any]] = []
        self.train_curve = StepCurve()
        self._best: tuple[tuple[float, float, float], DenseLayer] | None = None

    def consider(self, c: float, layer: DenseLayer, converged: bool | None) -> None:
        val_acc, val_loss = (_scores(layer, self.xv, self.yv) if len(self.yv) else (None, None))
        train_acc, train_loss = _scores(layer, self.x, self.y)
        self.train_curve.add(len(self.scores) + 1, train_loss, train_acc)
        self.scores.append({"C": c, "val_accuracy": val_acc, "val_loss": val_loss, "converged": converged})
        key = (-(val_acc or 0.0), val_loss if val_loss is not None else 0.0, c)
        if self._best is None or key < self._best[0]:
            self._best = (key, layer)
        if self.on_progress is not None:
            self.on_progress(len(self.scores), val_acc, time.perf_counter() - self.started)

    @property
    def c(self) -> float:
        assert self._best is not None
        return self._best[0][2]

    @property
    def layer(self) -> DenseLayer:
        assert self._best is not None
        return self._best[1]
