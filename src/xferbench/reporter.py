"""The reporter contract: a result sink that sees each run as it finishes, then the whole document."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from xferbench.record import RunRecord
    from xferbench.sweep import Sweep


class Reporter:
    """Subclass it and override what you need; every method is optional.

    ``options`` holds the reporter's declared options (``--reporter-opt NAME.K=V``),
    validated, with defaults filled in.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def sweep_started(self, sweep: Sweep) -> None:
        """Before the first run of ``xferbench run``."""

    def run_finished(self, run: RunRecord, sweep: Sweep) -> None:
        """After each run of ``xferbench run``, whatever its status."""

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        """The finished document: at the end of ``xferbench run`` (also when every run failed) and by
        ``xferbench report``. ``stream`` is standard output."""

    @contextmanager
    def output(self, stream: TextIO) -> Iterator[TextIO]:
        """``stream``, or the file named by an ``output`` option, written atomically."""
        target = self.options.get("output")
        if not target:
            yield stream
            return
        from xferbench.atomic import atomic_path

        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            yield fh
