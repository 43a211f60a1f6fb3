"""What the lifecycle hooks receive about the whole sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xferbench.record import RunRecord


@dataclass
class Sweep:
    """One ``xferbench run``: the planned runs and the results document as it grows."""

    #: the results document: header (command, options, machine, versions), ``datasets`` and ``runs``
    document: dict[str, Any]
    #: where the results document is written
    output: Path
    #: every run of the sweep, in order, with status ``pending`` until it has run
    planned: list[RunRecord] = field(default_factory=list)
    #: set when a signal (Ctrl-C, SIGTERM, SIGHUP) stopped the sweep
    interrupted: bool = False

    @property
    def finished(self) -> list[dict[str, Any]]:
        """The finished runs so far, as they are in the results file."""
        return self.document["runs"]
