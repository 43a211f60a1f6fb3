"""``tfds:`` streams its images: extraction's peak RSS through ``tfds:`` is flat from 1,000 to 10,000 images.

A real TFDS ``GeneratorBasedBuilder`` (written here, configs ``1k`` and ``10k``) prepares the
first 1,000 and all 10,000 images of the real MNIST test set (``../shared/data/mnist``) as PNG
records in a temporary data dir (train: the first 90%, test: the rest; the reader carves its
validation split out of train). Then LeNet-5 (pretrained on digits 0-4, its weights cached by a
warm-up child) extracts every image of each, each in a fresh interpreter that reads the dataset
from its files alone through ``tfds:mnist_t10k/1k`` and ``/10k`` with an empty bottleneck cache.
Each child reports its peak RSS (``VmHWM``, see ``conftest.peak_rss_kib``). Floor: the 10k/1k ratio is at most 1.15. The
data dir is deleted afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, peak_rss_ratio, shared_data_dir

MAX_RSS_RATIO = 1.15

_BUILDER = textwrap.dedent('''
    import gzip

    import numpy as np
    import tensorflow_datasets as tfds

    SIZES = {{"1k": 1000, "10k": 10000}}

    def read_idx(path, offset):
        with gzip.open(path, "rb") as fh:
            return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)

    class MnistT10k(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in SIZES]

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({{
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }}))

        def _split_generators(self, dl_manager):
            n = SIZES[self.builder_config.name]
            return {{"train": self._generate_examples(0, n * 9 // 10),
                    "test": self._generate_examples(n * 9 // 10, n)}}

        def _generate_examples(self, start, stop):
            images = read_idx({images!r}, 16).reshape(-1, 28, 28, 1)
            labels = read_idx({labels!r}, 8)
            for i in range(start, stop):
                yield i, {{"image": images[i], "label": int(labels[i])}}
''')

_EXTRACT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {benchmarks!r})
    from conftest import make_backbone, peak_rss_kib
    from xferbench.context import RunContext
    from xferbench.extraction import extract_features
    from xferbench.plugin_manager import load_catalog
    from xferbench.progress import Progress

    config, data_dir, cache = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    context = RunContext(catalog=load_catalog(), cache_dir=cache, data_dir=data_dir, progress=Progress(quiet=True))
    dataset = context.load_dataset(f"tfds:mnist_t10k/{{config}}", {{}})
    backbone = make_backbone(context, "lenet5", {{}})
    before = peak_rss_kib()
    result = extract_features(backbone, dataset, cache / f"bottlenecks-{{config}}", Progress(quiet=True),
                              batch_size=backbone.extract_batch_size)
    n = len(dataset.examples)
    assert result.computed + result.cache_hits == n and not result.failed, result
    print(json.dumps({{"n": n, "peak_rss_kib": peak_rss_kib(),
                       "rss_before_extraction_kib": before}}))
""")


def _child(*args: object, timeout: float = 1800) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO / "benchmarks")}
    script = _EXTRACT.format(benchmarks=str(REPO / "benchmarks"))
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def prepared(tmp_path: Path):
    """``mnist_t10k/1k`` and ``/10k`` prepared by TFDS into a temporary data dir, deleted afterwards."""
    tfds = pytest.importorskip("tensorflow_datasets")
    mnist = shared_data_dir() / "mnist"
    source = tmp_path / "mnist_t10k_builder.py"
    source.write_text(_BUILDER.format(images=str(mnist / "t10k-images-idx3-ubyte.gz"),
                                      labels=str(mnist / "t10k-labels-idx1-ubyte.gz")))
    spec = importlib.util.spec_from_file_location("mnist_t10k_builder", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data_dir = tmp_path / "tfds-data"
    tfds.disable_progress_bar()
    try:
        for config in ("1k", "10k"):
            module.MnistT10k(config=config, data_dir=str(data_dir)).download_and_prepare()
        yield data_dir
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_tfds_extraction_peak_rss_is_flat_from_1k_to_10k_images(benchmark, prepared, tmp_path):
    cache = tmp_path / "cache"
    _child("1k", prepared, cache)  # pretrains LeNet-5 once and caches its weights: both runs below load them
    shutil.rmtree(cache / "bottlenecks-1k")
    small = benchmark.pedantic(_child, args=("1k", prepared, cache), rounds=1, iterations=1)
    large = _child("10k", prepared, cache)
    assert (small["n"], large["n"]) == (1000, 10000)
    ratio = peak_rss_ratio(benchmark, small, large, "tfds")
    assert ratio <= MAX_RSS_RATIO, f"peak RSS grew {ratio:.3f}x from 1k to 10k images; the ceiling is {MAX_RSS_RATIO}"
