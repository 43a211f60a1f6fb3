"""LeNet-5: the classic MNIST network, used as a small backbone that needs no download.

Its weights come from pretraining on a source dataset (``pretrain_on``); they are
cached under a key made of the source data, the seed and the training settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.atomic import atomic_path
from xferbench.backbone import NetworkBackbone
from xferbench.data import ImageData
from xferbench.decoding import Preprocessing, preprocess_all
from xferbench.errors import UserError
from xferbench.precision import keras_dtype_policy

INPUT_SIZE = 28
BOTTLENECK = "bottleneck"
ARCHITECTURE_VERSION = "1"

#: The one preprocessing of extraction, pretraining and the exported SavedModel: TensorFlow
#: kernels throughout, so the harness's features and an exported model's agree exactly. Gray
#: before resizing (``rgb_to_grayscale`` is exact on gray pixels replicated to RGB); then
#: ``x * (1 / 255)``, the arithmetic the weights were pretrained with.
PREPROCESSING = Preprocessing(size=(INPUT_SIZE, INPUT_SIZE), channels=1, resize="bilinear", scale=1 / 255)


def preprocess(images: Sequence[ImageData]) -> np.ndarray:
    """float32 ``[N, 28, 28, 1]`` in [0, 1]; rows of images that cannot be decoded are all NaN."""
    return preprocess_all(images, PREPROCESSING)


def build_lenet5(num_classes: int, seed: int) -> Any:
    """The LeNet-5 layout with ReLU and max-pooling, as in the MNIST tutorials."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), name="image")
    x = keras.layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 5, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(84, activation="relu", name=BOTTLENECK)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")


class LeNet5(NetworkBackbone):
    """See the module docstring."""

    feature_dim = 84
    preprocessing = PREPROCESSING
    # 2: TensorFlow decoding and resizing (was PIL), shared with the exported SavedModel
    preprocessing_version = "2"

    def __init__(self, arg: str | None, options: dict[str, Any], context: Any) -> None:
        if arg:
            raise UserError(f"backbone 'lenet5' takes no argument, got 'lenet5:{arg}'")
        self.name = "lenet5"
        self.options = options
        # One forward pass per extract() call, as the harness hands the images over.
        self.extract_batch_size = self.batch_size = options["batch_size"]
        self.seed = context.seed
        self._precision: str = options.get("precision") or "float32"
        self.calibration_images = int(options.get("int8_calibration_images") or self.calibration_images)
        if self._precision != "float32":  # other features: other cache entries (float32 keeps its old key)
            self.preprocessing_version = f"{self.preprocessing_version}-{self._precision}"
        self._weights_path: Path | None = None
        self._feature_model: Any = None
        self._source: dict[str, Any] = {}

    # -- weights -----------------------------------------------------------------------
    def prepare(self, context: Any) -> None:
        if context.weights is not None:
            path = Path(context.weights)
            if not path.is_file():
                raise UserError(f"--weights {path}: no such file")
            if not path.name.endswith(".weights.h5"):
                raise UserError(f"--weights {path}: lenet5 expects a Keras '.weights.h5' file")
            self._weights_path = path
            self._source = {"weights_file": str(path)}
            return
        source = context.load_dataset(self.options["pretrain_on"])
        train = source.split("train")
        if not train:
            raise UserError(f"pretrain_on={self.options['pretrain_on']!r} has no training images")
        fingerprint = hashlib.sha256()
        for ex in train:
            fingerprint.update(f"{ex.key}\t{ex.label}\n".encode())
        key_fields = {
            "backbone": "lenet5", "architecture": ARCHITECTURE_VERSION, "source": source.name,
            "source_fingerprint": fingerprint.hexdigest(), "seed": self.seed,
            "epochs": self.options["pretrain_epochs"], "learning_rate": self.options["learning_rate"],
            "classes": len(source.class_names), "preprocessing": self.preprocessing_version,
        }
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]
        path = context.subdir("weights", "lenet5") / f"{key}.weights.h5"
        self._source = {"pretrained_on": source.name, "pretrain_images": len(train), "weights_file": str(path)}
        if path.is_file():
            self._source["pretrain_cache_hit"] = True
            self._weights_path = path
            return
        self._source["pretrain_cache_hit"] = False
        self._pretrain(source, path, context)
        self._weights_path = path

    def _pretrain(self, source: Any, path: Path, context: Any) -> None:
        import keras

        x = self.model_inputs([source.read(ex) for ex in source.split("train")])
        y = np.array([ex.label for ex in source.split("train")])
        model = build_lenet5(len(source.class_names), self.seed)
        model.compile(optimizer=keras.optimizers.Adam(self.options["learning_rate"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        epochs = self.options["pretrain_epochs"]
        with context.progress.task(f"pretraining lenet5 on {source.name}", total=epochs, unit="epoch") as task:
            class Report(keras.callbacks.Callback):
                def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                    task.advance(1, status=f"train acc {(logs or {}).get('accuracy', 0):.3f}")

            model.fit(x, y, epochs=epochs, batch_size=128, shuffle=True, verbose=0, callbacks=[Report()])
        # atomic_path keeps the target's name as the temp name's ending, which Keras requires.
        with atomic_path(path) as tmp:
            model.save_weights(tmp)

    @property
    def weights_sha256(self) -> str:
        if self._weights_path is None:
            raise RuntimeError("prepare() must run before the weights are known")
        return hashlib.sha256(self._weights_path.read_bytes()).hexdigest()

    def _load_full(self, seed: int) -> Any:
        """The pretrained network, with its source head (we keep only up to the bottleneck)."""
        source_classes = self._source_classes()
        model = build_lenet5(source_classes, seed)
        model.load_weights(self._weights_path)
        return model

    def _source_classes(self) -> int:
        """How many classes the pretraining head had: the kernel that maps the 84-wide bottleneck."""
        import h5py

        assert self._weights_path is not None
        found: list[int] = []
        try:
            with h5py.File(self._weights_path, "r") as f:
                f.visititems(lambda name, obj: found.append(obj.shape[1])
                             if name.startswith("layers/") and getattr(obj, "shape", None) is not None
                             and len(obj.shape) == 2 and obj.shape[0] == self.feature_dim else None)
        except OSError as exc:
            raise UserError(f"{self._weights_path}: not a readable weights file ({exc})") from None
        if len(found) != 1:
            raise UserError(f"{self._weights_path}: not a lenet5 weights file (no 84-wide final layer)")
        return found[0]

    # -- extraction --------------------------------------------------------------------------
    def _features(self) -> Any:
        """The pretrained network up to the 84-wide bottleneck (built once)."""
        import keras

        if self._feature_model is None:
            with keras_dtype_policy(self._precision):  # int8 converts the float32 network (xferbench.int8)
                full = self._load_full(self.seed)
                self._feature_model = keras.Model(full.input, full.get_layer(BOTTLENECK).output)
        return self._feature_model

    def precision(self) -> str:
        return self._precision

    def forward(self, batch: Any) -> np.ndarray:
        return np.asarray(self._features().predict_on_batch(batch), dtype=np.float32)

    def tf_forward(self, batch: Any) -> Any:
        import tensorflow as tf

        return tf.cast(self._features()(batch, training=False), tf.float32)

    def exported_network(self) -> Any:
        return self._features()

    # -- full retraining and fine-tuning -----------------------------------------------
    def supports(self, method: str) -> bool:
        return method in ("full", "finetune")

    def build_model(self, num_classes: int, *, pretrained: bool, seed: int) -> Any:
        model = build_lenet5(num_classes, seed)
        if pretrained:
            source = self._load_full(seed)
            for layer in model.layers:
                if layer.name != "logits" and layer.weights:
                    layer.set_weights(source.get_layer(layer.name).get_weights())
        return model

    def flops_per_image(self) -> float:
        from xferbench.flops import model_flops

        return model_flops(self._features())

    def info(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"precision": self._precision} if self._precision != "float32" else {}
        if self._precision == "int8":
            extra.update(int8_calibration_images=self.calibration_images,
                         int8_model=str(self._int8[1].path) if self._int8 else None)
        return {**self._source, **extra}
