"""Images (encoded files or uint8 pixel arrays) -> a backbone's input tensors, a batch per call.

Backbones give two per-image TensorFlow functions: one from an encoded file (a scalar
``tf.string``) and one from uint8 ``[H, W, 3]`` pixels, both to a fixed-shape float32 tensor.
:class:`BatchDecoder` traces them once and runs each batch in a single call (``map_fn``, images in
parallel): no tf.data pipeline is built per call, which cost more than the decoding itself when
the harness hands over a few dozen images at a time. A batch holding an undecodable file is
redone image by image, so only that image is lost. TensorFlow is imported when a decoder is made.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from xferbench.data import ImageData

__all__ = ["BatchDecoder", "as_bytes", "to_rgb"]


def as_bytes(image: Any) -> bytes | None:
    """The encoded file in ``image``, or None if it is not one."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    return None


def to_rgb(pixels: Any) -> np.ndarray | None:
    """uint8 ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` -> ``HxWx3``; None when it is not an image.

    Gray is replicated and alpha dropped, as ``decode_image(channels=3)`` does for files.
    """
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        return None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[0] == 0 or pixels.shape[1] == 0 or pixels.shape[2] not in (1, 3, 4):
        return None
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels if pixels.shape[2] == 3 else np.ascontiguousarray(pixels[:, :, :3])


class BatchDecoder:
    """``batches(images, n)`` -> ``(indices, float32 tensor [k, *shape])``; undecodable images are left out.

    ``from_file(contents)`` and ``from_pixels(rgb uint8 [H, W, 3])`` map one image to ``shape``.
    With ``prefetch``, the next batch is decoded on a worker thread while the caller uses the
    current one: right when the network runs on a GPU. On a CPU the network already keeps every
    core busy, and a decoder competing with it slows both.
    """

    def __init__(self, from_file: Callable[[Any], Any], from_pixels: Callable[[Any], Any],
                 shape: Sequence[int], *, prefetch: bool = False) -> None:
        import tensorflow as tf

        self.prefetch = prefetch
        spec = tf.TensorSpec(tuple(shape), tf.float32)
        parallel = os.cpu_count() or 1
        self._from_file = tf.function(from_file, input_signature=[tf.TensorSpec([], tf.string)])
        self._from_files = tf.function(
            lambda files: tf.map_fn(from_file, files, fn_output_signature=spec, parallel_iterations=parallel),
            input_signature=[tf.TensorSpec([None], tf.string)])
        self._from_pixel_stack = tf.function(
            lambda stack: tf.map_fn(from_pixels, stack, fn_output_signature=spec, parallel_iterations=parallel),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])

    def _files(self, items: list[tuple[int, bytes]]) -> tuple[list[int], list[Any]]:
        import tensorflow as tf

        try:
            return [index for index, _ in items], [self._from_files(tf.constant([raw for _, raw in items]))]
        except tf.errors.OpError:
            pass  # some file in the batch does not decode: find which
        indices, tensors = [], []
        for index, raw in items:
            try:
                tensors.append(self._from_file(tf.constant(raw))[None])
            except tf.errors.OpError:
                continue
            indices.append(index)
        return indices, tensors

    def _batch(self, items: list[tuple[int, ImageData]]) -> tuple[np.ndarray, Any] | None:
        import tensorflow as tf

        files: list[tuple[int, bytes]] = []
        arrays: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for index, image in items:
            raw = as_bytes(image)
            if raw is not None:
                files.append((index, raw))
            elif (rgb := to_rgb(image)) is not None:
                arrays.setdefault(rgb.shape, []).append((index, rgb))
        indices, tensors = self._files(files) if files else ([], [])
        for group in arrays.values():  # same-sized arrays (digits, MNIST) go in one call
            indices += [index for index, _ in group]
            tensors.append(self._from_pixel_stack(np.stack([rgb for _, rgb in group])))
        if not indices:
            return None
        batch = tensors[0] if len(tensors) == 1 else tf.concat(tensors, 0)
        order = np.argsort(indices, kind="stable")
        if (order != np.arange(len(order))).any():
            batch = tf.gather(batch, order)
        return np.asarray(indices, dtype=np.int64)[order], batch

    def batches(self, images: Sequence[ImageData], batch_size: int) -> Iterator[tuple[np.ndarray, Any]]:
        """Batches of up to ``batch_size`` images, in order; indices of undecodable images are absent."""
        items = list(enumerate(images))
        chunks = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
        if not self.prefetch:
            for chunk in chunks:
                if (batch := self._batch(chunk)) is not None:
                    yield batch
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="xferbench-decode") as pool:
            pending = pool.submit(self._batch, chunks[0]) if chunks else None
            for k in range(len(chunks)):
                assert pending is not None
                batch = pending.result()
                pending = pool.submit(self._batch, chunks[k + 1]) if k + 1 < len(chunks) else None
                if batch is not None:
                    yield batch
