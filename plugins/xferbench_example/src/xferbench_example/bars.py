"""Dataset ``bars``: generated 32x32 grayscale images of horizontal, vertical or diagonal bars.

Each image holds one or two anti-aliased bars of random thickness, brightness and offset
from the centre (diagonals go either way), on a dark background, plus Gaussian noise. Image
``i`` of class ``c`` is drawn from its own random stream seeded by ``(split_seed, c, i)``,
so changing ``n_per_class`` adds or removes images without altering the others, and the
train/val/test split of a key never changes (it is the retrain.py hash of the file name).
That hash looks at the base name only, so ``bar_0003.png`` is in the same split in every
class: the splits are balanced by construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from xferbench.data import Example, ImageDataset
from xferbench.errors import UserError
from xferbench.splits import check_percentages, which_split

SIZE = 32
CLASSES = ("horizontal", "vertical", "diagonal")
#: bars are at most this many pixels from the image centre, so each class has a typical shape
MAX_OFFSET = 8.0


def draw_bars(label: int, index: int, *, seed: int, noise: float) -> np.ndarray:
    """Image ``index`` of class ``label``: uint8 ``[SIZE, SIZE]``, the same for the same arguments."""
    rng = np.random.default_rng([seed, label, index])
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5 - SIZE / 2  # pixel centres relative to the image centre
    image = np.full((SIZE, SIZE), rng.uniform(0.0, 0.2))
    for _ in range(int(rng.integers(1, 3))):
        if CLASSES[label] == "horizontal":
            angle = 0.0
        elif CLASSES[label] == "vertical":
            angle = math.pi / 2
        else:
            angle = math.pi / 4 if rng.random() < 0.5 else 3 * math.pi / 4
        offset = rng.uniform(-MAX_OFFSET, MAX_OFFSET)
        thickness = rng.uniform(1.5, 3.5)
        brightness = rng.uniform(0.6, 1.0)
        # Signed distance of each pixel centre from the bar's centre line (normal form of a line).
        distance = np.abs(ys * math.cos(angle) - xs * math.sin(angle) - offset)
        coverage = np.clip(thickness / 2 + 0.5 - distance, 0.0, 1.0)  # 1 inside, ramps to 0 over a pixel
        image = np.maximum(image, brightness * coverage)
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def load_bars(arg: str | None, options: Mapping[str, Any], context: Any) -> ImageDataset:
    """The dataset factory: ``(arg, options, context) -> ImageDataset``.

    ``arg`` is always None: ``bars`` is not parametric, so ``bars:horizontal,vertical``
    is a class subset that the harness applies after this returns.
    """
    if arg:
        raise UserError(f"dataset 'bars' takes no argument, got {arg!r}")
    n_per_class = int(options["n_per_class"])
    seed = int(options["split_seed"])
    noise = float(options["noise"])
    test_pct, val_pct = float(options["test_pct"]), float(options["val_pct"])
    check_percentages(test_pct, val_pct, owner="dataset 'bars'")

    examples = []
    for label, name in enumerate(CLASSES):
        for index in range(n_per_class):
            key = f"{name}/bar_{index:04d}.png"
            split = which_split(key, test_pct=test_pct, val_pct=val_pct)
            examples.append(Example(key=key, label=label, split=split, ref=(label, index)))

    def read(example: Example) -> np.ndarray:
        # Drawn on demand: cheap, and the bottleneck cache keys on the pixels anyway.
        label, index = example.ref
        return draw_bars(label, index, seed=seed, noise=noise)

    return ImageDataset(name="bars", class_names=list(CLASSES), examples=examples, read=read)
