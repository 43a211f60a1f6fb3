#!/usr/bin/env python3
"""Rebuild the embedded default's package data from ../shared/data.

Writes ``plugins/xferbench_embedded/data/``:

- ``weights/mobilenet_2_5_224_tf_no_top.h5``: Keras applications' ImageNet weights of
  ``MobileNet(alpha=0.25, include_top=False)``, copied byte for byte (checked against its
  sha256), with ``weights/ORIGIN.txt`` (where it comes from, its sha256, its licence);
- ``flower_photos_mini/<class>/<name>.jpg``: the 500 flower photos, shrunk to at most 160 px
  on the long side (Lanczos), RGB, JPEG quality 85, no metadata; same file and folder names, so
  retrain.py's split rule gives the same split; with ``LICENSE.txt`` holding the licence header
  and the credit lines of exactly these photos (CC-BY 2.0 requires them);
- ``SHA256SUMS``: every file above with its sha256 (``sha256sum -c SHA256SUMS`` checks them).

The output is deterministic for a given Pillow (and libjpeg) version: running it again gives
the same bytes. Usage: ``python scripts/build_embedded_data.py [--shared DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "plugins" / "xferbench_embedded" / "data"

WEIGHTS_NAME = "mobilenet_2_5_224_tf_no_top.h5"
WEIGHTS_SHA256 = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"
WEIGHTS_ORIGIN = f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/{WEIGHTS_NAME}"
PHOTOS = "flower_photos_mini"
CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
PHOTOS_PER_CLASS = 100
MAX_SIDE = 160
JPEG_QUALITY = 85
LICENSE = "LICENSE.txt"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shrink_jpeg(source: Path) -> bytes:
    """``source`` at most MAX_SIDE px on its long side, as a baseline RGB JPEG without metadata.

    No EXIF rotation is applied: TensorFlow's decoder ignores it too, so the pixels are the ones
    a model saw in the originals.
    """
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        scale = MAX_SIDE / max(width, height)
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=False)
    return out.getvalue()


def credit_lines(license_text: str, names: set[str]) -> tuple[list[str], list[str]]:
    """The licence header (lines before the first credit) and the credit lines of ``names``, in file order."""
    header: list[str] = []
    credits: list[str] = []
    for line in license_text.splitlines():
        first = line.split(" ", 1)[0]
        if "/" in first and first.split("/", 1)[0] in CLASSES:
            if first in names:
                credits.append(line)
        elif not credits:
            header.append(line)
    return header, credits


def build(shared: Path, out: Path) -> dict[str, str]:
    """Write the package data under ``out`` (replacing it) and return ``{relative path: sha256}``."""
    weights = (shared / "weights" / WEIGHTS_NAME).read_bytes()
    if sha256_bytes(weights) != WEIGHTS_SHA256:
        raise SystemExit(f"{shared / 'weights' / WEIGHTS_NAME} does not have the expected sha256 {WEIGHTS_SHA256}")
    files: dict[str, bytes] = {f"weights/{WEIGHTS_NAME}": weights}
    files["weights/ORIGIN.txt"] = (
        f"{WEIGHTS_NAME}: ImageNet weights of keras.applications.MobileNet(alpha=0.25, include_top=False)\n"
        f"origin: {WEIGHTS_ORIGIN}\n"
        f"sha256: {WEIGHTS_SHA256}\n"
        f"licence: Apache-2.0 (Keras applications, https://github.com/keras-team/keras)\n"
        f"copied unchanged by scripts/build_embedded_data.py\n"
    ).encode()

    names: set[str] = set()
    for cls in CLASSES:
        photos = sorted((shared / PHOTOS / cls).glob("*.jpg"))
        if len(photos) != PHOTOS_PER_CLASS:
            raise SystemExit(f"{shared / PHOTOS / cls} holds {len(photos)} photos, expected {PHOTOS_PER_CLASS}")
        for photo in photos:
            name = f"{cls}/{photo.name}"
            names.add(name)
            files[f"{PHOTOS}/{name}"] = shrink_jpeg(photo)

    header, credits = credit_lines((shared / PHOTOS / LICENSE).read_text(encoding="utf-8"), names)
    credited = {line.split(" ", 1)[0] for line in credits}
    if credited != names:
        missing = sorted(names - credited)
        raise SystemExit(f"{shared / PHOTOS / LICENSE} has no credit line for {len(missing)} photo(s): {missing[:3]}")
    note = [f"These {len(names)} photos are shrunk to at most {MAX_SIDE} px on the long side (JPEG quality "
            f"{JPEG_QUALITY}) by scripts/build_embedded_data.py; the credits below are theirs.", ""]
    files[f"{PHOTOS}/{LICENSE}"] = ("\n".join(header + note + credits) + "\n").encode()

    if out.exists():
        shutil.rmtree(out)
    sums = {path: sha256_bytes(data) for path, data in sorted(files.items())}
    for path, data in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (out / "SHA256SUMS").write_text("".join(f"{digest}  {path}\n" for path, digest in sums.items()))
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help=f"shared data (default {DEFAULT_SHARED})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    sums = build(args.shared, args.out)
    total = sum((args.out / path).stat().st_size for path in sums)
    print(f"wrote {len(sums)} files ({total / 1e6:.1f} MB) and SHA256SUMS to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
