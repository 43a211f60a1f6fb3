"""Run ``xferbench ARGS`` with a fault injected at a known write, as a child process.

    python fault_launcher.py [--cache-enospc-after N] [--results-enospc-at N]
                             [--sigkill-at-entry N [--sigkill-inside]] [--entry-log FILE] -- ARGS...

``--cache-enospc-after N``: the bottleneck cache's writes fail with ENOSPC after N entries, half
way through writing the record into its pack (the disk filled up). ``--results-enospc-at N``: from the N-th
write of the results file on (1 = the first), each fails with ENOSPC half way through its temp file.
``--sigkill-at-entry N``: the process SIGKILLs itself right after storing its N-th cache entry, or
with ``--sigkill-inside`` half way through writing that entry's record (a torn pack tail).
``--entry-log``: every stored entry's key (hex) is appended there (to count entries lost to a kill).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any


class _OsProxy:
    """The ``os`` module as the pack store sees it, with ``write`` wrapped for the records it appends."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.stored = 0
        self.log = open(options.entry_log, "a", encoding="utf-8") if options.entry_log else None  # noqa: SIM115

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        from xferbench.pack_store import RECORD_MAGIC

        data = bytes(data)
        if data[:4] != RECORD_MAGIC:  # a pack's header, not an entry
            return os.write(fd, data)
        limit = self.options.cache_enospc_after
        if limit is not None and self.stored >= limit:  # the disk fills up half way through the record
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        kill_at = self.options.sigkill_at_entry
        if kill_at is not None and self.stored + 1 == kill_at and self.options.sigkill_inside:
            os.write(fd, data[: len(data) // 2])  # a torn record at the pack's end
            os.kill(os.getpid(), signal.SIGKILL)
        written = os.write(fd, data)
        self.stored += 1
        if self.log is not None:
            self.log.write(f"{data[8:40].hex()}\n")  # the entry's key (see pack_store.RECORD_HEADER)
            self.log.flush()
        if kill_at is not None and self.stored == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return written


def _fail_results_write(at: int) -> None:
    from xferbench import results

    original = results.atomic_write_text
    calls = {"n": 0}

    def write(path: Any, text: str, encoding: str = "utf-8") -> None:
        if Path(path).parent.name == "rescue" or "xferbench-rescue-" in Path(path).name:
            return original(path, text, encoding)
        calls["n"] += 1
        if calls["n"] < at:  # from the at-th write on, the disk stays full
            return original(path, text, encoding)
        from xferbench.atomic import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(text[: len(text) // 2], encoding=encoding)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    results.atomic_write_text = write


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-enospc-after", type=int)
    parser.add_argument("--results-enospc-at", type=int)
    parser.add_argument("--sigkill-at-entry", type=int)
    parser.add_argument("--sigkill-inside", action="store_true")
    parser.add_argument("--entry-log")
    options = parser.parse_args(argv[:split])
    from xferbench import pack_store
    from xferbench.cli import main as xferbench

    pack_store.os = _OsProxy(options)  # type: ignore[assignment]
    if options.results_enospc_at is not None:
        _fail_results_write(options.results_enospc_at)
    return xferbench(argv[split + 1:])


if __name__ == "__main__":
    raise SystemExit(main())
