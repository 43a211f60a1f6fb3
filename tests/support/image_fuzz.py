"""A deterministic corpus of mutated JPEG, PNG and GIF files for fuzzing decoders.

``corpus(n, seed)`` returns ``n`` ``(name, bytes)`` pairs, the same for the same seed: small real
images (PIL) in the three formats, each put through one or two mutations: bit flips, truncation,
a wrong or swapped header, a huge declared size (with a valid checksum where the format has one),
a zeroed or repeated range. Some are left intact, so every decoder also sees good files.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable

FORMATS = ("JPEG", "PNG", "GIF")
MAGICS = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n", "GIF": b"GIF89a"}


def _base_image(rng: random.Random, fmt: str) -> bytes:
    import numpy as np
    from PIL import Image

    h, w = rng.randint(4, 48), rng.randint(4, 48)
    pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mode = rng.choice(["RGB", "L", "RGBA", "P"]) if fmt != "JPEG" else rng.choice(["RGB", "L"])
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": rng.randint(5, 95)} if fmt == "JPEG" else {}))
    return out.getvalue()


def _flip_bits(rng: random.Random, data: bytes, fmt: str) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _truncate(rng: random.Random, data: bytes, fmt: str) -> bytes:
    return data[:rng.randrange(0, len(data))]


def _wrong_header(rng: random.Random, data: bytes, fmt: str) -> bytes:
    other = MAGICS[rng.choice([f for f in FORMATS if f != fmt])]
    choice = rng.randrange(3)
    if choice == 0:  # another format's magic on this body
        return other + data[len(MAGICS[fmt]):]
    if choice == 1:  # random header bytes
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16))) + data[rng.randint(1, 16):]
    return MAGICS[fmt]  # the magic alone


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _huge_size(rng: random.Random, data: bytes, fmt: str) -> bytes:
    width = rng.choice([65535, 0x7FFFFFFF, 1 << 20, 0, 100_000])
    height = rng.choice([65535, 0x7FFFFFFF, 1 << 20, 1, 100_000])
    if fmt == "PNG" and data[12:16] == b"IHDR":
        body = struct.pack(">II", width, height) + data[24:29]
        return data[:8] + _png_chunk(b"IHDR", body) + data[33:]
    if fmt == "GIF" and len(data) >= 10:
        buf = bytearray(data)
        buf[6:10] = struct.pack("<HH", min(width, 65535), min(height, 65535))
        at = buf.find(b"\x2c")  # the first image descriptor: declare the frame that big too
        if at > 0 and at + 9 <= len(buf) and rng.random() < 0.5:
            buf[at + 5:at + 9] = struct.pack("<HH", min(width, 65535), min(height, 65535))
        return bytes(buf)
    buf = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = buf.find(marker)
        if at > 0 and at + 9 <= len(buf):
            buf[at + 5:at + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
            break
    return bytes(buf)


def _zero_or_repeat(rng: random.Random, data: bytes, fmt: str) -> bytes:
    start = rng.randrange(len(data))
    stop = min(len(data), start + rng.randint(1, 64))
    if rng.random() < 0.5:
        return data[:start] + bytes(stop - start) + data[stop:]
    return data[:stop] + data[start:stop] * rng.randint(2, 50) + data[stop:]


MUTATIONS: dict[str, Callable[[random.Random, bytes, str], bytes]] = {
    "bitflip": _flip_bits, "truncate": _truncate, "header": _wrong_header, "huge": _huge_size,
    "range": _zero_or_repeat,
}


def corpus(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` mutated files, a third of each format; ``name`` says the format, mutations and index."""
    rng = random.Random(seed)
    bases = {fmt: [_base_image(rng, fmt) for _ in range(24)] for fmt in FORMATS}  # encoding is the slow part
    files = []
    for index in range(n):
        fmt = FORMATS[index % len(FORMATS)]
        data = rng.choice(bases[fmt])
        applied = []
        if rng.random() >= 0.08:  # a few stay intact
            for _ in range(rng.choice([1, 1, 2])):
                name = rng.choice(sorted(MUTATIONS))
                data = MUTATIONS[name](rng, data, fmt) or data[:1]
                applied.append(name)
        files.append((f"{index:05d}-{fmt.lower()}-{'+'.join(applied) or 'intact'}", data))
    return files
