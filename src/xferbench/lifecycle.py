"""The run lifecycle: calling the hooks, and the two built-in consumers of them.

* :class:`ResultsWriter` appends each finished run to the results document and writes it
  (atomically) before any other plugin hears of the run, so nothing finished is lost.
* :class:`ReporterBridge` hands the events to the reporters chosen with ``--report``.
"""

from __future__ import annotations

from typing import Any

from xferbench.hookspecs import hookimpl
from xferbench.plugin_manager import Catalog
from xferbench.record import RunRecord
from xferbench.results import write_document
from xferbench.sweep import Sweep


class ResultsWriter:
    """Keeps ``sweep.output`` equal to the document: after the start, each run and the end."""

    @hookimpl(tryfirst=True)
    def xferbench_sweep_started(self, sweep: Sweep) -> None:
        write_document(sweep.output, sweep.document)

    @hookimpl(tryfirst=True)
    def xferbench_run_finished(self, run: RunRecord, sweep: Sweep) -> None:
        sweep.document["runs"].append(run.to_dict())
        write_document(sweep.output, sweep.document)

    @hookimpl(tryfirst=True)
    def xferbench_sweep_finished(self, sweep: Sweep) -> None:
        write_document(sweep.output, sweep.document)


class ReporterBridge:
    """Forwards the lifecycle events to reporters (instances of :class:`xferbench.reporter.Reporter`)."""

    def __init__(self, reporters: list[Any]) -> None:
        self.reporters = reporters

    @hookimpl
    def xferbench_sweep_started(self, sweep: Sweep) -> None:
        for reporter in self.reporters:
            if hasattr(reporter, "sweep_started"):
                reporter.sweep_started(sweep)

    @hookimpl
    def xferbench_run_finished(self, run: RunRecord, sweep: Sweep) -> None:
        for reporter in self.reporters:
            if hasattr(reporter, "run_finished"):
                reporter.run_finished(run, sweep)


class Lifecycle:
    """The hooks of one sweep: sweep_started on entry, sweep_finished on exit (also after an error)."""

    WRITER = "xferbench-results-writer"

    def __init__(self, catalog: Catalog, sweep: Sweep) -> None:
        self.catalog = catalog
        self.sweep = sweep

    def __enter__(self) -> Lifecycle:
        self.catalog.pm.register(ResultsWriter(), name=self.WRITER)
        try:
            self.catalog.call_hook("xferbench_sweep_started", sweep=self.sweep)
        except BaseException:
            self.catalog.pm.unregister(name=self.WRITER)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.sweep.interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        try:
            if exc_type is None or self.sweep.interrupted:
                self.catalog.call_hook("xferbench_sweep_finished", sweep=self.sweep)
            else:  # already failing: the results file must still be complete
                write_document(self.sweep.output, self.sweep.document)
        finally:
            self.catalog.pm.unregister(name=self.WRITER)

    def start(self, run: RunRecord) -> None:
        self.catalog.call_hook("xferbench_run_started", run=run, sweep=self.sweep)

    def finish(self, run: RunRecord) -> None:
        self.catalog.call_hook("xferbench_run_finished", run=run, sweep=self.sweep)

    def keep(self, finished: dict[str, Any]) -> None:
        """A run that ``--resume`` keeps as it was: into the document, without hooks (it did not run now)."""
        self.sweep.document["runs"].append(finished)
        self.sweep.document["resumed"]["kept_runs"] += 1
        write_document(self.sweep.output, self.sweep.document)
