"""Where a sweep's runs execute: ``local`` (this process, one run after another) or ``ray`` (a Ray cluster).

The runner stays a plain loop over its cells and hands each one to the executor
(:meth:`Executor.run_cell`); ``drain`` waits for whatever the executor deferred. The local
executor runs each cell at once; the Ray executor collects them, extracts every cell's
bottlenecks as a stage of its own, runs each (backbone, dataset, method, head, shots) run as
a Ray task and hands the records back in plan order (:class:`OrderedLifecycle`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from xferbench.errors import UserError
from xferbench.options import Option, validate_options
from xferbench.record import RunRecord

if TYPE_CHECKING:
    from xferbench.backbone import Backbone
    from xferbench.data import ImageDataset
    from xferbench.lifecycle import Lifecycle
    from xferbench.runner import Runner

EXECUTORS = ("local", "ray")
RAY_INSTALL = 'pip install "xferbench[ray]"'

#: ``--executor-opt K=V`` of ``--executor ray``
RAY_OPTIONS = (
    Option("cpus_per_run", float, None, "CPUs each run task asks for (default: the backbone's, else 1)", gt=0),
    Option("gpus_per_run", float, None, "GPUs each run task asks for (default: the backbone's, else 1 for "
                                        "methods that train the network when the cluster has GPUs, else 0)", min=0),
    Option("extract_workers", int, 0, "extraction actors per backbone (0: one per CPU, or per GPU when the cluster "
                                      "has GPUs)", min=0),
    Option("cpus_per_extract_worker", float, 1.0, "CPUs each extraction actor asks for", gt=0),
    Option("shard_images", int, 0, "images per extraction shard (0: about 4 shards per actor; rounded up to whole "
                                   "batches)", min=0),
    Option("shared_cache", str, "auto", "whether every node sees --cache-dir (auto: each actor checks for a file "
                                        "the driver wrote there)", choices=("auto", "yes", "no")),
    Option("max_retries", int, 2, "retries of a run task or an extraction shard whose worker or node died", min=0),
    Option("keep_workers", bool, False, "keep the actors (TensorFlow imported, backbone loaded) between the sweeps "
                                        "of one executor object, for programs that run several; they hold their "
                                        "CPUs until RayExecutor.close()"),
    Option("tf_threads", int, 0, "TensorFlow threads per worker (intra- and inter-op; 0: TensorFlow's default)",
           min=0),
)


class OrderedLifecycle:
    """The lifecycle of a sweep whose runs finish in any order: runs reach it in plan order.

    A run that finished early waits here until every run planned before it has finished or was kept.
    """

    def __init__(self, lifecycle: Lifecycle, planned: list[RunRecord]) -> None:
        self.lifecycle = lifecycle
        self._order = [record.key for record in planned]
        self._next = 0
        self._ready: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def start(self, run: RunRecord) -> None:
        self.lifecycle.start(run)

    def finish(self, run: RunRecord) -> None:
        self._ready[run.key] = (self.lifecycle.finish, run)
        self._emit()

    def keep(self, finished: dict[str, Any]) -> None:
        self._ready[RunRecord.from_dict(finished).key] = (self.lifecycle.keep, finished)
        self._emit()

    def _emit(self) -> None:
        while self._next < len(self._order) and self._order[self._next] in self._ready:
            call, item = self._ready.pop(self._order[self._next])
            self._next += 1
            call(item)

    def flush(self) -> None:
        """Hand over every run that finished, in plan order, also past runs that never will (an interrupt)."""
        for key in self._order[self._next:]:
            if key in self._ready:
                call, item = self._ready.pop(key)
                call(item)
        self._next = len(self._order)


class Executor:
    """Runs a sweep's cells; a context manager around the whole sweep (Ray connects and disconnects)."""

    name = "local"

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def info(self) -> dict[str, Any]:
        """What the results document records about the executor."""
        return {"name": self.name}

    def ordered(self, lifecycle: Lifecycle, planned: list[RunRecord]) -> Any:
        """The lifecycle the runner reports to (the local executor finishes runs in order anyway)."""
        return lifecycle

    def run_cell(self, runner: Runner, backbone: Backbone, dataset: ImageDataset,
                 draws: Mapping[int | None, ImageDataset], planned: list[RunRecord]) -> None:
        raise NotImplementedError

    def drain(self, runner: Runner) -> None:
        """Wait for the runs :meth:`run_cell` deferred."""


class LocalExecutor(Executor):
    """Every run in this process, in plan order, sharing the cell's features and inputs."""

    def run_cell(self, runner: Runner, backbone: Backbone, dataset: ImageDataset,
                 draws: Mapping[int | None, ImageDataset], planned: list[RunRecord]) -> None:
        from xferbench.cell import Cell

        with Cell(backbone, dataset, runner.context, draws.values()) as cell:
            for record in planned:
                if not runner.keep(record):
                    runner.run_one(record, cell, draws[shots_of(record)])


def shots_of(record: RunRecord) -> int | None:
    return None if record.shots == "all" else int(record.shots)


def make_executor(name: str, address: str | None = None, options: Mapping[str, str] | None = None) -> Executor:
    """The executor of ``--executor NAME [--ray-address ADDR] [--executor-opt K=V ...]``, options checked."""
    if name not in EXECUTORS:
        raise UserError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    if name == "local":
        if options:
            raise UserError(f"--executor-opt {next(iter(options))}: executor options are for --executor ray")
        if address:
            raise UserError("--ray-address goes with --executor ray")
        return LocalExecutor()
    validated = validate_options(RAY_OPTIONS, options or {}, "--executor-opt (executor ray)")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed; install it with: {RAY_INSTALL}") from None
    from xferbench.executors.ray import RayExecutor

    return RayExecutor(address, validated)
