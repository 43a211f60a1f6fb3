"""A lifecycle logger and a reporter with options: the two ways a plugin can follow a run.

* The hooks below append one JSON line per event to the file named by
  ``$XFERBENCH_EXAMPLE_EVENTS`` (nothing when it is unset): a logger that needs no flag.
* :class:`JsonLinesReporter` (``--report jsonl --reporter-opt jsonl.path=runs.jsonl``) writes
  each run as it finishes, with the fields it is asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from xferbench import Reporter, RunRecord, Sweep, UserError, hookimpl

EVENTS_ENV = "XFERBENCH_EXAMPLE_EVENTS"


def _log(event: str, **data: Any) -> None:
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, **data}) + "\n")


@hookimpl
def xferbench_sweep_started(sweep: Sweep) -> None:
    _log("sweep_started", planned=len(sweep.planned), output=str(sweep.output))


@hookimpl
def xferbench_run_started(run: RunRecord, sweep: Sweep) -> None:
    _log("run_started", method=run.method, backbone=run.backbone, dataset=run.dataset, head=run.head,
         shots=run.shots)


@hookimpl
def xferbench_run_finished(run: RunRecord, sweep: Sweep) -> None:
    _log("run_finished", method=run.method, head=run.head, shots=run.shots, status=run.status,
         test_accuracy=run.test_accuracy, finished_so_far=len(sweep.finished))


@hookimpl
def xferbench_sweep_finished(sweep: Sweep) -> None:
    _log("sweep_finished", runs=len(sweep.finished), interrupted=sweep.interrupted)


class JsonLinesReporter(Reporter):
    """One JSON object per finished run, written as the run finishes (with ``path``), else at the end."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.fields = [f.strip() for f in options["fields"].split(",") if f.strip()]
        unknown = [f for f in self.fields if f not in RunRecord.__dataclass_fields__]
        if unknown or not self.fields:
            raise UserError(f"reporter 'jsonl': fields={options['fields']!r} names no run field "
                            f"{unknown[0] if unknown else ''!r}; choose from: "
                            f"{', '.join(RunRecord.__dataclass_fields__)}")

    def sweep_started(self, sweep: Sweep) -> None:
        if self.options["path"]:
            Path(self.options["path"]).write_text("", encoding="utf-8")  # a new sweep starts a new file

    def run_finished(self, run: RunRecord, sweep: Sweep) -> None:
        if self.options["path"]:
            with open(self.options["path"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self._pick(run.to_dict())) + "\n")

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        if not self.options["path"]:  # `xferbench report --report jsonl`: the whole document's runs
            for run in document.get("runs", []):
                stream.write(json.dumps(self._pick(run)) + "\n")

    def _pick(self, run: dict[str, Any]) -> dict[str, Any]:
        return {field: run.get(field) for field in self.fields}
