"""retrain.py's four input distortions, as cached copies (``transfer``) and on the fly (``full``, ``finetune``).

``--augment flip,crop=10,scale=10,brightness=10`` means what retrain.py's ``--flip_left_right``,
``--random_crop``, ``--random_scale`` and ``--random_brightness`` mean:

- retrain.py resizes the image to ``input_size * (1 + crop/100) * U(1, 1 + scale/100)`` and cuts a
  window of ``input_size`` at a random place. Here the same window is cut from the decoded image
  itself (``1 / that factor`` of its height and width, at a uniformly random place) and the
  backbone's own preprocessing then resizes it to its input: the same view, resized once;
- ``flip``: mirrored left-right with probability 1/2;
- ``brightness=B``: pixel values multiplied by ``U(1 - B/100, 1 + B/100)`` (not clipped, as in
  retrain.py). Resizing is linear, so it is applied to the resized pixels, before normalisation.

Every copy is drawn from its own seed, made of the run's seed, the image's content digest and the
copy index: the copies are reproducible, and the bottleneck cache keys each one by the settings,
the seed and the copy index (:func:`copy_digest`), so a second run extracts nothing. Validation
and test images are never distorted. This module is the only place the distortions are written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.errors import UserError

DEFAULT_COPIES = 5
_PERCENT_KEYS = ("crop", "scale", "brightness")


@dataclass(frozen=True)
class Augmentation:
    """The distortion settings (percentages as retrain.py's flags) and how many copies per training image."""

    flip: bool = False
    crop: int = 0
    scale: int = 0
    brightness: int = 0
    copies: int = DEFAULT_COPIES

    @property
    def spec(self) -> str:
        """The canonical ``--augment`` text: ``flip,crop=10,scale=10,brightness=10``."""
        parts = ["flip"] if self.flip else []
        parts += [f"{key}={getattr(self, key)}" for key in _PERCENT_KEYS if getattr(self, key)]
        return ",".join(parts)

    def describe(self) -> dict[str, Any]:
        """What the results record: the settings, the copies and the canonical text."""
        return {"spec": self.spec, "flip": self.flip, "crop": self.crop, "scale": self.scale,
                "brightness": self.brightness, "copies": self.copies}


def parse_augment(text: str | None, copies: int | None = None) -> Augmentation | None:
    """``--augment`` and ``--augment-copies`` -> settings; None without ``--augment``. One-line errors."""
    if copies is not None and copies < 1:
        raise UserError(f"--augment-copies {copies}: must be at least 1")
    if text is None:
        if copies is not None:
            raise UserError("--augment-copies needs --augment (e.g. --augment flip,crop=10)")
        return None
    values: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if name == "flip" and not eq:
            values["flip"] = True
        elif name in _PERCENT_KEYS and eq and re.fullmatch(r"\s*\d+\s*", value):
            percent = int(value)
            limit = 100 if name == "brightness" else 1000
            if not 0 <= percent <= limit:
                raise UserError(f"--augment {part}: {name} is a percentage from 0 to {limit}")
            values[name] = percent
        else:
            raise UserError(f"--augment {text!r}: {part!r} is not one of flip, crop=PCT, scale=PCT, brightness=PCT "
                            f"(retrain.py's --flip_left_right, --random_crop, --random_scale, --random_brightness)")
    settings = Augmentation(**values, copies=DEFAULT_COPIES if copies is None else copies)
    if not settings.spec:
        raise UserError(f"--augment {text!r} distorts nothing; name at least one of flip, crop, scale, brightness")
    return settings


# -- one copy's random draw ----------------------------------------------------------------------
def copy_seed(seed: int, image_digest: str, copy: int) -> int:
    """The seed of copy ``copy`` of the image with content digest ``image_digest``."""
    text = f"xferbench-augment|{seed}|{image_digest}|{copy}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little")


def copy_digest(image_digest: str, settings: Augmentation, seed: int, copy: int) -> str:
    """The cache address of one distorted copy: the image, the settings, the seed and the copy index."""
    text = f"{image_digest}|augment:{settings.spec}|seed:{seed}|copy:{copy}".encode()
    return hashlib.sha256(text).hexdigest()


def draw(settings: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """One copy's distortion as float32 ``[window, top, left, flip, brightness]``.

    ``window`` is the fraction of the height and width kept, ``top``/``left`` where the window
    starts as a fraction of the room left (0..1), ``flip`` 0 or 1, ``brightness`` the multiplier.
    """
    factor = (1 + settings.crop / 100) * rng.uniform(1.0, 1.0 + settings.scale / 100)
    top, left = rng.uniform(0.0, 1.0, size=2)
    flip = float(settings.flip and rng.uniform() < 0.5)
    brightness = rng.uniform(1 - settings.brightness / 100, 1 + settings.brightness / 100)
    return np.array([1.0 / factor, top, left, flip, brightness], dtype=np.float32)


def draw_for_copy(settings: Augmentation, seed: int, image_digest: str, copy: int) -> np.ndarray:
    return draw(settings, np.random.default_rng(copy_seed(seed, image_digest, copy)))


# -- applying it (TensorFlow) --------------------------------------------------------------------
def tf_window(rgb: Any, params: Any) -> Any:
    """Decoded ``[H, W, C]`` pixels -> the copy's window, flipped if drawn (same dtype)."""
    import tensorflow as tf

    shape = tf.shape(rgb)
    height, width = shape[0], shape[1]
    window, top, left, flip = params[0], params[1], params[2], params[3]
    crop_h = tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float32) * window), tf.int32))
    crop_w = tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float32) * window), tf.int32))
    y = tf.cast(tf.floor(top * tf.cast(height - crop_h + 1, tf.float32)), tf.int32)
    x = tf.cast(tf.floor(left * tf.cast(width - crop_w + 1, tf.float32)), tf.int32)
    y = tf.clip_by_value(y, 0, height - crop_h)
    x = tf.clip_by_value(x, 0, width - crop_w)
    cropped = rgb[y:y + crop_h, x:x + crop_w]
    return tf.cond(flip > 0.5, lambda: tf.reverse(cropped, axis=[1]), lambda: cropped)


def tf_distorted_input(rgb: Any, params: Any, preprocessing: Any) -> Any:
    """Decoded uint8 ``[H, W, 3]`` -> the network input of the distorted copy (window, flip, resize, brightness)."""
    import tensorflow as tf

    from xferbench.decoding import tf_resize

    resized = tf_resize(tf_window(rgb, params), preprocessing) * params[4]
    return tf.ensure_shape(preprocessing.normalise(resized), preprocessing.input_shape)


class CopyPreprocessor:
    """Images + draws -> the backbone's inputs of distorted copies: one traced call per copy, or per image."""

    def __init__(self, preprocessing: Any) -> None:
        import tensorflow as tf

        from xferbench.decoding import tf_decode

        if preprocessing.library != "tensorflow":
            raise UserError("--augment needs a backbone whose preprocessing runs in TensorFlow")
        self.preprocessing = preprocessing
        spec = tf.TensorSpec(preprocessing.input_shape, tf.float32)
        self._from_file = tf.function(
            lambda contents, params: tf_distorted_input(tf_decode(contents, preprocessing), params, preprocessing),
            input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([5], tf.float32)])
        self._from_pixels = tf.function(
            lambda rgb, params: tf_distorted_input(rgb, params, preprocessing),
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([5], tf.float32)])
        self.spec = spec

        def many(rgb: Any, params: Any) -> Any:
            return tf.map_fn(lambda row: tf_distorted_input(rgb, row, preprocessing), params,
                             fn_output_signature=spec)

        # Every copy of one image in one call: decoded once, distorted copy by copy.
        self._many_from_file = tf.function(
            lambda contents, params: many(tf_decode(contents, preprocessing), params),
            input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([None, 5], tf.float32)])
        self._many_from_pixels = tf.function(
            many, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 5], tf.float32)])

    def one(self, image: Any, params: np.ndarray) -> np.ndarray | None:
        """One copy's input ``preprocessing.input_shape``; None when the image does not decode."""
        import tensorflow as tf

        from xferbench.decoding import as_bytes, to_rgb

        raw = as_bytes(image)
        try:
            if raw is not None:
                return np.asarray(self._from_file(tf.constant(raw), params))
            rgb = to_rgb(image)
            return None if rgb is None else np.asarray(self._from_pixels(rgb, params))
        except tf.errors.OpError:
            return None

    def many(self, image: Any, params: np.ndarray) -> np.ndarray | None:
        """The inputs of several copies of one image, ``[len(params), *input_shape]``; None when it does not decode.

        The image is decoded once for all of them (:meth:`one` decodes it per copy).
        """
        import tensorflow as tf

        from xferbench.decoding import as_bytes, to_rgb

        params = np.asarray(params, np.float32).reshape(-1, 5)
        raw = as_bytes(image)
        try:
            if raw is not None:
                return np.asarray(self._many_from_file(tf.constant(raw), params))
            rgb = to_rgb(image)
            return None if rgb is None else np.asarray(self._many_from_pixels(rgb, params))
        except tf.errors.OpError:
            return None


# -- on the fly, for full and finetune -----------------------------------------------------------
def tf_distort_batch(batch: Any, preprocessing: Any, settings: Augmentation, generator: Any) -> Any:
    """Preprocessed inputs ``[n, H, W, C]`` -> a fresh distorted copy of each, inside a training step.

    The same four distortions on the network's (already resized) input, as Keras preprocessing
    layers would apply them: the window is cut and resized back with ``crop_and_resize`` (bilinear),
    and brightness multiplies the pixels before normalisation (undone and redone here).
    ``generator`` is a ``tf.random.Generator`` (seeded by the caller, saved in its checkpoints).
    """
    import tensorflow as tf

    n = tf.shape(batch)[0]
    height, width = preprocessing.input_shape[:2]
    pixels = denormalise(batch, preprocessing)
    factor = (1 + settings.crop / 100) * generator.uniform([n], 1.0, 1.0 + settings.scale / 100)
    window = 1.0 / factor
    top = generator.uniform([n]) * (1.0 - window)
    left = generator.uniform([n]) * (1.0 - window)
    boxes = tf.stack([top, left, top + window, left + window], axis=1)
    pixels = tf.image.crop_and_resize(pixels, boxes, tf.range(n), (height, width))
    if settings.flip:
        flip = generator.uniform([n]) < 0.5
        pixels = tf.where(flip[:, None, None, None], tf.reverse(pixels, axis=[2]), pixels)
    brightness = generator.uniform([n], 1 - settings.brightness / 100, 1 + settings.brightness / 100)
    pixels = pixels * brightness[:, None, None, None]
    return tf.cast(preprocessing.normalise(pixels), batch.dtype)


def denormalise(x: Any, preprocessing: Any) -> Any:
    """The inverse of :meth:`Preprocessing.normalise` (channel order included)."""
    p = preprocessing
    if any(value != 1.0 for value in p.std):
        x = x * np.asarray(p.std, np.float32)
    if any(p.mean):
        x = x + np.asarray(p.mean, np.float32)
    if p.divide_by != 1.0:
        x = x * np.float32(p.divide_by)
    if p.scale != 1.0:
        x = x / np.float32(p.scale)
    return x[..., ::-1] if p.reverse_channels else x


# -- cached copies, for methods on bottlenecks ---------------------------------------------------
@dataclass
class CopyExtraction:
    """The distorted copies' features of some training images: ``copies`` rows per image, in order."""

    features: np.ndarray
    labels: np.ndarray
    keys: list[str]
    cache_hits: int = 0
    computed: int = 0
    failed: int = 0
    seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"copies_total": len(self.keys), "copies_from_cache": self.cache_hits,
                "copies_extracted": self.computed, "copies_failed": self.failed,
                "copies_seconds": round(self.seconds, 4)}


def extract_copies(backbone: Any, dataset: Any, examples: list[Any], settings: Augmentation, seed: int,
                   cache_root: Any, progress: Any) -> CopyExtraction:
    """Features of ``settings.copies`` distorted copies of each of ``examples``, from the cache or computed.

    Each copy is drawn from :func:`copy_seed` and cached under :func:`copy_digest` in the backbone's
    own namespace (so a backbone's float32 and bfloat16 copies stay apart as its originals do).
    """
    import time

    from xferbench.backbone import NetworkBackbone
    from xferbench.bottleneck_cache import BottleneckCache, image_digest

    if not isinstance(backbone, NetworkBackbone):
        raise UserError(f"--augment needs a backbone built on NetworkBackbone (a preprocessing and a forward "
                        f"pass); {backbone.name!r} is not one")
    backbone.calibrate(dataset, Path(cache_root).parent)  # precision=int8: copies go through the int8 model
    cache = BottleneckCache(cache_root, backbone.cache_namespace(), backbone.feature_dim)
    count = len(examples) * settings.copies
    features = np.full((count, backbone.feature_dim), np.nan, dtype=np.float32)
    labels = np.repeat(np.array([ex.label for ex in examples], dtype=np.int64), settings.copies)
    keys = [f"{ex.key}#copy{k}" for ex in examples for k in range(settings.copies)]
    result = CopyExtraction(features, labels, keys)
    preprocessor: CopyPreprocessor | None = None
    pending: list[tuple[int, np.ndarray, str]] = []
    started: float | None = None

    def flush() -> None:
        if not pending:
            return
        network_before = backbone.network_seconds
        forward_started = time.perf_counter()
        rows = np.asarray(backbone.bottleneck_forward(np.stack([x for _, x, _ in pending])), dtype=np.float32)
        backbone.network_seconds = network_before + time.perf_counter() - forward_started
        for (row_index, _, digest), row in zip(pending, rows, strict=True):
            features[row_index] = row
            cache.put(digest, row)
            result.computed += 1
        pending.clear()

    with progress.task(f"augmented copies {backbone.name} ({settings.spec} x{settings.copies})", total=count,
                       unit="img") as task:
        for index, example in enumerate(examples):
            image = dataset.read(example)
            base = image_digest(image)
            missing: list[tuple[int, str, np.ndarray]] = []  # (row, cache address, draw) of copies to compute
            for copy in range(settings.copies):
                row_index = index * settings.copies + copy
                digest = copy_digest(base, settings, seed, copy)
                cached = cache.get(digest)
                if cached is not None:
                    features[row_index] = cached
                    result.cache_hits += 1
                else:
                    missing.append((row_index, digest, draw_for_copy(settings, seed, base, copy)))
            if missing:
                if started is None:
                    started = time.perf_counter()
                preprocessor = preprocessor or CopyPreprocessor(backbone.preprocessing)
                inputs = preprocessor.many(image, np.stack([params for _, _, params in missing]))
                if inputs is None:
                    result.failed += len(missing)
                else:
                    for (row_index, digest, _), pixels in zip(missing, inputs, strict=True):
                        pending.append((row_index, pixels, digest))
                        if len(pending) >= backbone.batch_size:
                            flush()
            task.advance(settings.copies)
        flush()
    result.seconds = time.perf_counter() - started if started is not None else 0.0
    ok = ~np.isnan(features).any(axis=1)
    if not ok.all():
        result.features, result.labels = features[ok], labels[ok]
        result.keys = [key for key, good in zip(keys, ok, strict=True) if good]
    return result
