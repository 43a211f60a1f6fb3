"""What a plugin dataset can get wrong is an error, and what its backbone could not decode is shown.

In process through the public plugin API (load_catalog with an extra plugin, RunContext.load_dataset),
and end to end through the CLI with a small plugin distribution installed the way pip leaves one
(package + .dist-info with an ``xferbench`` entry point) on the child's PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.cli import assert_one_line_error
from xferbench import DatasetSpec, Option, hookimpl
from xferbench.context import RunContext
from xferbench.data import Example, ImageDataset
from xferbench.errors import UserError
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

CLASSES = ["a", "b", "c"]


def _context(tmp_path: Path, examples: list[Example]) -> RunContext:
    def load(arg, options, context):
        return ImageDataset(name="flawed", class_names=CLASSES, examples=examples, read=lambda ex: b"")

    @hookimpl
    def xferbench_register_datasets(register):
        register(DatasetSpec("flawed", "a dataset with a flaw", factory=load,
                             options=(Option("unused", int, 0, "nothing"),)))

    plugin = type("Plugin", (), {"xferbench_register_datasets": staticmethod(xferbench_register_datasets)})
    catalog = load_catalog(extra_plugins=[("mine", plugin)], load_entry_points=False)
    return RunContext(catalog=catalog, cache_dir=tmp_path, progress=Progress(quiet=True))


def _good(n: int = 6) -> list[Example]:
    return [Example(f"img_{i}.png", i % 3, ("train", "val", "test")[i % 3]) for i in range(n)]


def test_a_clean_dataset_loads(tmp_path):
    assert len(_context(tmp_path, _good()).load_dataset("flawed").examples) == 6


@pytest.mark.parametrize("flaw,message", [
    (Example("img_2.png", 0, "train"), "dataset 'flawed' (plugin mine): two examples have the key 'img_2.png'"),
    (Example("img_9.png", 0, "validation"), "example 'img_9.png' has split 'validation'; use one of: train, val, test"),
    (Example("img_9.png", -1, "train"), "example 'img_9.png' has label -1, outside 0-2"),
    (Example("img_9.png", 3, "test"), "example 'img_9.png' has label 3, outside 0-2 (the dataset has 3 class names)"),
    (Example("img_9.png", 1.0, "test"), "example 'img_9.png' has label 1.0; labels are class indices"),
])
def test_a_flawed_example_is_a_one_line_error_naming_dataset_and_example(tmp_path, flaw, message):
    context = _context(tmp_path, [*_good(), flaw])
    for token in ("flawed", "flawed:0-1"):  # checked before a class subset could hide it
        with pytest.raises(UserError) as info:
            context.load_dataset(token)
        assert message in str(info.value) and "\n" not in str(info.value)


# -- end to end: an installed plugin, the real CLI ------------------------------------------------
PLUGIN = textwrap.dedent('''
    """blots: 8x8 gray images, some of them not decodable; meanpix: a numpy-only backbone."""
    import hashlib
    import numpy as np
    from xferbench import BackboneSpec, DatasetSpec, Option, hookimpl
    from xferbench.backbone import Backbone
    from xferbench.data import Example, ImageDataset
    from xferbench.decoding import to_rgb

    CLASSES = ["dark", "mid", "bright"]

    def load_blots(arg, options, context):
        examples = []
        for i in range(90):
            split = ("train",) * 6 + ("val", "test", "test", "test")
            examples.append(Example(f"img_{i:03d}.png", i % 3, split[(i // 3) % 10], i))
        flaw = options["flaw"]
        if flaw == "duplicate":
            examples.append(Example("img_004.png", 0, "train", 4))
        broken = set(range(options["broken"]))

        def read(example):
            if example.ref in broken:
                return b"this is not an image"
            rng = np.random.default_rng(example.ref)
            level = 40 + 80 * example.label
            return np.clip(rng.normal(level, 10, (8, 8)), 0, 255).astype(np.uint8)

        return ImageDataset(name="blots", class_names=CLASSES, examples=examples, read=read)

    class MeanPix(Backbone):
        feature_dim = 64

        def __init__(self, arg, options, context):
            self.name = "meanpix"

        @property
        def weights_sha256(self):
            return hashlib.sha256(b"meanpix-v1").hexdigest()

        def extract(self, images):
            out = np.full((len(images), 64), np.nan, np.float32)
            for row, image in enumerate(images):
                rgb = to_rgb(image)
                if rgb is not None:
                    out[row] = rgb.mean(axis=2).reshape(-1) / 255.0
            return out

    @hookimpl
    def xferbench_register_datasets(register):
        register(DatasetSpec("blots", "gray blots, three brightness classes", factory=load_blots, options=(
            Option("broken", int, 0, "how many images are not decodable", min=0),
            Option("flaw", str, "none", "a deliberate flaw", choices=("none", "duplicate")))))

    @hookimpl
    def xferbench_register_backbones(register):
        register(BackboneSpec("meanpix", "gray pixels, numpy only", factory=MeanPix))
''')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "xb_blots").mkdir()
    (root / "xb_blots" / "__init__.py").write_text(PLUGIN)
    info = root / "xb_blots-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xb-blots\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[xferbench]\nblots = xb_blots\n")
    return root


def _run(site: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    output = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "400", "NO_COLOR": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("XFERBENCH_DISABLE_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-m", "xferbench.cli", "run", "--backbone", "meanpix", "--dataset", "blots",
         "--head", "logreg", "--compare", "transfer", "--output", str(output), "--cache-dir",
         str(tmp_path / "cache"), *args], capture_output=True, text=True, env=env, timeout=300)
    return result, json.loads(output.read_text()) if output.exists() else {}


def test_undecodable_images_show_in_the_table(site, tmp_path):
    result, document = _run(site, tmp_path, "--dataset-opt", "broken=6")
    assert result.returncode == 0, result.stderr
    assert document["runs"][0]["skipped_files"] == {"decode_error": 6}
    assert "skipped: none; undecodable: 6 (backbone meanpix)" in result.stdout


def test_a_duplicate_key_in_a_plugin_dataset_is_a_one_line_cli_error(site, tmp_path):
    error = "dataset 'blots' (plugin blots): two examples have the key 'img_004.png'"
    result, document = _run(site, tmp_path, "--dataset-opt", "flaw=duplicate")
    assert_one_line_error(result, error)
    assert document["runs"][0]["status"] == "error" and error in document["runs"][0]["error"]
