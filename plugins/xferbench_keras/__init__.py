"""Built-in xferbench plugin: ``keras:<Application>`` and ``hub:<handle-or-dir>`` backbones.

Nothing here imports TensorFlow or Keras; the factories are lazy ``module:attr`` strings.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import BackboneSpec, Option, hookimpl

_BATCH = Option("batch_size", int, 32, "images per forward pass", min=1)

KERAS_OPTIONS = (
    Option("alpha", float, None, "width multiplier (MobileNet, MobileNetV2, MobileNetV3*); default: the model's",
           gt=0),
    Option("input_size", int, None, "square input size in pixels; default: the model's (224, 299, ...)", min=32),
    _BATCH,
    Option("precision", str, "float32", "compute dtype (bfloat16: mixed precision; int8: a full-integer TFLite "
           "model in LiteRT, calibrated on training images)", choices=("float32", "bfloat16", "int8")),
    Option("int8_calibration_images", int, 100, "precision=int8: training images that calibrate the int8 model",
           min=1),
)

HUB_OPTIONS = (
    Option("input_size", int, None, "square input size when the module does not fix one (default 224)", min=1),
    _BATCH,
)


@hookimpl
def xferbench_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    register(BackboneSpec(
        "keras",
        "any keras.applications model without its top, average-pooled (keras:MobileNet, keras:ResNet50); "
        "ImageNet weights or --weights FILE",
        factory="xferbench_keras.applications:KerasBackbone",
        options=KERAS_OPTIONS,
        # copies the weights into Keras's own cache (download, or --from FILE on offline machines)
        fetcher="xferbench_keras.applications:fetch_weights",
        parametric=True,
    ))
    register(BackboneSpec(
        "hub",
        "a TF-Hub image feature-vector SavedModel (hub:https://tfhub.dev/... or hub:/path/to/folder), "
        "inputs in [0, 1]",
        factory="xferbench_keras.hub:HubBackbone",
        options=HUB_OPTIONS,
        # downloads into TF-Hub's cache, or unpacks a --from .tar.gz for offline use
        fetcher="xferbench_keras.hub:fetch_module",
        parametric=True,
    ))
