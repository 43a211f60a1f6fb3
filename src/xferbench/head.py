"""The head contract: a classifier trained on bottleneck features."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np

from xferbench.step_curve import StepCurve

# Called during training with (step, validation accuracy or None, elapsed seconds).
ProgressCallback = Callable[[int, float | None, float], None]


class Head(abc.ABC):
    """A new final layer (or small classifier) on top of frozen features."""

    name: str
    #: how many progress steps ``fit`` will report (the progress bar's total); None: not known ahead
    total_steps: int | None = None
    #: seconds of the last ``fit`` spent scoring the validation split for the curve; the harness leaves
    #: them out of the training time (a head that evaluates inside ``fit`` should set it)
    eval_seconds: float = 0.0
    #: the last ``fit``'s training loss and accuracy per step (the record's ``train_curve``): a head that trains
    #: in steps sets a :class:`~xferbench.step_curve.StepCurve` and adds each step's batch to it; None: none recorded
    step_curve: StepCurve | None = None

    @abc.abstractmethod
    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            num_classes: int, seed: int, on_progress: ProgressCallback | None = None) -> None:
        """Train on ``x_train``; ``x_val`` may be used for model selection or early stopping."""

    @abc.abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[len(x), num_classes]``."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(x)).argmax(axis=1)

    def to_keras(self, feature_dim: int) -> Any:
        """The fitted head as a Keras model (features in, probabilities out), for ``xferbench export``.

        Optional: a head without it still benchmarks, its runs just cannot be exported.
        """
        raise NotImplementedError(f"head {getattr(self, 'name', type(self).__name__)!r} cannot be exported")

    def info(self) -> dict[str, Any]:
        """What was chosen during fitting (e.g. the L2 strength), for the results."""
        return {}
