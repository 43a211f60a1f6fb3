"""A hang guard for tests that must never hang: SIGALRM turns a stall into a failing assertion."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def hang_guard(seconds: int, what: str = "it") -> Iterator[None]:
    """Fail with ``AssertionError`` when the block runs longer than ``seconds`` (a hang guard, not a timing)."""
    def hung(signum: int, frame: Any) -> None:
        raise AssertionError(f"{what} took over {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
