"""The dataset contract: labelled images with a stable train/val/test split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xferbench.errors import UserError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# An image as a dataset hands it to a backbone: the encoded file (JPEG, PNG, ...)
# or decoded pixels, uint8 HxW (grayscale) or HxWxC.
ImageData = bytes | np.ndarray


@dataclass(frozen=True)
class Example:
    """One image: ``key`` is its stable name (path relative to the dataset root)."""

    key: str
    label: int
    split: Split
    ref: Any = None  # what ``ImageDataset.read`` needs: a Path, an array index, ...


@dataclass
class ImageDataset:
    """A labelled image set as the harness consumes it."""

    name: str
    class_names: list[str]
    examples: list[Example]
    read: Callable[[Example], ImageData]
    root: Path | None = None
    skipped_files: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def split(self, which: Split) -> list[Example]:
        return [ex for ex in self.examples if ex.split == which]

    def split_sizes(self) -> dict[str, int]:
        counts = Counter(ex.split for ex in self.examples)
        return {s: counts.get(s, 0) for s in SPLITS}

    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(keys) for reason, keys in sorted(self.skipped_files.items())}


def check_examples(dataset: ImageDataset, owner: str) -> None:
    """Refuse what would silently corrupt a run: a repeated key, an unknown split, a label that is no class.

    ``owner`` names the dataset in the one-line UserError, e.g. ``"dataset 'bars' (plugin example)"``.
    """
    num_classes = len(dataset.class_names)
    seen: set[str] = set()
    for example in dataset.examples:
        key = example.key
        if key in seen:
            raise UserError(f"{owner}: two examples have the key {key!r}; keys must be unique (a key names one "
                            f"image in the feature cache and the results)")
        seen.add(key)
        if example.split not in SPLITS:
            raise UserError(f"{owner}: example {key!r} has split {example.split!r}; use one of: {', '.join(SPLITS)}")
        label = example.label
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise UserError(f"{owner}: example {key!r} has label {label!r}; labels are class indices (int)")
        if not 0 <= label < num_classes:
            raise UserError(f"{owner}: example {key!r} has label {label}, outside 0-{num_classes - 1} "
                            f"(the dataset has {num_classes} class names)")


def parse_class_subset(text: str, class_names: Sequence[str], dataset: str) -> list[int]:
    """``"0-4"``, ``"0,2,7"`` or ``"daisy,roses"`` -> sorted class indices."""
    chosen: set[int] = set()
    n = len(class_names)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in class_names:
            chosen.add(list(class_names).index(part))
            continue
        lo, dash, hi = part.partition("-")
        try:
            start = int(lo)
            stop = int(hi) if dash else start
        except ValueError:
            raise UserError(
                f"dataset {dataset!r}: class {part!r} is neither an index nor a class name "
                f"(classes: {', '.join(class_names)})"
            ) from None
        if not (0 <= start <= stop < n):
            raise UserError(f"dataset {dataset!r}: class range {part!r} is outside 0-{n - 1}")
        chosen.update(range(start, stop + 1))
    if not chosen:
        raise UserError(f"dataset {dataset!r}: empty class subset {text!r}")
    return sorted(chosen)


def select_classes(dataset: ImageDataset, subset: str) -> ImageDataset:
    """Keep only the chosen classes and renumber their labels from 0."""
    indices = parse_class_subset(subset, dataset.class_names, dataset.name)
    remap = {old: new for new, old in enumerate(indices)}
    examples = [replace(ex, label=remap[ex.label]) for ex in dataset.examples if ex.label in remap]
    return replace(
        dataset,
        name=f"{dataset.name}:{subset}",
        class_names=[dataset.class_names[i] for i in indices],
        examples=examples,
    )


def select_shots(dataset: ImageDataset, shots: int | None, seed: int) -> ImageDataset:
    """Keep ``shots`` training images per class (seeded, stratified); val/test stay."""
    if shots is None:
        return dataset
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    by_class: dict[int, list[Example]] = {}
    for ex in dataset.split("train"):
        by_class.setdefault(ex.label, []).append(ex)
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda e: e.key)
        picked = rng.permutation(len(items))[:shots]
        keep.update(items[i].key for i in picked)
    examples = [ex for ex in dataset.examples if ex.split != "train" or ex.key in keep]
    return replace(dataset, examples=examples)
