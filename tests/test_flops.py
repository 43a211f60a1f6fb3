"""FLOPs per image against published figures, `xferbench machine`, and the MFU of a run."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from support.inception_standin import cached_standin  # noqa: E402
from xferbench.context import RunContext  # noqa: E402
from xferbench.flops import function_flops, model_flops  # noqa: E402
from xferbench.plugin_manager import load_catalog  # noqa: E402
from xferbench.progress import Progress  # noqa: E402

#: published multiply-adds: Szegedy et al. 2016 (Inception-v3 at 299x299) and Howard et al. 2017 (MobileNet-v1:
#: 1.0 MobileNet-224 569 M, 0.25 MobileNet-128 14 M, both with their 1000-way classifier)
INCEPTION_V3_MACS = 5.7e9
MOBILENET_MACS = 569e6
MOBILENET_025_128_MACS = 14e6
# LeNet-5 as xferbench builds it, up to its 84-wide bottleneck: conv1 28*28*6*5*5, conv2 10*10*16*5*5*6,
# fc1 400*120, bottleneck 120*84
LENET5_MACS = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 25 * 6 + 400 * 120 + 120 * 84


def test_mobilenet_v1_at_224_is_569_million_multiply_adds():
    flops = model_flops(keras.applications.MobileNet(weights=None))
    assert flops / 2 == pytest.approx(MOBILENET_MACS, rel=0.05)


def test_every_conv_and_matmul_counts_and_nothing_else():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs x 3*3*3
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*4 outputs x 3*3
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, activation="relu")(x)  # 5 outputs x 64
    model = keras.Model(inputs, outputs)
    assert model_flops(model) == 2 * (8 * 8 * 4 * 27 + 4 * 4 * 4 * 9 + 5 * 64)
    # per image, whatever the traced batch size; through nested function calls too
    inner = tf.function(lambda x: model(x, training=False))
    assert function_flops(tf.function(lambda x: inner(x) * 2.0), (8, 8, 3)) == model_flops(model)


def _context(tmp_path: Path, weights: Path | None = None) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp_path, weights=weights, progress=Progress(quiet=True))


def _backbone(token: str, context: RunContext, **options: str):
    spec, arg = context.catalog.backbones.resolve(token)
    backbone = spec.load_factory()(arg, spec.validate(options), context)
    backbone.prepare(context)
    return backbone


@pytest.mark.slow
def test_inception_2015_is_5_7_billion_multiply_adds(tmp_path):
    """The full-size stand-in has the real topology (random weights): its graph is counted as loaded."""
    backbone = _backbone("inception_2015", _context(tmp_path, cached_standin("full", seed=0, archive="zip")))
    flops = backbone.flops_per_image()
    assert flops / 2 == pytest.approx(INCEPTION_V3_MACS, rel=0.05)
    assert flops / 1e9 == pytest.approx(11.4, rel=0.05)


def test_keras_mobilenet_backbone_counts_its_own_graph(tmp_path):
    """The shipped MobileNet alpha=0.25 at 128 px, without its classifier (256 x 1000 multiply-adds)."""
    backbone = _backbone("keras:MobileNet", _context(tmp_path), alpha="0.25", input_size="128")
    assert backbone.flops_per_image() / 2 == pytest.approx(MOBILENET_025_128_MACS - 256 * 1000, rel=0.05)


@pytest.mark.realdata
def test_a_run_records_flops_achieved_rate_and_mfu(cli, tmp_path):
    result = cli("run", "--backbone", "lenet5", "--dataset", "digits:0-4", "--head", "softmax",
                 "--head-opt", "steps=50", "--compare", "transfer", "--output", "r.json", "--format", "csv",
                 "--quiet")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert run["gflops_per_image"] == pytest.approx(2 * LENET5_MACS / 1e9)
    assert run["achieved_gflops_per_second"] == pytest.approx(
        run["gflops_per_image"] * run["extract_forward_images_per_second"])
    (peak_file,) = Path(os.environ["XFERBENCH_PEAK_DIR"]).glob("peak-*.json")
    peak = json.loads(peak_file.read_text())["cpu"]["float32"]
    assert run["mfu"] == pytest.approx(run["achieved_gflops_per_second"] / peak)
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["MFU"] == f"{run['mfu']:.1%}"


def test_machine_prints_features_and_caches_the_peak(cli, tmp_path):
    env = {"XFERBENCH_PEAK_DIR": ""}  # the private cache of this test, not the session's
    first = cli("machine", "--json", env=env)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    assert info["cpu_features"]["avx512"] == (["avx512f"] if "avx512f" in flags else [])
    assert info["tensorflow"]["version"] == tf.__version__
    assert info["peak_gflops"]["cpu"]["float32"] > 0 and info["peak_gflops"]["cpu"]["bfloat16"] > 0
    peak_file = Path(info["peak_file"])
    assert peak_file.parent == tmp_path / "cache" / "machine"
    inode = peak_file.stat().st_ino
    again = cli("machine", env=env)
    assert again.returncode == 0, again.stderr
    assert "peak matmul cpu: float32" in again.stdout and "avx512" in again.stdout
    assert json.loads(peak_file.read_text()) == info["peak_gflops"]  # read back, not measured again
    assert peak_file.stat().st_ino == inode
    assert cli("machine", "--remeasure", env=env).returncode == 0
    assert peak_file.stat().st_ino != inode  # written anew (atomically)
