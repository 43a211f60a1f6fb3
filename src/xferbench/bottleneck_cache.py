"""Content-addressed on-disk cache of bottleneck vectors.

An entry's address is the sha256 of the image bytes, inside a namespace made of the
backbone id, its weights' sha256 and its preprocessing version. Each entry is a
small binary file (magic, width, float32 values, blake2b of the values): no pickle,
a torn or corrupt entry is detected and recomputed, and writes are atomic, so two
runs sharing one cache can only ever write the same bytes to the same name.

A cache that cannot take a write (a full disk, a read-only folder) still serves what it
holds: ``put`` counts the failure, stops writing for the rest of the run and leaves no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from xferbench.data import ImageData

_MAGIC = b"XFBN\x01"
_HEADER = struct.Struct("<5sI")
_DIGEST = 16


def image_digest(image: ImageData) -> str:
    """sha256 of the encoded file, or of the pixels with their shape and dtype."""
    if isinstance(image, bytes | bytearray | memoryview):
        return hashlib.sha256(image).hexdigest()
    array = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


class BottleneckCache:
    """Vectors of one backbone namespace, stored under ``root``."""

    def __init__(self, root: Path, namespace: str, dim: int) -> None:
        self.root = Path(root)
        self.namespace = namespace
        self.dim = dim
        self.folder = Path(root) / hashlib.sha256(namespace.encode()).hexdigest()[:24]
        self.corrupt_entries = 0
        #: entries that could not be stored (disk full, read-only, ...); after the first, none is tried
        self.write_errors = 0
        #: the first write failure, or None
        self.write_error: OSError | None = None

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.bn"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached vector, or None when absent or corrupt (then it gets recomputed)."""
        try:
            blob = self._path(digest).read_bytes()
        except FileNotFoundError:
            return None
        expected = _HEADER.size + 4 * self.dim + _DIGEST
        if len(blob) != expected or blob[:5] != _MAGIC:
            self.corrupt_entries += 1
            return None
        (_, dim) = _HEADER.unpack_from(blob)
        payload = blob[_HEADER.size:-_DIGEST]
        if dim != self.dim or hashlib.blake2b(payload, digest_size=_DIGEST).digest() != blob[-_DIGEST:]:
            self.corrupt_entries += 1
            return None
        return np.frombuffer(payload, dtype="<f4").copy()

    def put(self, digest: str, vector: np.ndarray) -> bool:
        """Store ``vector``; False when the cache cannot take it (counted in ``write_errors``)."""
        if self.write_error is not None:
            self.write_errors += 1
            return False
        try:
            self._write(digest, vector)
        except OSError as exc:
            self.write_error = exc
            self.write_errors += 1
            return False
        return True

    def _write(self, digest: str, vector: np.ndarray) -> None:
        payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        if len(payload) != 4 * self.dim:
            raise ValueError(f"vector of width {len(payload) // 4}, cache expects {self.dim}")
        blob = _HEADER.pack(_MAGIC, self.dim) + payload + hashlib.blake2b(payload, digest_size=_DIGEST).digest()
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        # No fsync per entry (thousands of tiny files): a torn entry fails its digest and is recomputed.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".bn")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


_warned_roots: set[str] = set()


def write_failure_warning(cache: BottleneckCache) -> str | None:
    """The one warning about ``cache.root`` not taking writes, the first time per root in this process."""
    exc = cache.write_error
    key = str(cache.root.resolve())
    if exc is None or key in _warned_roots:
        return None
    _warned_roots.add(key)
    from xferbench.atomic import free_space

    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        state = f"is full ({reason}; {free_space(cache.root)} free)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        state = f"is read-only ({reason})"
    else:
        state = f"cannot be written ({reason})"
    return (f"warning: the bottleneck cache {cache.root} {state}: cached vectors are used, new ones are "
            f"computed but not stored; point --cache-dir (or XFERBENCH_CACHE_DIR) at a folder with room "
            f"to keep them")
