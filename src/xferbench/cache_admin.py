"""``xferbench cache verify|stats|prune|migrate``: look after the bottleneck cache entry by entry.

The layout is ``<cache>/bottlenecks/<namespace>/packs/*.pack`` with their ``.idx`` files and
``<namespace>/usage/*.used`` logs (see pack_store); caches from before packs also hold
``<namespace>/<xx>/<sha256>.bn`` files, one per entry, until ``migrate``. A record or entry
carries its own width and checksum, so it can be checked without knowing which backbone wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from xferbench.errors import UserError

BOTTLENECKS = "bottlenecks"
PACKS = "packs"  # as in pack_store (not imported: numpy stays off `xferbench --help`'s path)
USAGE = "usage"
#: temp files younger than this may belong to a run in progress: verify --fix leaves them
STALE_TEMP_SECONDS = 3600


@dataclass
class Verification:
    """What ``verify`` found."""

    checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    namespaces: int = 0
    #: packs no writer appends to any more that end in part of a record (a writer killed mid-write)
    torn_packs: list[Path] = field(default_factory=list)
    #: packs holding corrupt records or a torn tail: what ``--fix`` rewrites
    damaged_packs: list[Path] = field(default_factory=list)
    #: legacy entry files that are corrupt (what ``--fix`` removes)
    corrupt_files: list[Path] = field(default_factory=list)
    #: sound pack records of a key that an earlier record of its namespace already holds (readers use one;
    #: ``prune`` compacts them away)
    duplicates: int = 0

    @property
    def ok(self) -> int:
        return self.checked - len(self.corrupt)


def entry_is_valid(blob: bytes) -> bool:
    """An old-layout ``.bn`` entry: magic, a width that matches the length, and the values' digest."""
    from xferbench.bottleneck_cache import decode_legacy_entry  # numpy: not on `xferbench --help`'s path

    return decode_legacy_entry(blob) is not None


def _namespaces(cache_dir: Path) -> list[Path]:
    root = Path(cache_dir) / BOTTLENECKS
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _legacy_entries(namespace: Path) -> Iterator[tuple[Path, bool]]:
    """``(path, is_temp)`` of every file of the one-file-per-entry layout, in a stable order."""
    for sub in sorted(namespace.iterdir()):
        if len(sub.name) == 2 and sub.is_dir():
            for name in sorted(os.listdir(sub)):
                yield sub / name, name.startswith(".tmp-")


def _temp_files(namespace: Path) -> list[Path]:
    """Temp files of atomic writes (indexes, usage logs, compactions) a killed process left."""
    found = []
    for sub in (PACKS, USAGE):
        folder = namespace / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.name.startswith(".tmp-"))
    return found


def _read_without_touching(path: Path) -> bytes:
    """The file's bytes, leaving its access time alone where the OS allows: verify is not a use (see prune)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME needs the file's owner
        fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def verify(cache_dir: Path) -> Verification:
    """Check every record of every pack and every old-layout entry file."""
    from xferbench.pack_store import list_packs, pack_is_idle, scan_pack

    result = Verification()
    namespaces = _namespaces(cache_dir)
    result.namespaces = len(namespaces)
    now = time.time()
    for namespace in namespaces:
        result.temp_files += _temp_files(namespace)
        keys: set[bytes] = set()
        for pack in list_packs(namespace):
            try:
                scan = scan_pack(pack, check=True)
            except OSError:
                continue
            for key in scan.entries["key"].tolist():
                result.duplicates += key in keys
                keys.add(key)
            result.checked += len(scan.entries) + scan.corrupt
            result.corrupt += [f"{pack}: record {i + 1}" for i in range(scan.corrupt)]
            torn = scan.tail_bytes > 0 and pack_is_idle(pack, now)
            if torn:
                result.torn_packs.append(pack)
            if scan.corrupt or torn:
                result.damaged_packs.append(pack)
        for path, is_temp in _legacy_entries(namespace):
            if is_temp:
                result.temp_files.append(path)
                continue
            if path.suffix != ".bn":
                continue
            result.checked += 1
            try:
                valid = entry_is_valid(_read_without_touching(path))
            except OSError:
                valid = False
            if not valid:
                result.corrupt.append(str(path))
                result.corrupt_files.append(path)
    return result


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"`` -> seconds."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match:
        raise UserError(f"--older-than {text!r}: write an age like 30d, 12h or 90m")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``cache`` subcommand and its actions."""
    cache = sub.add_parser("cache", parents=[common], help="verify, count, prune or migrate the bottleneck cache")
    actions = cache.add_subparsers(dest="cache_action", metavar="ACTION", required=True,
                                   parser_class=type(cache))
    check = actions.add_parser("verify", parents=[common], help="check every entry (exit 1 if any is corrupt)")
    check.add_argument("--fix", action="store_true",
                       help="rewrite packs without their corrupt records and torn tails, remove corrupt entry "
                            "files (all are recomputed) and temp files older than an hour")
    actions.add_parser("stats", parents=[common], help="entries, bytes and files per backbone namespace")
    prune = actions.add_parser("prune", parents=[common],
                               help="drop entries not used for a while (rewrites the packs without them)")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h")
    actions.add_parser("migrate", parents=[common],
                       help="move entries of the old one-file-per-image layout into pack files")


def run(args: argparse.Namespace, cache_dir: Path, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout  # looked up now: a test may have swapped sys.stdout since import
    if args.cache_action == "verify":
        return _verify(cache_dir, args.fix, stream)
    if args.cache_action == "stats":
        return _stats(cache_dir, stream)
    if args.cache_action == "prune":
        return _prune(cache_dir, parse_age(args.older_than), stream)
    if args.cache_action == "migrate":
        return _migrate(cache_dir, stream)
    raise AssertionError(args.cache_action)


@contextlib.contextmanager
def _exclusive(namespace: Path) -> Iterator[None]:
    """One compaction per namespace at a time on this machine (an fcntl lock; run prune from one node)."""
    import fcntl

    (namespace / PACKS).mkdir(parents=True, exist_ok=True)
    with open(namespace / PACKS / ".compact.lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{namespace}: another 'xferbench cache prune' or 'verify --fix' is rewriting its "
                            f"packs; wait for it to finish") from None
        yield


def _verify(cache_dir: Path, fix: bool, stream: TextIO) -> int:
    from xferbench.pack_store import compact

    result = verify(cache_dir)
    print(f"{cache_dir / BOTTLENECKS}: {result.checked} entries checked in {result.namespaces} namespaces, "
          f"{result.ok} ok, {len(result.corrupt)} corrupt, {len(result.temp_files)} temp files, "
          f"{len(result.torn_packs)} torn pack tails, {result.duplicates} duplicate records", file=stream)
    for what in result.corrupt:
        print(f"corrupt: {what}", file=stream)
    for pack in result.torn_packs:
        print(f"torn tail: {pack}", file=stream)
    if fix:
        now = time.time()
        removed = 0
        for path in result.corrupt_files + [p for p in result.temp_files if _age(p, now) > STALE_TEMP_SECONDS]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        print(f"removed {removed} files", file=stream)
        by_namespace: dict[Path, list[Path]] = {}
        for pack in result.damaged_packs:
            by_namespace.setdefault(pack.parent.parent, []).append(pack)
        for namespace, packs in sorted(by_namespace.items()):
            with _exclusive(namespace):
                done = compact(namespace, only=packs)
            print(f"rewrote {done.packs_before} packs of {namespace.name}: {done.kept} entries kept, "
                  f"{done.corrupt} corrupt dropped", file=stream)
        return 0
    return 1 if result.corrupt else 0


def _age(path: Path, now: float) -> float:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0.0
    return now - max(stat.st_mtime, stat.st_atime)


def _stats(cache_dir: Path, stream: TextIO) -> int:
    from xferbench.pack_store import list_packs, pack_entries

    namespaces = _namespaces(cache_dir)
    total_entries = total_bytes = total_files = total_duplicates = 0
    for namespace in namespaces:
        keys: set[bytes] = set()
        size = files = records = 0
        for pack in list_packs(namespace):
            with contextlib.suppress(OSError):
                entries = pack_entries(pack)["key"].tolist()
                keys.update(bytes(k) for k in entries)
                records += len(entries)
                size += pack.stat().st_size
                files += 1
        packed = len(keys)
        total_duplicates += records - packed
        legacy = [p.stat().st_size for p, is_temp in _legacy_entries(namespace) if not is_temp and p.suffix == ".bn"]
        entries, size, files = packed + len(legacy), size + sum(legacy), files + len(legacy)
        total_entries, total_bytes, total_files = total_entries + entries, total_bytes + size, total_files + files
        where = f"{packed} in packs, {len(legacy)} in old per-entry files" if legacy else "in packs"
        print(f"{namespace.name}: {entries} entries ({where}), {_human(size)} in {files} files, "
              f"{records - packed} duplicate records", file=stream)
    print(f"{Path(cache_dir) / BOTTLENECKS}: {total_entries} entries in {len(namespaces)} namespaces, "
          f"{_human(total_bytes)} in {total_files} files, {total_duplicates} duplicate records", file=stream)
    return 0


def _prune(cache_dir: Path, older_than: float, stream: TextIO) -> int:
    """Old-layout files by their access time; pack records by their last use (record time and usage logs)."""
    from xferbench.pack_store import compact, read_usage

    now = time.time()
    removed = freed = 0
    for namespace in _namespaces(cache_dir):
        for path, _ in _legacy_entries(namespace):
            if _age(path, now) <= older_than:
                continue
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                removed += 1
                freed += size
        if not (namespace / PACKS).is_dir():
            continue
        with _exclusive(namespace):
            last_use, logs = read_usage(namespace)
            done = compact(namespace, lambda _key, used: now - used <= older_than, last_use=last_use)
            # Their times are now in the rewritten records (or the entries are gone).
            for log in logs:
                with contextlib.suppress(FileNotFoundError):
                    log.unlink()
        removed += done.dropped
        freed += max(done.bytes_before - done.bytes_after, 0)
    print(f"{Path(cache_dir) / BOTTLENECKS}: removed {removed} entries not used for {older_than / 86400:g} days, "
          f"freed {_human(freed)}", file=stream)
    return 0


def _migrate(cache_dir: Path, stream: TextIO) -> int:
    """Append every valid old-layout entry to a pack, then remove the old files (corrupt ones too)."""
    import numpy as np

    from xferbench.bottleneck_cache import decode_legacy_entry
    from xferbench.pack_store import PackStore

    moved = skipped = 0
    for namespace in _namespaces(cache_dir):
        files = [p for p, is_temp in _legacy_entries(namespace) if not is_temp and p.suffix == ".bn"]
        if not files:
            continue
        store = PackStore(namespace)
        try:
            for path in files:
                try:
                    vector = decode_legacy_entry(path.read_bytes())
                    key = bytes.fromhex(path.stem)
                except (OSError, ValueError):
                    vector = None
                if vector is None or len(key) != 32:
                    skipped += 1
                    continue
                store.append(key, np.asarray(vector))
                moved += 1
        except OSError as exc:
            from xferbench.atomic import write_error

            raise write_error(exc, namespace / PACKS) from exc
        finally:
            store.close()  # fsync and index: the packs hold everything before any old file goes
        for path, _ in _legacy_entries(namespace):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for sub in namespace.iterdir():
            if len(sub.name) == 2 and sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
    print(f"{Path(cache_dir) / BOTTLENECKS}: migrated {moved} entries into packs, dropped {skipped} corrupt",
          file=stream)
    return 0
