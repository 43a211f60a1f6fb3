"""Extract .zip/.tar/.tgz archives without letting any member write outside the destination.

Every member is checked before anything is written. Extraction goes into a temp dir next to the
destination, a ``.complete`` marker is written last, and the temp dir is renamed into place, so a
crash never leaves a half-extracted destination.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xferbench.atomic import fsync_dir
from xferbench.errors import UserError

__all__ = ["COMPLETE_MARKER", "UnsafeArchive", "check_archive", "safe_extract"]

COMPLETE_MARKER = ".complete"

_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_MAX_LINK_HOPS = 40  # as Linux's path resolution
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, ValueError)
_FILTER_ERRORS = getattr(tarfile, "FilterError", ())  # Python 3.11.4+


class UnsafeArchive(UserError):
    """An archive member would land outside the destination, or is a device or other special file."""


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str = ""


class _Unsafe(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def _archive_format(archive: Path) -> str:
    lower = archive.name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    try:
        if zipfile.is_zipfile(archive):
            return "zip"
        if tarfile.is_tarfile(archive):
            return "tar"
    except OSError:
        pass
    raise UserError(f"{archive} is not a .zip, .tar or .tar.gz/.tgz archive")


def _list_members(archive: Path, fmt: str) -> list[_Member]:
    members: list[_Member] = []
    if fmt == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                # Unix mode bits are only meaningful when the zip was made on Unix.
                mode = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
                if info.is_dir():
                    members.append(_Member(info.filename, "dir"))
                elif mode == stat.S_IFLNK:
                    target = zf.read(info).decode("utf-8", "surrogateescape")
                    members.append(_Member(info.filename, "symlink", target))
                elif mode in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
                    members.append(_Member(info.filename, "special"))
                else:
                    members.append(_Member(info.filename, "file"))
        return members
    with tarfile.open(archive, "r:*") as tf:
        for info in tf.getmembers():
            if info.isdir():
                kind = "dir"
            elif info.issym():
                kind = "symlink"
            elif info.islnk():
                kind = "hardlink"
            elif info.isdev():
                kind = "special"
            else:
                kind = "file"  # tarfile writes unknown types as regular files
            members.append(_Member(info.name, kind, info.linkname if info.issym() or info.islnk() else ""))
    return members


def _split(path: str, member: str, what: str) -> tuple[str, ...]:
    """The components of an archive-relative ``path``; ``member`` and ``what`` name it in errors."""
    if "\0" in path:
        raise _Unsafe(member, f"has a NUL byte in its {what}")
    if path.startswith("/"):
        raise _Unsafe(member, f"has an absolute {what} {path!r}")
    raw = path.split("/")
    if ".." in raw:
        raise _Unsafe(member, f"has a '..' component in its {what} {path!r}")
    return tuple(p for p in raw if p not in ("", "."))


class _Tree:
    """The destination as the members build it: only the symlinks matter for where writes land."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, ...], str] = {}

    def resolve(self, parts: Sequence[str]) -> tuple[str, ...] | None:
        """Resolve a path relative to the destination as realpath would; None if it leaves it or loops."""
        todo = list(parts)
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    return None
                done.pop()
                continue
            done.append(part)
            target = self.links.get(tuple(done))
            if target is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS or target.startswith("/"):
                    return None
                done.pop()
                todo = target.split("/") + todo
        return tuple(done)


def _validate(members: list[_Member]) -> None:
    """Raise _Unsafe for the first member that could write or point outside the destination."""
    tree = _Tree()
    for member in members:
        if member.kind == "special":
            raise _Unsafe(member.name, "is a device or other special file")
        parts = _split(member.name, member.name, "name")
        if not parts:
            if member.kind == "dir":
                continue  # "./" itself
            raise _Unsafe(member.name, "has an empty name")
        parent = tree.resolve(parts[:-1])
        if parent is None:
            raise _Unsafe(member.name, "would be written outside the destination through a symlink")
        here = (*parent, parts[-1])
        if member.kind == "symlink":
            if not member.link:
                raise _Unsafe(member.name, "is a symlink with an empty target")
            if member.link.startswith("/"):
                raise _Unsafe(member.name, f"is a symlink to the absolute path {member.link!r}")
            if tree.resolve((*parent, *member.link.split("/"))) is None:
                raise _Unsafe(member.name, f"is a symlink to {member.link!r}, outside the destination")
            tree.links[here] = member.link
        elif member.kind == "hardlink":
            if tree.resolve(_split(member.link, member.name, "hard link target")) is None:
                raise _Unsafe(member.name, f"is a hard link to {member.link!r}, outside the destination")
        elif tree.resolve(here) is None:
            raise _Unsafe(member.name, "would be written outside the destination through a symlink")
    # A later link can redirect an earlier one, so check every link again against the final tree.
    for here, target in tree.links.items():
        if tree.resolve((*here[:-1], *target.split("/"))) is None:
            raise _Unsafe("/".join(here), f"is a symlink to {target!r}, which ends up outside the destination")


def _extract(archive: Path, fmt: str, into: Path) -> None:
    if fmt == "zip":
        # zipfile writes symlink entries as small regular files, so nothing here can follow a link.
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
        return
    with tarfile.open(archive, "r:*") as tf:
        if hasattr(tarfile, "data_filter"):
            # A second line of defence, checked against the real file system while extracting.
            tf.extractall(into, filter="data")
        else:  # Python < 3.11.4; the up-front validation already covers these cases
            tf.extractall(into)


def _listing(dest: Path) -> list[Path]:
    marker = dest / COMPLETE_MARKER
    found: list[Path] = []
    for root, dirs, files in os.walk(dest):
        found.extend(Path(root) / name for name in (*dirs, *files))
    return sorted(p for p in found if p != marker)


def check_archive(archive: str | os.PathLike[str], action: str = "extract", fmt: str | None = None) -> None:
    """Raise :class:`UnsafeArchive` if any member of ``archive`` could land or point outside a destination.

    For readers that take one member in memory: a hostile member is still a sign that the file is
    not what it claims to be. ``action`` names what is refused in the message; ``fmt`` (``"zip"``
    or ``"tar"``) overrides detection by file name.
    """
    archive = Path(archive)
    fmt = fmt or _archive_format(archive)
    try:
        _validate(_list_members(archive, fmt))
    except _Unsafe as exc:
        raise UnsafeArchive(f"refusing to {action} {archive}: member {exc.name!r} {exc.reason}") from None
    except _READ_ERRORS as exc:
        raise UserError(f"cannot read archive {archive} ({exc}); delete it and fetch it again") from exc


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract ``archive`` (.zip, .tar, .tgz/.tar.gz) into ``dest``; return the paths extracted, sorted.

    Raises :class:`UnsafeArchive` (writing nothing) for absolute names, ``..`` components, symlinks
    or hard links that point outside ``dest``, and device files. If ``dest`` already holds a
    completed extraction (its ``.complete`` marker) it returns at once without reading the archive.
    """
    archive = Path(archive)
    dest = Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return _listing(dest)
    if not archive.is_file():
        raise UserError(f"archive not found: {archive}")
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise UserError(f"{dest} exists but holds no completed extraction ({COMPLETE_MARKER} is missing); delete it")

    fmt = _archive_format(archive)
    try:
        check_archive(archive, fmt=fmt)
    except UnsafeArchive as exc:
        raise UnsafeArchive(f"{exc}; nothing was extracted") from None

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    try:
        try:
            _extract(archive, fmt, tmp)
        except _FILTER_ERRORS as exc:
            name = exc.tarinfo.name if getattr(exc, "tarinfo", None) is not None else "?"
            raise UnsafeArchive(
                f"refusing to extract {archive}: member {name!r}: {exc}; nothing was extracted"
            ) from exc
        except _READ_ERRORS as exc:
            raise UserError(f"cannot extract archive {archive} ({exc}); delete it and fetch it again") from exc
        (tmp / COMPLETE_MARKER).write_text(archive.name + "\n", encoding="utf-8")
        try:
            # Succeeds when dest is missing or an empty dir; fails if a concurrent extraction got there first.
            os.rename(tmp, dest)
        except OSError:
            if not (dest / COMPLETE_MARKER).is_file():
                raise UserError(f"cannot move the extracted files into {dest}; delete it and retry") from None
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _listing(dest)
