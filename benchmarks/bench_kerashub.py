"""Extraction throughput of a ViT-S/16-sized KerasHub backbone (``kerashub:``) at 224 px, fp32 and bf16.

The model is randomly initialised (no download): KerasHub's DINOv2 architecture in the small shape
(12 layers, width 384, 6 heads, MLP 1536) with 16-pixel patches, i.e. ViT-S/16: 197 tokens at 224 px,
about 4.6 G multiply-adds (9.2 GFLOP) per image. It is written with ``save_to_preset`` together with
a DINOv2-style image converter (bicubic, centred crop, ImageNet mean and std) and loaded through
``kerashub:/dir`` as a user would; the images are real flower photos.

Timed, interleaved chunk by chunk (other processes share the CPU): ``fp32`` and ``bf16`` end to end
(``extract``: decode, crop, resize, normalise, forward); their forward passes alone come from
``network_seconds``; FLOPs per image are counted from the graph, and MFU divides the forward passes
achieved GFLOP/s by the machine's measured matmul peak (``xferbench.peak``). Floors: bf16 features' cosine to fp32 >= 0.99; fp32 end to end >= 0.8x its
forward passes (decoding must not dominate); bf16 >= 1.1x fp32 only on CPUs with native bfloat16.

Run: ``pytest benchmarks/bench_kerashub.py --benchmark-only`` (about 2-4 minutes on 2 cores);
``XFERBENCH_BENCH_IMAGES`` (default 32, a multiple of 16) and ``XFERBENCH_BENCH_ROUNDS`` (default 2) resize it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import row_cosines, time_interleaved

keras_hub = pytest.importorskip("keras_hub")

REPO = Path(__file__).resolve().parents[1]
IMAGES = int(os.environ.get("XFERBENCH_BENCH_IMAGES", "32"))
ROUNDS = int(os.environ.get("XFERBENCH_BENCH_ROUNDS", "2"))
BATCH = 16
CHUNK = 16
#: multiply-adds of one ViT-S/16 image at 224 px: patch embedding + 12 x (QKV, projection, MLP, attention)
TOKENS, WIDTH, LAYERS = 197, 384, 12
MACS_PER_IMAGE = 196 * (16 * 16 * 3) * WIDTH + LAYERS * (12 * TOKENS * WIDTH**2 + 2 * TOKENS**2 * WIDTH)


def _flowers(count: int) -> list[bytes]:
    root = Path(os.environ.get("XFERBENCH_SHARED_DATA") or REPO.parent / "shared" / "data") / "flower_photos_mini"
    if not root.is_dir():
        pytest.skip(f"real photos not found at {root}; set XFERBENCH_SHARED_DATA")
    by_class: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.glob("*/*.jpg")):
        by_class[path.parent.name].append(path)
    picked = [p for group in zip(*by_class.values(), strict=False) for p in group][:count]
    return [p.read_bytes() for p in picked]


def _vit_small_preset(folder: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DINOV2Backbone(patch_size=16, num_layers=LAYERS, hidden_dim=WIDTH, num_heads=6,
                                               intermediate_dim=4 * WIDTH, image_shape=(224, 224, 3),
                                               position_embedding_shape=(224, 224, 3))
    std = (0.229, 0.224, 0.225)
    converter = keras_hub.layers.DINOV2ImageConverter(
        image_size=(224, 224), interpolation="bicubic", scale=[1 / (255 * s) for s in std],
        offset=[-m / s for m, s in zip((0.485, 0.456, 0.406), std, strict=True)])
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


def test_kerashub_vit_small_extraction(benchmark: Any, tmp_path: Path) -> None:
    from xferbench.context import RunContext
    from xferbench.machine import native_bfloat16
    from xferbench.peak import load_peak, peak_for
    from xferbench.plugin_manager import load_catalog

    assert IMAGES % CHUNK == 0, f"XFERBENCH_BENCH_IMAGES must be a multiple of {CHUNK}"
    folder = _vit_small_preset(tmp_path / "vit_small")
    catalog = load_catalog()
    spec, arg = catalog.backbones.resolve(f"kerashub:{folder}")
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache")
    backbones = {precision: spec.load_factory()(arg, spec.validate({"precision": precision,
                                                                     "batch_size": str(BATCH)}), context)
                 for precision in ("float32", "bfloat16")}
    names = {"float32": "fp32", "bfloat16": "bf16"}
    jpegs = _flowers(IMAGES)
    for backbone in backbones.values():
        backbone.extract(jpegs[:BATCH])  # warm-up: traces, oneDNN primitive caches
        backbone.network_seconds = 0.0
    chunks = [jpegs[i:i + CHUNK] for i in range(0, IMAGES, CHUNK)]
    measured = time_interleaved(benchmark, backbones, names, chunks, ROUNDS)

    best = measured.best_images_per_second(IMAGES)
    end_to_end = measured.mean_images_per_second(IMAGES, ROUNDS)
    forward = {names[p]: IMAGES * ROUNDS / b.network_seconds for p, b in backbones.items()}
    features = measured.features()
    cosine = float(row_cosines(features["bf16"], features["fp32"]).min())
    flops = backbones["float32"].flops_per_image()  # counted from the graph
    achieved = {name: flops * v / 1e9 for name, v in forward.items()}
    peak = load_peak(tmp_path / "cache")  # square matmuls, a second or two per precision
    mfu = {names[p]: achieved[names[p]] / peak_for(peak, p) for p in backbones if peak_for(peak, p)}
    benchmark.extra_info.update({
        "model": "ViT-S/16 (DINOv2 architecture, random init), 224 px",
        "images": IMAGES, "rounds": ROUNDS, "batch_size": BATCH,
        "best_images_per_second": best,
        "mean_images_per_second": end_to_end,
        "forward_images_per_second": forward,
        "gflop_per_image": flops / 1e9,
        "achieved_gflop_per_second_forward": achieved,
        "peak_matmul_gflop_per_second": {names[p]: peak_for(peak, p) for p in backbones},
        "mfu_forward": mfu,
        "bf16_vs_fp32": best["bf16"] / best["fp32"],
        "fp32_end_to_end_vs_forward": end_to_end["fp32"] / forward["fp32"],
        "bf16_min_cosine_to_fp32": cosine,
        "native_bfloat16": native_bfloat16(),
        "cores": os.cpu_count(),
    })
    print(f"\nkerashub ViT-S/16 224 px: {benchmark.extra_info}")
    assert features["fp32"].shape == (IMAGES, WIDTH) and not np.isnan(features["fp32"]).any()
    assert flops == 2 * MACS_PER_IMAGE  # the graph count is the ViT-S/16 shape formula (9.2 GFLOP)
    assert cosine >= 0.99, benchmark.extra_info
    assert benchmark.extra_info["fp32_end_to_end_vs_forward"] >= 0.8, benchmark.extra_info
    if native_bfloat16():
        assert benchmark.extra_info["bf16_vs_fp32"] >= 1.1, benchmark.extra_info
