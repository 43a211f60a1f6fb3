"""``--executor ray``: a sweep on a Ray cluster, with the same records, in the same order, as ``local``.

The runner's loop hands over each cell; :meth:`RayExecutor.drain` then extracts every cell's
bottlenecks (a stage of its own, sharded over actors: xferbench.executors.ray_extraction),
runs each (backbone, dataset, method, head, shots) run as a Ray task with its resource
requests, and hands the records back to the driver's lifecycle in plan order. Ray is found at
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
            ray.shutdown()
            self._connected = False

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
        import ray

        cells, self._cells = self._cells, []
        spec = worker_spec(runner.context, runner.request, runner.output, runner.resuming, self.options)
        extractions = self._extract(runner, spec, cells)
        pending: dict[Any, RunRecord] = {}
        for cell in cells:
            ref = ray.put(extractions.get((cell.backbone_token, cell.dataset_token)))
            for record in cell.runs:
                runner.lifecycle.start(record)
                cpus, gpus = self._resources(runner, cell.backbone, record)
                task = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus,
                                                    max_retries=self.options["max_retries"])
                pending[task.remote(spec, record, ref)] = record
        with runner.context.progress.task("runs (ray)", total=len(pending), unit="run") as progress:
            try:
                while pending:
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    record = self._result(runner, ref, pending.pop(ref))
                    runner.lifecycle.finish(record)
                    progress.advance(1, status=f"{record.method} {record.backbone} on {record.dataset}: "
                                               f"{record.status}")
            except KeyboardInterrupt as exc:
                from xferbench.runner import interrupted

                for ref, record in pending.items():
                    ray.cancel(ref, force=True)
                    runner.lifecycle.finish(interrupted(record, exc, runner.run_dir(record)))
                runner.lifecycle.flush()
                raise

    def _result(self, runner: Any, ref: Any, record: RunRecord) -> RunRecord:
        import ray

        try:
            result, where = ray.get(ref)
        except ray.exceptions.RayError as exc:  # its worker or node died, every retry too
            attempts = self.options["max_retries"] + 1
            return record.update(status="error", error=f"the Ray worker running it died ({attempts} attempts): "
                                                       f"{one_line(exc)[:300]}")
        self._used(where)
        if result.status == "error":
            runner.log_error(f"{result.method} {result.backbone} on {result.dataset}: {result.error}")
        return result

    def _extract(self, runner: Any, spec: WorkerSpec, cells: list[_CellWork]) -> dict[tuple[str, str], Any]:
        """The extraction stage: the bottlenecks of each cell some of whose runs read them; one actor pool
        per backbone serves all its datasets (each actor loads the backbone once)."""
        wanted = [cell for cell in cells
                  if any(getattr(runner.plan.methods[r.method][2], "uses_features", True) for r in cell.runs)]
        extractions: dict[tuple[str, str], Any] = {}
        for token in dict.fromkeys(cell.backbone_token for cell in wanted):
            with self.pool(runner.context, spec, token) as pool:
                for cell in (cell for cell in wanted if cell.backbone_token == token):
                    extractions[(token, cell.dataset_token)] = self.extract(runner.context, pool, cell.backbone,
                                                                            cell.dataset_token, cell.dataset)
        return extractions

    def pool(self, context: Any, spec: WorkerSpec, backbone_token: str) -> ShardPool:
        """Extraction actors of one backbone (a context manager: they are stopped on exit)."""
        gpus = 1.0 if cluster_gpus() else 0.0
        return ShardPool(spec, backbone_token, self.options, gpus, self._extract_workers(gpus),
                         context.subdir("bottlenecks"), self._used)

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
