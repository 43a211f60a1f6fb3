"""Backbone ``pixels``: the image itself as the feature vector (the "no transfer" baseline).

There are no learned weights, so transfer learning on ``pixels`` measures what a head
achieves without any pretrained representation. Only numpy and Pillow are used.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xferbench.backbone import Backbone
from xferbench.data import ImageData
from xferbench.errors import UserError

#: bump when the preprocessing below changes, so cached bottlenecks are recomputed
VERSION = "v1"


def to_grayscale(image: ImageData, size: int) -> np.ndarray | None:
    """Encoded bytes or uint8 pixels -> float32 ``[size * size]`` in [0, 1]; None if undecodable."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, bytes | bytearray | memoryview):
            with Image.open(io.BytesIO(bytes(image))) as pil:
                # convert() decodes the whole file, so a truncated image fails here, not later.
                gray = pil.convert("L")
        else:
            array = np.asarray(image)
            if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape:
                return None
            if array.ndim == 3:
                channels = array.shape[2]
                if channels == 1:
                    array = array[..., 0]
                elif channels in (3, 4):
                    array = array[..., :3]
                else:
                    return None
            gray = Image.fromarray(np.ascontiguousarray(array)).convert("L")
        if gray.size != (size, size):
            gray = gray.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.float32).reshape(-1) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # Pillow raises SyntaxError for some malformed headers (e.g. broken PNG chunks).
        return None


class PixelsBackbone(Backbone):
    """Grayscale, resize to ``size`` x ``size`` (bilinear), flatten, scale to [0, 1]."""

    preprocessing_version = "1"

    def __init__(self, arg: str | None, options: Mapping[str, Any], context: Any) -> None:
        if arg:
            raise UserError(f"backbone 'pixels' takes no argument, got 'pixels:{arg}'; use --backbone-opt size=N")
        self.name = "pixels"
        self.size = int(options["size"])
        self.feature_dim = self.size * self.size

    @property
    def weights_sha256(self) -> str:
        # No weights: the configuration is all that determines the features.
        return hashlib.sha256(f"pixels-{VERSION}-size={self.size}".encode()).hexdigest()

    def extract(self, images: Sequence[ImageData]) -> np.ndarray:
        out = np.full((len(images), self.feature_dim), np.nan, dtype=np.float32)
        for row, image in enumerate(images):
            features = to_grayscale(image, self.size)
            if features is not None:
                out[row] = features
        return out

    def info(self) -> dict[str, Any]:
        return {"size": self.size, "features": f"grayscale pixels, {self.size}x{self.size}, scaled to [0, 1]"}
