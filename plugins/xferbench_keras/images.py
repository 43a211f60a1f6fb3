"""Decoding and resizing images for the Keras and TF-Hub backbones, as a tf.data pipeline.

Images arrive as encoded files (bytes) or decoded uint8 pixels. Encoded ones are decoded
by ``tf.io.decode_image`` inside a parallel ``map``; a file that does not decode is dropped
by ``ignore_errors`` and its index is simply never yielded, which is how callers learn that
its row must be NaN. Each element carries its original index so that order is never in doubt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
        rgb = tf.cond(
            encoded,
            # channels=3 turns grayscale into RGB and drops alpha; expand_animations=False
            # gives the first frame of a GIF as HxWx3 instead of a 4-D stack.
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8),
            lambda: pixels,
        )
        resized = tf.image.resize(rgb, (size, size), method="bilinear", antialias=False)
        return index, tf.ensure_shape(resized, (size, size, 3))

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
