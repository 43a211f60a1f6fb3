"""The pack store against the one-file-per-entry store it replaced: 100k vectors of width 2048.

Both stores hold the same 100,000 synthetic float32 vectors of width 2048 (800 MB each) under
content-addressed keys. The per-file store is the old layout (``<xx>/<sha256>.bn``, read
through the cache's fallback for old caches, one ``get`` per entry as extraction did); the pack
store is what ``BottleneckCache.put`` writes now, read with ``get_many`` in chunks of 256 as
extraction does now. Every entry is checked on read in both (blake2b per file, crc32 per record).
Warm: each store is read once before the timed rounds, so both come from the page cache.

Floors: the pack store uses fewer files than 1% of its entries, and its warm reads are at least
5x faster than the per-file store's, timed side by side in this one run. The stores (about
2.5 GB on disk with the per-file store's block overhead) live in pytest's temporary folder,
``$XFERBENCH_BENCH_TMP`` if set, and are deleted at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ENTRIES = 100_000
WIDTH = 2048
CHUNK = 256
#: the floors the issue sets
MAX_FILE_FRACTION = 0.01
MIN_WARM_READ_SPEEDUP = 5.0
NAMESPACE = "bench-store"


@dataclass
class Stores:
    packs: Path
    per_file: Path
    digests: list[str]
    write_pack_seconds: float
    write_per_file_seconds: float


def _vectors(start: int, stop: int) -> np.ndarray:
    return np.random.default_rng(start).standard_normal((stop - start, WIDTH), dtype=np.float32)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from xferbench.bottleneck_cache import BottleneckCache, encode_legacy_entry, namespace_folder

    base = Path(tempfile.mkdtemp(prefix="bench-store-", dir=os.environ.get("XFERBENCH_BENCH_TMP")
                                 or tmp_path_factory.getbasetemp()))
    digests = [hashlib.sha256(f"image-{i}".encode()).hexdigest() for i in range(ENTRIES)]
    try:
        started = time.perf_counter()
        with BottleneckCache(base / "packs", NAMESPACE, WIDTH) as cache:
            for start in range(0, ENTRIES, 1000):
                for digest, vector in zip(digests[start:start + 1000], _vectors(start, start + 1000), strict=True):
                    assert cache.put(digest, vector)
        write_pack = time.perf_counter() - started
        folder = base / "per-file" / namespace_folder(NAMESPACE)
        started = time.perf_counter()
        for start in range(0, ENTRIES, 1000):
            for digest, vector in zip(digests[start:start + 1000], _vectors(start, start + 1000), strict=True):
                path = folder / digest[:2] / f"{digest}.bn"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_legacy_entry(vector))
        write_per_file = time.perf_counter() - started
        yield Stores(base / "packs", base / "per-file", digests, write_pack, write_per_file)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _read_packs(stores: Stores) -> float:
    """Every entry through ``get_many``, 256 at a time; returns a checksum of what was read."""
    from xferbench.bottleneck_cache import BottleneckCache

    total = 0.0
    with BottleneckCache(stores.packs, NAMESPACE, WIDTH) as cache:
        for start in range(0, ENTRIES, CHUNK):
            vectors, found = cache.get_many(stores.digests[start:start + CHUNK])
            assert found.all()
            total += float(vectors[:, 0].sum())
    return total


def _read_per_file(stores: Stores) -> float:
    """Every entry through ``get``, one file each (how extraction read the old store)."""
    from xferbench.bottleneck_cache import BottleneckCache

    total = 0.0
    with BottleneckCache(stores.per_file, NAMESPACE, WIDTH) as cache:
        for digest in stores.digests:
            vector = cache.get(digest)
            assert vector is not None
            total += float(vector[0])
    return total


def test_store_warm_reads_of_100k_entries(benchmark, stores: Stores):
    from xferbench.bottleneck_cache import namespace_folder

    files = sum(len(names) for _, _, names in os.walk(stores.packs / namespace_folder(NAMESPACE)))
    assert files < MAX_FILE_FRACTION * ENTRIES, f"{files} files for {ENTRIES} entries"
    expected = _read_per_file(stores)  # warms the page cache for both, and the two must agree
    assert _read_packs(stores) == pytest.approx(expected, rel=1e-6)
    per_file_rounds = []
    for _ in range(3):
        started = time.perf_counter()
        _read_per_file(stores)
        per_file_rounds.append(time.perf_counter() - started)
    benchmark.pedantic(_read_packs, args=(stores,), rounds=3, iterations=1)
    packs = benchmark.stats.stats.min
    per_file = min(per_file_rounds)
    speedup = per_file / packs
    benchmark.extra_info.update(entries=ENTRIES, width=WIDTH, pack_store_files=files,
                                file_fraction=round(files / ENTRIES, 6), per_file_seconds=round(per_file, 3),
                                pack_seconds=round(packs, 3), warm_read_speedup=round(speedup, 2),
                                write_pack_seconds=round(stores.write_pack_seconds, 1),
                                write_per_file_seconds=round(stores.write_per_file_seconds, 1))
    print(f"store: {files} files for {ENTRIES} entries ({files / ENTRIES:.4%}); warm reads: packs {packs:.2f} s, "
          f"per-file {per_file:.2f} s, {speedup:.1f}x; writes: packs {stores.write_pack_seconds:.1f} s, "
          f"per-file {stores.write_per_file_seconds:.1f} s")
    assert speedup >= MIN_WARM_READ_SPEEDUP, (
        f"warm reads of {ENTRIES} entries: packs {packs:.2f} s, per-file {per_file:.2f} s: only {speedup:.1f}x; "
        f"the floor is {MIN_WARM_READ_SPEEDUP}x")
