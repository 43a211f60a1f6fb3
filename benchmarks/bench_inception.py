"""Bottleneck extraction with the full-size Inception-v3 (2015) stand-in over real flower photos.

Compares, interleaved every 16 images (other processes share the CPU, so timings drift):

* ``baseline``: the retrain.py way, one ``Session.run`` per image feeding ``DecodeJpeg/contents``
  of the original graph (BatchNormWithGlobalNormalization and all);
* ``fp32``: xferbench end to end (batched decode/resize + the rewritten, batched graph);
* ``fp32_forward``: the rewritten graph alone on images decoded and resized beforehand;
* ``bf16``: xferbench end to end with ``precision=bfloat16``.

Floors: fp32 >= 1.0x baseline; fp32 end to end >= 0.9x forward-only; bf16 features' cosine
similarity to fp32 >= 0.99; bf16 >= 1.4x fp32 only on CPUs with native bfloat16 (AVX512_BF16 or
AMX), since elsewhere bfloat16 is emulated and no faster. Speeds are checked on wall time when the
machine was quiet before the run, else on CPU time per image (see the end of the test).

Run: ``pytest benchmarks/bench_inception.py --benchmark-only`` (about 3-5 minutes on 2 cores);
``XFERBENCH_BENCH_IMAGES`` (default 64, a multiple of 16) and ``XFERBENCH_BENCH_ROUNDS`` (default 3) resize it.
"""

from __future__ import annotations

import os
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
# Images per interleaving step: two batches per extract() call, as the harness hands over several.
CHUNK = 16
ROUNDS = int(os.environ.get("XFERBENCH_BENCH_ROUNDS", "3"))


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
    from xferbench.machine import native_bfloat16
    from xferbench_inception.backbone import Inception2015

    path = cached_standin("full", seed=0, archive="zip")
    jpegs = _flowers(IMAGES)
    assert IMAGES % CHUNK == 0, f"XFERBENCH_BENCH_IMAGES must be a multiple of {CHUNK}"
    reference = ReferenceSession(graph_bytes_of(path))
    fp32 = Inception2015({"precision": "float32", "batch_size": BATCH})
    fp32.load(path)
    bf16 = Inception2015({"precision": "bfloat16", "batch_size": BATCH})
    bf16.load(path)
    # Forward-only input: the same images, decoded and resized once, outside the timing.
    resized = [x for _, x in fp32.preprocess(jpegs)]
    per_chunk = CHUNK // BATCH
    chunks = [(jpegs[i:i + CHUNK], resized[i // BATCH:i // BATCH + per_chunk]) for i in range(0, IMAGES, CHUNK)]

    runners: dict[str, Callable[[list[bytes], list[Any]], np.ndarray]] = {
        "baseline": lambda images, _: np.stack([reference.bottleneck(jpeg) for jpeg in images]),
        "fp32": lambda images, _: fp32.extract(images),
        "fp32_forward": lambda _, tensors: np.concatenate([fp32.forward(x) for x in tensors]),
        "bf16": lambda images, _: bf16.extract(images),
    }
    # Warm-up on one batch of the timed shape: traces, Grappler passes, oneDNN primitive caches.
    reference.bottleneck(jpegs[0])
    fp32.extract(jpegs[:BATCH])
    fp32.forward(resized[0])
    bf16.extract(jpegs[:BATCH])

    # seconds[name][chunk] and cpu_seconds[name][chunk]: one entry per round
    # Quiet: other processes left at least half the cores idle just before the measurement.
    load_before = os.getloadavg()[0]
    quiet = load_before < 0.5 * (os.cpu_count() or 1)
    seconds: dict[str, list[list[float]]] = {name: [[] for _ in chunks] for name in runners}
    cpu_seconds: dict[str, list[list[float]]] = {name: [[] for _ in chunks] for name in runners}
    outputs: dict[str, list[np.ndarray]] = defaultdict(list)
    order = list(runners)

    def one_round() -> None:
        # Interleaved chunk by chunk, in a rotating order: the load from other processes on a
        # shared machine changes within seconds, and this way every variant sees the same mix.
        outputs.clear()
        for k, (images, tensors) in enumerate(chunks):
            for name in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                outputs[name].append(runners[name](images, tensors))
                seconds[name][k].append(time.perf_counter() - started)
                cpu_seconds[name][k].append(time.process_time() - cpu_started)
            order.append(order.pop(0))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)

    # The floors use each chunk's best round (interference only ever adds time, as timeit's docs
    # argue); the mean over rounds is reported beside it.
    best = {name: IMAGES / sum(min(times) for times in per_chunk) for name, per_chunk in seconds.items()}
    mean = {name: IMAGES * ROUNDS / sum(sum(times) for times in per_chunk) for name, per_chunk in seconds.items()}
    ratios = {
        "fp32_vs_baseline": best["fp32"] / best["baseline"],
        "fp32_end_to_end_vs_forward": best["fp32"] / best["fp32_forward"],
        "bf16_vs_fp32": best["bf16"] / best["fp32"],
    }
    # CPU seconds per image (all threads): steadier than wall time when the machine is shared.
    cpu_per_image = {name: sum(sum(t) for t in per_chunk) / (IMAGES * ROUNDS)
                     for name, per_chunk in cpu_seconds.items()}
    cpu_ratios = {
        "fp32_vs_baseline": cpu_per_image["baseline"] / cpu_per_image["fp32"],
        "fp32_end_to_end_vs_forward": cpu_per_image["fp32_forward"] / cpu_per_image["fp32"],
        "bf16_vs_fp32": cpu_per_image["fp32"] / cpu_per_image["bf16"],
    }
    features = {name: np.concatenate(parts) for name, parts in outputs.items()}
    fidelity = float(np.abs(features["fp32"] - features["baseline"]).max() / np.abs(features["baseline"]).max())
    bf16_cosine = float(_cosine(features["bf16"], features["fp32"]).min())
    benchmark.extra_info.update({
        "images": IMAGES,
        "rounds": ROUNDS,
        "images_per_second_best": {k: round(v, 3) for k, v in best.items()},
        "images_per_second_mean": {k: round(v, 3) for k, v in mean.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "cpu_seconds_per_image": {k: round(v, 4) for k, v in cpu_per_image.items()},
        "cpu_time_ratios": {k: round(v, 3) for k, v in cpu_ratios.items()},
        "fp32_max_relative_deviation": fidelity,
        "bf16_min_cosine_to_fp32": bf16_cosine,
        "native_bfloat16": native_bfloat16(),
        "load_average_before": round(load_before, 2),
        "floors_checked_on": "wall time" if quiet else "cpu time",
        "cpu_count": os.cpu_count(),
    })
    reference.close()

    assert fidelity <= 1e-4
    assert bf16_cosine >= 0.99
    # On a machine other processes keep busy, wall time rewards whichever variant runs more threads
    # (the scheduler shares the cores per thread), so the floors then hold for the CPU time spent
    # per image instead; on a quiet machine they hold for wall time (and CPU time tracks it).
    checked = ratios if quiet else cpu_ratios
    assert checked["fp32_vs_baseline"] >= 1.0, benchmark.extra_info
    assert checked["fp32_end_to_end_vs_forward"] >= 0.9, benchmark.extra_info
    if native_bfloat16():
        assert checked["bf16_vs_fp32"] >= 1.4, benchmark.extra_info
