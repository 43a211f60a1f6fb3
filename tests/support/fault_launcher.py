"""Run ``xferbench ARGS`` with a fault injected at a known write, as a child process.

    python fault_launcher.py [--cache-enospc-after N] [--results-enospc-at N]
                             [--sigkill-at-entry N [--sigkill-inside]] [--entry-log FILE] -- ARGS...

``--cache-enospc-after N``: the bottleneck cache's writes fail with ENOSPC after N entries, half
way through writing the temp file (the disk filled up). ``--results-enospc-at N``: from the N-th
write of the results file on (1 = the first), each fails with ENOSPC half way through its temp file.
``--sigkill-at-entry N``: the process SIGKILLs itself right after storing its N-th cache entry, or
with ``--sigkill-inside`` after writing that entry's temp file but before renaming it.
``--entry-log``: every stored entry's path is appended there (to count entries lost to a kill).
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
    """The ``os`` module as one module sees it, with ``fdopen`` and ``replace`` wrapped."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.stored = 0
        self.log = open(options.entry_log, "a", encoding="utf-8") if options.entry_log else None  # noqa: SIM115

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = os.fdopen(fd, *args, **kwargs)
        limit = self.options.cache_enospc_after
        if limit is not None and self.stored >= limit:
            return _FillingFile(fh)
        return fh

    def replace(self, src: Any, dst: Any) -> None:
        kill_at = self.options.sigkill_at_entry
        if kill_at is not None and self.stored + 1 == kill_at and self.options.sigkill_inside:
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(src, dst)
        self.stored += 1
        if self.log is not None:
            self.log.write(f"{dst}\n")
            self.log.flush()
        if kill_at is not None and self.stored == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


class _FillingFile:
    """A file on a disk that fills up: half of the first write lands, then ENOSPC."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fh.close()


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
    from xferbench import bottleneck_cache
    from xferbench.cli import main as xferbench

    bottleneck_cache.os = _OsProxy(options)  # type: ignore[assignment]
    if options.results_enospc_at is not None:
        _fail_results_write(options.results_enospc_at)
    return xferbench(argv[split + 1:])


if __name__ == "__main__":
    raise SystemExit(main())
