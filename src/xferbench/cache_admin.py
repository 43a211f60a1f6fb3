"""``xferbench cache verify|stats|prune``: look after the bottleneck cache entry by entry.

The layout is ``<cache>/bottlenecks/<namespace>/<xx>/<sha256>.bn`` (see bottleneck_cache). An
entry carries its own width and a blake2b of its values, so it can be checked without knowing
which backbone wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from xferbench.errors import UserError

BOTTLENECKS = "bottlenecks"
#: temp files younger than this may belong to a run in progress: verify --fix leaves them
STALE_TEMP_SECONDS = 3600


@dataclass
class Verification:
    """What ``verify`` found."""

    checked: int = 0
    corrupt: list[Path] = field(default_factory=list)
    temp_files: list[Path] = field(default_factory=list)
    namespaces: int = 0

    @property
    def ok(self) -> int:
        return self.checked - len(self.corrupt)


def entry_is_valid(blob: bytes) -> bool:
    """Magic, a width that matches the length, and the values' digest."""
    from xferbench.bottleneck_cache import _DIGEST, _HEADER, _MAGIC  # numpy: not on `xferbench --help`'s path

    if len(blob) < _HEADER.size + _DIGEST or blob[:5] != _MAGIC:
        return False
    (_, dim) = _HEADER.unpack_from(blob)
    if len(blob) != _HEADER.size + 4 * dim + _DIGEST:
        return False
    payload = blob[_HEADER.size:-_DIGEST]
    return hashlib.blake2b(payload, digest_size=_DIGEST).digest() == blob[-_DIGEST:]


def _entries(root: Path) -> Iterator[tuple[Path, bool]]:
    """``(path, is_temp)`` of every file under the bottleneck folder, in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name, name.startswith(".tmp-")


def _read_without_touching(path: Path) -> bytes:
    """The file's bytes, leaving its access time alone where the OS allows: verify is not a use (see prune)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME needs the file's owner
        fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def verify(cache_dir: Path) -> Verification:
    root = Path(cache_dir) / BOTTLENECKS
    result = Verification()
    if not root.is_dir():
        return result
    result.namespaces = sum(1 for p in root.iterdir() if p.is_dir())
    for path, is_temp in _entries(root):
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
            result.corrupt.append(path)
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
    cache = sub.add_parser("cache", parents=[common], help="verify, count or prune the bottleneck cache")
    actions = cache.add_subparsers(dest="cache_action", metavar="ACTION", required=True,
                                   parser_class=type(cache))
    check = actions.add_parser("verify", parents=[common], help="check every entry (exit 1 if any is corrupt)")
    check.add_argument("--fix", action="store_true",
                       help="remove corrupt entries (they are recomputed) and temp files older than an hour")
    actions.add_parser("stats", parents=[common], help="entries and bytes per backbone namespace")
    prune = actions.add_parser("prune", parents=[common], help="remove entries not used for a while")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h")


def run(args: argparse.Namespace, cache_dir: Path, stream: TextIO = sys.stdout) -> int:
    if args.cache_action == "verify":
        return _verify(cache_dir, args.fix, stream)
    if args.cache_action == "stats":
        return _stats(cache_dir, stream)
    if args.cache_action == "prune":
        return _prune(cache_dir, parse_age(args.older_than), stream)
    raise AssertionError(args.cache_action)


def _verify(cache_dir: Path, fix: bool, stream: TextIO) -> int:
    result = verify(cache_dir)
    print(f"{cache_dir / BOTTLENECKS}: {result.checked} entries checked in {result.namespaces} namespaces, "
          f"{result.ok} ok, {len(result.corrupt)} corrupt, {len(result.temp_files)} temp files", file=stream)
    for path in result.corrupt:
        print(f"corrupt: {path}", file=stream)
    if fix:
        now = time.time()
        removed = 0
        for path in result.corrupt + [p for p in result.temp_files if _age(p, now) > STALE_TEMP_SECONDS]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        print(f"removed {removed} files", file=stream)
        return 0
    return 1 if result.corrupt else 0


def _age(path: Path, now: float) -> float:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0.0
    return now - max(stat.st_mtime, stat.st_atime)


def _stats(cache_dir: Path, stream: TextIO) -> int:
    root = Path(cache_dir) / BOTTLENECKS
    namespaces = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    total_entries = total_bytes = 0
    for namespace in namespaces:
        sizes = [p.stat().st_size for p, is_temp in _entries(namespace) if not is_temp and p.suffix == ".bn"]
        total_entries += len(sizes)
        total_bytes += sum(sizes)
        print(f"{namespace.name}: {len(sizes)} entries, {_human(sum(sizes))}", file=stream)
    print(f"{root}: {total_entries} entries in {len(namespaces)} namespaces, {_human(total_bytes)}", file=stream)
    return 0


def _prune(cache_dir: Path, older_than: float, stream: TextIO) -> int:
    root = Path(cache_dir) / BOTTLENECKS
    now = time.time()
    removed = freed = 0
    if root.is_dir():
        for path, _ in _entries(root):
            if _age(path, now) <= older_than:
                continue
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                removed += 1
                freed += size
    print(f"{root}: removed {removed} entries not used for {older_than / 86400:g} days, freed {_human(freed)}",
          file=stream)
    return 0
