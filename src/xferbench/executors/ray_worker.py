"""What runs inside a Ray worker: one run of a sweep, and an actor that extracts shards of bottlenecks.

A worker rebuilds what it needs from a :class:`WorkerSpec` (the request and the invocation's
settings, all plain data): the plugin catalog, a :class:`~xferbench.runner.Runner` for the
plan, and each backbone and dataset once per worker process. A run's method executes
exactly as it does locally (``Runner.execute``); the cell's bottlenecks come from the
extraction stage through the object store.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.record import RunRecord


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the sweep's components (picklable)."""

    #: one id per sweep: a worker process that serves several sweeps keeps their components apart
    sweep_id: str
    request: Any  # xferbench.plan.RunRequest
    cache_dir: Path
    output: Path
    seed: int = 0
    weights: Path | None = None
    data_dir: Path | None = None
    resume: bool = False
    blocked: tuple[str, ...] = ()
    #: plugins registered in-process (not through entry points), as (name, importable module name)
    plugin_modules: tuple[tuple[str, str], ...] = ()
    tf_threads: int = 0


@dataclass
class _Worker:
    runner: Any
    backbones: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)

    def backbone(self, token: str) -> Any:
        if token not in self.backbones:
            backbone = self.runner.make_backbone(token)
            backbone.prepare(self.runner.context)
            self.backbones[token] = backbone
        return self.backbones[token]

    def dataset(self, token: str) -> Any:
        if token not in self.datasets:
            self.datasets[token] = self.runner.context.load_dataset(token, self.runner.plan.datasets[token][1])
        return self.datasets[token]


_WORKERS: dict[str, _Worker] = {}


def worker(spec: WorkerSpec) -> _Worker:
    """This process's components of ``spec``'s sweep, built on first use."""
    if spec.sweep_id not in _WORKERS:
        from xferbench.context import RunContext
        from xferbench.plugin_manager import load_catalog
        from xferbench.progress import Progress
        from xferbench.runner import Runner

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if spec.tf_threads:
            import tensorflow as tf

            threading = tf.config.threading
            # A process that served an earlier sweep (keep_workers) has TensorFlow running: keep its setting.
            with contextlib.suppress(RuntimeError):
                threading.set_intra_op_parallelism_threads(spec.tf_threads)
                threading.set_inter_op_parallelism_threads(spec.tf_threads)
        extra = [(name, importlib.import_module(module)) for name, module in spec.plugin_modules]
        catalog = load_catalog(blocked=spec.blocked, extra_plugins=extra)
        context = RunContext(catalog=catalog, cache_dir=spec.cache_dir, seed=spec.seed, weights=spec.weights,
                             data_dir=spec.data_dir, progress=Progress(quiet=True))
        runner = Runner(spec.request, context, spec.output, resume={"runs": []} if spec.resume else None)
        _WORKERS.clear()  # one sweep at a time per worker process: an older sweep's models are let go
        _WORKERS[spec.sweep_id] = _Worker(runner)
    return _WORKERS[spec.sweep_id]


def where() -> tuple[str, int]:
    """This worker's node id and process id (the results record the nodes and workers used)."""
    import ray

    return ray.get_runtime_context().get_node_id(), os.getpid()


def run_task(spec: WorkerSpec, record: RunRecord, extraction: Any) -> tuple[RunRecord, tuple[str, int]]:
    """One run, as ``Runner.execute`` does it locally; any error of a component is the record's error."""
    from xferbench.cell import Cell
    from xferbench.data import select_shots
    from xferbench.executors import shots_of

    state = worker(spec)
    runner = state.runner
    try:
        backbone, dataset = state.backbone(record.backbone), state.dataset(record.dataset)
        subset = select_shots(dataset, shots_of(record), spec.seed)
    except Exception as exc:
        return record.update(status="error", error=runner.describe(exc, record.backbone, record.dataset)), where()
    with Cell(backbone, dataset, runner.context, [subset], extraction=extraction) as cell:
        return runner.execute(record, cell, subset), where()


@dataclass
class ShardResult:
    """Bottlenecks of one shard: rows aligned with the shard's indices (NaN rows: undecodable)."""

    rows: np.ndarray
    #: whether the actor wrote them into the bottleneck cache itself (it sees the driver's cache folder)
    stored: bool
    forward_seconds: float
    cache_write_errors: int
    worker: tuple[str, int]


class ExtractionWorker:
    """An actor that loads one backbone once and extracts shards of datasets with it (wrapped by ray.remote)."""

    def __init__(self, spec: WorkerSpec, backbone_token: str) -> None:
        self.token = backbone_token
        self.error: str | None = None
        try:
            worker(spec).backbone(backbone_token)
        except Exception as exc:  # the driver falls back to extracting in the run tasks, which records it
            self.error = f"{type(exc).__name__}: {exc}"

    def ready(self, probe: str | None) -> tuple[str | None, bool, tuple[str, int]]:
        """The backbone's load error (or None), whether this node sees ``probe`` in the cache, and where it is."""
        return self.error, probe is not None and Path(probe).is_file(), where()

    def run(self, spec: WorkerSpec, record: RunRecord, extraction: Any) -> tuple[RunRecord, tuple[str, int]]:
        """One run of ``spec``'s sweep in this actor, whose process has TensorFlow imported and the backbone
        loaded (the same sweep's backbone object; a later sweep's is built once, as in a run task)."""
        return run_task(spec, record, extraction)

    def extract(self, spec: WorkerSpec, dataset_token: str, indices: list[int], digests: list[str],
                store: bool) -> ShardResult:
        """Read and extract ``indices`` in batches as local extraction batches them; with ``store``, cache them."""
        from xferbench.bottleneck_cache import BottleneckCache

        state = worker(spec)
        dataset, backbone = state.dataset(dataset_token), state.backbone(self.token)
        backbone.calibrate(dataset, state.runner.context.cache_dir)  # precision=int8: the cell's int8 model
        # Opened per shard: it reads the packs as they are now, so a shard retried after its worker was
        # killed skips the entries that worker had written (put() writes no entry twice).
        cache = BottleneckCache(state.runner.context.subdir("bottlenecks"), backbone.cache_namespace(),
                                backbone.feature_dim) if store else None
        rows = np.full((len(indices), backbone.feature_dim), np.nan, dtype=np.float32)
        forward = 0.0
        batch = backbone.extract_batch_size
        try:
            for start in range(0, len(indices), batch):
                images = [dataset.read(dataset.examples[i]) for i in indices[start:start + batch]]
                before = backbone.network_seconds
                out = np.asarray(backbone.extract(images), dtype=np.float32)
                forward += (backbone.network_seconds - before) or 0.0
                rows[start:start + len(images)] = out
                if cache is not None:
                    for digest, row in zip(digests[start:start + batch], out, strict=True):
                        if not np.isnan(row).any():
                            cache.put(digest, row)
        finally:
            if cache is not None:  # the shard's pack gets its index (readers need not scan it) and its fd closed
                cache.close()
        return ShardResult(rows, cache is not None, forward,
                           cache.write_errors if cache is not None else 0, where())
