"""Tiny randomly initialised KerasHub presets (ViT, DINOv2, CLIP, ResNet), written with ``save_to_preset``.

Small enough to build and run in about a second each; 32x32 inputs. Each preset folder holds the
backbone and an image converter, as KerasHub's own presets do.
"""

from __future__ import annotations

from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ImageNet mean and std as KerasHub converters store them: ``x * scale + offset`` per channel
PER_CHANNEL = {"scale": [1 / (255.0 * s) for s in IMAGENET_STD],
               "offset": [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]}

#: feature width of each preset's default embedding
WIDTHS = {"vit": 16, "dinov2": 16, "clip": 12, "resnet": 32}
KINDS = tuple(WIDTHS)


def build(kind: str, seed: int = 0) -> tuple[object, object]:
    """``(backbone, image_converter)`` of a tiny preset of ``kind``, weights drawn from ``seed``."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    models, layers = keras_hub.models, keras_hub.layers
    if kind == "vit":
        return (models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                   mlp_dim=32),
                layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0))
    if kind == "dinov2":
        return (models.DINOV2Backbone(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32,
                                      num_register_tokens=2, image_shape=(32, 32, 3),
                                      position_embedding_shape=(32, 32, 3)),
                layers.DINOV2ImageConverter(image_size=(32, 32), interpolation="bicubic", **PER_CHANNEL))
    if kind == "clip":
        vision = models.CLIPVisionEncoder(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
                                          image_shape=(32, 32, 3))
        text = models.CLIPTextEncoder(vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                                      intermediate_dim=32, max_sequence_length=8)
        return (models.CLIPBackbone(vision, text, projection_dim=12),
                layers.CLIPImageConverter(image_size=(32, 32), interpolation="bicubic", **PER_CHANNEL))
    if kind == "resnet":
        return (models.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                      stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
                                      stackwise_num_strides=[1, 2], block_type="basic_block",
                                      image_shape=(None, None, 3)),
                layers.ResNetImageConverter(image_size=(32, 32), **PER_CHANNEL))
    raise ValueError(kind)


def save_preset(kind: str, folder: Path, seed: int = 0) -> Path:
    """Write the tiny ``kind`` preset into ``folder`` (backbone and image converter) and return it."""
    backbone, converter = build(kind, seed)
    folder.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder
