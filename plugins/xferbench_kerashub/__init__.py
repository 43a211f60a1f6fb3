"""Built-in xferbench plugin: ``kerashub:<preset-or-dir>``, KerasHub's image backbones.

Nothing here imports TensorFlow, Keras or KerasHub; the factories are lazy ``module:attr`` strings,
and the long preset list (``xferbench list backbones --all``) imports KerasHub only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import BackboneSpec, Option, hookimpl

#: good first choices for transfer, smallest first (all KerasHub preset names)
RECOMMENDED = ("dinov2_small", "dinov2_with_registers_small", "dinov3_vit_small_lvd1689m", "siglip2_base_patch16_224",
               "clip_vit_base_patch16", "efficientnet_b0_ra_imagenet", "resnet_50_imagenet", "vit_base_patch16_224_imagenet21k")

#: the embeddings ``embedding=`` can choose; which apply depends on the architecture (see docs/backbones.md)
EMBEDDINGS = ("cls", "cls_patch_mean", "token_mean", "pooled", "projected", "gap")

OPTIONS = (
    Option("embedding", str, None, "which vector: cls, cls_patch_mean (ViT/DeiT/DINO), pooled, projected "
           "(CLIP/SigLIP), gap (CNNs), token_mean; default: the architecture's own", choices=EMBEDDINGS),
    Option("image_size", int, None, "square input size in pixels where the architecture allows it (DINOv2/v3, "
           "CNNs); default: the preset's image converter", min=1),
    Option("batch_size", int, 32, "images per forward pass", min=1),
    Option("precision", str, "float32", "compute dtype (bfloat16: mixed precision)", choices=("float32", "bfloat16")),
)


@hookimpl
def xferbench_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    register(BackboneSpec(
        "kerashub",
        "a KerasHub image backbone preset (kerashub:dinov2_small, kerashub:/path/to/preset), preprocessing from its "
        "image converter; recommended: " + ", ".join(RECOMMENDED) + " (all: xferbench list backbones --all)",
        factory="xferbench_kerashub.backbone:KerasHubBackbone",
        options=OPTIONS,
        # KerasHub's own download (kagglehub), or --from DIR-or-ARCHIVE into xferbench's cache
        fetcher="xferbench_kerashub.fetching:fetch_preset",
        parametric=True,
        variants="xferbench_kerashub.presets:image_presets",
    ))
