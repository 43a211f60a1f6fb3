"""Decoded, resized images as the Keras and TF-Hub backbones see them before normalising.

Both backbones take :class:`xferbench.decoding.Preprocessing` with a bilinear resize (no
antialiasing) of ``tf.io.decode_image``'s RGB; this yields those pixels, for tests and tools.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from xferbench.data import ImageData
from xferbench.decoding import Preprocessing, decoder_for


def resized_batches(images: Sequence[ImageData], size: int, batch_size: int
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, pixels)``: float32 ``[b, size, size, 3]`` in 0..255, bilinear-resized.

    Indices of images that cannot be decoded are missing from the output.
    """
    for indices, pixels in decoder_for(Preprocessing(size=(size, size))).batches(images, batch_size):
        yield indices, np.array(pixels, dtype=np.float32)
