"""Backbone ``pixels``: the image itself as the feature vector (the "no transfer" baseline).

There are no learned weights, so transfer learning on ``pixels`` measures what a head
achieves without any pretrained representation. Only numpy and Pillow are used: the
preprocessing runs in Pillow (``library="pillow"``), and the "network" flattens it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from xferbench.backbone import NetworkBackbone
from xferbench.decoding import Preprocessing
from xferbench.errors import UserError

#: bump when the preprocessing below changes, so cached bottlenecks are recomputed
VERSION = "v1"


class PixelsBackbone(NetworkBackbone):
    """Grayscale, resize to ``size`` x ``size`` (bilinear), scale to [0, 1], flatten."""

    preprocessing_version = "1"

    def __init__(self, arg: str | None, options: Mapping[str, Any], context: Any) -> None:
        if arg:
            raise UserError(f"backbone 'pixels' takes no argument, got 'pixels:{arg}'; use --backbone-opt size=N")
        self.name = "pixels"
        self.size = int(options["size"])
        self.feature_dim = self.size * self.size
        self.preprocessing = Preprocessing(size=(self.size, self.size), channels=1, resize="bilinear",
                                           divide_by=255.0, library="pillow")

    @property
    def weights_sha256(self) -> str:
        # No weights: the configuration is all that determines the features.
        return hashlib.sha256(f"pixels-{VERSION}-size={self.size}".encode()).hexdigest()

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1)

    def info(self) -> dict[str, Any]:
        return {"size": self.size, "features": f"grayscale pixels, {self.size}x{self.size}, scaled to [0, 1]"}
