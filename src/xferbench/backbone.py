"""The backbone contract (images in, bottleneck features out) and its template, :class:`NetworkBackbone`."""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.data import ImageData, ImageDataset
from xferbench.decoding import Preprocessing, decoder_for, preprocess_all, tf_preprocess
from xferbench.errors import UserError

if TYPE_CHECKING:
    from xferbench.context import RunContext


class Backbone(abc.ABC):
    """A pretrained network cut at its bottleneck.

    ``extract`` must not import TensorFlow at module import time of the plugin;
    import it inside methods.
    """

    #: how the user named it, e.g. ``"keras:MobileNet"``
    name: str
    #: width of the bottleneck vector
    feature_dim: int
    #: bump when preprocessing changes so cached features are not reused
    preprocessing_version: str = "1"
    #: how many images the harness hands to one ``extract`` call
    extract_batch_size: int = 64
    #: seconds ``extract`` spent in the network's forward passes alone (decoding excluded), summed
    #: over calls; a backbone that does not time them leaves it at 0 and shows ``-`` under ``net img/s``
    network_seconds: float = 0.0

    def prepare(self, context: RunContext) -> None:  # noqa: B027 - optional hook
        """Fetch, verify or pretrain weights. Called once before any extraction."""

    @property
    @abc.abstractmethod
    def weights_sha256(self) -> str:
        """Digest that identifies the weights (part of every bottleneck cache key)."""

    def cache_namespace(self) -> str:
        """Backbone id + weights + preprocessing: the cache key prefix."""
        return f"{self.name}|{self.weights_sha256}|pre{self.preprocessing_version}"

    @abc.abstractmethod
    def extract(self, images: Sequence[ImageData]) -> np.ndarray:
        """Bottleneck features, float32 ``[len(images), feature_dim]``.

        A row whose image cannot be decoded is all NaN; it never raises for one bad image.
        """

    def precision(self) -> str:
        return "float32"

    def calibrate(self, dataset: ImageDataset, cache_dir: Path) -> None:  # noqa: B027 - optional hook
        """Called with the cell's dataset before its features are extracted (and ``cache_namespace`` read).

        ``precision=int8`` calibrates its int8 model on ``dataset``'s training images here; other
        backbones ignore it. ``cache_dir``: the harness's cache root.
        """

    def flops_per_image(self) -> float | None:
        """FLOPs of one image's forward pass, counted from the network's graph (2 per multiply-add of its
        convolutions and matrix products, :mod:`xferbench.flops`); None when the backbone cannot tell.
        Called after ``prepare``; it feeds the run's ``gflops_per_image`` and MFU."""
        return None

    # -- full retraining and fine-tuning (optional) -------------------------------------
    def supports(self, method: str) -> bool:
        """Whether ``method`` (``"full"`` or ``"finetune"``) is available."""
        return False

    def model_inputs(self, images: Sequence[ImageData]) -> np.ndarray:
        """Preprocessed input tensors for :meth:`build_model`, one row per image."""
        raise NotImplementedError(f"backbone {self.name!r} cannot be trained")

    def build_model(self, num_classes: int, *, pretrained: bool, seed: int) -> Any:
        """A trainable Keras model: the backbone plus a new softmax layer.

        ``pretrained=False`` is the same architecture from random initialisation.
        """
        raise NotImplementedError(f"backbone {self.name!r} cannot be trained")

    def info(self) -> dict[str, Any]:
        """Extra facts for the results document (source, weights file, ...)."""
        return {}

    # -- export (optional) ---------------------------------------------------------------
    def tf_features(self) -> Callable[[Any], Any]:
        """The whole backbone as TensorFlow ops, for ``xferbench export``: called after ``prepare``.

        Returns a callable mapping a ``tf.string`` tensor ``[N]`` of encoded image files
        (JPEG, PNG, GIF, BMP) to float32 features ``[N, feature_dim]``, traceable inside a
        ``tf.function``. It must decode, resize and normalise exactly as :meth:`extract` does
        for the same bytes, so an exported model predicts what the harness measured. Anything
        it reads that ``tf.saved_model.save`` must store (variables, Keras models) has to be
        tracked by it: return a ``tf.Module`` (or Keras model) that holds them as attributes.
        """
        raise UserError(f"backbone {self.name!r} cannot be exported (it provides no TensorFlow graph of its "
                        f"preprocessing and features); export a run made with another backbone")


class NetworkBackbone(Backbone):
    """A backbone given as two parts: its :attr:`preprocessing` (data) and a batched :meth:`forward`.

    The preprocessing says how images are decoded, resized and normalised for these weights, the
    way torchvision's weights carry their transforms. From the two parts this class makes
    :meth:`extract` (batches of :attr:`batch_size`, NaN rows for undecodable images, the forward
    passes timed into ``network_seconds``), :meth:`model_inputs` and, for TensorFlow
    preprocessing, :meth:`tf_features`, which decodes and preprocesses with the same ops.
    Unless a subclass sets ``preprocessing_version``, the cache key holds a digest of
    :attr:`preprocessing`, so a change of the preprocessing never reuses stale cached features.
    """

    #: images per forward pass
    batch_size: int = 32
    #: decode the next batch on a thread while the network runs on this one (worth it on a GPU)
    prefetch: bool = False
    #: None: the cache key holds a digest of :attr:`preprocessing`; a string here replaces it (built-in
    #: backbones keep the keys they had before this template, so their caches stay valid)
    preprocessing_version: str | None = None  # type: ignore[assignment]

    #: ``precision=int8``: how many training images calibrate the int8 model (a backbone's option may set it)
    calibration_images: int = 100
    #: ``precision=int8``: (calibration digest, the int8 network) once :meth:`calibrate` ran
    _int8: tuple[str, Any] | None = None

    #: how images become :meth:`forward`'s input; set it as a class attribute, in ``__init__``, or as a
    #: property (read after :meth:`prepare`, so it may depend on the loaded weights)
    preprocessing: Preprocessing

    @abc.abstractmethod
    def forward(self, batch: Any) -> Any:
        """The network on one preprocessed batch: float32 ``[n, *preprocessing.input_shape]`` -> ``[n, feature_dim]``.

        ``batch`` is a ``tf.Tensor`` for TensorFlow preprocessing, a numpy array for Pillow;
        ``n`` is anything from 1 to :attr:`batch_size`. Return an array or a tensor.
        """

    def cache_namespace(self) -> str:
        return self._network_namespace() + self._int8_namespace()

    def _network_namespace(self) -> str:
        # Without a preprocessing_version of its own, the backbone is keyed by its preprocessing itself.
        version = self.preprocessing_version or self.preprocessing.digest()
        return f"{self.name}|{self.weights_sha256}|pre{version}"

    # -- precision=int8 ------------------------------------------------------------------------
    def _int8_namespace(self) -> str:
        """int8 features depend on the calibration images too: their digest keeps each calibration apart."""
        if self.precision() != "int8":
            return ""
        if self._int8 is None:
            raise RuntimeError(f"{self.name} with precision=int8: calibrate(dataset, cache_dir) must run before "
                               f"extraction")
        return f"|int8cal{self.calibration_images}-{self._int8[0][:16]}"

    def calibrate(self, dataset: ImageDataset, cache_dir: Path) -> None:
        """``precision=int8``: the int8 model calibrated on ``dataset``'s training images, cached or converted.

        A dataset without training images (a test-only subset) keeps the current calibration.
        """
        if self.precision() != "int8" or (self._int8 is not None and not dataset.split("train")):
            return
        from xferbench.int8 import calibration, load_or_convert

        images, digest = calibration(dataset, self.calibration_images, self.name)
        if self._int8 is None or self._int8[0] != digest:
            self._int8 = (digest, load_or_convert(self, self._network_namespace(), images, digest, cache_dir))

    def bottleneck_forward(self, batch: Any) -> Any:
        """The network at the backbone's precision: :meth:`forward`, or the int8 model for ``precision=int8``."""
        if self.precision() != "int8":
            return self.forward(batch)
        if self._int8 is None:
            raise RuntimeError(f"{self.name} with precision=int8: calibrate(dataset, cache_dir) must run first")
        return self._int8[1](batch)

    @property
    def model_preprocessing(self) -> Preprocessing:
        """The preprocessing of :meth:`build_model`'s model, where it differs from :meth:`forward`'s."""
        return self.preprocessing

    def extract(self, images: Sequence[ImageData]) -> np.ndarray:
        out = np.full((len(images), self.feature_dim), np.nan, dtype=np.float32)
        decoder = decoder_for(self.preprocessing, prefetch=self.prefetch)
        for indices, batch in decoder.batches(images, self.batch_size):
            started = time.perf_counter()
            out[indices] = np.asarray(self.bottleneck_forward(batch), dtype=np.float32)
            self.network_seconds += time.perf_counter() - started
        return out

    def model_inputs(self, images: Sequence[ImageData]) -> np.ndarray:
        """:attr:`model_preprocessing` applied to ``images``; the rows of undecodable images are NaN."""
        return preprocess_all(images, self.model_preprocessing, self.batch_size)

    # -- export --------------------------------------------------------------------------------
    def tf_forward(self, batch: Any) -> Any:
        """:meth:`forward` as TensorFlow ops, traceable in a ``tf.function`` (for export); by default ``forward``."""
        return self.forward(batch)

    def exported_network(self) -> Any:
        """What :meth:`tf_forward` reads that a SavedModel must store: a Keras model, a loaded module, or None."""
        return None

    def tf_features(self) -> Any:
        """Encoded images ``[N]`` -> features: :attr:`preprocessing` as TensorFlow ops, then :meth:`tf_forward`."""
        preprocessing = self.preprocessing
        if preprocessing.library != "tensorflow":
            raise UserError(f"backbone {self.name!r} cannot be exported (its preprocessing runs in "
                            f"{preprocessing.library}, not TensorFlow); export a run made with another backbone")
        import tensorflow as tf

        forward, network = self.tf_forward, self.exported_network()
        spec = tf.TensorSpec(preprocessing.input_shape, tf.float32)

        class Features(tf.Module):
            def __init__(self, name: str) -> None:
                super().__init__(name=name)
                self.network = network  # tracked, so saving the module saves its variables

            def __call__(self, images: Any) -> Any:
                pixels = tf.map_fn(lambda contents: tf_preprocess(contents, preprocessing), images,
                                   fn_output_signature=spec)
                return tf.cast(forward(pixels), tf.float32)

        return Features(re.sub(r"\W|^(?=\d)", "_", self.name) + "_features")
