"""``precision=int8``: bottlenecks from a full-integer TFLite model of the backbone, run by LiteRT's interpreter.

The backbone up to its bottleneck (its :meth:`~xferbench.backbone.NetworkBackbone.tf_forward`, fed
preprocessed pixels) is converted by :func:`xferbench.tflite.convert` with ``int8`` quantization:
weights and activations int8, input and output float32. The converter calibrates the activations
on a representative dataset: up to ``int8_calibration_images`` images of the cell's training split,
a fixed draw (:data:`CALIBRATION_SEED`) so that the same training images give the same model. The
converted model is cached under ``<cache>/int8/`` by the backbone's float32 identity, the number of
calibration images and a digest of their contents (atomic write), so a second run converts nothing.
That calibration digest is also part of the bottleneck cache namespace: int8 features of one
calibration never mix with float32, bfloat16 or another calibration's.

TensorFlow and LiteRT are imported inside functions only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.atomic import atomic_path
from xferbench.errors import UserError
from xferbench.native_stderr import native_stderr_silenced

if TYPE_CHECKING:
    from xferbench.backbone import NetworkBackbone
    from xferbench.data import ImageDataset

#: default ``int8_calibration_images``: training images that calibrate the int8 model
DEFAULT_CALIBRATION_IMAGES = 100
#: the draw of calibration images is fixed (not the run's seed): the int8 model belongs to the
#: backbone and the training images, so runs with other seeds share it and its cached features
CALIBRATION_SEED = 0
#: bump when the conversion changes (invalidates converted models and int8 features)
CONVERSION_VERSION = "1"


def calibration_examples(dataset: ImageDataset, count: int) -> list[Any]:
    """Up to ``count`` training examples of ``dataset``, a fixed random draw."""
    train = dataset.split("train")
    order = np.random.default_rng(CALIBRATION_SEED).permutation(len(train))[:count]
    return [train[int(i)] for i in sorted(order)]


def calibration_digest(images: list[Any]) -> str:
    """sha256 over the calibration images' contents, in order."""
    from xferbench.bottleneck_cache import image_digest

    digest = hashlib.sha256(f"int8-calibration-v{CONVERSION_VERSION}\n".encode())
    for image in images:
        digest.update(f"{image_digest(image)}\n".encode())
    return digest.hexdigest()


def tf_threads() -> int:
    """The threads TensorFlow computes with: its intra-op setting, or (0, TF's default) every usable core."""
    import tensorflow as tf

    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Int8Network:
    """The converted model in LiteRT's interpreter: float32 ``[n, *input_shape]`` -> float32 ``[n, dim]``.

    The input tensor is resized to each batch's size, so a batch is one ``invoke``; a model whose
    ops do not allow another batch size runs image by image (``batched`` says which).
    """

    def __init__(self, path: Path, input_shape: tuple[int, ...], threads: int) -> None:
        from xferbench.tflite import interpreter_class

        self.path = path
        self.threads = threads
        self._input_shape = tuple(input_shape)
        with native_stderr_silenced():  # LiteRT announces its XNNPACK delegate natively
            self._interpreter = interpreter_class()(model_path=str(path), num_threads=threads)
        (detail,) = self._interpreter.get_input_details()
        (output,) = self._interpreter.get_output_details()
        self._input, self._output = detail["index"], output["index"]
        self._width = int(output["shape"][-1])
        self._size: int | None = None
        self.batched = True

    def _resize(self, size: int) -> None:
        if size != self._size:
            self._interpreter.resize_tensor_input(self._input, [size, *self._input_shape], strict=False)
            with native_stderr_silenced():
                self._interpreter.allocate_tensors()
            self._size = size

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self._resize(batch.shape[0])
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output), dtype=np.float32)

    def __call__(self, batch: Any) -> np.ndarray:
        batch = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        if self.batched and batch.shape[0] > 1:
            try:
                return self._invoke(batch)
            except (RuntimeError, ValueError):
                self.batched = False  # a Reshape or other op fixed to one image: go one by one
                self._size = None
        rows = [self._invoke(batch[i:i + 1]) for i in range(batch.shape[0])]
        return np.concatenate(rows) if rows else np.zeros((0, self._width), np.float32)


def convert_backbone(backbone: NetworkBackbone, images: list[Any]) -> bytes:
    """The full-integer TFLite flatbuffer of ``backbone``'s network, calibrated on ``images``."""
    import tensorflow as tf

    from xferbench.decoding import decoder_for
    from xferbench.tflite import _tf_variable, _weights_of, convert

    forward, network = backbone.tf_forward, backbone.exported_network()
    shape = backbone.preprocessing.input_shape

    class Features(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="xferbench_int8_features")
            self.network = network
            # Keras 3 variables are not tf.Module-tracked through a model attribute (see tflite.py).
            self.weights = [_tf_variable(w) for w in _weights_of(network)]

        @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="pixels")])
        def features(self, pixels: Any) -> Any:
            return tf.cast(forward(pixels), tf.float32)

    module = Features()

    def representative() -> Iterator[list[np.ndarray]]:
        for _, batch in decoder_for(backbone.preprocessing).batches(images, 1):
            yield [np.asarray(batch, dtype=np.float32)]

    return convert(module.features.get_concrete_function(), module, "int8", representative, backbone.name,
                   what="precision=int8")


def calibration(dataset: ImageDataset, count: int, backbone_name: str) -> tuple[list[Any], str]:
    """``(calibration images, their digest)`` from ``dataset``'s training split."""
    examples = calibration_examples(dataset, count)
    if not examples:
        raise UserError(f"backbone {backbone_name!r} with precision=int8 needs training images to calibrate its "
                        f"int8 model; dataset {dataset.name!r} has none")
    images = [dataset.read(ex) for ex in examples]
    return images, calibration_digest(images)


def load_or_convert(backbone: NetworkBackbone, identity: str, images: list[Any], digest: str,
                    cache_dir: Path) -> Int8Network:
    """The int8 network of ``backbone`` (``identity``: its cache namespace), from ``<cache_dir>/int8`` or converted."""
    key = hashlib.sha256(f"{identity}|int8-v{CONVERSION_VERSION}|cal{len(images)}-{digest}".encode()).hexdigest()
    path = Path(cache_dir) / "int8" / f"{key[:32]}.tflite"
    if not path.is_file():
        flatbuffer = convert_backbone(backbone, images)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(flatbuffer)
    return Int8Network(path, backbone.preprocessing.input_shape, tf_threads())
