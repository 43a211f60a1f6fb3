"""``flowers-mini``: the 500 shrunk flower photos shipped in the package, split by retrain.py's rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from xferbench.data import ImageDataset
from xferbench.errors import UserError
from xferbench_embedded.files import FLOWER_PHOTOS
from xferbench_folder.folder import load_image_folder

if TYPE_CHECKING:
    from xferbench.context import RunContext


def create(arg: str | None, options: Mapping[str, Any], context: RunContext) -> ImageDataset:
    """Factory of ``flowers-mini`` (``arg`` is a class subset such as ``daisy,roses``, applied by the harness)."""
    if not FLOWER_PHOTOS.is_dir():
        raise UserError(f"flowers-mini: {FLOWER_PHOTOS} is missing; this xferbench install is incomplete, "
                        f"reinstall it (or run scripts/build_embedded_data.py in a source checkout)")
    return load_image_folder(FLOWER_PHOTOS, name="flowers-mini", test_pct=options["test_pct"],
                             val_pct=options["val_pct"], max_pixels=options["max_pixels"], context=context)
