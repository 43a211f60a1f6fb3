"""Decoding and resizing images for the Keras and TF-Hub backbones, as a tf.data pipeline.

Images arrive as encoded files (bytes) or decoded uint8 pixels. Encoded ones are decoded
by ``tf.io.decode_image`` inside a parallel ``map``; a file that does not decode is dropped
by ``ignore_errors`` and its index is simply never yielded, which is how callers learn that
its row must be NaN. Each element carries its original index so that order is never in doubt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from xferbench.data import ImageData

_ENCODED_TYPES = (bytes, bytearray, memoryview)
_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def to_rgb(pixels: np.ndarray) -> np.ndarray | None:
    """uint8 ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` -> ``HxWx3``; None when it is not an image."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        return None
    channels = pixels.shape[2]
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 3:
        return pixels
    if channels == 4:  # RGBA: the alpha channel carries no colour
        return np.ascontiguousarray(pixels[:, :, :3])
    return None


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


def resized_batches(images: Sequence[ImageData], size: int, batch_size: int
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, pixels)``: float32 ``[b, size, size, 3]`` in 0..255, bilinear-resized.

    Indices of images that cannot be decoded are missing from the output.
    """
    import tensorflow as tf

    def elements() -> Iterator[tuple[int, bool, bytes, np.ndarray]]:
        for index, image in enumerate(images):
            if isinstance(image, _ENCODED_TYPES):
                yield index, True, bytes(image), _NO_PIXELS
                continue
            rgb = to_rgb(image)
            if rgb is not None:
                yield index, False, b"", rgb
            # anything else is not an image: no element, so its row stays NaN

    def decode_and_resize(index: tf.Tensor, encoded: tf.Tensor, data: tf.Tensor, pixels: tf.Tensor
                          ) -> tuple[tf.Tensor, tf.Tensor]:
        rgb = tf.cond(encoded, lambda: decode_rgb(data), lambda: pixels)
        return index, resize_rgb(rgb, size)

    signature = (
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((), tf.bool),
        tf.TensorSpec((), tf.string),
        tf.TensorSpec((None, None, 3), tf.uint8),
    )
    dataset = (
        tf.data.Dataset.from_generator(elements, output_signature=signature)
        .map(decode_and_resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Drops only the element whose decode failed, before batching, so one bad file
        # never costs its neighbours their features.
        .ignore_errors(log_warning=False)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    for indices, pixels in dataset.as_numpy_iterator():
        # as_numpy_iterator hands out read-only views; preprocess_input works in place.
        yield indices, np.array(pixels, dtype=np.float32)
