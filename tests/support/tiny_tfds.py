"""A tiny TFDS dataset prepared by a real ``GeneratorBasedBuilder``: 3 colour classes, 12 train and 5 test images each."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType

CLASSES = ("red", "green", "blue")

# A builder module written to a temporary folder: the test process imports it to prepare the data;
# an `xferbench` subprocess (or a Ray worker) never sees it, so it reads the dataset from its files alone.
BUILDER = textwrap.dedent('''
    import numpy as np
    import tensorflow_datasets as tfds

    def image(label, index):
        rng = np.random.default_rng(label * 1000 + index)
        pixels = rng.integers(0, 60, size=(28, 28, 3), dtype=np.uint8)
        pixels[:, :, label] += 180
        return pixels

    class TinyColors(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 3)),
                "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
            }), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "test": self._generate_examples(5, offset=100)}

        def _generate_examples(self, per_class, offset=0):
            for label in range(3):
                for i in range(per_class):
                    yield f"{label}-{offset + i}", {"image": image(label, offset + i), "label": label}
''')


_MODULE: list[ModuleType] = []


def _builder_module(root: Path) -> ModuleType:
    """The builder module, loaded once per process: TFDS refuses a second class registered as tiny_colors."""
    if not _MODULE:
        source = root / "tiny_colors_builder.py"
        source.write_text(BUILDER)
        spec = importlib.util.spec_from_file_location("tiny_colors_builder", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULE.append(module)
    return _MODULE[0]


def prepare_tiny_colors(root: Path) -> tuple[Path, ModuleType]:
    """Prepare ``tiny_colors`` into ``root/data`` with TFDS; returns (data dir, builder module)."""
    module = _builder_module(root)
    data_dir = root / "data"
    module.TinyColors(data_dir=str(data_dir)).download_and_prepare()
    return data_dir, module
