"""Dataset -> backbone -> bottleneck cache: features for every example, computed once."""

from __future__ import annotations

import os
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


#: feature matrices larger than this go to a memory-mapped scratch file, not the process's memory
IN_MEMORY_FEATURES_BYTES = 256 << 20
#: images looked up in the cache together (one batched read of the pack store)
_LOOKUP_CHUNK = 256


def extract_features(backbone: Backbone, dataset: ImageDataset, cache_root: Path, progress: Progress,
                     batch_size: int = 64, scratch_dir: Path | None = None) -> Extraction:
    """Look every image up in the cache and run the backbone on the misses, in batches.

    Misses are written to the cache batch by batch, so an interrupted extraction
    resumes where it stopped. Above IN_MEMORY_FEATURES_BYTES the features go to an
    unlinked scratch file in ``scratch_dir`` (default: ``<cache>/tmp``) and come back
    memory-mapped read-only, so memory does not grow with the dataset.
    """
    n = len(dataset.examples)
    features = FeatureMatrix(n, backbone.feature_dim, scratch_dir or Path(cache_root).parent / "tmp")
    result = Extraction(features=np.empty((0, backbone.feature_dim), np.float32))
    backbone.calibrate(dataset, Path(cache_root).parent)  # precision=int8: the int8 model of this dataset
    with BottleneckCache(cache_root, backbone.cache_namespace(), backbone.feature_dim) as cache:
        _extract(backbone, dataset, cache, progress, batch_size, features, result)
        result.corrupt_cache_entries = cache.corrupt_entries
        result.cache_write_errors = cache.write_errors
    result.features = features.finish()
    return result


def _extract(backbone: Backbone, dataset: ImageDataset, cache: BottleneckCache, progress: Progress,
             batch_size: int, features: FeatureMatrix, result: Extraction) -> None:
    n = len(dataset.examples)
    pending: list[tuple[int, str, object]] = []
    duplicates: list[tuple[int, int]] = []  # (row, row of the same image computed in its batch)

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
            features.write(index, row)
            if np.isnan(row).any():
                result.failed.append(dataset.examples[index].key)
                continue
            if not cache.put(digest, row) and cache.write_errors == 1:
                warning = write_failure_warning(cache)
                if warning:
                    progress.log(warning)
            result.computed += 1
        task.advance(len(pending), status=f"{result.cache_hits} cached")
        pending.clear()

    with progress.task(f"bottlenecks {backbone.name} on {dataset.name}", total=n, unit="img") as task:
        compute_started: float | None = None
        for start in range(0, n, _LOOKUP_CHUNK):
            images = [dataset.read(example) for example in dataset.examples[start:start + _LOOKUP_CHUNK]]
            digests = [image_digest(image) for image in images]
            cached, found = cache.get_many(digests)
            hits = int(found.sum())
            if hits:
                features.write_rows(start, cached, found)
                before = result.cache_hits
                result.cache_hits += hits
                if result.cache_hits // 256 != before // 256:
                    task.advance(256 * (result.cache_hits // 256 - before // 256),
                                 status=f"{result.cache_hits} cached")
            # images of this chunk or still pending: a second copy of one is not computed again
            pending_digests = {digest: index for index, digest, _ in pending}
            for offset in np.flatnonzero(~found):
                index, digest = start + int(offset), digests[offset]
                if digest in pending_digests:  # the same image twice in one batch: computed once
                    duplicates.append((index, pending_digests[digest]))
                    continue
                if compute_started is None:
                    compute_started = time.perf_counter()
                pending_digests[digest] = index
                pending.append((index, digest, images[offset]))
                if len(pending) >= batch_size:
                    flush(task)
            del images, cached
        flush(task)
        for index, source in duplicates:
            row = features.read(source)
            features.write(index, row)
            if np.isnan(row).any():
                result.failed.append(dataset.examples[index].key)
            else:
                result.cache_hits += 1
        task.completed = n
        task.set_status(f"{result.cache_hits} cached, {result.computed} computed")
        result.seconds = time.perf_counter() - compute_started if compute_started is not None else 0.0


class FeatureMatrix:
    """The ``[n, dim]`` float32 features being extracted: in memory, or, when large, in an unlinked file.

    The file is written with ``pwrite`` (not through a mapping, so its pages never count as the
    process's own) and handed back as a read-only memory map; being unlinked from the start,
    it vanishes with the last reference, even after a crash. A scratch folder that cannot take it
    (full, read-only) leaves the matrix in memory.
    """

    def __init__(self, n: int, dim: int, scratch_dir: Path, limit: int | None = None) -> None:
        self.shape = (n, dim)
        self._array: np.ndarray | None = None
        self._file = None
        if n * dim * 4 > (IN_MEMORY_FEATURES_BYTES if limit is None else limit):
            self._file = _scratch_file(scratch_dir, n * dim * 4)
        if self._file is None:
            self._array = np.full(self.shape, np.nan, dtype=np.float32)

    def write(self, index: int, row: np.ndarray) -> None:
        if self._array is not None:
            self._array[index] = row
        else:
            os.pwrite(self._file.fileno(), np.ascontiguousarray(row, "<f4").tobytes(), index * self.shape[1] * 4)

    def read(self, index: int) -> np.ndarray:
        if self._array is not None:
            return self._array[index].copy()
        raw = os.pread(self._file.fileno(), self.shape[1] * 4, index * self.shape[1] * 4)
        return np.frombuffer(raw, dtype="<f4").copy()

    def write_rows(self, start: int, rows: np.ndarray, mask: np.ndarray) -> None:
        """Rows ``start + i`` for every ``i`` where ``mask[i]``."""
        if self._array is not None:
            self._array[start:start + len(rows)][mask] = rows[mask]
            return
        for i in np.flatnonzero(mask):
            self.write(start + int(i), rows[i])

    def finish(self) -> np.ndarray:
        if self._array is not None:
            return self._array
        with self._file:
            return np.memmap(self._file, dtype="<f4", mode="r", shape=self.shape)


def _scratch_file(folder: Path, size: int):  # noqa: ANN202 - a binary file object
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = tempfile.TemporaryFile(dir=folder, prefix="features-")  # noqa: SIM115 - handed back open
    except OSError:
        return None
    try:
        # Claim the space now: a full disk is an error here, not a SIGBUS when the map is read.
        os.posix_fallocate(fh.fileno(), 0, size)
    except OSError:
        fh.close()
        return None
    return fh


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
