"""Checking image files before they reach a backbone: is it there, readable, an image, whole?

:func:`check_image` answers ``None`` for a good file or one reason out of :data:`REASONS`.
:func:`check_images` runs it over many files in a thread pool and remembers the answers in a
JSON cache keyed by ``(path, size, mtime_ns)``, so scanning the same folder again is instant.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xferbench.atomic import atomic_write_text

#: Pillow's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``).
DEFAULT_MAX_PIXELS = 89_478_485

#: File name extensions (lower case, no dot) that are looked at as images.
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "bmp"})

ZERO_BYTE = "zero_byte"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
UNREADABLE = "unreadable"
SYMLINK_LOOP = "symlink_loop"
TOO_LARGE = "too_large"
REASONS: tuple[str, ...] = (ZERO_BYTE, NOT_AN_IMAGE, CORRUPT, UNREADABLE, SYMLINK_LOOP, TOO_LARGE)

# The formats TensorFlow's decode_image reads (what the backbones use), by their leading bytes.
# Anything else is "not_an_image" even if Pillow could open it, since no backbone could.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

_CACHE_VERSION = 1


def has_image_extension(name: str) -> bool:
    """Whether ``name`` ends in .jpg/.jpeg/.png/.gif/.bmp, in any case."""
    return name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS if "." in name else False


def sniff_format(head: bytes) -> str | None:
    """``"JPEG"``, ``"PNG"``, ``"GIF"`` or ``"BMP"`` from a file's first bytes, else None."""
    for magic, fmt in _SIGNATURES:
        if head.startswith(magic):
            return fmt
    return None


@dataclass(frozen=True)
class ImageCheck:
    """The outcome for one file: ``reason`` None means usable; ``sha256`` is of its bytes."""

    reason: str | None
    sha256: str | None = None


def check_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """None if ``path`` is a whole, decodable JPEG/PNG/GIF/BMP, else a reason from :data:`REASONS`.

    Never raises for a bad file. Trailing bytes after a complete image are accepted, as every
    decoder ignores them.
    """
    return inspect_image(path, max_pixels).reason


def inspect_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageCheck:
    """Like :func:`check_image`, also returning the sha256 of a usable file's bytes."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return ImageCheck(SYMLINK_LOOP if exc.errno == errno.ELOOP else UNREADABLE)
    return _inspect(Path(path), info, max_pixels)


def _inspect(path: Path, info: os.stat_result, max_pixels: int) -> ImageCheck:
    # Only regular files are opened: a FIFO named x.jpg would block the scan forever.
    if not stat.S_ISREG(info.st_mode):
        return ImageCheck(UNREADABLE)
    if info.st_size == 0:
        return ImageCheck(ZERO_BYTE)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageCheck(SYMLINK_LOOP if exc.errno == errno.ELOOP else UNREADABLE)
    if not data:  # emptied since the stat
        return ImageCheck(ZERO_BYTE)
    reason = _decode_check(data, max_pixels)
    return ImageCheck(reason, hashlib.sha256(data).hexdigest() if reason is None else None)


def _decode_check(data: bytes, max_pixels: int) -> str | None:
    from PIL import Image, ImageFile

    if sniff_format(data[:16]) is None:
        return NOT_AN_IMAGE
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A global some other code switched on: truncated files would load, padded with grey.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; image checks need Pillow's default False")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                return TOO_LARGE
            im.verify()  # structure and checksums (PNG CRCs); the image is unusable afterwards
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # the full decode: catches truncated and broken entropy data
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # The warning is caught for runs with warnings turned into errors (-W error).
        return TOO_LARGE
    except MemoryError:
        return TOO_LARGE
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        return CORRUPT
    return None


class CheckCache:
    """Remembered :class:`ImageCheck` results for the files under one folder.

    Stored as JSON ``{"version", "max_pixels", "entries": {key: [size, mtime_ns, reason, sha256]}}``.
    A file whose size or mtime changed is checked again; a different ``max_pixels`` drops all entries.
    """

    def __init__(self, path: Path | None, max_pixels: int) -> None:
        self.path = path
        self.max_pixels = max_pixels
        self._old: dict[str, list[Any]] = {}
        self._new: dict[str, list[Any]] = {}
        if path is not None:
            self._old = self._load(path)

    def _load(self, path: Path) -> dict[str, list[Any]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: it is only a cache
        if (not isinstance(data, dict) or data.get("version") != _CACHE_VERSION
                or data.get("max_pixels") != self.max_pixels or not isinstance(data.get("entries"), dict)):
            return {}
        return data["entries"]

    def get(self, key: str, info: os.stat_result) -> ImageCheck | None:
        entry = self._old.get(key)
        if isinstance(entry, list) and len(entry) == 4 and entry[:2] == [info.st_size, info.st_mtime_ns]:
            self._new[key] = entry
            return ImageCheck(entry[2], entry[3])
        return None

    def put(self, key: str, info: os.stat_result, result: ImageCheck) -> None:
        self._new[key] = [info.st_size, info.st_mtime_ns, result.reason, result.sha256]

    def save(self) -> None:
        """Write the entries used or added in this scan (forgetting files that are gone)."""
        if self.path is None or self._new == self._old:
            return
        doc = {"version": _CACHE_VERSION, "max_pixels": self.max_pixels, "entries": self._new}
        with contextlib.suppress(OSError):  # a read-only cache dir only costs speed next time
            atomic_write_text(self.path, json.dumps(doc, sort_keys=True))
        self._old = dict(self._new)


def check_images(files: Sequence[tuple[str, Path]], max_pixels: int = DEFAULT_MAX_PIXELS,
                 cache_file: Path | None = None, workers: int | None = None,
                 on_done: Callable[[int], None] | None = None) -> dict[str, ImageCheck]:
    """Check ``(key, path)`` pairs, in parallel threads; returns ``{key: ImageCheck}``.

    ``cache_file`` (optional) keeps the results for the next call. ``on_done(n)`` reports progress.
    Pillow releases the GIL while decoding, so threads use several cores.
    """
    cache = CheckCache(cache_file, max_pixels)
    results: dict[str, ImageCheck] = {}
    todo: list[tuple[str, Path, os.stat_result]] = []
    for key, path in files:
        try:
            info = os.stat(path)
        except OSError as exc:
            results[key] = ImageCheck(SYMLINK_LOOP if exc.errno == errno.ELOOP else UNREADABLE)
            continue
        cached = cache.get(key, info)
        if cached is not None:
            results[key] = cached
        else:
            todo.append((key, path, info))
    if on_done and results:
        on_done(len(results))
    if todo:
        workers = workers or min(8, 2 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xferbench-check") as pool:
            for (key, _, info), result in zip(
                    todo, pool.map(lambda item: _inspect(item[1], item[2], max_pixels), todo), strict=True):
                results[key] = result
                cache.put(key, info, result)
                if on_done:
                    on_done(1)
    cache.save()
    return results
