"""Reading MNIST's IDX files (gzip-wrapped or not) with every structural check.

IDX: a big-endian int32 magic (0x00000803 images, 0x00000801 labels: two zero bytes, the
type code 0x08 = unsigned byte, the number of dimensions), one big-endian int32 per
dimension, then the data in row-major order. See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xferbench.errors import UserError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SIDE = 28


class IdxError(UserError):
    """An IDX file that is truncated, corrupt or not what its name says."""


@dataclass(frozen=True)
class IdxFile:
    """A parsed IDX file: ``data`` is read-only uint8; ``content_md5`` is of the unpacked bytes."""

    path: Path
    data: np.ndarray
    content_md5: str
    file_md5: str


def _fail(path: Path, problem: str) -> IdxError:
    return IdxError(f"{path}: {problem}; delete it and download it again (or point --data-dir at good copies)")


def read_idx(path: Path, kind: str) -> IdxFile:
    """Parse ``path`` as ``kind`` ``"images"`` (N x 28 x 28) or ``"labels"`` (N, values 0-9)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IdxError(f"cannot read {path}: {exc.strerror or exc}") from None
    file_md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if raw[:2] == b"\x1f\x8b":
        try:
            content = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise _fail(path, f"broken gzip data ({exc or 'truncated'})") from None
    else:
        content = raw
    magic_wanted, ndim = (IMAGES_MAGIC, 3) if kind == "images" else (LABELS_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(content) < header:
        raise _fail(path, f"only {len(content)} bytes, shorter than an IDX header")
    magic = struct.unpack(">i", content[:4])[0]
    if magic != magic_wanted:
        raise _fail(path, f"magic number {magic}, expected {magic_wanted} for MNIST {kind}")
    dims = struct.unpack(f">{ndim}i", content[4:header])
    if kind == "images" and tuple(dims[1:]) != (SIDE, SIDE):
        raise _fail(path, f"images are {dims[1]}x{dims[2]}, expected {SIDE}x{SIDE}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if any(d < 0 for d in dims) or len(content) != expected:
        what = "truncated" if len(content) < expected else "longer than its header says"
        raise _fail(path, f"{what}: {len(content)} bytes for dimensions {'x'.join(map(str, dims))} "
                          f"({expected} expected)")
    data = np.frombuffer(content, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and data.size and int(data.max()) > 9:
        raise _fail(path, f"label {int(data.max())} is not a digit 0-9")
    return IdxFile(path=path, data=data, content_md5=hashlib.md5(content, usedforsecurity=False).hexdigest(),
                   file_md5=file_md5)
