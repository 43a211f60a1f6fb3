"""Images -> the float tensor the 2015 graph's ``Sub`` node receives, a batch at a time.

The graph does ``DecodeJpeg -> Cast(float) -> ExpandDims -> ResizeBilinear`` on one image.
Here each image goes through the same kernels with the same attributes (read from the graph),
a batch at a time, so a batch of results is bit-identical to what the graph computes image by
image; ``Sub``/``Mul`` then run inside the rewritten graph itself.

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
  dtypes or shapes) yields no row: :meth:`Preprocessor.batches` leaves its index out, and the caller fills
  NaN.
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
    """Decodes and resizes images a batch at a time with functions traced once.

    Each batch of encoded images is one call (``map_fn`` over the batch, its images decoded in
    parallel); a batch holding an undecodable image is redone image by image, so only that image
    is lost. With ``prefetch`` the next batch is prepared on a worker thread while the caller runs
    the network on the current one: right when the network runs on a GPU. On a 2-core CPU the
    network already keeps every core busy, and a decoder competing with it slowed the whole
    extraction more than decoding (about 1% of the work) costs when done in between.
    """

    def __init__(self, interface: Interface, *, prefetch: bool = False) -> None:
        import os

        import tensorflow as tf

        self.interface = interface
        self.prefetch = prefetch
        height, width = interface.size
        image = tf.TensorSpec([height, width, 3], tf.float32)
        one = lambda contents: _resize(_decode(contents, interface), interface)  # noqa: E731
        self._from_bytes = tf.function(one, input_signature=[tf.TensorSpec([], tf.string)])
        self._from_bytes_batch = tf.function(
            lambda batch: tf.map_fn(one, batch, fn_output_signature=image, parallel_iterations=os.cpu_count() or 1),
            input_signature=[tf.TensorSpec([None], tf.string)])
        self._from_pixels = tf.function(lambda a: _resize(a, interface),
                                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

    def _encoded(self, items: list[tuple[int, bytes]]) -> tuple[list[int], list[Any]]:
        import tensorflow as tf

        try:
            batch = self._from_bytes_batch(tf.constant([raw for _, raw in items]))
            return [index for index, _ in items], [batch]
        except tf.errors.OpError:
            pass  # some image in the batch is undecodable: find it
        indices, pixels = [], []
        for index, raw in items:
            try:
                pixels.append(self._from_bytes(tf.constant(raw))[None])
            except tf.errors.OpError:
                continue
            indices.append(index)
        return indices, pixels

    def _batch(self, items: list[tuple[int, ImageData]]) -> tuple[np.ndarray, Any] | None:
        """``(indices, float [n, H, W, 3])`` for the decodable images among ``items``, or None."""
        import tensorflow as tf

        encoded: list[tuple[int, bytes]] = []
        indices: list[int] = []
        pixels: list[Any] = []
        for index, image in items:
            raw = _as_bytes(image)
            if raw is not None:
                encoded.append((index, raw))
                continue
            rgb = to_rgb(image) if isinstance(image, np.ndarray) else None
            if rgb is not None:
                indices.append(index)
                pixels.append(self._from_pixels(rgb)[None])
        if encoded:
            more_indices, more_pixels = self._encoded(encoded)
            indices, pixels = more_indices + indices, more_pixels + pixels
        if not indices:
            return None
        return np.asarray(indices, dtype=np.int64), pixels[0] if len(pixels) == 1 else tf.concat(pixels, 0)

    def batches(self, images: Sequence[ImageData], batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """``(indices, float tensor [n, H, W, 3])`` per batch; undecodable images' indices are absent."""
        items = list(enumerate(images))
        chunks = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
        if not self.prefetch:
            for chunk in chunks:
                if (batch := self._batch(chunk)) is not None:
                    yield batch
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="xferbench-decode") as pool:
            pending = [pool.submit(self._batch, chunk) for chunk in chunks[:1]]
            for k in range(len(chunks)):
                batch = pending.pop().result()
                if k + 1 < len(chunks):
                    pending.append(pool.submit(self._batch, chunks[k + 1]))
                if batch is not None:
                    yield batch
