"""A sweep survives a cell whose plugin crashes with a bug, not only with a UserError."""

from __future__ import annotations

import numpy as np

from xferbench import BackboneSpec, hookimpl
from xferbench.backbone import Backbone
from xferbench.context import RunContext
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress
from xferbench.results import validate_document
from xferbench.runner import Runner, RunRequest


class PixelMeans(Backbone):
    """Mean of each 2x2 block of an 8x8 digit: 16 honest features, no TensorFlow."""

    feature_dim = 16

    def __init__(self, arg, options, context) -> None:
        self.name = "pixel_means"

    @property
    def weights_sha256(self) -> str:
        return "0" * 64

    def extract(self, images):
        return np.stack([np.asarray(img, np.float32).reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel() / 255
                         for img in images])


class Crashing(PixelMeans):
    def extract(self, images):
        raise RuntimeError("kernel exploded")


@hookimpl
def xferbench_register_backbones(register):
    register(BackboneSpec("crashing", "raises a RuntimeError in extract", factory=Crashing))
    register(BackboneSpec("pixel_means", "2x2 block means", factory=PixelMeans))


def test_a_crashing_cell_is_recorded_and_the_next_cell_runs(tmp_path):
    import sys

    catalog = load_catalog(extra_plugins=[("sweeptest", sys.modules[__name__])])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["crashing", "pixel_means"], datasets=["digits:0-4"], heads=["softmax"],
                         methods=["transfer"], head_options={"steps": "300"})
    document = Runner(request, context, tmp_path / "r.json").run()
    validate_document(document)
    crashed, fine = document["runs"]
    assert crashed["backbone"] == "crashing" and crashed["status"] == "error"
    assert crashed["error"].startswith("RuntimeError: kernel exploded") and "\n" not in crashed["error"]
    assert fine["status"] == "ok" and fine["test_accuracy"] > 0.6
