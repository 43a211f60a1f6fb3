"""``--executor ray``: a sweep on a Ray cluster, with the same records, in the same order, as ``local``.

The runner's loop hands over each cell; :meth:`RayExecutor.drain` then, backbone by backbone,
extracts its cells' bottlenecks (a stage of its own, sharded over actors that load the backbone
once: xferbench.executors.ray_extraction), runs each (backbone, dataset, method, head, shots) run
on those same actors when it asks for their resources (their processes have TensorFlow imported
and the backbone loaded) or else as a Ray task with its own resource requests, and hands the
records back to the driver's lifecycle in plan order. Ray is found at
``--ray-address``, else ``$RAY_ADDRESS``; with neither, a local Ray is started for the sweep.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xferbench.errors import UserError, one_line
from xferbench.executors import Executor, OrderedLifecycle
from xferbench.executors.ray_extraction import ExtractionUnavailable, ShardPool, extract_cell
from xferbench.executors.ray_worker import WorkerSpec, run_task
from xferbench.record import RunRecord


@dataclass
class _CellWork:
    backbone_token: str
    dataset_token: str
    backbone: Any
    dataset: Any
    runs: list[RunRecord]


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None, options: Mapping[str, Any]) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.options = dict(options)
        self._connected = False
        self._cells: list[_CellWork] = []
        self._nodes: set[str] = set()
        self._workers: set[tuple[str, int]] = set()
        #: ``keep_workers``: the actor pool kept for the next sweep, by (backbone, CPUs, GPUs, actors)
        self._kept: dict[tuple[Any, ...], ShardPool] = {}

    # -- connection ----------------------------------------------------------------------------
    def __enter__(self) -> RayExecutor:
        import ray

        if ray.is_initialized():  # a program that connected itself (tests, notebooks) keeps its connection
            return self
        settings = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                        runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3"}})
        try:
            # address="local": a Ray of its own; with no address ray.init joins the newest Ray on this machine
            # (/tmp/ray/ray_current_cluster), someone else's that may stop under the sweep
            ray.init(address=self.address or "local", **settings)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise UserError(f"--executor ray: cannot reach {where}: {one_line(exc)}; check --ray-address "
                            f"(or $RAY_ADDRESS) and `ray status`") from None
        self._connected = True
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        if self._connected:  # stops the local Ray that __enter__ started; only disconnects from a cluster
            self.close()
            ray.shutdown()
            self._connected = False

    def close(self) -> None:
        """Stop the actors that ``keep_workers`` kept between sweeps."""
        for pool in self._kept.values():
            pool.close()
        self._kept.clear()

    def info(self) -> dict[str, Any]:
        import ray

        info: dict[str, Any] = {"name": self.name, "ray_version": ray.__version__,
                                "address": self.address or "local"}
        if ray.is_initialized():
            info["nodes"] = sum(1 for node in ray.nodes() if node.get("Alive"))
        info.update(nodes_used=len(self._nodes), workers_used=len(self._workers))
        return info

    def _used(self, where: tuple[str, int]) -> None:
        self._nodes.add(where[0])
        self._workers.add(where)

    # -- the sweep -----------------------------------------------------------------------------
    def ordered(self, lifecycle: Any, planned: list[RunRecord]) -> OrderedLifecycle:
        return OrderedLifecycle(lifecycle, planned)

    def run_cell(self, runner: Any, backbone: Any, dataset: Any, draws: Mapping[int | None, Any],
                 planned: list[RunRecord]) -> None:
        runs = [record for record in planned if not runner.keep(record) and runner.supported(record, backbone)]
        if runs:
            self._cells.append(_CellWork(runs[0].backbone, runs[0].dataset, backbone, dataset, runs))

    def drain(self, runner: Any) -> None:
        """Per backbone: extract its cells' bottlenecks on its actors, then run its runs on the same actors
        (TensorFlow imported, the backbone loaded) where they ask for the actors' resources; any other run
        (and a run whose actor died) is a Ray task. Records reach the lifecycle in plan order."""
        import ray

        cells, self._cells = self._cells, []
        spec = worker_spec(runner.context, runner.request, runner.output, runner.resuming, self.options)
        self._tasks: dict[Any, RunRecord] = {}
        self._on_actors: dict[tuple[str, ...], RunRecord] = {}  # run key -> record, while an actor runs it
        total = sum(len(cell.runs) for cell in cells)
        with runner.context.progress.task("runs (ray)", total=total, unit="run") as progress:
            self._progress = progress
            try:
                for token in dict.fromkeys(cell.backbone_token for cell in cells):
                    self._backbone_stage(runner, spec, [cell for cell in cells if cell.backbone_token == token])
                while self._tasks:
                    (ref,), _ = ray.wait(list(self._tasks), num_returns=1)
                    self._finish(runner, self._task_result(ref, self._tasks.pop(ref)))
            except KeyboardInterrupt as exc:
                from xferbench.runner import interrupted

                for ref in self._tasks:
                    ray.cancel(ref, force=True)
                for record in [*self._tasks.values(), *self._on_actors.values()]:
                    runner.lifecycle.finish(interrupted(record, exc, runner.run_dir(record)))
                runner.lifecycle.flush()
                raise

    def _backbone_stage(self, runner: Any, spec: WorkerSpec, cells: list[_CellWork]) -> None:
        """The extraction stage of one backbone's cells, then their runs (see :meth:`drain`)."""
        import ray

        wanted = [cell for cell in cells
                  if any(getattr(runner.plan.methods[r.method][2], "uses_features", True) for r in cell.runs)]
        if not wanted:
            for cell in cells:
                self._submit_tasks(runner, spec, cell, None)
            return
        with self.pool(runner.context, spec, cells[0].backbone_token) as pool:
            extractions = {cell.dataset_token: self.extract(runner.context, pool, cell.backbone, cell.dataset_token,
                                                            cell.dataset) for cell in wanted}
            on_actors: list[tuple[RunRecord, Any]] = []
            for cell in cells:
                extraction = extractions.get(cell.dataset_token)
                ref = ray.put(extraction)
                if extraction is None or not pool.store:  # the actors could not load the backbone
                    self._submit_tasks(runner, spec, cell, ref)
                    continue
                fits = [r for r in cell.runs if self._resources(runner, cell.backbone, r) == pool.resources]
                self._submit_tasks(runner, spec, cell, ref, [r for r in cell.runs if r not in fits])
                on_actors += [(record, ref) for record in fits]

            handled: set[int] = set()

            def submit(actor: Any, i: int) -> Any:
                record, ref = on_actors[i]
                runner.lifecycle.start(record)
                self._on_actors[record.key] = record
                return actor.run.remote(pool.spec, record, ref)

            def done(i: int, result: tuple[RunRecord, tuple[str, int]]) -> None:
                handled.add(i)
                del self._on_actors[on_actors[i][0].key]
                self._finish(runner, self._checked(result))

            def lost(i: int, exc: Exception) -> None:
                handled.add(i)
                record, ref = on_actors[i]
                del self._on_actors[record.key]
                if isinstance(exc, ray.exceptions.RayTaskError):  # run_task records plugin errors: a bug of ours
                    self._finish(runner, record.update(status="error", error=one_line(exc.cause)[:300]))
                elif self.options["max_retries"] == 0:
                    self._finish(runner, self._died(record, exc))
                else:  # its actor died: the retries are Ray's, as a task
                    self._submit_task(spec, runner, record, ref, cells[0].backbone,
                                      retries=self.options["max_retries"] - 1)

            if on_actors:
                try:
                    pool.run_all(len(on_actors), submit, done, lost)
                except ExtractionUnavailable:  # no actor is left, nor may one be started: the rest as tasks
                    for i, (record, ref) in enumerate(on_actors):
                        if i not in handled:
                            runner.lifecycle.start(record)
                            self._submit_task(spec, runner, record, ref, cells[0].backbone,
                                              retries=self.options["max_retries"])

    def _submit_tasks(self, runner: Any, spec: WorkerSpec, cell: _CellWork, ref: Any,
                      runs: list[RunRecord] | None = None) -> None:
        import ray

        if ref is None:
            ref = ray.put(None)
        for record in cell.runs if runs is None else runs:
            runner.lifecycle.start(record)
            self._submit_task(spec, runner, record, ref, cell.backbone, retries=self.options["max_retries"])

    def _submit_task(self, spec: WorkerSpec, runner: Any, record: RunRecord, ref: Any, backbone: Any,
                     retries: int) -> None:
        import ray

        cpus, gpus = self._resources(runner, backbone, record)
        task = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries)
        self._tasks[task.remote(spec, record, ref)] = record

    def _finish(self, runner: Any, record: RunRecord) -> None:
        if record.status == "error":
            runner.log_error(f"{record.method} {record.backbone} on {record.dataset}: {record.error}")
        runner.lifecycle.finish(record)
        self._progress.advance(1, status=f"{record.method} {record.backbone} on {record.dataset}: {record.status}")

    def _checked(self, result: tuple[RunRecord, tuple[str, int]]) -> RunRecord:
        record, where = result
        self._used(where)
        return record

    def _died(self, record: RunRecord, exc: Exception, attempts: int | None = None) -> RunRecord:
        attempts = attempts or self.options["max_retries"] + 1
        return record.update(status="error", error=f"the Ray worker running it died ({attempts} attempts): "
                                                   f"{one_line(exc)[:300]}")

    def _task_result(self, ref: Any, record: RunRecord) -> RunRecord:
        import ray

        try:
            return self._checked(ray.get(ref))
        except ray.exceptions.RayError as exc:  # its worker or node died, every retry too
            return self._died(record, exc)

    def pool(self, context: Any, spec: WorkerSpec, backbone_token: str) -> ShardPool:
        """Extraction actors of one backbone (a context manager: they are stopped on exit, unless
        ``keep_workers`` keeps them for this executor's next sweep; then :meth:`close` stops them)."""
        gpus = 1.0 if cluster_gpus() else 0.0
        workers = self._extract_workers(gpus)
        key = (backbone_token, self.options["cpus_per_extract_worker"], gpus, workers)
        for other in [k for k in self._kept if k != key]:  # idle actors of another backbone hold CPUs: free them
            self._kept.pop(other).close()
        pool = self._kept.get(key)
        if pool is not None and pool.store:
            pool.rebind(spec, context.subdir("bottlenecks"))
            return pool
        pool = ShardPool(spec, backbone_token, self.options, gpus, workers, context.subdir("bottlenecks"), self._used)
        if self.options["keep_workers"]:
            pool.kept = True
            self._kept[key] = pool
        return pool

    def extract(self, context: Any, pool: ShardPool, backbone: Any, dataset_token: str, dataset: Any) -> Any:
        """One dataset's bottlenecks on the cluster; None when it cannot be done there (the runs say why)."""
        try:
            return extract_cell(pool, backbone, dataset, dataset_token, context.subdir("bottlenecks"),
                                context.progress)
        except ExtractionUnavailable:
            return None

    def _extract_workers(self, gpus: float) -> int:
        import ray

        if self.options["extract_workers"]:
            return self.options["extract_workers"]
        if gpus:
            return max(1, int(cluster_gpus()))
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.options["cpus_per_extract_worker"]))

    def _resources(self, runner: Any, backbone: Any, record: RunRecord) -> tuple[float, float]:
        """CPUs and GPUs of one run: ``--executor-opt`` first, then the backbone's ``ray_resources``."""
        declared = getattr(backbone, "ray_resources", None) or {}
        cpus = self.options["cpus_per_run"] or declared.get("CPU", 1.0)
        trains = not getattr(runner.plan.methods[record.method][2], "uses_features", True)
        gpus = self.options["gpus_per_run"]
        if gpus is None:
            gpus = declared.get("GPU", 1.0 if trains and cluster_gpus() else 0.0)
        return float(cpus), float(gpus)


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def worker_spec(context: Any, request: Any, output: Any, resume: bool, options: Mapping[str, Any]) -> WorkerSpec:
    """What workers rebuild the sweep from; plugins registered in-process travel by module name."""
    import types

    catalog = context.catalog
    in_process = {info.name for info in catalog.plugins if info.distribution is None}
    modules = tuple((name, plugin.__name__) for name, plugin in catalog.pm.list_name_plugin()
                    if name in in_process and isinstance(plugin, types.ModuleType))
    return WorkerSpec(sweep_id=uuid.uuid4().hex, request=request, cache_dir=context.cache_dir,
                      output=output, seed=context.seed, weights=context.weights, data_dir=context.data_dir,
                      resume=resume, blocked=tuple(getattr(catalog, "blocked", ()) or ()),
                      plugin_modules=modules, tf_threads=options["tf_threads"])
