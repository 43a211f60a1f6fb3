"""Fetch artifacts into the cache: resumable, checksummed, and pinned in a manifest.

Layout under ``cache_dir``::

    manifest.json              {"artifacts": {name: {"sha256", "size", "source", "pinned"}}}
    downloads/<name>           verified artifacts
    downloads/<name>.part      an interrupted download, resumed with an HTTP Range request
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from xferbench.atomic import atomic_path, atomic_write_text, fsync_dir
from xferbench.errors import UserError

__all__ = [
    "MIRROR_ENV",
    "Artifact",
    "ChecksumMismatch",
    "DownloadError",
    "Manifest",
    "fetch",
    "import_file",
    "mirror_urls",
    "sha256_file",
]

MIRROR_ENV = "XFERBENCH_MIRROR"
MANIFEST_NAME = "manifest.json"
DOWNLOADS_DIR = "downloads"

_CHUNK = 1 << 16
_USER_AGENT = "xferbench (python urllib)"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

Verify = Callable[[Path], None]


@dataclass(frozen=True)
class Artifact:
    """A file xferbench can download: ``urls`` holds the canonical URL first, then built-in mirrors."""

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None
    #: the name ``xferbench fetch NAME --from FILE`` imports this file under (a backbone or dataset)
    component: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name in (".", "..") or "/" in self.name or "\\" in self.name or "\0" in self.name:
            raise ValueError(f"artifact name must be a plain file name, got {self.name!r}")


class DownloadError(UserError):
    """A download failed; the message says what to do about it."""


class ChecksumMismatch(DownloadError):
    """A file's sha256 differs from the known or pinned digest."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file."""
    return _hash_prefix(Path(path)).hexdigest()


def mirror_urls(artifact: Artifact) -> list[str]:
    """URLs to try in order: ``$XFERBENCH_MIRROR`` prefixes (',' or whitespace separated), then ``artifact.urls``."""
    prefixes = [p for p in re.split(r"[,\s]+", os.environ.get(MIRROR_ENV, "")) if p]
    urls = [p.rstrip("/") + "/" + artifact.name for p in prefixes] + list(artifact.urls)
    return list(dict.fromkeys(urls))


# --------------------------------------------------------------------------- manifest


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock; it also serialises threads, since each ``open`` is its own lock owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the download manifest {path}: {exc}") from exc
    fix = "delete it and xferbench will re-pin the cached files on the next fetch"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the download manifest {path} is corrupt ({exc.msg} at line {exc.lineno}); {fix}") from exc
    artifacts = data.get("artifacts") if isinstance(data, dict) else None
    if not isinstance(artifacts, dict) or not all(isinstance(v, dict) for v in artifacts.values()):
        raise UserError(f'the download manifest {path} is corrupt (expected {{"artifacts": {{name: {{...}}}}}}); {fix}')
    return artifacts


class Manifest:
    """``cache_dir/manifest.json``: the sha256 pinned for each artifact on its first verified download.

    ``Manifest(cache_dir)`` reads the file (a missing file is an empty manifest, a corrupt one a
    :class:`UserError`). Changes made with :meth:`set`/:meth:`forget` are merged into the file's
    current contents by :meth:`save`, under a lock, so concurrent writers keep each other's entries.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.path = Path(cache_dir) / MANIFEST_NAME
        self.artifacts: dict[str, dict[str, Any]] = {}
        self._changes: dict[str, dict[str, Any] | None] = {}
        self.load()

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def load(self) -> Manifest:
        """Re-read the file, keeping unsaved changes on top."""
        self.artifacts = self._apply(_read_manifest(self.path))
        return self

    def get(self, name: str) -> dict[str, Any] | None:
        """The entry for ``name``, or None."""
        return self.artifacts.get(name)

    def sha256(self, name: str) -> str | None:
        """The pinned digest for ``name``, or None."""
        entry = self.artifacts.get(name)
        value = entry.get("sha256") if entry else None
        return value.lower() if isinstance(value, str) else None

    def set(self, name: str, entry: dict[str, Any]) -> None:
        """Set an entry in memory; :meth:`save` writes it."""
        self.artifacts[name] = dict(entry)
        self._changes[name] = dict(entry)

    def forget(self, name: str) -> None:
        """Drop an entry in memory; :meth:`save` writes it."""
        self.artifacts.pop(name, None)
        self._changes[name] = None

    def save(self) -> None:
        """Merge unsaved changes into the file on disk, atomically and under a lock."""
        with _file_lock(self._lock_path):
            merged = self._apply(_read_manifest(self.path))
            atomic_write_text(self.path, json.dumps({"artifacts": merged}, indent=2, sort_keys=True) + "\n")
        self.artifacts = merged
        self._changes.clear()

    def pin(self, name: str, *, sha256: str, size: int, source: str) -> None:
        """Record ``name``'s verified digest and save."""
        pinned = datetime.now(UTC).isoformat(timespec="seconds")
        self.set(name, {"sha256": sha256.lower(), "size": size, "source": source, "pinned": pinned})
        self.save()

    def _apply(self, base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        merged = dict(base)
        for name, entry in self._changes.items():
            if entry is None:
                merged.pop(name, None)
            else:
                merged[name] = entry
        return merged


# --------------------------------------------------------------------------- helpers


def _normalise_digest(value: str, what: str) -> str:
    digest = value.strip().lower()
    if not _SHA256_RE.fullmatch(digest):
        raise UserError(f"{what} is not a sha256 hex digest (64 hex characters): {value!r}")
    return digest


def _wanted_digest(artifact: Artifact, expected: str | None, manifest: Manifest) -> tuple[str | None, str]:
    """The digest to check against and where it comes from: expected > built-in > manifest pin."""
    if expected:
        return _normalise_digest(expected, "the expected sha256"), "the expected digest"
    if artifact.sha256:
        digest = _normalise_digest(artifact.sha256, f"the built-in sha256 of {artifact.name}")
        return digest, "xferbench's built-in digest"
    pinned = manifest.sha256(artifact.name)
    if pinned:
        return pinned, f"the digest pinned in {manifest.path}"
    return None, ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _run_verify(verify: Verify | None, path: Path) -> None:
    if verify is None:
        return
    try:
        verify(path)
    except BaseException:
        # An unverified file must not stay where the next fetch would trust it.
        path.unlink(missing_ok=True)
        raise


def _check_size(artifact: Artifact, size: int, what: str) -> None:
    if artifact.size is not None and size != artifact.size:
        raise DownloadError(f"{what} is {size} bytes but {artifact.name} should be {artifact.size} bytes; "
                            f"{_import_hint(artifact)}")


def _import_hint(artifact: Artifact) -> str:
    """What to do when the file cannot be had from the network: the exact import command."""
    command = f"xferbench fetch {artifact.component or '<backbone or dataset>'} --from {artifact.name}"
    return (f"import a local copy with `{command}`, "
            f"or set {MIRROR_ENV} to a mirror URL prefix that serves {artifact.name}")


def _delete_target_hint(target: Path, artifact: Artifact) -> str:
    command = f"xferbench fetch {artifact.component or '<backbone or dataset>'} --from FILE"
    return f"delete {target} and fetch again, or import a known-good copy with `{command}`"


# --------------------------------------------------------------------------- download


class _OpenFailed(Exception):
    """This URL gave no usable response; try the next one."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(_describe(cause))
        self.cause = cause


class _Interrupted(Exception):
    """The response stopped early; the .part file holds what arrived."""

    def __init__(self, received: int, total: int | None, reason: str) -> None:
        super().__init__(reason)
        self.received = received
        self.total = total
        self.reason = reason


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, completed: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from a Content-Range header; None where absent or ``*``."""
    match = _CONTENT_RANGE_RE.fullmatch((value or "").strip())
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _hash_prefix(part: Path) -> Any:
    digest = hashlib.sha256()
    with open(part, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest


def _stream(resp: Any, part: Path, offset: int, total: int | None, label: str, progress: bool) -> tuple[str, int]:
    """Append the body to ``part`` (from ``offset``), hashing as it goes; returns (sha256, size)."""
    digest = _hash_prefix(part) if offset else hashlib.sha256()
    received = offset
    failure: BaseException | None = None
    try:
        with open(part, "ab" if offset else "wb") as out, _progress_bar(label, total, offset, progress) as advance:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # includes socket timeouts and resets
                    failure = exc
                    break
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc
    if failure is not None:
        raise _Interrupted(received, total, _describe(failure))
    if total is not None and received < total:
        raise _Interrupted(received, total, "the connection closed early")
    return digest.hexdigest(), received


def _download(url: str, part: Path, artifact: Artifact, timeout: float, progress: bool) -> tuple[str, int]:
    """Download ``url`` into ``part``, resuming it if present; returns (sha256, size)."""
    # Two rounds: a resume the server cannot honour (416 on a bad .part, odd 206) restarts once from zero.
    for _ in range(2):
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            resp = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 416 and offset:
                    _, total = _parse_content_range(exc.headers.get("Content-Range"))
                    if total == offset:
                        return _hash_prefix(part).hexdigest(), offset
                    part.unlink()
                    continue
            raise _OpenFailed(exc) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise _OpenFailed(exc) from exc
        with resp:
            status = resp.status or 200  # non-HTTP schemes (file://) report no status
            length = resp.headers.get("Content-Length")
            length_int = int(length) if length and length.isdigit() else None
            if status == 206 and offset:
                start, total = _parse_content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()
                    continue
                if total is None and length_int is not None:
                    total = offset + length_int
            else:
                # The server ignored the Range header (or none was sent): start over.
                offset = 0
                total = length_int
            if total is None:
                total = artifact.size
            return _stream(resp, part, offset, total, artifact.name, progress)
    raise _OpenFailed(DownloadError("the server answered the resume request inconsistently twice"))


def _accept_cached(
    artifact: Artifact, target: Path, manifest: Manifest, want: str | None, origin: str, verify: Verify | None
) -> bool:
    """Check a file already in the cache; True to use it, False to download afresh."""
    got = sha256_file(target)
    if want is not None:
        if got != want:
            raise ChecksumMismatch(
                f"cached {artifact.name} has sha256 {got} but {origin} is {want}; "
                f"{_delete_target_hint(target, artifact)}"
            )
        if manifest.sha256(artifact.name) == got:
            return True
    else:
        # Not pinned: a run that died between moving the file into place and pinning it.
        try:
            _run_verify(verify, target)
        except UserError:
            return False
    previous = manifest.get(artifact.name) or {}
    manifest.pin(artifact.name, sha256=got, size=target.stat().st_size, source=str(previous.get("source", target)))
    return True


def fetch(
    artifact: Artifact,
    cache_dir: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    verify: Verify | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Return ``cache_dir/downloads/<artifact.name>``, downloading, checking and pinning it if needed.

    A cached file is checked against the known digest (``expected_sha256`` > ``artifact.sha256`` >
    the manifest pin) without touching the network. Otherwise the URLs from :func:`mirror_urls` are
    tried in order; an interrupted download leaves ``<name>.part`` for the next call to resume.
    After a download the digest is checked, then ``verify(path)`` runs, and only then is it pinned.
    """
    downloads = Path(cache_dir) / DOWNLOADS_DIR
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / artifact.name
    part = downloads / (artifact.name + ".part")
    # Serialises fetches of the same artifact across processes, so two never append to one .part.
    with _file_lock(downloads / f".{artifact.name}.lock"):
        manifest = Manifest(cache_dir)
        want, origin = _wanted_digest(artifact, expected_sha256, manifest)
        if target.is_file() and _accept_cached(artifact, target, manifest, want, origin, verify):
            return target

        urls = mirror_urls(artifact)
        if not urls:
            raise DownloadError(f"no download URL is known for {artifact.name}; {_import_hint(artifact)}")
        last: tuple[str, str] | None = None
        for url in urls:
            try:
                got, size = _download(url, part, artifact, timeout, progress)
            except _OpenFailed as exc:
                last = (url, str(exc))
                continue
            except _Interrupted as exc:
                of = f" of {exc.total}" if exc.total is not None else ""
                raise DownloadError(
                    f"download of {artifact.name} from {url} was interrupted after {exc.received}{of} bytes "
                    f"({exc.reason}); the partial file {part} is kept - rerun the same command to resume"
                ) from None
            break
        else:
            assert last is not None
            raise DownloadError(
                f"could not download {artifact.name}: all {len(urls)} URL(s) failed, the last one "
                f"({last[0]}) with: {last[1]}. Download it yourself and {_import_hint(artifact)}"
            )

        try:
            _check_size(artifact, size, f"the file downloaded from {url}")
            if want is not None and got != want:
                raise ChecksumMismatch(
                    f"{artifact.name} downloaded from {url} has sha256 {got} but {origin} is {want}; "
                    f"the bad download was deleted - if the file changed upstream, {_import_hint(artifact)}"
                )
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        fsync_dir(downloads)
        _run_verify(verify, target)
        manifest.pin(artifact.name, sha256=got, size=size, source=url)
        return target


def import_file(
    artifact: Artifact,
    src: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    verify: Verify | None = None,
) -> Path:
    """Copy a user-supplied file into ``cache_dir/downloads/<artifact.name>`` with fetch's checks, and pin it.

    The copy is checked and verified before it replaces anything, so a bad import leaves the cache as it was.
    """
    source = Path(src).expanduser()
    if not source.is_file():
        raise UserError(f"cannot import {artifact.name}: {source} does not exist or is not a regular file")
    downloads = Path(cache_dir) / DOWNLOADS_DIR
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / artifact.name
    with _file_lock(downloads / f".{artifact.name}.lock"):
        manifest = Manifest(cache_dir)
        want, origin = _wanted_digest(artifact, expected_sha256, manifest)
        with atomic_path(target) as tmp:
            digest = hashlib.sha256()
            size = 0
            try:
                with open(source, "rb") as fin, open(tmp, "wb") as fout:
                    while chunk := fin.read(1 << 20):
                        fout.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except OSError as exc:
                raise UserError(f"cannot import {source} as {artifact.name}: {exc.strerror or exc}") from exc
            got = digest.hexdigest()
            _check_size(artifact, size, str(source))
            if want is not None and got != want:
                unpin = ""
                if want == manifest.sha256(artifact.name) and not (expected_sha256 or artifact.sha256):
                    unpin = f"; if this file is the one you want, remove its entry from {manifest.path}"
                raise ChecksumMismatch(
                    f"{source} has sha256 {got} but {origin} for {artifact.name} is {want}; nothing was imported{unpin}"
                )
            try:
                _run_verify(verify, tmp)
            except UserError as exc:  # it checked our temporary copy: name the file the user gave
                raise type(exc)(str(exc).replace(str(tmp), str(source))
                                .replace("delete it and fetch again", "check that it is the right file")) from None
        manifest.pin(artifact.name, sha256=got, size=size, source=str(source.resolve()))
        return target
