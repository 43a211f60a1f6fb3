"""The backbone contract: images in, bottleneck features out."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.data import ImageData
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
    #: over calls; a backbone that cannot tell the two apart leaves it at 0
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
