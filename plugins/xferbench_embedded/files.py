"""Where the embedded files are, and which of them a backbone can use."""

from __future__ import annotations

from pathlib import Path

#: the package data folder (a plain folder: setuptools installs it as package data)
DATA_DIR = Path(__file__).resolve().parent / "data"
#: sha256 of every embedded file, in ``sha256sum`` format, relative to DATA_DIR
MANIFEST = DATA_DIR / "SHA256SUMS"
FLOWER_PHOTOS = DATA_DIR / "flower_photos_mini"

#: (keras application, alpha) -> ImageNet no-top weights file shipped in the package
_KERAS_WEIGHTS = {
    ("MobileNet", 0.25): DATA_DIR / "weights" / "mobilenet_2_5_224_tf_no_top.h5",
}


def manifest() -> dict[str, str]:
    """``{path relative to DATA_DIR: sha256}`` as recorded when the data was built."""
    sums: dict[str, str] = {}
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        digest, _, path = line.partition("  ")
        if path:
            sums[path] = digest
    return sums


def keras_weights(application: str, alpha: float | None) -> Path | None:
    """The shipped ImageNet weights of ``keras.applications.<application>(alpha=alpha)``, if any."""
    if alpha is None:
        return None
    path = _KERAS_WEIGHTS.get((application, float(alpha)))
    return path if path is not None and path.is_file() else None
