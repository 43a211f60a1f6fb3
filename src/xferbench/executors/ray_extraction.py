"""The extraction stage on Ray: a dataset's cache misses, sharded over actors that each load the backbone once.

Shards are whole batches of the misses in dataset order, so every image is extracted in the
same batch as local extraction would put it in: the features are bitwise the same. An actor
that sees the driver's cache folder writes its shard into the bottleneck cache itself; the
rows of the others come back through the object store and the driver caches them. A shard
whose actor died (its process was killed, its node left) goes to another actor, and a
replacement actor is started; the cache is content-addressed and its writes atomic, so a
retried shard rewrites the same bytes under the same names.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.bottleneck_cache import BottleneckCache, image_digest, write_failure_warning
from xferbench.executors.ray_worker import ExtractionWorker, ShardResult, WorkerSpec
from xferbench.extraction import Extraction
from xferbench.progress import Progress

Shard = tuple[list[int], list[str]]


class ExtractionUnavailable(Exception):
    """The backbone cannot be loaded or extracted on the cluster: the runs extract (and report) themselves."""


class ShardPool:
    """The extraction actors of one backbone; each shard goes to whichever actor is free."""

    def __init__(self, spec: WorkerSpec, backbone_token: str, options: dict[str, Any], gpus: float,
                 workers: int, cache_root: Path, used: Callable[[tuple[str, int]], None]) -> None:
        import ray

        self.spec, self.token, self.options, self.workers, self.used = spec, backbone_token, options, workers, used
        self.gpus = gpus
        self.remote = ray.remote(ExtractionWorker).options(
            num_cpus=options["cpus_per_extract_worker"], num_gpus=gpus, max_restarts=0, max_task_retries=0)
        self.probe = self._write_probe(cache_root)
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.idle: list[Any] = []
        self.store: dict[Any, bool] = {}
        self.started = 0
        #: whether leaving the ``with`` block keeps the actors for the next sweep (``keep_workers``)
        self.kept = False

    @staticmethod
    def _write_probe(cache_root: Path) -> Path:
        probe = cache_root / f".ray-probe-{uuid.uuid4().hex}"
        probe.write_text("the Ray executor's driver wrote this; a worker that sees it writes to this cache\n")
        return probe

    def __enter__(self) -> ShardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.kept or exc[0] is not None:
            self.close()

    def close(self) -> None:
        """Stop the actors."""
        import ray

        for actor in [*self.starting.values(), *self.idle, *self.store]:
            ray.kill(actor, no_restart=True)
        self.starting, self.idle, self.store = {}, [], {}
        self.probe.unlink(missing_ok=True)

    def rebind(self, spec: WorkerSpec, cache_root: Path) -> None:
        """Serve another sweep with the same actors: its components, and whether they see its cache."""
        import ray

        self.spec, self.started = spec, 0
        self.probe.unlink(missing_ok=True)
        self.probe = self._write_probe(cache_root)
        actors = list(self.store)
        answers = ray.get([actor.ready.remote(str(self.probe)) for actor in actors])
        shared = self.options["shared_cache"]
        for actor, (_, sees_cache, _) in zip(actors, answers, strict=True):
            self.store[actor] = sees_cache if shared == "auto" else shared == "yes"

    def _start(self) -> None:
        # Replacements are bounded, so an actor that dies at every start cannot loop forever.
        if self.started >= self.workers * (self.options["max_retries"] + 2):
            return
        self.started += 1
        actor = self.remote.remote(self.spec, self.token)
        self.starting[actor.ready.remote(str(self.probe))] = actor

    def _ready(self, ref: Any) -> None:
        import ray

        actor = self.starting.pop(ref)
        try:
            error, sees_cache, where = ray.get(ref)
        except ray.exceptions.RayError:  # died while starting (killed, its node left): start another
            self._start()
            return
        if error is not None:
            raise ExtractionUnavailable(error)
        shared = self.options["shared_cache"]
        self.store[actor] = sees_cache if shared == "auto" else shared == "yes"
        self.idle.append(actor)
        self.used(where)

    def warm(self) -> None:
        """Start the pool's actors and wait until each has loaded the backbone (before a clock, in benchmarks)."""
        import ray

        while len(self.store) + len(self.starting) < self.workers:
            self._start()
        while self.starting:
            (ref,), _ = ray.wait(list(self.starting), num_returns=1)
            self._ready(ref)

    def map(self, dataset_token: str, shards: list[Shard], on_done: Callable[[int, ShardResult], None]) -> None:
        """Extract every shard, calling ``on_done(i, result)`` as each finishes."""
        import ray

        attempts = [0] * len(shards)

        def died(i: int) -> bool:  # the actor's process or node died: the shard goes to another
            attempts[i] += 1
            return attempts[i] <= self.options["max_retries"]

        def failed(i: int, exc: Exception) -> None:
            if isinstance(exc, ray.exceptions.RayTaskError):  # the backbone raised: no retry helps
                raise ExtractionUnavailable(str(exc.cause)) from None
            raise exc

        self._dispatch(len(shards),
                       lambda actor, i: actor.extract.remote(self.spec, dataset_token, *shards[i], self.store[actor]),
                       lambda i, result: on_done(i, result), died, failed)

    def run_all(self, calls: int, submit: Callable[[Any, int], Any], on_done: Callable[[int, Any], None],
                on_lost: Callable[[int, Exception], None]) -> None:
        """Runs on the pool's actors (TensorFlow imported, the backbone loaded): ``submit(actor, i)`` starts
        call ``i``, ``on_done(i, result)`` takes its result; a call whose actor died (or that raised) goes to
        ``on_lost(i, error)`` and its actor is replaced."""
        self._dispatch(calls, submit, on_done, lambda i: False, on_lost)

    def _dispatch(self, count: int, submit: Callable[[Any, int], Any], on_done: Callable[[int, Any], None],
                  retry: Callable[[int], bool], failed: Callable[[int, Exception], None]) -> None:
        """Hand ``count`` calls to whichever actor is free; a call whose actor died is requeued while
        ``retry(i)`` says so, else handed to ``failed(i, error)`` (so is one that raised)."""
        import ray

        while len(self.store) + len(self.starting) < min(self.workers, count):
            self._start()
        queue: deque[int] = deque(range(count))
        inflight: dict[Any, tuple[Any, int]] = {}
        while queue or inflight:
            while self.idle and queue:
                actor, i = self.idle.pop(), queue.popleft()
                inflight[submit(actor, i)] = (actor, i)
            waiting = [*inflight, *self.starting]
            if not waiting:
                raise ExtractionUnavailable(f"no extraction worker of {self.token} could be started on the cluster")
            (ref,), _ = ray.wait(waiting, num_returns=1)
            if ref in self.starting:
                self._ready(ref)
                continue
            actor, i = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                self.idle.append(actor)
                failed(i, exc)
                continue
            except ray.exceptions.RayError as exc:
                del self.store[actor]
                ray.kill(actor, no_restart=True)
                self._start()
                if retry(i):
                    queue.appendleft(i)
                else:
                    failed(i, exc)
                continue
            self.idle.append(actor)
            self.used(result.worker if isinstance(result, ShardResult) else result[1])
            on_done(i, result)

    @property
    def resources(self) -> tuple[float, float]:
        """CPUs and GPUs each actor holds."""
        return float(self.options["cpus_per_extract_worker"]), float(self.gpus)


def shard(misses: list[int], digests: list[str], batch_size: int, workers: int, shard_images: int) -> list[Shard]:
    """Whole batches of the misses, in order: about 4 shards per worker unless ``shard_images`` says."""
    size = shard_images or math.ceil(len(misses) / max(1, 4 * workers))
    size = max(batch_size, batch_size * math.ceil(size / batch_size))
    return [(misses[i:i + size], digests[i:i + size]) for i in range(0, len(misses), size)]


def extract_cell(pool: ShardPool, backbone: Any, dataset: Any, dataset_token: str, cache_root: Path,
                 progress: Progress) -> Extraction:
    """What :func:`xferbench.extraction.extract_features` returns, with the misses extracted by ``pool``."""
    backbone.calibrate(dataset, Path(cache_root).parent)  # precision=int8: the cell's int8 model
    cache = BottleneckCache(cache_root, backbone.cache_namespace(), backbone.feature_dim)
    n = len(dataset.examples)
    features = np.full((n, backbone.feature_dim), np.nan, dtype=np.float32)
    result = Extraction(features=features)
    misses: list[int] = []
    digests: list[str] = []
    failed: list[int] = []
    with progress.task(f"bottlenecks {backbone.name} on {dataset.name} (ray)", total=n, unit="img") as task:
        for index, example in enumerate(dataset.examples):
            digest = image_digest(dataset.read(example))
            cached = cache.get(digest)
            if cached is None:
                misses.append(index)
                digests.append(digest)
                continue
            features[index] = cached
            result.cache_hits += 1
        task.advance(result.cache_hits, status=f"{result.cache_hits} cached")

        def on_done(i: int, shard_result: ShardResult) -> None:
            indices, shard_digests = shards[i]
            for index, digest, row in zip(indices, shard_digests, shard_result.rows, strict=True):
                if np.isnan(row).any():
                    failed.append(index)
                    continue
                features[index] = row
                result.computed += 1
                if not shard_result.stored and not cache.put(digest, row) and cache.write_errors == 1:
                    warning = write_failure_warning(cache)
                    if warning:
                        progress.log(warning)
            if shard_result.forward_seconds > 0:
                result.forward_seconds = (result.forward_seconds or 0.0) + shard_result.forward_seconds
            result.cache_write_errors += shard_result.cache_write_errors
            task.advance(len(indices), status=f"{result.cache_hits} cached, {result.computed} computed")

        started = time.perf_counter()
        shards = shard(misses, digests, backbone.extract_batch_size, pool.workers, pool.options["shard_images"])
        if shards:
            pool.map(dataset_token, shards, on_done)
        result.seconds = time.perf_counter() - started if misses else 0.0
        task.completed = n
    result.failed = [dataset.examples[i].key for i in sorted(failed)]
    result.corrupt_cache_entries = cache.corrupt_entries
    result.cache_write_errors += cache.write_errors
    return result
