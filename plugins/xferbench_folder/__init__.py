"""Built-in xferbench plugin: image-folder datasets (``folder:<path>``) and TensorFlow's ``flowers``.

Nothing heavy is imported here, so ``xferbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import DatasetSpec, Option, hookimpl

_SPLIT_OPTIONS = (
    Option("test_pct", float, 10.0, "percent of each class for testing (by file-name hash, retrain.py rule)",
           min=0, max=100),
    Option("val_pct", float, 10.0, "percent of each class for validation (by file-name hash)", min=0, max=100),
    Option("max_pixels", int, 89_478_485, "skip images with more pixels than this (decompression bombs)", min=1),
)


@hookimpl
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        "folder", "any folder with one subfolder of JPEG/PNG/GIF/BMP images per class",
        factory="xferbench_folder.folder:create", options=_SPLIT_OPTIONS, parametric=True,
    ))
    register(DatasetSpec(
        "flowers", "TensorFlow's flower_photos: 3670 photos of 5 flowers (CC-BY 2.0)",
        factory="xferbench_folder.flowers:create", options=_SPLIT_OPTIONS,
        fetcher="xferbench_folder.flowers:fetch",
    ))
