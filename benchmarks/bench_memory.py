"""Memory stays flat: extraction's peak RSS against dataset size, and heads on features larger than a memory limit.

1. LeNet-5 (pretrained on digits 0-4, its weights cached once) extracts the first 1,000 and then all
   10,000 images of the real MNIST test set (``../shared/data/mnist``), each in a fresh interpreter
   with an empty bottleneck cache. Each child reports its peak RSS (``VmHWM``, see ``conftest.peak_rss_kib``). Floor: the
   10k/1k ratio is at most 1.15.
2. A child limits its private memory with ``RLIMIT_DATA`` (heap and private mappings) to 768 MiB,
   checks that the limit bites (copying the features into memory fails), then trains ``softmax``
   and ``logreg`` (one C) on a memory-mapped 1.2 GB float32 feature matrix (150,000 x 2,048,
   three linearly separable classes) and scores a held-out split. Floor: both train and reach
   90% test accuracy. The matrix lives in pytest's temporary folder and is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO, peak_rss_ratio, shared_data_dir

MAX_RSS_RATIO = 1.15
DATA_LIMIT = 768 << 20
ROWS, WIDTH = 150_000, 2048

_EXTRACT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {benchmarks!r})
    from conftest import make_context, peak_rss_kib
    from xferbench.data import Example, ImageDataset
    from xferbench.extraction import extract_features
    from xferbench.progress import Progress
    from xferbench_mnist.idx import read_idx

    n, cache = int(sys.argv[1]), Path(sys.argv[2])
    images = read_idx(Path({images!r}), "images").data[:n].copy()
    labels = read_idx(Path({labels!r}), "labels").data[:n].copy()
    examples = [Example(key=f"t10k/{{i:05d}}", label=int(labels[i]), split="test", ref=i) for i in range(n)]
    dataset = ImageDataset(name=f"mnist-test-{{n}}", class_names=[str(d) for d in range(10)], examples=examples,
                           read=lambda ex: images[ex.ref])
    context = make_context(cache)
    spec, arg = context.catalog.backbones.resolve("lenet5")
    from xferbench.options import validate_options
    backbone = spec.load_factory()(arg, validate_options(spec.options, {{}}, "lenet5"), context)
    backbone.prepare(context)
    before = peak_rss_kib()
    result = extract_features(backbone, dataset, cache / f"bottlenecks-{{n}}", Progress(quiet=True),
                              batch_size=backbone.extract_batch_size)
    assert result.computed + result.cache_hits == n and not result.failed
    print(json.dumps({{"n": n, "peak_rss_kib": peak_rss_kib(),
                       "rss_before_extraction_kib": before}}))
""")

_HEADS = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    path, rows, width, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from conftest import peak_rss_kib
    from xferbench_heads.logreg import LogRegHead
    from xferbench_heads.softmax import SoftmaxHead

    def split(n, seed):
        centres = np.random.default_rng(7).standard_normal((3, width)).astype(np.float32) * 0.1
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        return (centres[y] + rng.standard_normal((n, width), dtype=np.float32)), y

    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, width))
    y = np.load(path + ".labels.npy")
    try:
        np.array(x, dtype=np.float64)
        bites = False
    except MemoryError:
        bites = True
    xv, yv = split(2000, 1)
    xt, yt = split(2000, 2)
    out = {"limit_bites": bites}
    for name, head in (("softmax", SoftmaxHead({"steps": 1000})), ("logreg", LogRegHead({"grid": "1"}))):
        started = time.perf_counter()
        head.fit(x, y, xv, yv, num_classes=3, seed=0)
        out[name] = {"seconds": round(time.perf_counter() - started, 1),
                     "test_accuracy": float((head.predict(xt) == yt).mean())}
    out["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(out))
""")


def _child(script: str, *args: object, timeout: float = 1800) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO / "benchmarks")}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_extraction_peak_rss_is_flat_from_1k_to_10k_images(benchmark, tmp_path):
    mnist = shared_data_dir() / "mnist"
    script = _EXTRACT.format(benchmarks=str(REPO / "benchmarks"), images=str(mnist / "t10k-images-idx3-ubyte.gz"),
                             labels=str(mnist / "t10k-labels-idx1-ubyte.gz"))
    _child(script, 10, tmp_path)  # pretrains LeNet-5 once and caches its weights: both runs below load them
    small = benchmark.pedantic(_child, args=(script, 1000, tmp_path), rounds=1, iterations=1)
    large = _child(script, 10000, tmp_path)
    ratio = peak_rss_ratio(benchmark, small, large, "MNIST")
    assert ratio <= MAX_RSS_RATIO, f"peak RSS grew {ratio:.3f}x from 1k to 10k images; the ceiling is {MAX_RSS_RATIO}"


def test_heads_train_on_features_larger_than_the_memory_limit(benchmark, tmp_path):
    import numpy as np

    path = tmp_path / "features.f32"
    centres = np.random.default_rng(7).standard_normal((3, WIDTH)).astype(np.float32) * 0.1
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, ROWS)
    with open(path, "wb") as fh:
        for start in range(0, ROWS, 10_000):
            y = labels[start:start + 10_000]
            fh.write((centres[y] + rng.standard_normal((len(y), WIDTH), dtype=np.float32)).tobytes())
    np.save(str(path) + ".labels.npy", labels)
    size = path.stat().st_size
    assert size > DATA_LIMIT
    try:
        result = benchmark.pedantic(_child, args=(_HEADS, path, ROWS, WIDTH, DATA_LIMIT), rounds=1, iterations=1)
    finally:
        path.unlink()
    benchmark.extra_info.update(matrix_mib=size >> 20, data_limit_mib=DATA_LIMIT >> 20, **{
        k: v for k, v in result.items() if k != "peak_rss_kib"}, peak_rss_mib=result["peak_rss_kib"] >> 10)
    print(f"memory: heads on a {size / 2**30:.2f} GiB memory-mapped matrix under RLIMIT_DATA "
          f"{DATA_LIMIT >> 20} MiB: {json.dumps(result)}")
    assert result["limit_bites"], "the memory limit did not stop a copy of the matrix: the benchmark shows nothing"
    assert result["softmax"]["test_accuracy"] >= 0.9 and result["logreg"]["test_accuracy"] >= 0.9, result
