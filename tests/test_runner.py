"""The runner through its Python API: sweeps that survive crashes, training budgets, cache defaults."""

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


class TrainablePixelMeans(PixelMeans):
    """Adds a small trainable counterpart, so full retraining can run in a second."""

    def supports(self, method: str) -> bool:
        return method == "full"

    def model_inputs(self, images):
        return np.stack([np.asarray(img, np.float32).reshape(-1) / 255 for img in images])

    def build_model(self, num_classes, *, pretrained, seed):
        import keras

        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                                 keras.layers.Dense(num_classes, activation="softmax")])


@hookimpl(specname="xferbench_register_backbones")
def register_trainable(register):
    register(BackboneSpec("trainable_pixels", "64 pixels in, trainable MLP", factory=TrainablePixelMeans))


def test_full_budget_stops_training_and_reports_what_it_reached(tmp_path):
    import types

    plugin = types.SimpleNamespace(xferbench_register_backbones=register_trainable)
    catalog = load_catalog(extra_plugins=[("budget", plugin)])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["trainable_pixels"], datasets=["digits"], heads=["softmax"], methods=["full"],
                         full_budget_seconds=1.5, full_epochs=10_000)
    document = Runner(request, context, tmp_path / "r.json").run()
    (run,) = document["runs"]
    assert run["status"] == "ok", run["error"]
    assert run["training"]["stopped_by"] == "budget"
    assert 0 < run["training"]["epochs"] < 10_000 and run["training"]["steps"] > 0
    assert run["train_seconds"] < 30  # stopped near the budget, not after 10,000 epochs
    # The summary says the run was cut short, so its accuracy is not read as the method's.
    csv_text = _render(catalog, document, "csv")
    assert f"ok (budget: {run['training']['epochs']:.2g} epochs)" in csv_text


def _render(catalog, document, fmt: str) -> str:
    import io

    spec, _ = catalog.reporters.resolve(fmt)
    stream = io.StringIO()
    spec.load_factory()(spec.validate({})).report(document, stream)
    return stream.getvalue()


class TimedPixelMeans(PixelMeans):
    """Says its network took 2 s per call, however long extract() really took."""

    def extract(self, images):
        self.network_seconds += 2.0
        return super().extract(images)


@hookimpl(specname="xferbench_register_backbones")
def register_timed(register):
    register(BackboneSpec("timed_pixels", "reports its network time", factory=TimedPixelMeans))


def test_network_images_per_second_come_from_the_backbones_own_timing(tmp_path):
    import csv
    import io
    import types

    catalog = load_catalog(extra_plugins=[("timed", types.SimpleNamespace(xferbench_register_backbones=register_timed))])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["timed_pixels"], datasets=["digits:0-4"], heads=["softmax"],
                         methods=["transfer"], head_options={"steps": "100"})
    document = Runner(request, context, tmp_path / "r.json").run()
    (run,) = document["runs"]
    calls = -(-run["extracted"] // TimedPixelMeans.extract_batch_size)
    assert run["extract_forward_images_per_second"] == run["extracted"] / (2.0 * calls)
    assert run["extract_images_per_second"] > run["extract_forward_images_per_second"]  # real time was far less
    (row,) = csv.DictReader(io.StringIO(_render(catalog, document, "csv")))
    assert float(row["net img/s"]) == round(run["extract_forward_images_per_second"], 1)


def test_cache_dir_defaults(monkeypatch, tmp_path):
    from pathlib import Path

    from xferbench.paths import default_cache_dir

    monkeypatch.delenv("XFERBENCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == Path(tmp_path) / ".cache" / "xferbench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "xferbench"
    monkeypatch.setenv("XFERBENCH_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


class Bfloat16PixelMeans(PixelMeans):
    def precision(self) -> str:
        return "bfloat16"


@hookimpl(specname="xferbench_register_backbones")
def register_bf16(register):
    register(BackboneSpec("bf16_pixels", "claims to compute in bfloat16", factory=Bfloat16PixelMeans))


def test_bfloat16_on_a_cpu_without_it_is_warned_about(tmp_path, monkeypatch):
    import io
    import types

    from xferbench import machine

    catalog = load_catalog(extra_plugins=[("bf16", types.SimpleNamespace(xferbench_register_backbones=register_bf16))])
    request = RunRequest(backbones=["bf16_pixels"], datasets=["digits:0-1"], heads=["softmax"], methods=["transfer"],
                         head_options={"steps": "50"})
    monkeypatch.setattr(machine, "gpus", lambda: [])
    for native, warned in ((False, True), (True, False)):
        monkeypatch.setattr(machine, "native_bfloat16", lambda native=native: native)
        log = io.StringIO()
        context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(stream=log))
        document = Runner(request, context, tmp_path / "r.json").run()
        assert document["runs"][0]["status"] == "ok"
        assert ("warning: bf16_pixels computes in bfloat16" in log.getvalue()) is warned, log.getvalue()


def test_errors_are_said_as_they_happen_only_in_sweeps_and_only_once(tmp_path):
    import io
    import sys

    catalog = load_catalog(extra_plugins=[("sweeptest", sys.modules[__name__])])

    def run_and_log(backbones: list[str]) -> str:
        log = io.StringIO()
        context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(stream=log))
        request = RunRequest(backbones=backbones, datasets=["digits:0-1"], heads=["softmax", "logreg"],
                             methods=["transfer"], head_options={"steps": "50"})
        Runner(request, context, tmp_path / "r.json").run()
        return log.getvalue()

    # One cell: the summary (or the CLI's one-line error) says it; nothing is echoed on the way.
    assert "error:" not in run_and_log(["crashing"])
    # A sweep: both heads fail with the same extraction error, said once as it happens.
    sweep = run_and_log(["crashing", "pixel_means"])
    said = [line for line in sweep.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and said[0].startswith("error: transfer crashing on digits:0-1: RuntimeError: kernel exploded")


def test_large_model_inputs_go_to_a_temporary_file_with_the_same_results(tmp_path, monkeypatch):
    import types

    from xferbench import cell as cell_module

    catalog = load_catalog(extra_plugins=[("budget", types.SimpleNamespace(
        xferbench_register_backbones=register_trainable))])
    request = RunRequest(backbones=["trainable_pixels"], datasets=["digits:0-3"], heads=["softmax"],
                         methods=["full"], full_epochs=3)
    seen: list[type] = []
    real_prepare = cell_module.Cell._prepare_inputs

    def spy(self):
        inputs = real_prepare(self)
        seen.append(type(inputs.array))
        return inputs

    monkeypatch.setattr(cell_module.Cell, "_prepare_inputs", spy)
    results = []
    for limit in (1 << 30, 0):  # in memory, then on disk
        monkeypatch.setattr(cell_module, "IN_MEMORY_INPUTS_BYTES", limit)
        context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
        (run,) = Runner(request, context, tmp_path / f"r{limit}.json").run()["runs"]
        assert run["status"] == "ok", run["error"]
        results.append(run)
    assert seen == [np.ndarray, np.memmap]
    in_memory, on_disk = results
    assert on_disk["training"]["steps"] == in_memory["training"]["steps"] > 0
    assert on_disk["test_accuracy"] == in_memory["test_accuracy"] > 0.5
    assert on_disk["confusion_matrix"] == in_memory["confusion_matrix"]
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # the temporary file is gone with the cell


class CountingPixels(TrainablePixelMeans):
    """Counts the images it prepares for full training."""

    prepared = 0

    def model_inputs(self, images):
        CountingPixels.prepared += len(images)
        return super().model_inputs(images)


@hookimpl(specname="xferbench_register_backbones")
def register_counting(register):
    register(BackboneSpec("counting_pixels", "counts model inputs", factory=CountingPixels))


def test_full_training_with_few_shots_prepares_only_the_images_it_uses(tmp_path):
    import types

    catalog = load_catalog(extra_plugins=[("count", types.SimpleNamespace(
        xferbench_register_backbones=register_counting))])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["counting_pixels"], datasets=["digits:0-3"], heads=["softmax"],
                         methods=["full"], shots=[2, 5], full_epochs=2)
    document = Runner(request, context, tmp_path / "r.json").run()
    assert [run["status"] for run in document["runs"]] == ["ok", "ok"]
    two, five = document["runs"]
    assert (two["n_train"], five["n_train"]) == (8, 20)
    # val and test, plus the training images of the larger draw (the draws are nested per class)
    assert CountingPixels.prepared == five["n_train"] + five["n_val"] + five["n_test"]
    assert CountingPixels.prepared < sum(document["datasets"][0]["split_sizes"].values())
