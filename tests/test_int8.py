"""``--backbone-opt precision=int8``: bottlenecks from a full-integer TFLite model run by LiteRT.

Bounds, stated once: int8 features have a mean cosine of at least ``MEAN_COSINE`` (and no image
below ``MIN_COSINE``) against the same backbone's float32 features, and a head trained on int8
features scores within ``ACCURACY_POINTS`` of the float32 head's test accuracy (or one test image,
where one image is worth more): the 2 points of the issue's int8 export bound, widened to 5 because
the splits here are small (187 and 52 test images).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import xferbench_digits  # noqa: E402
import xferbench_embedded  # noqa: E402
import xferbench_heads  # noqa: E402
import xferbench_inception  # noqa: E402
import xferbench_keras  # noqa: E402
import xferbench_lenet5  # noqa: E402
import xferbench_methods  # noqa: E402
from support.inception_standin import write_standin  # noqa: E402
from xferbench import int8  # noqa: E402
from xferbench.backbone import NetworkBackbone  # noqa: E402
from xferbench.context import RunContext  # noqa: E402
from xferbench.data import Example, ImageDataset  # noqa: E402
from xferbench.decoding import Preprocessing  # noqa: E402
from xferbench.errors import UserError  # noqa: E402
from xferbench.extraction import extract_features  # noqa: E402
from xferbench.plugin_manager import load_catalog  # noqa: E402
from xferbench.progress import Progress  # noqa: E402
from xferbench.runner import Runner, RunRequest  # noqa: E402

MEAN_COSINE = 0.95
MIN_COSINE = 0.8
ACCURACY_POINTS = 5.0


@pytest.fixture(scope="module")
def catalog():
    plugins = [("lenet5", xferbench_lenet5), ("digits", xferbench_digits), ("keras", xferbench_keras),
               ("heads", xferbench_heads), ("methods", xferbench_methods), ("embedded", xferbench_embedded),
               ("inception", xferbench_inception)]
    return load_catalog(extra_plugins=plugins, load_entry_points=False)


def context(catalog, cache: Path, **kwargs) -> RunContext:
    return RunContext(catalog=catalog, cache_dir=cache, progress=Progress(quiet=True), **kwargs)


def transfer(catalog, cache: Path, out: Path, precision: str) -> dict:
    request = RunRequest(backbones=["lenet5"], datasets=["digits"], heads=["softmax"], methods=["transfer"],
                         backbone_options={"pretrain_epochs": "2", "precision": precision})
    (row,) = Runner(request, context(catalog, cache), out).run()["runs"]
    assert row["status"] == "ok", row["error"]
    return row


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def within_bound(int8_accuracy: float, float32_accuracy: float, test_images: int) -> bool:
    return abs(int8_accuracy - float32_accuracy) * 100 <= max(ACCURACY_POINTS, 100 / test_images + 1e-9)


def test_lenet5_int8_runs_are_cached_apart_from_float32_and_score_alike(catalog, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = transfer(catalog, cache, tmp_path / "a.json", "int8")
    assert first["precision"] == "int8" and first["extracted"] > 0 and first["cache_hits"] == 0
    (model,) = (cache / "int8").glob("*.tflite")

    # Switching to float32 reuses no int8 entry: every image is extracted again.
    plain = transfer(catalog, cache, tmp_path / "b.json", "float32")
    assert plain["cache_hits"] == 0 and plain["extracted"] == first["extracted"]
    bf16 = transfer(catalog, cache, tmp_path / "bf16.json", "bfloat16")  # and bf16 neither int8's nor fp32's
    assert bf16["precision"] == "bfloat16" and bf16["cache_hits"] == 0 and bf16["extracted"] == first["extracted"]

    # A second int8 run converts nothing and extracts nothing.
    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached int8 model should have been reused")

    monkeypatch.setattr(int8, "convert_backbone", no_conversion)
    again = transfer(catalog, cache, tmp_path / "c.json", "int8")
    assert again["extracted"] == 0 and again["cache_hits"] == first["extracted"]
    assert list((cache / "int8").glob("*.tflite")) == [model]
    assert within_bound(again["test_accuracy"], plain["test_accuracy"], 187)

    # The features themselves: the cached int8 and float32 bottlenecks of every image.
    ctx = context(catalog, cache)
    dataset = ctx.load_dataset("digits")
    features = {}
    for precision in ("float32", "int8"):
        spec, _ = catalog.backbones.resolve("lenet5")
        backbone = spec.load_factory()(None, spec.validate({"pretrain_epochs": "2", "precision": precision}), ctx)
        backbone.prepare(ctx)
        extraction = extract_features(backbone, dataset, ctx.subdir("bottlenecks"), ctx.progress)
        assert extraction.computed == 0
        features[precision] = extraction.features
    similarity = cosines(features["float32"], features["int8"])
    print(f"\nlenet5: int8 cosine mean {similarity.mean():.4f} min {similarity.min():.4f}, test accuracy int8 "
          f"{again['test_accuracy']:.3f} float32 {plain['test_accuracy']:.3f}")
    assert similarity.mean() >= MEAN_COSINE and similarity.min() >= MIN_COSINE, (similarity.mean(), similarity.min())
    assert not np.array_equal(features["float32"], features["int8"])  # really another network


def test_mobilenet_int8_features_and_head_against_float32(catalog, tmp_path):
    from sklearn.linear_model import LogisticRegression

    ctx = context(catalog, tmp_path / "cache")
    dataset = ctx.load_dataset("flowers-mini")
    train = np.array([ex.split != "test" for ex in dataset.examples])
    labels = np.array([ex.label for ex in dataset.examples])
    features, accuracy = {}, {}
    for precision in ("float32", "int8"):
        spec, arg = catalog.backbones.resolve("keras:MobileNet")
        options = spec.validate({"alpha": "0.25", "input_size": "96", "precision": precision,
                                 "int8_calibration_images": "50"})
        backbone = spec.load_factory()(arg, options, ctx)
        backbone.prepare(ctx)
        extraction = extract_features(backbone, dataset, ctx.subdir("bottlenecks"), ctx.progress)
        assert extraction.computed + extraction.cache_hits == len(dataset.examples)
        x = features[precision] = extraction.features
        head = LogisticRegression(max_iter=1000).fit(x[train], labels[train])
        accuracy[precision] = float((head.predict(x[~train]) == labels[~train]).mean())
    assert backbone.info()["int8_model"] is not None
    similarity = cosines(features["float32"], features["int8"])
    print(f"\nkeras:MobileNet alpha 0.25 96px: int8 cosine mean {similarity.mean():.4f} min {similarity.min():.4f}, "
          f"test accuracy int8 {accuracy['int8']:.3f} float32 {accuracy['float32']:.3f}")
    assert similarity.mean() >= MEAN_COSINE and similarity.min() >= MIN_COSINE, (similarity.mean(), similarity.min())
    assert within_bound(accuracy["int8"], accuracy["float32"], int((~train).sum())), accuracy
    assert accuracy["int8"] > 0.5  # chance is 0.2


@pytest.mark.slow
def test_inception_standin_rewritten_graph_converts_to_int8_and_runs_batched(catalog, tmp_path):
    from dataclasses import replace

    graph = write_standin(tmp_path / "inception_dec_2015.zip", size="tiny", archive="zip")
    ctx = context(catalog, tmp_path / "cache", weights=graph)
    dataset = ctx.load_dataset("flowers-mini")
    dataset = replace(dataset, examples=dataset.examples[::5])
    features = {}
    for precision in ("float32", "int8"):
        spec, arg = catalog.backbones.resolve("inception_2015")
        backbone = spec.load_factory()(arg, spec.validate({"precision": precision, "int8_calibration_images": "20"}),
                                       ctx)
        backbone.prepare(ctx)
        features[precision] = extract_features(backbone, dataset, ctx.subdir("bottlenecks"), ctx.progress).features
    assert backbone._int8[1].batched  # the batch dimension resized: one invoke per batch
    similarity = cosines(features["float32"], features["int8"])
    assert similarity.mean() >= MEAN_COSINE and similarity.min() >= MIN_COSINE, (similarity.mean(), similarity.min())


class _Bessel(NetworkBackbone):
    """A backbone whose network uses an op TFLite has no kernel for."""

    name = "bessel"
    feature_dim = 3
    weights_sha256 = "0" * 64
    preprocessing = Preprocessing(size=(4, 4))

    def precision(self) -> str:
        return "int8"

    def forward(self, batch):
        return self.tf_forward(batch)

    def tf_forward(self, batch):
        return tf.math.bessel_i1e(tf.reduce_mean(batch, axis=[1, 2]))


def test_a_backbone_that_cannot_convert_to_int8_is_one_line_naming_the_op(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    dataset = ImageDataset("tiny", ["a", "b"], [Example(f"{i}", i % 2, "train", i) for i in range(6)],
                           read=lambda ex: pixels[ex.ref])
    with pytest.raises(UserError) as info:
        extract_features(_Bessel(), dataset, tmp_path / "bottlenecks", Progress(quiet=True))
    message = str(info.value)
    assert "\n" not in message and "'tf.BesselI1e'" in message and "precision=int8" in message
    assert not (tmp_path / "int8").exists() or not list((tmp_path / "int8").iterdir())


def test_int8_without_training_images_is_one_line(tmp_path):
    dataset = ImageDataset("tests-only", ["a"], [Example("0", 0, "test", 0)],
                           read=lambda ex: np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="needs training images to calibrate"):
        extract_features(_Bessel(), dataset, tmp_path / "bottlenecks", Progress(quiet=True))


def test_a_quiet_int8_run_prints_nothing_on_stderr(cli, tmp_path):
    # The converter (its quantization settings) and LiteRT (its XNNPACK delegate) print natively, past -q.
    out = tmp_path / "results.json"
    done = cli("run", "--backbone", "lenet5", "--backbone-opt", "precision=int8", "--dataset", "digits:0-4",
               "--compare", "transfer", "--head", "logreg", "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (run,) = json.loads(out.read_text())["runs"]
    assert run["precision"] == "int8" and run["status"] == "ok"
