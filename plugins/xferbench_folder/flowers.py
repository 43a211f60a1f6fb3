"""``flowers``: TensorFlow's flower_photos (3670 CC-BY photos in 5 classes), split by retrain.py's rule.

Where the photos come from, first match wins: ``--data-dir`` (a folder holding the class
folders, or holding ``flower_photos/``), the extracted copy in the cache
(``<cache>/datasets/flower_photos/flower_photos``), a download of ``flower_photos.tgz``
(checked, pinned, then safely extracted with its LICENSE.txt).
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from xferbench.data import ImageDataset
from xferbench.errors import UserError
from xferbench_folder.folder import load_image_folder

if TYPE_CHECKING:
    from xferbench.context import RunContext

URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
ARCHIVE_NAME = "flower_photos.tgz"
TOP = "flower_photos"
LICENSE = "LICENSE.txt"
#: images per class in the published archive
COUNTS = {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799}
CLASSES = tuple(COUNTS)


def verify_archive(path: Path) -> None:
    """Raise unless ``path`` is a tar of ``flower_photos/<5 classes>/...`` plus ``flower_photos/LICENSE.txt``.

    Only plain files and folders under ``flower_photos/`` are allowed, so a tampered archive is
    refused before it is pinned, not only when it is extracted.
    """
    from xferbench.archive import UnsafeArchive

    seen_classes: set[str] = set()
    has_license = False
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (member.name.startswith("/") or ".." in parts or not parts or parts[0] != TOP
                        or not (member.isfile() or member.isdir())):
                    raise UnsafeArchive(f"{path}: member {member.name!r} is not a plain file or folder under "
                                        f"{TOP}/; this is not TensorFlow's flower_photos.tgz - delete it")
                if len(parts) >= 3 and parts[1] in COUNTS:
                    seen_classes.add(parts[1])
                if parts[1:] == (LICENSE,) and member.isfile():
                    has_license = True
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise UserError(f"{path} is not a readable .tgz archive ({exc}); delete it and fetch again") from None
    missing = [c for c in CLASSES if c not in seen_classes] + ([] if has_license else [LICENSE])
    if missing:
        raise UserError(f"{path} lacks {TOP}/{', '.join(missing)}; it is not TensorFlow's flower_photos.tgz")


def _artifact() -> Any:
    from xferbench.download import Artifact

    return Artifact(ARCHIVE_NAME, (URL,), component="flowers")


def _photos_in(folder: Path) -> Path | None:
    """``folder`` if it holds class folders, else ``folder/flower_photos`` if that does."""
    for candidate in (folder, folder / TOP):
        if any((candidate / cls).is_dir() for cls in CLASSES):
            return candidate
    return None


def _extracted_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "datasets" / TOP


def _install(archive: Path, cache_dir: Path) -> Path:
    from xferbench.archive import safe_extract

    dest = _extracted_dir(cache_dir)
    safe_extract(archive, dest)
    root = dest / TOP
    if not root.is_dir():
        raise UserError(f"{archive} did not extract a {TOP}/ folder into {dest}; delete both and fetch again")
    return root


def locate(context: RunContext, download: bool = True) -> Path:
    """The folder holding daisy/, dandelion/, ...: from --data-dir, the cache, or a download."""
    if context.data_dir is not None:
        data_dir = Path(context.data_dir).expanduser()
        root = _photos_in(data_dir)
        if root is None:
            raise UserError(f"--data-dir {data_dir} holds neither the flower class folders "
                            f"({', '.join(CLASSES)}) nor {TOP}/; extract {ARCHIVE_NAME} there, or leave out "
                            f"--data-dir to download it")
        return root
    cache_dir = Path(context.cache_dir)
    extracted = _extracted_dir(cache_dir)
    if (extracted / ".complete").is_file() and (extracted / TOP).is_dir():
        return extracted / TOP
    if not download:
        raise UserError(f"flower_photos is not in the cache ({extracted}); run `xferbench fetch flowers`")
    from xferbench.download import fetch as fetch_artifact

    quiet = getattr(context.progress, "quiet", False)
    archive = fetch_artifact(_artifact(), cache_dir, verify=verify_archive, progress=not quiet)
    return _install(archive, cache_dir)


def create(arg: str | None, options: Mapping[str, Any], context: RunContext) -> ImageDataset:
    """Factory of ``flowers`` (``arg`` is a class subset such as ``daisy,roses``, applied by the harness)."""
    root = locate(context)
    dataset = load_image_folder(root, name="flowers", test_pct=options["test_pct"], val_pct=options["val_pct"],
                                max_pixels=options["max_pixels"], context=context)
    counts = {cls: 0 for cls in dataset.class_names}
    for example in dataset.examples:
        counts[dataset.class_names[example.label]] += 1
    if counts != COUNTS:
        found = ", ".join(f"{cls} {n}" for cls, n in counts.items())
        dataset.warnings.append(f"flowers at {root} is not the complete flower_photos set ({found}; the published "
                                f"set has {', '.join(f'{c} {n}' for c, n in COUNTS.items())})")
    if not (root / LICENSE).is_file():
        dataset.warnings.append(f"{root / LICENSE} is missing; the photos are CC-BY 2.0 and their credits "
                                f"belong beside them")
    return dataset


def fetch(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None) -> Path:
    """``xferbench fetch flowers [--from flower_photos.tgz]``: download or import, verify, extract."""
    cache_dir = Path(context.cache_dir)
    if source is None:
        return locate(context)
    from xferbench.download import import_file

    archive = import_file(_artifact(), source, cache_dir, verify=verify_archive)
    return _install(archive, cache_dir)
