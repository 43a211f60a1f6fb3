"""int8 extraction (``precision=int8``) against fp32 and bf16, side by side, on the real flower photos.

keras:MobileNet alpha 0.25 at 224 px (the ImageNet weights in ../shared/data; alpha 1.0 has no weights
on this offline machine) on the 500 photos of ``flower_photos_mini``. The int8 model is converted once
(calibrated on 100 training photos; its conversion time is reported apart) and runs in LiteRT's
interpreter with as many threads as TensorFlow uses.

Timed, interleaved chunk by chunk (other processes share the CPU): each precision's ``extract`` end to
end (decode, resize, normalise, forward) and its forward passes alone (``network_seconds``). Quality: the
cosine of each image's int8 and bf16 features to its fp32 features, and a logistic-regression head's
accuracy on each precision's features (5-fold cross-validation over all 500 photos, the same folds for
every precision: 100 test photos per fold rather than the 52 of the one test split).

Floors (justified by the measurements in benchmarks/README.md, with margin): int8 mean cosine >= 0.95,
bf16 mean cosine >= 0.99; int8 and bf16 accuracy within 3 points of fp32's; and, only on a CPU with
AVX512_VNNI (int8 dot products), int8 end to end at least 1.3x bf16's images/s (measured 2.3x).

Run: ``pytest benchmarks/bench_int8.py --benchmark-only -s`` (about 2 minutes on 2 cores);
``XFERBENCH_BENCH_ROUNDS`` (default 2) sets the rounds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import MOBILENET_WEIGHTS, make_backbone, make_context, row_cosines, time_interleaved

pytest.importorskip("ai_edge_litert")

ROUNDS = int(os.environ.get("XFERBENCH_BENCH_ROUNDS", "2"))
CHUNK = 50
OPTIONS = {"alpha": "0.25", "input_size": "224", "batch_size": "25"}
NAMES = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}
FOLDS = 5


def _cv_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    correct = 0
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(features, labels):
        head = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
        correct += int((head.predict(features[test]) == labels[test]).sum())
    return correct / len(labels)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def test_int8_against_fp32_and_bf16(benchmark: Any, shared_data: Path, tmp_path: Path) -> None:
    from xferbench.cli import import_tensorflow_quietly
    from xferbench.machine import native_bfloat16

    import_tensorflow_quietly()
    context = make_context(tmp_path / "cache", weights=shared_data / MOBILENET_WEIGHTS)
    dataset = context.load_dataset(f"folder:{shared_data / 'flower_photos_mini'}")
    backbones = {p: make_backbone(context, "keras:MobileNet", {**OPTIONS, "precision": p}) for p in NAMES}
    started = time.perf_counter()
    backbones["int8"].calibrate(dataset, context.cache_dir)
    conversion_seconds = time.perf_counter() - started
    images = [dataset.read(ex) for ex in dataset.examples]
    labels = np.array([ex.label for ex in dataset.examples])
    for backbone in backbones.values():
        backbone.extract(images[:CHUNK])  # warm-up: traces, oneDNN primitives, the interpreter's tensors
        backbone.network_seconds = 0.0
    chunks = [images[i:i + CHUNK] for i in range(0, len(images), CHUNK)]
    measured = time_interleaved(benchmark, backbones, NAMES, chunks, ROUNDS)

    count = len(images)
    best = measured.best_images_per_second(count)
    forward = {NAMES[p]: count * ROUNDS / b.network_seconds for p, b in backbones.items()}
    features = measured.features()
    cosine = {name: row_cosines(features[name], features["fp32"]) for name in ("bf16", "int8")}
    accuracy = {name: _cv_accuracy(x, labels) for name, x in features.items()}
    flags = _cpu_flags()
    benchmark.extra_info.update({
        "model": "keras:MobileNet alpha 0.25, 224 px, ImageNet weights", "images": count, "rounds": ROUNDS,
        "int8_conversion_seconds": round(conversion_seconds, 2),
        "int8_threads": backbones["int8"]._int8[1].threads, "int8_batched": backbones["int8"]._int8[1].batched,
        "best_images_per_second": best,
        "forward_images_per_second": forward,
        "int8_vs_fp32": best["int8"] / best["fp32"], "int8_vs_bf16": best["int8"] / best["bf16"],
        "bf16_vs_fp32": best["bf16"] / best["fp32"],
        "forward_int8_vs_fp32": forward["int8"] / forward["fp32"],
        "forward_int8_vs_bf16": forward["int8"] / forward["bf16"],
        "cosine_to_fp32_mean": {name: float(c.mean()) for name, c in cosine.items()},
        "cosine_to_fp32_min": {name: float(c.min()) for name, c in cosine.items()},
        "cv_accuracy": accuracy,
        "accuracy_points_vs_fp32": {name: round(100 * (accuracy[name] - accuracy["fp32"]), 2)
                                    for name in ("bf16", "int8")},
        "avx512_vnni": "avx512_vnni" in flags, "native_bfloat16": native_bfloat16(),
        "load_average": os.getloadavg()[0], "cores": os.cpu_count(),
    })
    print(f"\nint8 vs fp32 vs bf16, MobileNet 0.25 224 px: {benchmark.extra_info}")
    assert all(not np.isnan(x).any() for x in features.values())
    assert cosine["int8"].mean() >= 0.95 and cosine["bf16"].mean() >= 0.99, benchmark.extra_info
    if benchmark.extra_info["avx512_vnni"]:
        assert benchmark.extra_info["int8_vs_bf16"] >= 1.3, benchmark.extra_info
    assert all(abs(points) <= 3.0 for points in benchmark.extra_info["accuracy_points_vs_fp32"].values()), \
        benchmark.extra_info
