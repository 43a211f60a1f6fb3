"""Images -> the float tensor the 2015 graph's ``Sub`` node receives, batched with tf.data.

The graph does ``DecodeJpeg -> Cast(float) -> ExpandDims -> ResizeBilinear`` on one image.
Here each image goes through the same kernels with the same attributes (read from the graph),
in a parallel ``tf.data`` map, so a batch of results is bit-identical to what the graph computes
image by image; ``Sub``/``Mul`` then run inside the rewritten graph itself.

What the original graph does with other inputs, and what happens here:

* JPEG in any colour space (RGB, grayscale, CMYK/YCCK): the graph's DecodeJpeg with
  ``channels=3`` converts to RGB; here the same op with the same attributes does the same.
* PNG, GIF, BMP: in 2015 DecodeJpeg accepted JPEG only. Current TF lets DecodeJpeg decode
  PNG and GIF (first frame) and rejects BMP. Here all three are decoded to RGB with
  ``tf.io.decode_image(channels=3)`` (grayscale replicated, alpha dropped, first GIF frame),
  then cast/resized/normalised exactly like a JPEG: the reference for them is the graph fed
  the decoded RGB pixels in place of ``DecodeJpeg:0``.
* uint8 arrays (HxW, HxWx1, HxWx3, HxWx4): converted to HxWx3 the same way, then as above.
* Anything that cannot be decoded (corrupt or truncated files, other formats, arrays of other
  dtypes or shapes) yields no row: :func:`batches` leaves its index out and the caller fills NaN.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xferbench.data import ImageData
from xferbench_inception.graph import Interface


def to_rgb(image: np.ndarray) -> np.ndarray | None:
    """A uint8 HxWx3 copy-free view/conversion of a decoded image, or None if it is not one."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or a.shape[0] == 0 or a.shape[1] == 0:
        return None
    if a.ndim == 2:
        a = a[:, :, None]
    channels = a.shape[2]
    if channels == 1:
        return np.repeat(a, 3, axis=2)  # gray -> RGB, as DecodeJpeg(channels=3) does for gray JPEGs
    if channels == 3:
        return a
    if channels == 4:
        return a[:, :, :3]  # alpha dropped, as decode_png(channels=3) does
    return None


def _as_bytes(image: Any) -> bytes | None:
    if isinstance(image, bytes):
        return image
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    return None


def _resize(pixels: Any, interface: Interface) -> Any:
    """Cast -> ExpandDims -> ResizeBilinear, with the graph's size and sampling attributes."""
    import tensorflow as tf

    height, width = interface.size
    x = tf.expand_dims(tf.cast(pixels, tf.float32), 0)
    x = tf.raw_ops.ResizeBilinear(images=x, size=tf.constant([height, width], tf.int32),
                                  align_corners=interface.align_corners,
                                  half_pixel_centers=interface.half_pixel_centers)
    return tf.reshape(x, [height, width, 3])


def _decode(contents: Any, interface: Interface) -> Any:
    import tensorflow as tf

    attrs = interface.decode_attrs

    def jpeg() -> Any:
        return tf.io.decode_jpeg(contents, channels=attrs["channels"], ratio=attrs["ratio"],
                                 fancy_upscaling=attrs["fancy_upscaling"],
                                 try_recover_truncated=attrs["try_recover_truncated"],
                                 acceptable_fraction=attrs["acceptable_fraction"], dct_method=attrs["dct_method"])

    def other() -> Any:
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


class Preprocessor:
    """Builds the per-image functions once; each :meth:`batches` call only assembles a tf.data pipeline.

    (Tracing the decode/resize graph anew for every call cost ~0.1 s, which matters when the
    harness hands over a few dozen images at a time.)
    """

    def __init__(self, interface: Interface) -> None:
        import tensorflow as tf

        self.interface = interface
        self._from_bytes = tf.function(lambda c: _resize(_decode(c, interface), interface),
                                       input_signature=[tf.TensorSpec([], tf.string)])
        self._from_pixels = tf.function(lambda a: _resize(a, interface),
                                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

    def dataset(self, images: Sequence[ImageData], batch_size: int) -> Any:
        """A tf.data pipeline of ``(indices, float images [n, H, W, 3])``, or None if nothing is decodable.

        Images that fail to decode are dropped (``ignore_errors``), so their indices are absent.
        """
        import tensorflow as tf

        encoded: list[tuple[int, bytes]] = []
        arrays: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for index, image in enumerate(images):
            raw = _as_bytes(image)
            if raw is not None:
                encoded.append((index, raw))
                continue
            rgb = to_rgb(image) if isinstance(image, np.ndarray) else None
            if rgb is not None:
                arrays.setdefault(rgb.shape, []).append((index, rgb))

        parts = []
        if encoded:
            ds = tf.data.Dataset.from_tensor_slices(
                (np.array([i for i, _ in encoded], dtype=np.int64), tf.constant([b for _, b in encoded])))
            parts.append(ds.map(lambda i, c: (i, self._from_bytes(c)), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True))
        # Decoded arrays: one stacked tensor per shape, so a set of same-sized digits costs one copy.
        for group in arrays.values():
            ds = tf.data.Dataset.from_tensor_slices(
                (np.array([i for i, _ in group], dtype=np.int64), np.stack([a for _, a in group])))
            parts.append(ds.map(lambda i, a: (i, self._from_pixels(a)), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True))
        if not parts:
            return None
        ds = parts[0]
        for part in parts[1:]:
            ds = ds.concatenate(part)
        return ds.ignore_errors().batch(batch_size).prefetch(1)

    def batches(self, images: Sequence[ImageData], batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """Iterate :meth:`dataset` as ``(indices as numpy, float tensor [n, H, W, 3])``."""
        ds = self.dataset(images, batch_size)
        if ds is None:
            return
        for idx, x in ds:
            yield idx.numpy(), x
