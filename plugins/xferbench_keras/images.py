"""Decoding and resizing images for the Keras and TF-Hub backbones.

Images arrive as encoded files (bytes) or decoded uint8 pixels, and go through
:class:`xferbench.decoding.BatchDecoder`: a file that does not decode is left out and its index
is never yielded, which is how callers learn that its row must be NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from xferbench.data import ImageData
from xferbench.decoding import BatchDecoder


def decode_rgb(data: Any) -> Any:
    """Encoded file (scalar ``tf.string``) -> uint8 ``[H, W, 3]``."""
    import tensorflow as tf

    # channels=3 turns grayscale into RGB and drops alpha; expand_animations=False
    # gives the first frame of a GIF as HxWx3 instead of a 4-D stack.
    return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)


def resize_rgb(rgb: Any, size: int) -> Any:
    """uint8 ``[H, W, 3]`` -> float32 ``[size, size, 3]`` in 0..255, bilinear without antialiasing."""
    import tensorflow as tf

    resized = tf.image.resize(rgb, (size, size), method="bilinear", antialias=False)
    return tf.ensure_shape(resized, (size, size, 3))


def export_module(name: str, size: int, network: Any, forward: Callable[[Any], Any]) -> Any:
    """A ``tf.Module`` for :meth:`Backbone.tf_features`: encoded images ``[N]`` -> float32 features.

    Each image is decoded and resized exactly as :func:`resized_batches` does; ``forward`` maps
    the float32 ``[N, size, size, 3]`` pixels (0..255) to features. ``network`` (a Keras model or
    a loaded SavedModel) is tracked by the module, so saving the module saves its weights.
    """
    import tensorflow as tf

    class Features(tf.Module):
        def __init__(self) -> None:
            super().__init__(name=name)
            self.network = network

        def __call__(self, images: tf.Tensor) -> tf.Tensor:
            pixels = tf.map_fn(lambda data: resize_rgb(decode_rgb(data), size), images,
                               fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
            return tf.cast(forward(pixels), tf.float32)

    return Features()


@functools.cache
def _decoder(size: int) -> BatchDecoder:
    """One per input size, so its functions are traced once per process, not once per call."""
    return BatchDecoder(lambda data: resize_rgb(decode_rgb(data), size), lambda rgb: resize_rgb(rgb, size),
                        (size, size, 3))


def resized_batches(images: Sequence[ImageData], size: int, batch_size: int
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, pixels)``: float32 ``[b, size, size, 3]`` in 0..255, bilinear-resized.

    Indices of images that cannot be decoded are missing from the output.
    """
    for indices, pixels in _decoder(size).batches(images, batch_size):
        # A writable copy: preprocess_input works in place.
        yield indices, np.array(pixels, dtype=np.float32)
