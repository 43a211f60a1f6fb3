"""Images (encoded files or uint8 pixel arrays) -> a backbone's input tensors, a batch per call.

:class:`Preprocessing` says as data how a network's images are decoded, resized and normalised;
:func:`decoder_for` turns it into a decoder: a :class:`BatchDecoder` (TensorFlow) or a
:class:`PillowDecoder` (numpy and Pillow only). The TensorFlow functions of a preprocessing
(:func:`tf_preprocess`) are also what ``xferbench export`` saves, so an exported model sees the
same pixels as the harness.

:class:`BatchDecoder` takes two per-image TensorFlow functions: one from an encoded file (a scalar
``tf.string``) and one from uint8 ``[H, W, 3]`` pixels, both to a fixed-shape float32 tensor. It
traces them once and runs each batch in a single call (``map_fn``, images in parallel): no
tf.data pipeline is built per call, which cost more than the decoding itself when the harness
hands over a few dozen images at a time. A batch holding an undecodable file is redone image by
image, so only that image is lost. TensorFlow is imported when a decoder is made.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from xferbench.data import ImageData

__all__ = ["BatchDecoder", "JpegDecoding", "PillowDecoder", "Preprocessing", "as_bytes", "decoder_for",
           "preprocess_all", "tf_preprocess", "tf_resize", "to_rgb"]


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


#: the image libraries a :class:`Preprocessing` can run in
LIBRARIES = ("tensorflow", "pillow")
_PILLOW_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


@dataclass(frozen=True)
class JpegDecoding:
    """``tf.io.decode_jpeg`` arguments, for weights trained on JPEGs decoded with other settings than
    ``tf.io.decode_image``'s. Other formats are still decoded by ``decode_image``."""

    ratio: int = 1
    fancy_upscaling: bool = True
    try_recover_truncated: bool = False
    acceptable_fraction: float = 1.0
    dct_method: str = ""


@dataclass(frozen=True)
class Preprocessing:
    """How images become a network's input, as data: it travels with the weights and keys the cache.

    Steps, in order: decode to RGB (gray replicated, alpha dropped, first GIF frame); to gray if
    ``channels == 1`` (before resizing); with ``crop_to_aspect_ratio``, the largest centred crop of
    ``size``'s aspect ratio (as ``keras.layers.Resizing(crop_to_aspect_ratio=True)``); resize to ``size``; reverse the channels if
    ``reverse_channels`` (RGB -> BGR); then ``x * scale``, ``x / divide_by``, ``x - mean``,
    ``x / std`` (per channel, or one value for all), each skipped when it would change nothing, all
    in float32. The result is float32 ``[height, width, channels]``.

    ``library="tensorflow"`` runs the steps as TensorFlow ops (``tf.io.decode_image``, ``tf.image``
    resizing), the same ops ``xferbench export`` saves. ``library="pillow"`` runs them in Pillow and
    numpy, without TensorFlow: ``resize`` names a Pillow filter then (which antialiases when it
    shrinks), and gray is Pillow's ``convert("L")``; such a backbone cannot be exported.
    """

    #: ``(height, width)`` of the network's input
    size: tuple[int, int]
    #: 3: RGB; 1: gray
    channels: int = 3
    #: ``tf.image.resize`` method (``bilinear``, ``area``, ``bicubic``, ...), or a Pillow filter
    resize: str = "bilinear"
    antialias: bool = False
    #: bilinear sampling of TensorFlow 1 (``half_pixel_centers=False``, ``align_corners``), for old graphs
    half_pixel_centers: bool = True
    align_corners: bool = False
    reverse_channels: bool = False
    #: ``x * scale`` and ``x / divide_by`` round differently in float32: give the one the weights
    #: were trained with (``scale=1 / 255`` or ``divide_by=255.0``)
    scale: float = 1.0
    divide_by: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    #: decode JPEGs with these settings instead of ``tf.io.decode_image``'s
    jpeg: JpegDecoding | None = None
    library: str = "tensorflow"
    #: resize the largest centred crop of ``size``'s aspect ratio instead of the whole (squashed) image,
    #: as ``keras.layers.Resizing(crop_to_aspect_ratio=True)`` and KerasHub's image converters do
    crop_to_aspect_ratio: bool = False

    def __post_init__(self) -> None:
        # Normalise sequences to tuples, so equal settings compare (and hash) equal.
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        problems = []
        if len(self.size) != 2 or min(self.size) < 1:
            problems.append(f"size must be (height, width), got {self.size}")
        if self.channels not in (1, 3):
            problems.append(f"channels must be 1 or 3, got {self.channels}")
        for field in ("mean", "std"):
            if len(getattr(self, field)) not in (1, self.channels):
                problems.append(f"{field} needs 1 or {self.channels} values, got {getattr(self, field)}")
        if self.divide_by == 0 or 0 in self.std:
            problems.append("divide_by and std must not be 0")
        if (self.align_corners or not self.half_pixel_centers) and (self.resize != "bilinear" or self.antialias):
            problems.append("half_pixel_centers=False and align_corners apply to bilinear without antialiasing only")
        if self.library not in LIBRARIES:
            problems.append(f"library must be one of {LIBRARIES}, got {self.library!r}")
        elif self.library == "pillow":
            if self.resize not in _PILLOW_FILTERS:
                problems.append(f"resize must be one of {_PILLOW_FILTERS} with Pillow, got {self.resize!r}")
            if self.antialias or not self.half_pixel_centers or self.align_corners or self.jpeg is not None:
                problems.append("antialias, half_pixel_centers, align_corners and jpeg are TensorFlow settings")
        if problems:
            raise ValueError("Preprocessing: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of one preprocessed image."""
        return (self.size[0], self.size[1], self.channels)

    def describe(self) -> dict[str, Any]:
        """The settings as plain JSON values (for ``info()`` and the cache key)."""
        settings = json.loads(json.dumps(asdict(self)))
        if not self.crop_to_aspect_ratio:
            # added later: left out at its default, so the digests of older settings stay as they were
            del settings["crop_to_aspect_ratio"]
        return settings

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)`` of the centred crop, with Keras's float32 arithmetic."""
        target_height, target_width = self.size
        crop_height = max(min(height, int(np.float32(width * target_height) / np.float32(target_width))), 1)
        crop_width = max(min(width, int(np.float32(height * target_width) / np.float32(target_height))), 1)
        top = int(np.float32(height - crop_height) / np.float32(2))
        left = int(np.float32(width - crop_width) / np.float32(2))
        return top, left, crop_height, crop_width

    def digest(self) -> str:
        """A short digest of the settings: equal settings, equal digest."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def normalise(self, pixels: Any) -> Any:
        """Resized float32 pixels (a numpy array or a tensor) -> the network's input: the arithmetic steps.

        numpy and TensorFlow give the same bits: a division stays a division in a traced
        function (``divide_no_nan``; Grappler turns ``x / constant`` into a multiplication by
        the reciprocal, which rounds differently).
        """
        if isinstance(pixels, np.ndarray):
            multiply, divide = np.multiply, np.divide
        else:
            import tensorflow as tf

            multiply, divide = tf.multiply, tf.math.divide_no_nan
        x = pixels[..., ::-1] if self.reverse_channels else pixels
        if self.scale != 1.0:
            x = multiply(x, np.float32(self.scale))
        if self.divide_by != 1.0:
            x = divide(x, np.float32(self.divide_by))
        if any(self.mean):
            x = x - np.asarray(self.mean, np.float32)
        if any(value != 1.0 for value in self.std):
            x = divide(x, np.asarray(self.std, np.float32))
        return x


# -- TensorFlow ---------------------------------------------------------------------------------
def tf_decode(contents: Any, preprocessing: Preprocessing) -> Any:
    """Encoded file (scalar ``tf.string``) -> uint8 ``[H, W, 3]``."""
    import tensorflow as tf

    def any_format() -> Any:
        # expand_animations=False: the first frame of a GIF as HxWx3, not a 4-D stack.
        return tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)

    jpeg = preprocessing.jpeg
    if jpeg is None:
        return any_format()

    def jpeg_file() -> Any:
        return tf.io.decode_jpeg(contents, channels=3, ratio=jpeg.ratio, fancy_upscaling=jpeg.fancy_upscaling,
                                 try_recover_truncated=jpeg.try_recover_truncated,
                                 acceptable_fraction=jpeg.acceptable_fraction, dct_method=jpeg.dct_method)

    return tf.cond(tf.io.is_jpeg(contents), jpeg_file, any_format)


def tf_prepare(rgb: Any, preprocessing: Preprocessing) -> Any:
    """uint8 ``[H, W, 3]`` tensor -> float32 ``preprocessing.input_shape``: gray, resize, normalise."""
    import tensorflow as tf

    return tf.ensure_shape(preprocessing.normalise(tf_resize(rgb, preprocessing)), preprocessing.input_shape)


def tf_resize(rgb: Any, preprocessing: Preprocessing) -> Any:
    """uint8 ``[H, W, 3]`` tensor -> float32 ``preprocessing.input_shape``, gray and resized, not yet normalised.

    A TFLite export takes these pixels as its input and normalises them inside the model.
    """
    import tensorflow as tf

    pixels = tf.image.rgb_to_grayscale(rgb) if preprocessing.channels == 1 else rgb
    if preprocessing.crop_to_aspect_ratio:
        pixels = _tf_centre_crop(pixels, preprocessing.size)
    if preprocessing.resize == "bilinear" and not preprocessing.antialias:
        # What tf.image.resize runs for bilinear, with TensorFlow 1's sampling available too.
        resized = tf.raw_ops.ResizeBilinear(images=tf.cast(pixels, tf.float32)[None],
                                            size=tf.constant(preprocessing.size, tf.int32),
                                            align_corners=preprocessing.align_corners,
                                            half_pixel_centers=preprocessing.half_pixel_centers)[0]
    else:
        resized = tf.cast(tf.image.resize(pixels, preprocessing.size, method=preprocessing.resize,
                                          antialias=preprocessing.antialias), tf.float32)
    return tf.ensure_shape(resized, preprocessing.input_shape)


def _tf_centre_crop(pixels: Any, size: tuple[int, int]) -> Any:
    """The largest centred crop of ``size``'s aspect ratio: ``keras.ops.image.resize(crop_to_aspect_ratio=True)``'s."""
    import tensorflow as tf

    shape = tf.shape(pixels)
    height, width = shape[0], shape[1]
    target_height, target_width = size
    crop_height = tf.maximum(tf.minimum(height, tf.cast(tf.cast(width * target_height, tf.float32) / target_width,
                                                        tf.int32)), 1)
    crop_width = tf.maximum(tf.minimum(width, tf.cast(tf.cast(height * target_width, tf.float32) / target_height,
                                                      tf.int32)), 1)
    top = tf.cast(tf.cast(height - crop_height, tf.float32) / 2, tf.int32)
    left = tf.cast(tf.cast(width - crop_width, tf.float32) / 2, tf.int32)
    return pixels[top:top + crop_height, left:left + crop_width, :]


def tf_preprocess(contents: Any, preprocessing: Preprocessing) -> Any:
    """Encoded file (scalar ``tf.string``) -> float32 ``preprocessing.input_shape``."""
    return tf_prepare(tf_decode(contents, preprocessing), preprocessing)


# -- Pillow and numpy -----------------------------------------------------------------------------
def pillow_preprocess(image: ImageData, preprocessing: Preprocessing) -> np.ndarray | None:
    """One image -> float32 ``preprocessing.input_shape`` with Pillow and numpy; None when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if preprocessing.channels == 1 else "RGB"
    height, width = preprocessing.size
    try:
        raw = as_bytes(image)
        if raw is not None:
            with Image.open(io.BytesIO(raw)) as opened:
                converted = opened.convert(mode)  # decodes the whole file: a truncated one fails here
        elif (rgb := to_rgb(image)) is not None:
            converted = Image.fromarray(rgb).convert(mode)
        else:
            return None
        if preprocessing.crop_to_aspect_ratio:
            top, left, crop_height, crop_width = preprocessing.crop_box(converted.height, converted.width)
            converted = converted.crop((left, top, left + crop_width, top + crop_height))
        if converted.size != (width, height):
            converted = converted.resize((width, height), Image.Resampling[preprocessing.resize.upper()])
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # Pillow raises SyntaxError for some malformed headers (e.g. broken PNG chunks).
        return None
    return preprocessing.normalise(np.asarray(converted, dtype=np.float32).reshape(preprocessing.input_shape))


class PillowDecoder:
    """:class:`BatchDecoder`'s ``batches`` for a ``library="pillow"`` preprocessing: numpy batches, no TensorFlow."""

    prefetch = False

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def batches(self, images: Sequence[ImageData], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of up to ``batch_size`` images, in order; indices of undecodable images are absent."""
        for start in range(0, len(images), batch_size):
            rows = [(index, pixels) for index in range(start, min(start + batch_size, len(images)))
                    if (pixels := pillow_preprocess(images[index], self.preprocessing)) is not None]
            if rows:
                yield np.array([index for index, _ in rows], np.int64), np.stack([pixels for _, pixels in rows])


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


@functools.cache
def decoder_for(preprocessing: Preprocessing, *, prefetch: bool = False) -> BatchDecoder | PillowDecoder:
    """The decoder of ``preprocessing``; one per settings, so its functions are traced once per process."""
    if preprocessing.library == "pillow":
        return PillowDecoder(preprocessing)
    return BatchDecoder(lambda contents: tf_preprocess(contents, preprocessing),
                        lambda rgb: tf_prepare(rgb, preprocessing), preprocessing.input_shape, prefetch=prefetch)


def preprocess_all(images: Sequence[ImageData], preprocessing: Preprocessing, batch_size: int = 256) -> np.ndarray:
    """float32 ``[len(images), *input_shape]``; the rows of images that do not decode are all NaN."""
    out = np.full((len(images), *preprocessing.input_shape), np.nan, dtype=np.float32)
    for indices, pixels in decoder_for(preprocessing).batches(images, batch_size):
        out[indices] = np.asarray(pixels)
    return out
