"""The bottleneck cache: a rerun on cached bottlenecks against a cold extraction.

Both walk all 500 flower photographs through ``extract_features`` with the real MobileNet:
cold computes every bottleneck (read, decode, resize, forward pass, cache write); warm reads
each file, hashes it and loads its vector from the cache, with no forward pass at all.
"""

from __future__ import annotations

import itertools

from conftest import FlowerFeatures, extract

#: the warm path must beat cold extraction by at least this factor on any machine (measured: ~50-90x)
MIN_WARM_SPEEDUP = 5.0


def test_extract_cold(benchmark, flower_features: FlowerFeatures, tmp_path):
    fresh = (tmp_path / f"cold-{i}" for i in itertools.count())

    def setup():
        return (flower_features.backbone, flower_features.dataset, next(fresh)), {}

    extraction = benchmark.pedantic(extract, setup=setup, rounds=2, iterations=1)
    assert extraction.computed > 490 and extraction.cache_hits < 10  # (the set holds one duplicate photo)
    benchmark.extra_info["images"] = len(flower_features.dataset.examples)
    benchmark.extra_info["images_per_second"] = round(extraction.images_per_second, 1)


def test_extract_warm(benchmark, flower_features: FlowerFeatures):
    extraction = benchmark.pedantic(extract, args=(flower_features.backbone, flower_features.dataset,
                                                   flower_features.cache_root), rounds=15, iterations=1,
                                    warmup_rounds=1)
    assert extraction.computed == 0 and extraction.cache_hits == len(flower_features.dataset.examples)
    warm = benchmark.stats.stats.mean
    speedup = flower_features.cold_seconds / warm
    benchmark.extra_info["cold_seconds"] = round(flower_features.cold_seconds, 3)
    benchmark.extra_info["warm_speedup"] = round(speedup, 1)
    assert speedup >= MIN_WARM_SPEEDUP, (
        f"a rerun on cached bottlenecks took {warm:.3f} s, only {speedup:.1f}x faster than the cold extraction "
        f"({flower_features.cold_seconds:.2f} s); the floor is {MIN_WARM_SPEEDUP}x")
