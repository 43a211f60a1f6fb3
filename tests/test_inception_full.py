"""inception_2015 against full retraining: Keras InceptionV3 from scratch on the graph's own inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from support.cli import assert_one_line_error
from support.inception_standin import ReferenceSession, graph_bytes_of, write_standin
from xferbench.context import RunContext
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress


@pytest.fixture(scope="module")
def tiny_standin(tmp_path_factory):
    return write_standin(tmp_path_factory.mktemp("standin") / "inception_dec_2015.zip", size="tiny")


def test_model_inputs_are_the_graphs_normalised_input(tiny_standin, shared_data, tmp_path):
    catalog = load_catalog()
    context = RunContext(catalog=catalog, cache_dir=tmp_path, weights=tiny_standin, progress=Progress(quiet=True))
    spec, _ = catalog.backbones.resolve("inception_2015")
    backbone = spec.load_factory()(None, spec.validate({}), context)
    backbone.prepare(context)
    assert backbone.supports("full") and not backbone.supports("finetune")
    jpegs = [p.read_bytes() for p in sorted((shared_data / "flower_photos_mini" / "roses").glob("*.jpg"))[:3]]
    inputs = backbone.model_inputs([*jpegs, b"not an image"])
    assert inputs.shape == (4, 299, 299, 3) and np.isnan(inputs[3]).all()
    with ReferenceSession(graph_bytes_of(tiny_standin)) as reference:
        for jpeg, row in zip(jpegs, inputs, strict=False):
            mul = reference.session.run("Mul:0", {"DecodeJpeg/contents:0": jpeg})[0]
            np.testing.assert_allclose(row, mul, rtol=0, atol=1e-5)
    model = backbone.build_model(3, pretrained=False, seed=0)
    assert model.input_shape == (None, 299, 299, 3) and model.output_shape == (None, 3)
    assert model.count_params() > 20_000_000  # InceptionV3's ~22M body, not a toy
    with pytest.raises(NotImplementedError):
        backbone.build_model(3, pretrained=True, seed=0)


@pytest.mark.slow
@pytest.mark.realdata
def test_cli_runs_transfer_and_full_for_inception(cli, tiny_standin, shared_data, tmp_path):
    # A small class folder keeps InceptionV3's from-scratch training affordable on 2 cores.
    root = tmp_path / "photos"
    for name in ("daisy", "roses"):
        (root / name).mkdir(parents=True)
        for photo in sorted((shared_data / "flower_photos_mini" / name).glob("*.jpg"))[:30]:
            os.symlink(photo, root / name / photo.name)
    common = ["run", "--backbone", "inception_2015", "--weights", str(tiny_standin), "--dataset", f"folder:{root}",
              "--shots", "3", "--full-epochs", "1", "--head-opt", "steps=200", "--output", "r.json", "--quiet"]
    # A frozen graph cannot be fine-tuned: asked for, that is an error before any work starts.
    refused = cli(*common, "--compare", "transfer,full,finetune")
    assert_one_line_error(refused, "backbone 'inception_2015' does not support method 'finetune'")
    assert not (tmp_path / "r.json").exists()
    result = cli(*common, "--compare", "transfer,full")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = {run["method"]: run for run in json.loads((tmp_path / "r.json").read_text())["runs"]}
    assert runs["transfer"]["status"] == "ok" and runs["full"]["status"] == "ok"
    assert runs["full"]["n_train"] == 6 and runs["full"]["training"]["epochs"] == pytest.approx(1)
