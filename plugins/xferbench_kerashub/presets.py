"""The image backbone presets the installed KerasHub knows, for ``xferbench list backbones --all``."""

from __future__ import annotations

#: KerasHub model folders whose backbones take images and give features xferbench can pool
IMAGE_FAMILIES = frozenset({
    "clip", "cspnet", "deit", "densenet", "dinov2", "dinov3", "efficientnet", "hgnetv2", "metaclip_2", "mit",
    "mobilenet", "mobilenetv5", "resnet", "siglip", "swin_transformer", "vgg", "vit", "xception",
})


def image_presets() -> list[tuple[str, str]]:
    """``(preset, description)`` of every image backbone preset, in KerasHub's order."""
    try:
        import keras_hub
    except ImportError:
        return [("(none)", 'KerasHub is not installed: pip install "xferbench[kerashub]"')]
    presets = []
    for name, preset in keras_hub.models.Backbone.presets.items():
        metadata = preset.get("metadata", {})
        if metadata.get("path") in IMAGE_FAMILIES:
            params = metadata.get("params")
            size = f" ({params / 1e6:.0f}M parameters)" if isinstance(params, int | float) and params else ""
            presets.append((name, " ".join(str(metadata.get("description", "")).split()) + size))
    return presets
