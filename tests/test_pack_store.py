"""The pack store under the bottleneck cache: few files, torn tails dropped, writers apart, old caches read."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from xferbench.bottleneck_cache import BottleneckCache, encode_legacy_entry, namespace_folder
from xferbench.cli import main
from xferbench.pack_store import (
    PACK_MAGIC,
    RECORD_HEADER,
    USAGE_GRANULARITY,
    PackStore,
    encode_record,
    list_packs,
    scan_pack,
)


def _key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _vector(i: int, dim: int = 8) -> np.ndarray:
    return np.arange(dim, dtype=np.float32) * (i + 1)


def _fill(root: Path, n: int, dim: int = 8, namespace: str = "ns", close: bool = True) -> BottleneckCache:
    cache = BottleneckCache(root, namespace, dim)
    for i in range(n):
        assert cache.put(_key(i), _vector(i, dim))
    if close:
        cache.close()
    return cache


def test_one_pack_and_one_index_per_writer_and_everything_reads_back(tmp_path):
    _fill(tmp_path, 300)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.suffix for p in files) == [".idx", ".pack"]
    cache = BottleneckCache(tmp_path, "ns", 8)
    vectors, found = cache.get_many([_key(i) for i in (299, 5, 1000, 0)])
    assert found.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(vectors[[0, 1, 3]], [_vector(299), _vector(5), _vector(0)])
    assert cache.get(_key(17)) is not None and cache.get(_key(300)) is None and cache.corrupt_entries == 0


def test_a_torn_tail_from_a_killed_writer_is_dropped(tmp_path):
    """A writer killed half way through a record leaves no index and part of a record: readers scan and drop it."""
    cache = _fill(tmp_path, 4, close=False)
    (pack,) = list_packs(cache.folder)
    with open(pack, "ab") as fh:  # what SIGKILL inside os.write leaves
        fh.write(encode_record(bytes.fromhex(_key(4)), _vector(4), int(time.time()))[:30])
    os.close(cache.store._writer.fd)  # the killed process never closes: no index
    assert not pack.with_suffix(".idx").exists()
    reader = BottleneckCache(tmp_path, "ns", 8)
    assert [reader.get(_key(i)) is not None for i in range(5)] == [True] * 4 + [False]
    assert reader.corrupt_entries == 0
    assert scan_pack(pack).tail_bytes == 30
    # the reader's own writes go to a pack of its own; the torn one is never appended to
    assert reader.put(_key(4), _vector(4))
    reader.close()
    assert len(list_packs(cache.folder)) == 2
    assert BottleneckCache(tmp_path, "ns", 8).get(_key(4)) is not None


def test_a_damaged_index_is_rebuilt_from_its_pack(tmp_path):
    cache = _fill(tmp_path, 10)
    (pack,) = list_packs(cache.folder)
    index = pack.with_suffix(".idx")
    blob = bytearray(index.read_bytes())
    blob[40] ^= 0xFF
    index.write_bytes(bytes(blob))
    reader = BottleneckCache(tmp_path, "ns", 8)
    vectors, found = reader.get_many([_key(i) for i in range(10)])
    assert found.all() and reader.corrupt_entries == 0
    np.testing.assert_array_equal(vectors[3], _vector(3))


def _write_in_child(root: str, start: int, stop: int, ready, go) -> None:
    cache = BottleneckCache(Path(root), "ns", 8)
    ready.set()
    go.wait(60)  # both children write at the same time
    for i in range(start, stop):
        cache.put(_key(i), _vector(i))
    cache.close()


def test_concurrent_writers_never_share_a_file(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    readies = [ctx.Event(), ctx.Event()]
    workers = [ctx.Process(target=_write_in_child, args=(str(tmp_path), a, b, ready, go))
               for (a, b), ready in zip([(0, 150), (100, 250)], readies, strict=True)]
    try:
        for worker in workers:
            worker.start()
        for ready in readies:
            assert ready.wait(120)
        go.set()
        for worker in workers:
            worker.join(120)
            assert worker.exitcode == 0
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
    folder = tmp_path / namespace_folder("ns")
    packs = list_packs(folder)
    assert len(packs) == 2 and all(pack.with_suffix(".idx").exists() for pack in packs)
    reader = BottleneckCache(tmp_path, "ns", 8)
    vectors, found = reader.get_many([_key(i) for i in range(250)])
    assert found.all() and reader.corrupt_entries == 0
    np.testing.assert_array_equal(vectors[120], _vector(120))
    assert main(["cache", "verify", "--cache-dir", str(tmp_path.parent / tmp_path.name)]) in (0, 1)


def _cache_dir_with(tmp_path: Path, n: int, close: bool = True) -> tuple[Path, BottleneckCache]:
    return tmp_path, _fill(tmp_path / "bottlenecks", n, close=close)


def test_verify_finds_corrupt_records_and_torn_tails_and_fix_rewrites_the_packs(tmp_path, capsys):
    cache_dir, cache = _cache_dir_with(tmp_path, 6)
    (pack,) = list_packs(cache.folder)
    blob = bytearray(pack.read_bytes())
    record = (len(blob) - len(PACK_MAGIC)) // 6
    blob[len(PACK_MAGIC) + record + RECORD_HEADER.size + 3] ^= 0x10  # a value of the second record
    pack.write_bytes(bytes(blob) + encode_record(bytes.fromhex(_key(9)), _vector(9), 0)[:25])
    pack.with_suffix(".idx").unlink()
    old = time.time() - 2 * 3600  # no writer has touched it for two hours: it is done
    os.utime(pack, (old, old))
    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 1
    out = capsys.readouterr().out
    assert "6 entries checked in 1 namespaces, 5 ok, 1 corrupt, 0 temp files, 1 torn pack tails" in out
    assert f"corrupt: {pack}: record 1" in out and f"torn tail: {pack}" in out
    assert main(["cache", "verify", "--fix", "--cache-dir", str(cache_dir)]) == 0
    assert "rewrote 1 packs of" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache-dir", str(cache_dir)]) == 0
    assert "5 entries checked in 1 namespaces, 5 ok, 0 corrupt, 0 temp files, 0 torn pack tails" in \
        capsys.readouterr().out
    reader = BottleneckCache(tmp_path / "bottlenecks", "ns", 8)
    assert [reader.get(_key(i)) is not None for i in range(6)] == [True, False, True, True, True, True]


def test_a_retry_after_a_killed_writer_writes_no_entry_twice_and_verify_counts_duplicates(tmp_path, capsys):
    """A writer killed mid-shard leaves whole records and a torn tail; the retry (a new cache opened after
    the kill) writes only what is missing. A duplicate made by hand shows that the count can see one."""
    cache_dir, killed = _cache_dir_with(tmp_path, 4, close=False)  # no index: its writer never closed
    (pack,) = list_packs(killed.folder)
    with open(pack, "ab") as fh:
        fh.write(encode_record(bytes.fromhex(_key(4)), _vector(4), int(time.time()))[:30])
    retry = BottleneckCache(cache_dir / "bottlenecks", "ns", 8)
    for i in range(8):  # the whole shard again
        assert retry.put(_key(i), _vector(i))
        assert retry.put(_key(i), _vector(i))  # and an image that occurs twice in it
    retry.close()
    records = sum(len(scan_pack(p).entries) for p in list_packs(killed.folder))
    assert records == 8
    assert main(["cache", "stats", "--cache-dir", str(cache_dir)]) == 0
    assert "8 entries in 1 namespaces" in (out := capsys.readouterr().out) and ", 0 duplicate records" in out
    main(["cache", "verify", "--cache-dir", str(cache_dir)])
    assert ", 0 duplicate records" in capsys.readouterr().out
    PackStore(killed.folder).append(bytes.fromhex(_key(2)), _vector(2))  # a writer that skips no key
    main(["cache", "stats", "--cache-dir", str(cache_dir)])
    assert "8 entries in 1 namespaces" in (out := capsys.readouterr().out) and ", 1 duplicate records" in out
    main(["cache", "verify", "--cache-dir", str(cache_dir)])
    assert ", 1 duplicate records" in capsys.readouterr().out


def test_prune_compacts_old_unused_entries_away_and_keeps_used_ones(tmp_path, capsys, monkeypatch):
    from xferbench import pack_store

    written = time.time() - 40 * 86400
    monkeypatch.setattr(pack_store.time, "time", lambda: written)  # entries written 40 days ago
    _fill(tmp_path / "bottlenecks", 6)
    monkeypatch.undo()
    _fill(tmp_path / "bottlenecks", 0)  # no writes: no pack
    new = BottleneckCache(tmp_path / "bottlenecks", "ns", 8)
    assert new.put(_key(10), _vector(10))  # a fresh entry
    _, found = new.get_many([_key(1), _key(2)])  # two old entries used today
    assert found.all()
    new.close()
    assert len(list((new.folder / "usage").iterdir())) == 1
    assert main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 0
    assert "7 entries in 1 namespaces" in capsys.readouterr().out
    assert main(["cache", "prune", "--older-than", "30d", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 4 entries not used for 30 days" in capsys.readouterr().out
    packs = list_packs(new.folder)
    assert len(packs) == 1 and packs[0].name.startswith("compact-")
    assert not list((new.folder / "usage").iterdir())  # folded into the records' times
    reader = BottleneckCache(tmp_path / "bottlenecks", "ns", 8)
    _, found = reader.get_many([_key(i) for i in (0, 1, 2, 3, 10)])
    assert found.tolist() == [False, True, True, False, True]
    # the uses are kept in the rewritten records: a second prune drops nothing
    assert main(["cache", "prune", "--older-than", "30d", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 0 entries" in capsys.readouterr().out


def test_a_pack_still_being_written_is_left_alone_by_prune(tmp_path, capsys):
    cache = _fill(tmp_path / "bottlenecks", 3, close=False)
    assert main(["cache", "prune", "--older-than", "0s", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 0 entries" in capsys.readouterr().out
    assert cache.put(_key(3), _vector(3))
    cache.close()
    assert all(BottleneckCache(tmp_path / "bottlenecks", "ns", 8).get_many([_key(i) for i in range(4)])[1])


def _legacy_cache(root: Path, n: int, namespace: str = "ns", dim: int = 8) -> Path:
    folder = root / "bottlenecks" / namespace_folder(namespace)
    for i in range(n):
        path = folder / _key(i)[:2] / f"{_key(i)}.bn"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_legacy_entry(_vector(i, dim)))
    return folder


def test_old_per_entry_caches_are_read_and_migrated_once(tmp_path, capsys):
    folder = _legacy_cache(tmp_path, 5)
    bad = folder / _key(4)[:2] / f"{_key(4)}.bn"
    bad.write_bytes(bad.read_bytes()[:-2])
    cache = BottleneckCache(tmp_path / "bottlenecks", "ns", 8)
    vectors, found = cache.get_many([_key(i) for i in range(5)])
    assert found.tolist() == [True] * 4 + [False] and cache.corrupt_entries == 1
    np.testing.assert_array_equal(vectors[2], _vector(2))
    assert main(["cache", "migrate", "--cache-dir", str(tmp_path)]) == 0
    assert "migrated 4 entries into packs, dropped 1 corrupt" in capsys.readouterr().out
    assert not list(folder.rglob("*.bn")) and len(list_packs(folder)) == 1
    migrated = BottleneckCache(tmp_path / "bottlenecks", "ns", 8)
    again, found = migrated.get_many([_key(i) for i in range(5)])
    assert found.tolist() == [True] * 4 + [False]
    np.testing.assert_array_equal(again[:4], vectors[:4])
    assert main(["cache", "migrate", "--cache-dir", str(tmp_path)]) == 0
    assert "migrated 0 entries" in capsys.readouterr().out


def test_a_failed_pack_creation_leaves_no_file(tmp_path, monkeypatch):
    import errno

    from xferbench import pack_store

    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pack_store.os, "write", full)
    cache = BottleneckCache(tmp_path, "ns", 8)
    assert not cache.put(_key(0), _vector(0))
    monkeypatch.setattr(pack_store.os, "write", real_write)
    cache.close()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("old", [True, False])
def test_use_of_an_entry_is_logged_only_when_it_is_old(tmp_path, monkeypatch, old):
    from xferbench import pack_store

    if old:
        written = time.time() - 2 * USAGE_GRANULARITY
        monkeypatch.setattr(pack_store.time, "time", lambda: written)
    _fill(tmp_path, 3)
    monkeypatch.undo()
    reader = BottleneckCache(tmp_path, "ns", 8)
    assert reader.get(_key(1)) is not None
    reader.close()
    assert (reader.folder / "usage").is_dir() == old


def test_keys_that_share_their_index_prefix_are_told_apart(tmp_path):
    """The in-memory index sorts by the keys' first 8 bytes; the record holds the whole key."""
    store = PackStore(tmp_path)
    keys = [bytes(8) + i.to_bytes(24, "big") for i in range(50)]
    for i in reversed(range(50)):
        store.append(keys[i], _vector(i))
    store.close()
    reader = PackStore(tmp_path)
    vectors, found, corrupt = reader.get_many(keys[::-3] + keys[::4] + [bytes(8) + bytes([1] * 24)], 8)
    assert found.tolist() == [True] * (len(keys[::-3]) + len(keys[::4])) + [False] and corrupt == 0
    np.testing.assert_array_equal(vectors[0], _vector(49))
    np.testing.assert_array_equal(reader.get(keys[7], 8)[0], _vector(7))
