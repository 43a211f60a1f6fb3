"""Atomic file replacement: readers see the old file or the new one, never a mix of both."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from xferbench.errors import UserError

# Keeps the temp file name within NAME_MAX (255) while preserving the target's extension.
_MAX_SUFFIX = 200


#: errors that mean "this disk or folder cannot take the write", not a bug
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


class DiskWriteError(UserError, OSError):
    """A file could not be written (disk full, read-only, no permission): one line naming the folder and a remedy.

    It is an OSError too, with the original errno, so code that catches OSError still does.
    """

    def __init__(self, message: str, cause: OSError) -> None:
        OSError.__init__(self, cause.errno, cause.strerror, cause.filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def free_space(path: str | os.PathLike[str]) -> str:
    """Free space of the disk holding ``path`` (or its nearest existing parent), e.g. ``"12.0 KiB"``."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    raise AssertionError


def is_write_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or folder refused a write (full, read-only, no permission)."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def _is_write_error_here(exc: BaseException, target: Path, tmp: Path) -> bool:
    """A write error on the temp file or in its folder (not, say, on a file the caller was reading)."""
    if not is_write_error(exc) or isinstance(exc, DiskWriteError):
        return False
    filename = getattr(exc, "filename", None)
    return filename is None or Path(filename) in (tmp, target) or Path(filename).parent == target.parent


def write_error(exc: OSError, target: str | os.PathLike[str] | None = None) -> DiskWriteError:
    """``exc`` as a one-line :class:`DiskWriteError`: what could not be written, why, and what to do."""
    if isinstance(exc, DiskWriteError):
        return exc
    path = Path(target if target is not None else (exc.filename or "."))
    folder = path.parent if target is not None or not path.is_dir() else path
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = f"{reason} ({free_space(folder)} free in {folder}); free some space there or write elsewhere"
    else:
        what = f"{reason}; {folder} is not writable: use a folder you can write"
    return DiskWriteError(f"cannot write {path}: {what} (the cache: --cache-dir DIR or XFERBENCH_CACHE_DIR; "
                          f"the results: --output FILE)", exc)


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Fallback: os.umask can only be read by setting it, so put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where the OS does not allow it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success fsync it and ``os.replace`` it into place.

    On any exception the temp file is removed and ``path`` is left untouched.
    The temp name ends with ``path``'s name, so suffix-based checks still work on it.
    Missing parent directories are created.
    A full disk, a read-only folder or a missing permission raises :class:`DiskWriteError`.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix="-" + target.name[-_MAX_SUFFIX:])
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(exc, target) from exc
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        # mkstemp creates 0600; give the final file the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if _is_write_error_here(exc, target, tmp):
            raise write_error(exc, target) from exc  # type: ignore[arg-type]
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
