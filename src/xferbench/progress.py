"""Progress display: rich bars on a terminal, plain lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Task:
    """A handle for one long step."""

    def __init__(self, progress: Progress, description: str, total: float | None, unit: str) -> None:
        self._progress = progress
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.status = ""
        self.started = time.perf_counter()
        self._next_line_at = 0.0
        self._rich_id: Any = None

    def advance(self, amount: float = 1, status: str | None = None) -> None:
        self.completed += amount
        if status is not None:
            self.status = status
        self._progress._refresh(self)

    def set_status(self, status: str) -> None:
        self.status = status
        self._progress._refresh(self)


class Progress:
    """Shows long steps to a person; see the module docstring for the three modes."""

    def __init__(self, quiet: bool = False, stream: Any = None) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._rich: Any = None

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def task(self, description: str, total: float | None = None, unit: str = "it") -> Iterator[Task]:
        task = Task(self, description, total, unit)
        if self.quiet:
            yield task
            return
        if self.interactive:
            yield from self._rich_task(task)
            return
        self.log(f"{description} ...")
        try:
            yield task
        finally:
            elapsed = time.perf_counter() - task.started
            rate = f", {task.completed / elapsed:.1f} {unit}/s" if elapsed > 0 and task.completed else ""
            status = f", {task.status}" if task.status else ""
            self.log(f"{description}: {task.completed:g} {unit} in {elapsed:.1f}s{rate}{status}")

    def _rich_task(self, task: Task) -> Iterator[Task]:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        with RichProgress(*columns, console=Console(file=self.stream), transient=False) as rich:
            self._rich = rich
            task._rich_id = rich.add_task(task.description, total=task.total, rate="", status="")
            try:
                yield task
            finally:
                self._refresh(task, force=True)
                self._rich = None

    def _refresh(self, task: Task, force: bool = False) -> None:
        if self.quiet:
            return
        if self._rich is not None and task._rich_id is not None:
            elapsed = max(time.perf_counter() - task.started, 1e-9)
            self._rich.update(task._rich_id, completed=task.completed, status=task.status,
                              rate=f"{task.completed / elapsed:.1f} {task.unit}/s")
            return
        if not self.interactive and task.total:
            # Plain mode: about every 25% so logs stay short.
            fraction = task.completed / task.total
            if fraction >= task._next_line_at and fraction < 1:
                task._next_line_at = fraction + 0.25
                status = f" {task.status}" if task.status else ""
                print(f"  {task.description}: {task.completed:g}/{task.total:g} {task.unit}{status}",
                      file=self.stream, flush=True)
