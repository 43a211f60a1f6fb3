"""``keras:<Application>``: any ``keras.applications`` model cut before its classifier.

The network is built with ``include_top=False, pooling="avg"``, so the bottleneck is the
global-average-pooled last feature map. Images are resized to the application's default input
size (or ``input_size``) and normalised as the family's own ``preprocess_input`` does: its
arithmetic is recognised as one of :data:`NORMALISATIONS` (checked bit for bit on a probe image)
and becomes part of the backbone's :class:`~xferbench.decoding.Preprocessing`. Weights: ``--weights FILE``,
else a file shipped in the package (MobileNet ``alpha=0.25``, see :mod:`xferbench_keras.packaged`),
else Keras's own ImageNet download.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.backbone import NetworkBackbone
from xferbench.decoding import Preprocessing
from xferbench.download import sha256_file
from xferbench.errors import OptionError, UserError, one_line
from xferbench.precision import keras_dtype_policy
from xferbench_keras.packaged import packaged_weights

if TYPE_CHECKING:
    from xferbench.context import RunContext

#: bump when decoding, resizing or preprocessing changes (invalidates cached bottlenecks)
PREPROCESSING_REVISION = "1"

# keras does not expose an application's default input size; these are the values its
# constructors pass to ``obtain_input_shape`` (all the others use 224).
_DEFAULT_SIZES: dict[str, int] = {
    "InceptionV3": 299,
    "InceptionResNetV2": 299,
    "Xception": 299,
    "NASNetLarge": 331,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
}


#: The arithmetic of ``keras.applications.imagenet_utils.preprocess_input``'s modes, as
#: :class:`Preprocessing` settings; ``none``: the model rescales its input itself (EfficientNet,
#: ConvNeXt, MobileNetV3, ...).
NORMALISATIONS: dict[str, dict[str, Any]] = {
    "tf": {"divide_by": 127.5, "mean": (1.0,)},
    "torch": {"divide_by": 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    "caffe": {"reverse_channels": True, "mean": (103.939, 116.779, 123.68)},
    "none": {},
}


def normalisation_of(preprocess_input: Callable[[np.ndarray], Any], family: str) -> str:
    """Which of :data:`NORMALISATIONS` ``preprocess_input`` computes, bit for bit on a probe image."""
    probe = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)
    want = np.asarray(preprocess_input(probe.copy()))
    for mode, settings in NORMALISATIONS.items():
        got = Preprocessing(size=(1, 1), **settings).normalise(probe)
        if got.shape == want.shape and np.array_equal(got, want):
            return mode
    raise UserError(f"keras.applications.{family}.preprocess_input does arithmetic xferbench does not know; "
                    f"this Keras version is not supported for it")


def available_applications() -> list[str]:
    """Names of all model constructors in ``keras.applications`` (``MobileNet``, ``ResNet50``, ...)."""
    import keras

    return sorted(name for name in dir(keras.applications)
                  if name[:1].isupper() and callable(getattr(keras.applications, name)))


def default_input_size(application: str) -> int:
    """The square input size the application was trained at."""
    return _DEFAULT_SIZES.get(application, 224)


def find_application(name: str) -> str:
    """The exact application name for ``name`` (case-insensitive), or a one-line UserError."""
    names = available_applications()
    if name in names:
        return name
    by_lower = {n.lower(): n for n in names}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    hint = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    did_you_mean = f"did you mean {by_lower[hint[0]]!r}? " if hint else ""
    raise UserError(f"unknown Keras application {name!r}; {did_you_mean}available: {', '.join(names)}")


class _DownloadFailed(Exception):
    """Keras could not fetch (or copy) the ImageNet weights."""


class _WrongFile(Exception):
    """The file to import is not the one Keras's checksum names."""


def _redirect_to(source: Path, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``get_file`` arguments that copy ``source`` into Keras's cache instead of downloading.

    The file lands exactly where Keras will look for it (its own cache logic places it),
    so later runs with ``weights="imagenet"`` find it offline.
    """
    from keras.src.utils import file_utils

    bound = inspect.signature(original).bind(*args, **kwargs)
    expected = bound.arguments.get("file_hash") or bound.arguments.get("md5_hash")
    algorithm = "md5" if bound.arguments.get("md5_hash") else bound.arguments.get("hash_algorithm", "auto")
    if expected and not file_utils.validate_file(str(source), expected, algorithm=algorithm):
        raise _WrongFile(f"Keras expects {bound.arguments.get('fname')} with checksum {expected}")
    bound.arguments["origin"] = source.resolve().as_uri()
    bound.arguments["force_download"] = True  # replace a stale or partial copy
    return bound.args, bound.kwargs


@contextmanager
def _watch_downloads(seen: list[str], source: Path | None = None) -> Iterator[None]:
    """Record the local paths Keras's ``get_file`` returns, and mark its failures.

    Applications fetch their weights through ``keras.src.utils.file_utils.get_file``; wrapping
    it is the only way to learn which cached file was loaded (its digest keys the bottleneck
    cache) and to tell a failed download from any other error. If Keras moves that function,
    the wrapper is skipped and the digest falls back to the application's name. With
    ``source``, the download is replaced by a copy of that local file.
    """
    try:
        from keras.src.utils import file_utils
    except ImportError:
        yield
        return
    original = file_utils.get_file

    def get_file(*args: Any, **kwargs: Any) -> str:
        if source is not None:
            args, kwargs = _redirect_to(source, original, args, kwargs)
        try:
            # Keras prints "Downloading data from ..." and its bar to stdout, where
            # `--format json|csv` summaries go; a download is progress, so it belongs on stderr.
            with contextlib.redirect_stdout(sys.stderr):
                path = original(*args, **kwargs)
        except Exception as exc:
            raise _DownloadFailed(one_line(exc)) from exc
        seen.append(str(path))
        return path

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original


class KerasBackbone(NetworkBackbone):
    """A ``keras.applications`` model with ImageNet (or user-supplied) weights."""

    def __init__(self, arg: str | None, options: Mapping[str, Any], context: RunContext) -> None:
        import keras

        self.application = find_application((arg or "").strip())
        self._constructor: Callable[..., Any] = getattr(keras.applications, self.application)
        family = self._constructor.__module__.rsplit(".", 1)[-1]  # keras.src.applications.mobilenet
        module = getattr(keras.applications, family, None)
        if module is None or not hasattr(module, "preprocess_input"):
            raise UserError(f"keras:{self.application}: cannot find keras.applications.{family}.preprocess_input; "
                            f"this Keras version is not supported")
        self._family = family
        self.normalisation = normalisation_of(module.preprocess_input, family)

        self.alpha: float | None = options.get("alpha")
        if self.alpha is not None and "alpha" not in inspect.signature(self._constructor).parameters:
            raise OptionError(f"backbone 'keras': option alpha applies to MobileNet, MobileNetV2 and "
                              f"MobileNetV3*, not to {self.application}")
        self.input_size: int = options.get("input_size") or default_input_size(self.application)
        self.batch_size = options.get("batch_size") or 32
        self.preprocessing = Preprocessing(size=(self.input_size, self.input_size),
                                           **NORMALISATIONS[self.normalisation])
        self._precision: str = options.get("precision") or "float32"
        self.calibration_images = int(options.get("int8_calibration_images") or self.calibration_images)

        self.weights_file: Path | None = None
        if context.weights is not None:
            path = Path(context.weights).expanduser()
            if not path.is_file():
                raise UserError(f"weights file {str(path)!r} does not exist; check --weights")
            self.weights_file = path.resolve()
        else:
            self.weights_file = packaged_weights(self.application, self.alpha)

        self.name = f"keras:{self.application}"
        # Alpha, size and precision change the features but not always the weights file
        # (one MobileNet file serves sizes 128..224), so they belong in the cache key.
        alpha = f"-alpha{self.alpha:g}" if self.alpha is not None else ""
        self.preprocessing_version = f"{PREPROCESSING_REVISION}-{self.input_size}px{alpha}-{self._precision}"
        self._model: Any = None
        self._forward: Callable[[np.ndarray], Any] | None = None
        self._keras_files: list[str] = []
        self._digest: str | None = None

    # -- building -------------------------------------------------------------------------
    @property
    def _weights_arg(self) -> str:
        return str(self.weights_file) if self.weights_file is not None else "imagenet"

    def _describe(self) -> str:
        alpha = f"alpha={self.alpha:g}, " if self.alpha is not None else ""
        return f"keras:{self.application} ({alpha}input_size={self.input_size})"

    def _construct(self, weights: str | None, files: list[str], source: Path | None = None) -> Any:
        """The application without its top, average-pooled, at ``input_size``; Keras's errors as they are."""
        kwargs: dict[str, Any] = {"include_top": False, "weights": weights, "pooling": "avg",
                                  "input_shape": (self.input_size, self.input_size, 3)}
        if self.alpha is not None:
            kwargs["alpha"] = self.alpha
        with _watch_downloads(files, source), keras_dtype_policy(self._precision):
            return self._constructor(**kwargs)

    def _build_base(self, weights: str | None) -> Any:
        """:meth:`_construct` with one-line UserErrors."""
        files: list[str] = []
        try:
            model = self._construct(weights, files)
        except _DownloadFailed as exc:
            raise UserError(f"{self._describe()}: cannot download its ImageNet weights ({exc}); fetch the "
                            f"no-top weights file elsewhere and pass --weights FILE (or import it with "
                            f"`xferbench fetch {self.name} --from FILE`)") from None
        except (ValueError, OSError, TypeError) as exc:
            source = f"weights file {str(self.weights_file)!r}" if weights and self.weights_file else "these settings"
            raise UserError(f"cannot build {self._describe()} with {source}: {one_line(exc)}") from None
        if weights == "imagenet":
            self._keras_files = files
        return model

    def import_weights(self, source: Path) -> Path:
        """Copy a local ImageNet weights file into Keras's cache, where ``weights="imagenet"`` finds it.

        The file is loaded into the model on the way, so one that does not fit (another alpha,
        another application) is refused and removed again.
        """
        files: list[str] = []
        try:
            self._construct("imagenet", files, source=source)
        except _WrongFile as exc:
            raise UserError(f"{source} is not Keras's ImageNet file for {self._describe()} ({exc}); "
                            f"use it with --weights FILE instead") from None
        except _DownloadFailed as exc:
            raise UserError(f"cannot copy {source} into Keras's cache: {exc}") from None
        except (ValueError, OSError, TypeError) as exc:
            for path in files:
                Path(path).unlink(missing_ok=True)
            raise UserError(f"{source} does not fit {self._describe()}: {one_line(exc)}; "
                            f"check alpha and input_size") from None
        if not files:
            raise UserError(f"{self._describe()}: Keras did not ask for a weights file; "
                            f"pass --weights FILE instead")
        return Path(files[-1])

    def _feature_model(self) -> Any:
        if self._model is None:
            import tensorflow as tf

            model = self._build_base(self._weights_arg)
            self._model = model
            spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.float32)
            # One traced graph for every batch size (the last batch is usually smaller).
            self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return self._model

    def prepare(self, context: RunContext) -> None:
        """Load the weights now, so a failed download is reported before any work starts."""
        self._feature_model()

    # -- identity -------------------------------------------------------------------------
    @property
    def weights_sha256(self) -> str:
        if self._digest is None:
            if self.weights_file is not None:
                self._digest = sha256_file(self.weights_file)
            else:
                self._feature_model()  # learn which file Keras loaded
                cached = [Path(p) for p in self._keras_files if Path(p).is_file()]
                if cached:
                    self._digest = sha256_file(cached[-1])
                else:
                    self._digest = hashlib.sha256(f"imagenet:{self.application}".encode()).hexdigest()
        return self._digest

    @property
    def feature_dim(self) -> int:  # type: ignore[override]
        return int(self._feature_model().output_shape[-1])

    def precision(self) -> str:
        return self._precision

    def flops_per_image(self) -> float:
        from xferbench.flops import function_flops

        self._feature_model()
        return function_flops(self._forward, (self.input_size, self.input_size, 3))

    def info(self) -> dict[str, Any]:
        import keras

        return {
            "application": self.application,
            "preprocess_input": f"keras.applications.{self._family}.preprocess_input",
            "normalisation": self.normalisation,
            "weights": str(self.weights_file) if self.weights_file else "imagenet",
            "weights_cache_file": self._keras_files[-1] if self._keras_files else None,
            "input_size": self.input_size,
            "alpha": self.alpha,
            "precision": self._precision,
            **({"int8_calibration_images": self.calibration_images,
                "int8_model": str(self._int8[1].path) if self._int8 else None} if self._precision == "int8" else {}),
            "keras_version": keras.__version__,
        }

    # -- features -------------------------------------------------------------------------
    def forward(self, batch: Any) -> Any:
        self._feature_model()
        assert self._forward is not None
        return self._forward(batch)

    def exported_network(self) -> Any:
        return self._feature_model()

    # -- full retraining and fine-tuning ------------------------------------------------
    def supports(self, method: str) -> bool:
        return method in ("full", "finetune")

    def build_model(self, num_classes: int, *, pretrained: bool, seed: int) -> Any:
        """The application (random or with its weights, all trainable) + a new softmax layer.

        With ``pretrained=True`` the base runs with ``training=False`` so its BatchNorm layers
        keep their ImageNet statistics while their weights are fine-tuned (Keras's
        transfer-learning guide); small fine-tuning batches would otherwise wreck them.
        """
        import keras

        keras.utils.set_random_seed(seed)
        base = self._build_base(self._weights_arg if pretrained else None)
        base.trainable = True
        inputs = keras.Input((self.input_size, self.input_size, 3), name="image")
        features = base(inputs, training=False) if pretrained else base(inputs)
        # The softmax stays float32 under mixed precision, for numerically sound losses.
        outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="softmax")(features)
        label = re.sub(r"[^A-Za-z0-9_]", "_", self.application)
        return keras.Model(inputs, outputs, name=f"{label}_{'finetune' if pretrained else 'full'}")


def fetch_weights(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None) -> Path:
    """``xferbench fetch keras:<App>``: download (or with ``--from FILE`` import) its ImageNet weights.

    Either way the file ends up in Keras's own cache, so later runs need no network.
    """
    backbone = KerasBackbone(arg, options, replace(context, weights=None))
    if source is not None:
        return backbone.import_weights(Path(source).expanduser())
    backbone.prepare(context)
    if backbone.weights_file is not None:  # shipped in the package: nothing to download
        return backbone.weights_file
    if not backbone._keras_files:
        raise UserError(f"{backbone.name}: Keras loaded its ImageNet weights without naming a file")
    return Path(backbone._keras_files[-1])
