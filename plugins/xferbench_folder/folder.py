"""``folder:<path>``: any folder with one subfolder of images per class.

Classes are the subfolders, sorted by name; images in nested folders belong to the class
folder they are under. Each file is checked (:mod:`xferbench.imagefiles`); bad ones are
counted in ``skipped_files`` and never change the split of the others, which depends on
the file name alone (:mod:`xferbench.splits`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xferbench.data import Example, ImageDataset, Split
from xferbench.errors import UserError
from xferbench.imagefiles import (
    SYMLINK_LOOP,
    UNREADABLE,
    ImageCheck,
    check_images,
    has_image_extension,
)
from xferbench.splits import check_percentages, which_split

if TYPE_CHECKING:
    from xferbench.context import RunContext

#: at most this many duplicate warnings are listed one by one
_MAX_DUPLICATE_WARNINGS = 10
#: top-level folders that archivers add and that are never classes
_NOT_CLASSES = frozenset({"__MACOSX"})


class _Listing:
    """What a walk over the class folders found."""

    def __init__(self) -> None:
        self.candidates: dict[str, list[tuple[str, Path]]] = {}  # class -> [(key, path)]
        self.skipped: dict[str, list[str]] = {}  # reason -> keys (found before any file is opened)
        self.ignored: list[str] = []  # files without an image extension

    def skip(self, reason: str, key: str) -> None:
        self.skipped.setdefault(reason, []).append(key)


def _stat_error_reason(exc: OSError) -> str:
    return SYMLINK_LOOP if exc.errno == errno.ELOOP else UNREADABLE


def _walk(directory: Path, key_prefix: str, class_name: str, ancestors: frozenset[tuple[int, int]],
          listing: _Listing) -> None:
    """Collect image candidates under ``directory``, following links but never round a loop."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        listing.skip(UNREADABLE, key_prefix.rstrip("/"))
        return
    for name in names:
        if name.startswith("."):
            continue  # hidden files and folders (.DS_Store, .git, ...)
        path = directory / name
        key = key_prefix + name
        try:
            info = os.stat(path)
        except OSError as exc:
            # A dangling or looping link: report it if it could have been an image or a folder.
            if has_image_extension(name) or exc.errno == errno.ELOOP:
                listing.skip(_stat_error_reason(exc), key)
            continue
        if stat.S_ISDIR(info.st_mode):
            ident = (info.st_dev, info.st_ino)
            if ident in ancestors:
                listing.skip(SYMLINK_LOOP, key)  # a link back up the tree
                continue
            _walk(path, key + "/", class_name, ancestors | {ident}, listing)
        elif has_image_extension(name):
            listing.candidates.setdefault(class_name, []).append((key, path))
        else:
            listing.ignored.append(key)


def _list_classes(root: Path, listing: _Listing) -> list[str]:
    """Non-hidden subfolders of ``root`` (links followed), sorted by name; files at the top are ignored."""
    root_info = os.stat(root)
    classes: list[str] = []
    for name in sorted(os.listdir(root)):
        if name.startswith(".") or name in _NOT_CLASSES:
            continue
        path = root / name
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                listing.skip(SYMLINK_LOOP, name)
            continue
        if not stat.S_ISDIR(info.st_mode):
            continue  # LICENSE.txt, README, ... beside the class folders
        classes.append(name)
        listing.candidates.setdefault(name, [])
        _walk(path, name + "/", name, frozenset({(root_info.st_dev, root_info.st_ino),
                                                  (info.st_dev, info.st_ino)}), listing)
    return classes


def _cache_file(context: RunContext | None, root: Path) -> Path | None:
    if context is None:
        return None
    digest = hashlib.sha1(str(root).encode("utf-8")).hexdigest()[:16]
    return Path(context.cache_dir) / "datasets" / "imagechecks" / f"{digest}.json"


def load_image_folder(root: Path, *, name: str, test_pct: float = 10, val_pct: float = 10,
                      max_pixels: int = 89_478_485, context: RunContext | None = None) -> ImageDataset:
    """Scan ``root``/<class>/<images>, check every image and split by file name."""
    check_percentages(test_pct, val_pct, f"dataset {name!r}")
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.exists():
        raise UserError(f"dataset {name!r}: folder {root} does not exist; "
                        f"give a folder with one subfolder of images per class")
    if not root.is_dir():
        raise UserError(f"dataset {name!r}: {root} is not a folder; extract it first, "
                        f"or give a folder with one subfolder of images per class")
    listing = _Listing()
    try:
        class_dirs = _list_classes(root, listing)
    except OSError as exc:
        raise UserError(f"dataset {name!r}: cannot list {root}: {exc.strerror or exc}") from None
    if not class_dirs:
        raise UserError(f"dataset {name!r}: {root} has no class subfolders; "
                        f"expected {root}/<class>/<image>.jpg")

    files = [item for cls in class_dirs for item in listing.candidates[cls]]
    results = _run_checks(files, max_pixels, context, root)

    skipped = {reason: list(keys) for reason, keys in listing.skipped.items()}
    good: dict[str, list[tuple[str, Path, ImageCheck]]] = {cls: [] for cls in class_dirs}
    for cls in class_dirs:
        for key, path in listing.candidates[cls]:
            result = results[key]
            if result.reason is None:
                good[cls].append((key, path, result))
            else:
                skipped.setdefault(result.reason, []).append(key)

    warnings: list[str] = []
    class_names = [cls for cls in class_dirs if good[cls]]
    for cls in class_dirs:
        if not good[cls]:
            bad = sum(1 for keys in skipped.values() for key in keys if key.startswith(cls + "/"))
            why = f"all {bad} image file(s) in it were skipped" if bad else "it holds no image files"
            warnings.append(f"class folder {cls!r} is left out: {why}")
    if not class_names:
        raise UserError(f"dataset {name!r}: no usable images in {root}; expected {root}/<class>/<image>.jpg "
                        f"(extensions: jpg, jpeg, png, gif, bmp)")
    if len(class_names) == 1:
        warnings.append(f"only one class ({class_names[0]!r}) has images; a classifier needs at least two")

    examples: list[Example] = []
    digests: dict[str, list[Example]] = {}
    for label, cls in enumerate(class_names):
        per_split: dict[Split, int] = {"train": 0, "val": 0, "test": 0}
        for key, path, result in good[cls]:
            split = which_split(path.name, test_pct, val_pct)
            per_split[split] += 1
            example = Example(key=key, label=label, split=split, ref=path)
            examples.append(example)
            if result.sha256:
                digests.setdefault(result.sha256, []).append(example)
        warnings.extend(_split_warnings(cls, per_split, test_pct))
    warnings.extend(_duplicate_warnings(digests, class_names))
    if listing.ignored:
        warnings.append(f"ignored {len(listing.ignored)} file(s) without an image extension "
                        f"(jpg, jpeg, png, gif, bmp), e.g. {listing.ignored[0]}")

    return ImageDataset(name=name, class_names=class_names, examples=examples, read=_read_file, root=root,
                        skipped_files={r: sorted(keys) for r, keys in sorted(skipped.items())}, warnings=warnings)


def _run_checks(files: list[tuple[str, Path]], max_pixels: int, context: RunContext | None,
                root: Path) -> dict[str, ImageCheck]:
    cache_file = _cache_file(context, root)
    if context is None:
        return check_images(files, max_pixels, cache_file)
    with context.progress.task(f"checking images in {root}", total=len(files), unit="img") as task:
        return check_images(files, max_pixels, cache_file, on_done=task.advance)


def _split_warnings(cls: str, per_split: Mapping[str, int], test_pct: float) -> list[str]:
    total = sum(per_split.values())
    missing = [s for s in ("train", "test") if per_split[s] == 0 and (s == "train" or test_pct > 0)]
    if not missing:
        return []
    return [f"class {cls!r} has {total} image(s) but none in the {' or '.join(missing)} split; "
            f"add images to it (the split of each file is fixed by its name)"]


def _duplicate_warnings(digests: Mapping[str, list[Example]], class_names: list[str]) -> list[str]:
    """Identical files in different splits leak test data into training; in different classes, labels clash."""
    found: list[str] = []
    for group in digests.values():
        if len(group) < 2:
            continue
        first = group[0]
        other = next((ex for ex in group[1:] if ex.split != first.split), None)
        if other is not None:
            found.append(f"{first.key} ({first.split}) and {other.key} ({other.split}) are the same image in "
                         f"different splits: test data leaks into training; remove one of them")
            continue
        other = next((ex for ex in group[1:] if ex.label != first.label), None)
        if other is not None:
            found.append(f"{first.key} and {other.key} are the same image with different labels "
                         f"({class_names[first.label]!r}, {class_names[other.label]!r}); remove one of them")
    if len(found) > _MAX_DUPLICATE_WARNINGS:
        extra = len(found) - _MAX_DUPLICATE_WARNINGS
        found = found[:_MAX_DUPLICATE_WARNINGS] + [f"... and {extra} more duplicated image(s)"]
    return found


def _read_file(example: Example) -> bytes:
    """The encoded file, for the backbone to decode."""
    try:
        return Path(example.ref).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {example.ref}: {exc.strerror or exc}; it was readable when the folder "
                        f"was scanned - rerun once the folder is stable") from None


def create(arg: str | None, options: Mapping[str, Any], context: RunContext) -> ImageDataset:
    """Factory of ``folder:<path>``."""
    if not arg:
        raise UserError("dataset 'folder' needs a path: write folder:<path to a folder with one subfolder per class>")
    return load_image_folder(Path(arg), name=f"folder:{arg}", test_pct=options["test_pct"],
                             val_pct=options["val_pct"], max_pixels=options["max_pixels"], context=context)
