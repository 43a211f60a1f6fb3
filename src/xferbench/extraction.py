"""Dataset -> backbone -> bottleneck cache: features for every example, computed once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xferbench.backbone import Backbone
from xferbench.bottleneck_cache import BottleneckCache, image_digest, write_failure_warning
from xferbench.data import ImageDataset
from xferbench.progress import Progress, Task

if TYPE_CHECKING:
    from xferbench.context import RunContext


@dataclass
class Extraction:
    """Features aligned with ``dataset.examples``; failed rows are NaN and listed."""

    features: np.ndarray
    failed: list[str] = field(default_factory=list)
    cache_hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    #: the network's forward passes alone, as the backbone measured them (``network_seconds``); None
    #: when it does not time them: then there is no honest figure to give
    forward_seconds: float | None = None
    corrupt_cache_entries: int = 0
    #: computed vectors the cache could not store (disk full, read-only folder): the run went on without them
    cache_write_errors: int = 0

    @property
    def images_per_second(self) -> float | None:
        """End to end (read, decode, forward) over the images that were computed."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None

    @property
    def forward_images_per_second(self) -> float | None:
        """Over the forward passes alone; None when the backbone does not time them."""
        return self.computed / self.forward_seconds if self.computed and self.forward_seconds else None


def extract_features(backbone: Backbone, dataset: ImageDataset, cache_root: Path, progress: Progress,
                     batch_size: int = 64) -> Extraction:
    """Look every image up in the cache and run the backbone on the misses, in batches.

    Misses are written to the cache batch by batch, so an interrupted extraction
    resumes where it stopped.
    """
    cache = BottleneckCache(cache_root, backbone.cache_namespace(), backbone.feature_dim)
    n = len(dataset.examples)
    features = np.full((n, backbone.feature_dim), np.nan, dtype=np.float32)
    result = Extraction(features=features)
    pending: list[tuple[int, str, object]] = []

    def flush(task: Task) -> None:
        if not pending:
            return
        network_before = backbone.network_seconds
        batch = backbone.extract([img for _, _, img in pending])
        network = backbone.network_seconds - network_before
        if network > 0:
            result.forward_seconds = (result.forward_seconds or 0.0) + network
        batch = np.asarray(batch, dtype=np.float32)
        for (index, digest, _), row in zip(pending, batch, strict=True):
            if np.isnan(row).any():
                result.failed.append(dataset.examples[index].key)
                continue
            features[index] = row
            if not cache.put(digest, row) and cache.write_errors == 1:
                warning = write_failure_warning(cache)
                if warning:
                    progress.log(warning)
            result.computed += 1
        task.advance(len(pending), status=f"{result.cache_hits} cached")
        pending.clear()

    with progress.task(f"bottlenecks {backbone.name} on {dataset.name}", total=n, unit="img") as task:
        compute_started: float | None = None
        for index, example in enumerate(dataset.examples):
            image = dataset.read(example)
            digest = image_digest(image)
            cached = cache.get(digest)
            if cached is not None:
                features[index] = cached
                result.cache_hits += 1
                if result.cache_hits % 256 == 0:
                    task.advance(256, status=f"{result.cache_hits} cached")
                continue
            if compute_started is None:
                compute_started = time.perf_counter()
            pending.append((index, digest, image))
            if len(pending) >= batch_size:
                flush(task)
        flush(task)
        task.completed = n
        task.set_status(f"{result.cache_hits} cached, {result.computed} computed")
        result.seconds = time.perf_counter() - compute_started if compute_started is not None else 0.0
    result.corrupt_cache_entries = cache.corrupt_entries
    result.cache_write_errors = cache.write_errors
    return result


def write_npz(path: Path, backbone: Backbone, dataset: ImageDataset, context: RunContext,
              extraction: Extraction | None = None) -> Extraction:
    """``xferbench extract``: features, labels, paths, split and class names, without pickle.

    ``extraction``: features already extracted (by the Ray executor); else they are extracted here.
    """
    from xferbench.atomic import atomic_path

    if extraction is None:
        extraction = extract_features(backbone, dataset, context.subdir("bottlenecks"), context.progress,
                                      batch_size=backbone.extract_batch_size)
    failed = set(extraction.failed)
    keep = [i for i, ex in enumerate(dataset.examples) if ex.key not in failed]
    examples = [dataset.examples[i] for i in keep]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=extraction.features[keep].astype(np.float32),
                 labels=np.array([ex.label for ex in examples], dtype=np.int64),
                 paths=np.array([ex.key for ex in examples], dtype=str),
                 split=np.array([ex.split for ex in examples], dtype=str),
                 class_names=np.array(dataset.class_names, dtype=str))
    return extraction
