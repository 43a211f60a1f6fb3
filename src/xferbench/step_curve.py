"""Per-step training loss and accuracy, kept to a bounded number of points (the record's ``train_curve``).

Every training step adds its batch's loss and accuracy. Steps are gathered into windows of
equal width (1 step at first); when there are twice ``MAX_POINTS`` windows, neighbours are
merged and the width doubles. So a run of any length records at most ``MAX_POINTS`` points,
each the mean over a window of consecutive steps, at the window's last step, and the same
steps always give the same points (no random sampling). Memory stays bounded too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the most points a run's ``train_curve`` holds
MAX_POINTS = 200


class StepCurve:
    """Collects ``(step, loss, accuracy)`` of every training step into at most :data:`MAX_POINTS` windows."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        self.max_points = max_points
        self.width = 1  # steps per finished window
        # finished windows and the one being filled: [last step, steps in it, sum of losses, sum of accuracies]
        self._windows: list[list[float]] = []
        self._open: list[float] | None = None

    def add(self, step: int, loss: float, accuracy: float) -> None:
        """Record one training step (steps must increase)."""
        if self._open is None:
            self._open = [step, 0, 0.0, 0.0]
        window = self._open
        window[0] = step
        window[1] += 1
        window[2] += float(loss)
        window[3] += float(accuracy)
        if window[1] >= self.width:
            self._windows.append(window)
            self._open = None
            if len(self._windows) >= 2 * self.max_points:
                self._windows = _merge_pairs(self._windows)
                self.width *= 2

    def points(self) -> list[dict[str, Any]]:
        """``[{step, loss, train_accuracy}]``: the mean of each window, at its last step; at most ``max_points``."""
        windows = [*self._windows, *([self._open] if self._open is not None else [])]
        while len(windows) > self.max_points:
            windows = _merge_pairs(windows)
        return [{"step": int(w[0]), "loss": round(w[2] / w[1], 6), "train_accuracy": round(w[3] / w[1], 6)}
                for w in windows]

    # -- a resumed run goes on with the same windows ---------------------------------------
    def state(self) -> dict[str, Any]:
        """What :meth:`from_state` needs to go on (JSON values; kept in a training run's status)."""
        return {"max_points": self.max_points, "width": self.width, "windows": [list(w) for w in self._windows],
                "open": list(self._open) if self._open is not None else None}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> StepCurve:
        curve = cls(int((state or {}).get("max_points", MAX_POINTS)))
        if state:
            curve.width = int(state["width"])
            curve._windows = [list(w) for w in state["windows"]]
            curve._open = list(state["open"]) if state.get("open") is not None else None
        return curve


def _merge_pairs(windows: list[list[float]]) -> list[list[float]]:
    """Neighbouring windows two by two (an odd last one stays as it is)."""
    merged = []
    for i in range(0, len(windows), 2):
        pair = windows[i:i + 2]
        merged.append([pair[-1][0], sum(w[1] for w in pair), sum(w[2] for w in pair), sum(w[3] for w in pair)])
    return merged
