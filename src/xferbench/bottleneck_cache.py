"""Content-addressed on-disk cache of bottleneck vectors.

An entry's address is the sha256 of the image bytes, inside a namespace made of the
backbone id, its weights' sha256 and its preprocessing version. Entries live in
append-only pack files with an index (:mod:`xferbench.pack_store`): no pickle, one
file per writer rather than per image, a torn or corrupt record is detected and
recomputed, and writers never share a file, so runs (and nodes) can share one cache.
Caches written before packs (one small ``.bn`` file per entry) are still read.

A cache that cannot take a write (a full disk, a read-only folder) still serves what it
holds: ``put`` counts the failure, stops writing for the rest of the run and leaves no
temporary file behind.
"""

from __future__ import annotations

import errno
import hashlib
import struct
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
    """Vectors of one backbone namespace, stored under ``root`` in pack files (see :mod:`xferbench.pack_store`).

    Entries of the old layout (one ``<xx>/<sha256>.bn`` file each) are still read; ``xferbench cache
    migrate`` moves them into a pack. Use as a context manager, or call :meth:`close`: closing writes
    the pack's index (else readers scan the pack) and the log of old entries used (for prune).
    """

    def __init__(self, root: Path, namespace: str, dim: int) -> None:
        from xferbench.pack_store import PackStore

        self.root = Path(root)
        self.namespace = namespace
        self.dim = dim
        self.folder = Path(root) / namespace_folder(namespace)
        self.corrupt_entries = 0
        #: entries that could not be stored (disk full, read-only, ...); after the first, none is tried
        self.write_errors = 0
        #: the first write failure, or None
        self.write_error: OSError | None = None
        self.store = PackStore(self.folder)
        self._legacy = _has_legacy_entries(self.folder)

    def __enter__(self) -> BottleneckCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.bn"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached vector, or None when absent or corrupt (then it gets recomputed)."""
        vector, damaged = self.store.get(bytes.fromhex(digest), self.dim)
        if vector is None and self._legacy:
            vector, legacy_damaged = self._get_legacy(digest)
            damaged = damaged or legacy_damaged
        if vector is None and damaged:
            self.corrupt_entries += 1
        return vector

    def get_many(self, digests: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors [n, dim] float32, found [n] bool)``: :meth:`get` for many entries, read together."""
        vectors, found, corrupt = self.store.get_many([bytes.fromhex(d) for d in digests], self.dim)
        if self._legacy:
            for i in np.flatnonzero(~found):
                vector, damaged = self._get_legacy(digests[i])
                if vector is not None:
                    vectors[i], found[i] = vector, True
                corrupt += damaged
        self.corrupt_entries += corrupt
        return vectors, found

    def _get_legacy(self, digest: str) -> tuple[np.ndarray | None, bool]:
        try:
            blob = self._path(digest).read_bytes()
        except FileNotFoundError:
            return None, False
        vector = decode_legacy_entry(blob)
        if vector is None or len(vector) != self.dim:
            return None, True
        return vector, False

    def put(self, digest: str, vector: np.ndarray) -> bool:
        """Store ``vector``; False when the cache cannot take it (counted in ``write_errors``).

        An entry already in the packs this cache read when it was opened (or in its own) is not
        written again: a retried extraction shard skips what its killed predecessor had written.
        """
        payload = np.ascontiguousarray(vector, dtype="<f4")
        if payload.size != self.dim:
            raise ValueError(f"vector of width {payload.size}, cache expects {self.dim}")
        key = bytes.fromhex(digest)
        if self.store.contains(key, self.dim):
            return True
        if self.write_error is not None:
            self.write_errors += 1
            return False
        try:
            self.store.append(key, payload)
        except OSError as exc:
            self.write_error = exc
            self.write_errors += 1
            return False
        return True


def namespace_folder(namespace: str) -> str:
    """The folder name of a namespace: the first 24 hex digits of its sha256 (as in every version)."""
    return hashlib.sha256(namespace.encode()).hexdigest()[:24]


def _has_legacy_entries(folder: Path) -> bool:
    """Whether ``folder`` holds entries of the one-file-per-vector layout (two-hex-digit subfolders)."""
    try:
        return any(len(p.name) == 2 and p.is_dir() for p in folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def decode_legacy_entry(blob: bytes) -> np.ndarray | None:
    """The vector of an old-layout ``.bn`` entry (magic, width, float32 values, blake2b), or None if damaged."""
    if len(blob) < _HEADER.size + _DIGEST or blob[:5] != _MAGIC:
        return None
    (_, dim) = _HEADER.unpack_from(blob)
    if len(blob) != _HEADER.size + 4 * dim + _DIGEST:
        return None
    payload = blob[_HEADER.size:-_DIGEST]
    if hashlib.blake2b(payload, digest_size=_DIGEST).digest() != blob[-_DIGEST:]:
        return None
    return np.frombuffer(payload, dtype="<f4").copy()


def encode_legacy_entry(vector: np.ndarray) -> bytes:
    """An old-layout ``.bn`` entry (what caches written before the pack store hold)."""
    payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return _HEADER.pack(_MAGIC, len(payload) // 4) + payload + hashlib.blake2b(payload, digest_size=_DIGEST).digest()


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
