"""Loading scikit-learn's digits as an ImageDataset."""

from __future__ import annotations

from typing import Any

import numpy as np

from xferbench.data import Example, ImageDataset
from xferbench.splits import which_split


def load_digits_dataset(arg: str | None, options: dict[str, Any], context: Any) -> ImageDataset:
    """Pixels are rescaled from 0..16 to 0..255 uint8; the split follows retrain.py's hash rule."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    examples = []
    for index, label in enumerate(bunch.target):
        key = f"{int(label)}/digit_{index:04d}.png"
        split = which_split(key, test_pct=options["test_pct"], val_pct=options["val_pct"])
        examples.append(Example(key=key, label=int(label), split=split, ref=index))
    return ImageDataset(
        name="digits",
        class_names=[str(d) for d in range(10)],
        examples=examples,
        read=lambda ex: images[ex.ref],
    )
