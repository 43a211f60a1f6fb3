"""Bottleneck extraction with the full-size Inception-v3 (2015) stand-in over real flower photos.

Compares, interleaved round by round (other processes share the CPU, so timings drift):

* ``baseline``: the retrain.py way, one ``Session.run`` per image feeding ``DecodeJpeg/contents``
  of the original graph (BatchNormWithGlobalNormalization and all);
* ``fp32``: xferbench end to end (tf.data decode/resize + the rewritten, batched graph);
* ``fp32_forward``: the rewritten graph alone on images decoded and resized beforehand;
* ``bf16``: xferbench end to end with ``precision=bfloat16``.

Floors: fp32 >= 1.0x baseline; fp32 end to end >= 0.9x forward-only; bf16 features' cosine
similarity to fp32 >= 0.99; bf16 >= 1.4x fp32 only on CPUs with native bfloat16 (AVX512_BF16 or
AMX), since elsewhere bfloat16 is emulated and no faster.

Run: ``pytest benchmarks/bench_inception.py --benchmark-only`` (about 3-5 minutes on 2 cores);
``XFERBENCH_BENCH_IMAGES`` (default 64, a multiple of 8) and ``XFERBENCH_BENCH_ROUNDS`` (default 3) resize it.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:
    from support.inception_standin import ReferenceSession, cached_standin, graph_bytes_of
except ImportError:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.inception_standin import ReferenceSession, cached_standin, graph_bytes_of

REPO = Path(__file__).resolve().parents[1]
IMAGES = int(os.environ.get("XFERBENCH_BENCH_IMAGES", "64"))
# The CPU default of batch_size=0; a divisor of IMAGES, so one warm-up batch warms every batch shape.
BATCH = 8
ROUNDS = int(os.environ.get("XFERBENCH_BENCH_ROUNDS", "3"))


def native_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 natively (otherwise TF emulates it in float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def _flowers(count: int) -> list[bytes]:
    root = Path(os.environ.get("XFERBENCH_SHARED_DATA") or REPO.parent / "shared" / "data") / "flower_photos_mini"
    if not root.is_dir():
        pytest.skip(f"real photos not found at {root}; set XFERBENCH_SHARED_DATA")
    paths = sorted(root.glob("*/*.jpg"))
    # Every class, interleaved, so the sample is not all daisies.
    by_class: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_class[path.parent.name].append(path)
    picked = [p for group in zip(*by_class.values(), strict=False) for p in group][:count]
    return [p.read_bytes() for p in picked]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_inception_2015_bottleneck_extraction(benchmark: Any) -> None:
    from xferbench_inception import pipeline
    from xferbench_inception.backbone import Inception2015

    path = cached_standin("full", seed=0, archive="zip")
    jpegs = _flowers(IMAGES)
    assert IMAGES % BATCH == 0, f"XFERBENCH_BENCH_IMAGES must be a multiple of {BATCH}"
    reference = ReferenceSession(graph_bytes_of(path))
    fp32 = Inception2015({"precision": "float32", "batch_size": BATCH})
    fp32.load(path)
    bf16 = Inception2015({"precision": "bfloat16", "batch_size": BATCH})
    bf16.load(path)
    # Forward-only input: the same images, decoded and resized once, outside the timing.
    resized = [x for _, x, _ in pipeline.batches(jpegs, fp32._require().interface, BATCH)]

    outputs: dict[str, np.ndarray] = {}
    runners: dict[str, Callable[[], np.ndarray]] = {
        "baseline": lambda: np.stack([reference.bottleneck(jpeg) for jpeg in jpegs]),
        "fp32": lambda: fp32.extract(jpegs),
        "fp32_forward": lambda: np.concatenate([fp32.forward(x) for x in resized]),
        "bf16": lambda: bf16.extract(jpegs),
    }
    # Warm-up on one batch of the timed shape: traces, Grappler passes, oneDNN primitive caches.
    reference.bottleneck(jpegs[0])
    fp32.extract(jpegs[:BATCH])
    fp32.forward(resized[0])
    bf16.extract(jpegs[:BATCH])

    seconds: dict[str, list[float]] = defaultdict(list)
    cpu_seconds: dict[str, list[float]] = defaultdict(list)
    order = list(runners)

    def one_round() -> None:
        # Rotate the order each round so no variant always runs right after the same neighbour.
        for name in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            outputs[name] = runners[name]()
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu_started)
        order.append(order.pop(0))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)

    rate = {name: IMAGES / statistics.median(times) for name, times in seconds.items()}

    def paired(fast: str, slow: str) -> float:
        # Median over rounds of the speed ratio within a round: both ran minutes apart at most,
        # under about the same load from other processes.
        return statistics.median(s / f for f, s in zip(seconds[fast], seconds[slow], strict=True))

    ratios = {
        "fp32_vs_baseline": paired("fp32", "baseline"),
        "fp32_end_to_end_vs_forward": paired("fp32", "fp32_forward"),
        "bf16_vs_fp32": paired("bf16", "fp32"),
    }
    # CPU seconds per image (all threads): steadier than wall time when the machine is shared.
    cpu_per_image = {name: statistics.median(times) / IMAGES for name, times in cpu_seconds.items()}
    fidelity = float(np.abs(outputs["fp32"] - outputs["baseline"]).max() / np.abs(outputs["baseline"]).max())
    bf16_cosine = float(_cosine(outputs["bf16"], outputs["fp32"]).min())
    benchmark.extra_info.update({
        "images": IMAGES,
        "rounds": ROUNDS,
        "images_per_second": {k: round(v, 3) for k, v in rate.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "cpu_seconds_per_image": {k: round(v, 4) for k, v in cpu_per_image.items()},
        "seconds_per_round": {k: [round(t, 2) for t in v] for k, v in seconds.items()},
        "fp32_max_relative_deviation": fidelity,
        "bf16_min_cosine_to_fp32": bf16_cosine,
        "native_bfloat16": native_bfloat16(),
        "cpu_count": os.cpu_count(),
    })
    reference.close()

    assert fidelity <= 1e-4
    assert bf16_cosine >= 0.99
    assert ratios["fp32_vs_baseline"] >= 1.0, benchmark.extra_info
    assert ratios["fp32_end_to_end_vs_forward"] >= 0.9, benchmark.extra_info
    if native_bfloat16():
        assert ratios["bf16_vs_fp32"] >= 1.4, benchmark.extra_info
