"""``kerashub:<preset-or-dir>``: a KerasHub image backbone, cut at the embedding its architecture is probed with.

The preset is a folder (``config.json``, ``model.weights.h5``, ``image_converter.json``, ...) as
``save_to_preset`` writes it: a local folder, a preset imported with ``xferbench fetch --from``
(under the xferbench cache), or a KerasHub preset name that KerasHub downloads itself (kagglehub,
into its own cache). The preprocessing is the preset's image converter, as data: its size,
interpolation, centred crop, scale and offset. The embedding per architecture (:data:`DEFAULT_EMBEDDING`):

- ViT, DeiT, DINOv2, DINOv3: the class token after the final layer norm (``cls``); ``cls_patch_mean``
  appends the mean of the patch tokens (registers and distillation token left out), as DINOv2's linear probe;
- CLIP, MetaCLIP 2: the image encoder's pooled embedding through the projection (``projected``), or
  without it (``pooled``); SigLIP: its attention-pooled embedding (``pooled``; it has no projection);
- CNNs (ResNet, EfficientNet, MobileNet, ...): global average pooling of the last feature map (``gap``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.backbone import NetworkBackbone
from xferbench.decoding import Preprocessing
from xferbench.errors import OptionError, UserError, one_line
from xferbench.precision import keras_dtype_policy

if TYPE_CHECKING:

    from xferbench.context import RunContext

#: bump when the way features are computed changes (invalidates cached bottlenecks)
REVISION = "1"

#: backbones whose token sequence starts with a class token
_CLS_TOKEN = {"ViTBackbone", "DeiTBackbone", "DINOV2Backbone", "DINOV3Backbone"}
#: image-text models: features from their image encoder
_IMAGE_TEXT = {"CLIPBackbone": ("projected", "pooled"), "MetaCLIP2Backbone": ("projected", "pooled"),
               "SigLIPBackbone": ("pooled",), "SigLIP2Backbone": ("pooled",)}
#: backbones whose input size may differ from the preset's (interpolated or rotary position embeddings)
_RESIZABLE_TRANSFORMERS = {"DINOV2Backbone", "DINOV3Backbone"}
_CONVERTER_FILE = "image_converter.json"


def is_preset_folder(arg: str) -> bool:
    """``kerashub:ARG`` names a folder (a path) rather than a KerasHub preset name or handle."""
    return "://" not in arg and ("/" in arg or "\\" in arg or arg.startswith((".", "~")))


def sha256_tree(root: Path) -> str:
    """Digest of every file under ``root`` (relative path and content), hidden files left out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue  # xferbench's .complete marker, kagglehub's bookkeeping
        digest.update(relative.as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def imported_folder(cache_dir: Path, preset: str) -> Path:
    """Where ``xferbench fetch kerashub:<preset> --from ...`` puts a preset."""
    return Path(cache_dir) / "kerashub" / re.sub(r"[^A-Za-z0-9_.-]", "_", preset)


def fetch_command(preset: str) -> str:
    return (f"run `xferbench fetch kerashub:{preset}` on a machine with internet, or import a copy of the preset "
            f"folder with `xferbench fetch kerashub:{preset} --from DIR-or-ARCHIVE`")


def download_preset(preset: str) -> Path:
    """KerasHub's own loading of a preset name or handle (kagglehub into its cache): the local folder."""
    try:
        from keras_hub.src.utils.preset_utils import CONFIG_FILE, get_file
    except ImportError as exc:
        raise UserError(f"kerashub:{preset} needs KerasHub ({one_line(exc)}); "
                        f'pip install "xferbench[kerashub]"') from None
    try:
        folder = Path(get_file(preset, CONFIG_FILE)).parent
        if not is_complete(folder):
            # kagglehub fetches file by file, on demand: loading the preset once pulls in every file the
            # backbone needs (sharded weights too); the image converter is a file of its own.
            import keras_hub

            keras_hub.models.Backbone.from_preset(preset)
            get_file(preset, _CONVERTER_FILE)
    except ValueError as exc:  # not a known preset or handle
        raise UserError(f"kerashub:{preset}: {one_line(exc)[:300]}; see xferbench list backbones --all") from None
    except Exception as exc:  # network and cache errors come in many types (requests, kagglehub, OSError)
        raise UserError(f"cannot download KerasHub preset {preset!r} ({one_line(exc)[:200]}); "
                        f"{fetch_command(preset)}") from None
    return folder


def is_complete(folder: Path) -> bool:
    """Whether a downloaded preset folder holds its config, image converter and weights."""
    return all((folder / name).is_file() for name in ("config.json", _CONVERTER_FILE)) and any(
        (folder / name).is_file() for name in ("model.weights.h5", "model.weights.json"))


def locate_preset(arg: str, cache_dir: Path) -> tuple[Path, str]:
    """The preset's local folder and where it came from (``folder``, ``imported`` or ``kerashub``)."""
    if is_preset_folder(arg):
        folder = Path(arg).expanduser()
        if not (folder / "config.json").is_file():
            what = "does not exist" if not folder.exists() else "holds no config.json"
            raise UserError(f"KerasHub preset folder {arg!r} {what}; give a folder written by save_to_preset "
                            f"or a preset name (xferbench list backbones --all)")
        return folder.resolve(), "folder"
    imported = imported_folder(cache_dir, arg)
    if (imported / "config.json").is_file():
        return imported, "imported"
    return download_preset(arg), "kerashub"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the {what} {path}: {one_line(exc)}") from None
    if not isinstance(value, dict):
        raise UserError(f"the {what} {path} is not a JSON object")
    return value


def converter_preprocessing(config: Mapping[str, Any], size: int | None = None) -> Preprocessing:
    """A KerasHub image converter's settings (``image_converter.json``'s ``config``) as a :class:`Preprocessing`.

    The converter computes ``resize(x) * scale + offset``: with one ``scale`` that is ``x * scale - (-offset)``
    bit for bit; with one scale per channel, ``(x - mean) / std`` with ``mean = -offset / scale`` and
    ``std = 1 / scale`` (equal up to float32 rounding).
    """
    image_size = config.get("image_size")
    if size is not None:
        image_size = (size, size)
    if not image_size or None in image_size:
        raise UserError("the preset's image converter fixes no image size; set the backbone option image_size")
    if config.get("pad_to_aspect_ratio"):
        raise UserError("the preset's image converter pads images to their aspect ratio; xferbench supports "
                        "cropping (crop_to_aspect_ratio) or plain resizing only")
    scale, offset = config.get("scale"), config.get("offset")
    scales = np.atleast_1d(np.asarray(1.0 if scale is None else scale, np.float64))
    offsets = np.atleast_1d(np.asarray(0.0 if offset is None else offset, np.float64))
    if scales.size == 1:
        normalisation: dict[str, Any] = {"scale": float(scales[0]), "mean": tuple(-offsets)}
    else:
        normalisation = {"mean": tuple(-offsets / scales), "std": tuple(1.0 / scales)}
    interpolation = str(config.get("interpolation", "bilinear"))
    return Preprocessing(size=tuple(image_size), resize=interpolation, antialias=bool(config.get("antialias")),
                         crop_to_aspect_ratio=bool(config.get("crop_to_aspect_ratio", True)), **normalisation)


def embeddings_of(class_name: str, output_rank: int) -> tuple[str, ...]:
    """The embeddings a backbone offers, its default first."""
    if class_name in _IMAGE_TEXT:
        return _IMAGE_TEXT[class_name]
    if output_rank == 4:
        return ("gap",)
    if output_rank == 3:
        return ("cls", "cls_patch_mean", "token_mean") if class_name in _CLS_TOKEN else ("token_mean",)
    if output_rank == 2:
        return ("pooled",)
    raise UserError(f"KerasHub {class_name} returns rank-{output_rank} outputs; xferbench cannot make an "
                    f"image embedding of them")


def prefix_tokens(backbone: Any) -> int:
    """Tokens before the patch tokens: class token, distillation token (DeiT), registers (DINOv2/v3)."""
    name = type(backbone).__name__
    if name == "DeiTBackbone":
        return 2
    if name == "ViTBackbone":
        return 1 if getattr(backbone, "use_class_token", True) else 0
    return 1 + int(getattr(backbone, "num_register_tokens", 0) or 0)


def one_image_macs(graph: Any) -> int:
    """Multiply-adds of a graph traced for a batch of one: convolutions, matrix products and einsums.

    As :mod:`xferbench.flops` counts (norms, activations and additions left out), but over whole
    tensors, since every row of a 2-D ``MatMul`` here is a token of the one image, and with
    ``Einsum`` (attention in KerasHub's transformers): the product of the sizes of all its indices.
    """
    import math

    total = 0
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            total += one_image_macs(op.graph._get_function(op.get_attr("f").name).graph)  # noqa: SLF001
            continue
        if op.type not in ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"):
            continue
        shapes = [op.outputs[0].shape, *(tensor.shape for tensor in op.inputs)]
        if any(shape.rank is None or None in shape.as_list() for shape in shapes):
            raise ValueError(f"{op.type} {op.name}: shapes not fully known")
        out = math.prod(op.outputs[0].shape.as_list())
        if op.type == "Conv2D":
            height, width, channels, _ = op.inputs[1].shape.as_list()
            total += out * height * width * channels
        elif op.type == "DepthwiseConv2dNative":
            height, width, _, _ = op.inputs[1].shape.as_list()
            total += out * height * width
        elif op.type == "Einsum":
            inputs = op.get_attr("equation").decode().split("->")[0].split(",")
            sizes = {letter: size for spec, tensor in zip(inputs, op.inputs, strict=True)
                     for letter, size in zip(spec, tensor.shape.as_list(), strict=True)}
            total += math.prod(sizes.values())
        else:
            left = op.inputs[0].shape.as_list()
            transposed = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
            total += out * (left[-2] if transposed else left[-1])
    return total


class KerasHubBackbone(NetworkBackbone):
    """A KerasHub image backbone preset, its embedding chosen per architecture."""

    def __init__(self, arg: str | None, options: Mapping[str, Any], context: RunContext) -> None:
        self.preset = (arg or "").strip()
        if not self.preset:
            raise UserError("backbone 'kerashub' needs a preset: write kerashub:<preset name or folder>, "
                            "e.g. kerashub:dinov2_small (see xferbench list backbones --all)")
        self.name = f"kerashub:{self.preset}"
        self._embedding_option: str | None = options.get("embedding")
        self._size_option: int | None = options.get("image_size")
        self.batch_size = options.get("batch_size") or 32
        self._precision: str = options.get("precision") or "float32"
        self._cache_dir = Path(context.cache_dir)
        self.folder: Path | None = None
        self.source: str | None = None
        self.class_name = ""
        self.embedding = ""
        self.embeddings: tuple[str, ...] = ()
        self._preprocessing: Preprocessing | None = None
        self._model: Any = None
        self._forward: Callable[[Any], Any] | None = None
        self._digest: str | None = None

    # -- loading --------------------------------------------------------------------------
    def _locate(self) -> None:
        if self.folder is not None:
            return
        folder, source = locate_preset(self.preset, self._cache_dir)
        config = _read_json(folder / "config.json", "KerasHub preset config")
        converter_file = folder / _CONVERTER_FILE
        if not converter_file.is_file():
            raise UserError(f"KerasHub preset {self.preset!r} has no {_CONVERTER_FILE} (its preprocessing); save "
                            f"the image converter into the folder too (converter.save_to_preset(folder))")
        converter = _read_json(converter_file, "KerasHub image converter").get("config", {})
        self.class_name = str(config.get("class_name", "?"))
        self._check_size_option(config.get("config", {}))
        self._preprocessing = converter_preprocessing(converter, self._size_option)
        self._converter = converter
        self.folder, self.source = folder, source

    def _check_size_option(self, config: Mapping[str, Any]) -> None:
        if self._size_option is None:
            return
        shape = config.get("image_shape")
        free = isinstance(shape, list | tuple) and len(shape) == 3 and shape[0] is None
        if self.class_name not in _RESIZABLE_TRANSFORMERS and not free:
            raise OptionError(f"backbone 'kerashub': option image_size does not apply to {self.preset} "
                              f"({self.class_name} has position embeddings of a fixed size); drop it")
        patch = config.get("patch_size")
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        if isinstance(patch, int) and self._size_option % patch:
            raise OptionError(f"backbone 'kerashub': option image_size={self._size_option} must be a multiple of "
                              f"{self.preset}'s patch size {patch}")

    def _load_backbone(self, *, weights: bool) -> Any:
        """The KerasHub backbone from the preset folder (with or without its weights), at the run's precision."""
        self._locate()
        try:
            import keras_hub
        except ImportError as exc:
            raise UserError(f"{self.name} needs KerasHub ({one_line(exc)}); "
                            f'pip install "xferbench[kerashub]"') from None
        overrides: dict[str, Any] = {}
        if self._size_option is not None:
            overrides["image_shape"] = (self._size_option, self._size_option, 3)
        overrides["dtype"] = "mixed_bfloat16" if self._precision == "bfloat16" else "float32"
        try:
            with keras_dtype_policy(self._precision):
                return keras_hub.models.Backbone.from_preset(str(self.folder), load_weights=weights, **overrides)
        except (ValueError, OSError, TypeError, KeyError) as exc:
            raise UserError(f"cannot load KerasHub preset {self.preset!r} from {self.folder}: "
                            f"{one_line(exc)[:300]}") from None

    def _embedding_model(self, backbone: Any) -> Any:
        """A Keras model: preprocessed images ``[n, h, w, 3]`` -> float32 embeddings ``[n, d]``."""
        import keras
        from keras import ops

        images = keras.Input(self.preprocessing.input_shape, name="images")
        if self.class_name in _IMAGE_TEXT:
            self.embeddings = _IMAGE_TEXT[self.class_name]
            self._choose_embedding()
            vision = backbone.vision_encoder({"images": images})
            if hasattr(backbone, "vision_pooler"):  # CLIP, MetaCLIP 2: the class token, (layer-normed,) projected
                vision = backbone.vision_pooler(vision)
                if hasattr(backbone, "vision_post_layer_norm"):
                    vision = backbone.vision_post_layer_norm(vision)
                if self.embedding == "projected":
                    vision = backbone.vision_projection(vision)
            return keras.Model(images, ops.cast(vision, "float32"), name="kerashub_embedding")
        inputs = backbone.input
        outputs = backbone({next(iter(inputs)): images} if isinstance(inputs, dict) else images)
        if isinstance(outputs, dict | list | tuple):
            raise UserError(f"KerasHub {self.class_name} returns several outputs; xferbench cannot choose one")
        self.embeddings = embeddings_of(self.class_name, len(outputs.shape))
        self._choose_embedding()
        x = ops.cast(outputs, "float32")  # pool in float32 under mixed precision
        if self.embedding == "gap":
            x = ops.mean(x, axis=(1, 2))
        elif self.embedding == "cls":
            x = x[:, 0]
        elif self.embedding == "cls_patch_mean":
            x = ops.concatenate([x[:, 0], ops.mean(x[:, prefix_tokens(backbone):], axis=1)], axis=-1)
        elif self.embedding == "token_mean":
            x = ops.mean(x, axis=1)
        return keras.Model(images, x, name="kerashub_embedding")

    def _choose_embedding(self) -> None:
        choice = self._embedding_option or self.embeddings[0]
        if choice not in self.embeddings:
            raise OptionError(f"backbone 'kerashub': option embedding={choice} does not apply to {self.preset} "
                              f"({self.class_name}); choose one of: {', '.join(self.embeddings)}")
        self.embedding = choice

    def _feature_model(self) -> Any:
        if self._model is None:
            import tensorflow as tf

            model = self._embedding_model(self._load_backbone(weights=True))
            spec = tf.TensorSpec((None, *self.preprocessing.input_shape), tf.float32)
            # One traced graph for every batch size (the last batch is usually smaller).
            self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
            self._model = model
        return self._model

    def prepare(self, context: RunContext) -> None:
        """Find (or download) the preset and build the network now, so a failure comes before any work."""
        self._feature_model()

    # -- identity -------------------------------------------------------------------------
    @property
    def preprocessing(self) -> Preprocessing:  # type: ignore[override]
        self._locate()
        assert self._preprocessing is not None
        return self._preprocessing

    @property
    def preprocessing_version(self) -> str:  # type: ignore[override]
        # The embedding and the precision change the features without changing the weights.
        self._feature_model()
        return f"{REVISION}-{self.preprocessing.digest()}-{self.embedding}-{self._precision}"

    @property
    def weights_sha256(self) -> str:
        if self._digest is None:
            self._locate()
            assert self.folder is not None
            self._digest = sha256_tree(self.folder)
        return self._digest

    @property
    def feature_dim(self) -> int:  # type: ignore[override]
        return int(self._feature_model().output_shape[-1])

    def precision(self) -> str:
        return self._precision

    def flops_per_image(self) -> float:
        """FLOPs of one forward pass, counted from the traced graph (:mod:`xferbench.flops`)."""
        import tensorflow as tf

        model = self._feature_model()
        # Traced for one image: Keras's Dense on token sequences reshapes by the batch size, which a
        # [None, ...] trace leaves unknown, and its 2-D MatMul has tokens, not images, as rows.
        traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec((1, *self.preprocessing.input_shape), tf.float32))
        return 2.0 * one_image_macs(traced.graph)

    def info(self) -> dict[str, Any]:
        import keras_hub

        self._feature_model()
        return {
            "preset": self.preset,
            "source": self.source,
            "folder": str(self.folder),
            "architecture": self.class_name,
            "embedding": self.embedding,
            "embeddings_available": list(self.embeddings),
            "image_size": self.preprocessing.size[0],
            "image_converter": {key: self._converter.get(key) for key in
                                ("image_size", "scale", "offset", "interpolation", "antialias",
                                 "crop_to_aspect_ratio")},
            "precision": self._precision,
            "keras_hub_version": keras_hub.__version__,
        }

    # -- features -------------------------------------------------------------------------
    def forward(self, batch: Any) -> Any:
        self._feature_model()
        assert self._forward is not None
        return self._forward(batch)

    def tf_forward(self, batch: Any) -> Any:
        return self._feature_model()(batch, training=False)

    def exported_network(self) -> Any:
        return self._feature_model()

    # -- full retraining and fine-tuning ------------------------------------------------
    def supports(self, method: str) -> bool:
        return method in ("full", "finetune")

    def build_model(self, num_classes: int, *, pretrained: bool, seed: int) -> Any:
        """The embedding network (the preset's weights or random ones, all trainable) + a new softmax layer.

        With ``pretrained=True`` it runs with ``training=False``, so BatchNorm layers keep their
        statistics while their weights are fine-tuned (Keras's transfer-learning guide).
        """
        import keras

        self._feature_model()  # checks the options and chooses the embedding first
        keras.utils.set_random_seed(seed)
        base = self._embedding_model(self._load_backbone(weights=pretrained))
        base.trainable = True
        inputs = keras.Input(self.preprocessing.input_shape, name="image")
        features = base(inputs, training=False) if pretrained else base(inputs)
        # The softmax stays float32 under mixed precision, for numerically sound losses.
        outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="softmax")(features)
        label = re.sub(r"[^A-Za-z0-9_]", "_", Path(self.preset).name or "preset")
        return keras.Model(inputs, outputs, name=f"{label}_{'finetune' if pretrained else 'full'}")
