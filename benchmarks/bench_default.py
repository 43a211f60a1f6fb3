"""The embedded default end to end: ``xferbench run`` with no arguments, in a fresh interpreter.

Cold starts from an empty cache: it loads the ImageNet MobileNet (alpha 0.25) shipped in the
package, extracts the bottlenecks of the 500 shipped flower photos, fits the logreg head and
retrains the whole network from scratch (6 epochs) at 5, 20 and all shots. Warm reruns it on that
cache: the bottlenecks are reused; the head and the full retraining run again. Interpreter and
TensorFlow start-up are part of both figures, as they are for a user.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from conftest import run_cli

#: the warm rerun skips the bottleneck extraction and nothing else (the full retraining, which no cache can skip,
#: dominates both runs), so it must save at least this share of the cold run's extraction time. Measured on an
#: almost idle 2-core AMD EPYC: cold 56.3 s, warm 51.4 s, extraction 1.4 s of the cold run.
MIN_SAVED_EXTRACTION_SHARE = 0.5
#: issue 19's budget for the cold default run on 2 cores. Measured on a 2-core AMD EPYC with one other job's light
#: load: 48.8 s with 6 epochs of full retraining (the default); 56.3 s and 68.2 s with 10.
COLD_BUDGET_SECONDS = 60.0
#: photos in flowers-mini
FLOWERS_MINI_IMAGES = 500


class _Runs:
    """The cache the cold benchmark filled, so the warm one need not run a cold pass of its own."""

    def __init__(self) -> None:
        self.cold_cache: Path | None = None
        self.cold_seconds: float | None = None
        self.cold_document: dict | None = None


@pytest.fixture(scope="module")
def runs() -> _Runs:
    return _Runs()


def _default_run(cache_dir: Path, workdir: Path, name: str) -> dict:
    output = workdir / f"{name}.json"
    result = run_cli("run", "--output", str(output), "--quiet", cache_dir=cache_dir, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())


def _transfer(document: dict) -> dict:
    return next(run for run in document["runs"] if run["method"] == "transfer")


def test_default_cold(benchmark, runs: _Runs, tmp_path_factory):
    caches = (tmp_path_factory.mktemp(f"cold-{i}") for i in itertools.count())

    def setup():
        runs.cold_cache = next(caches)
        return (runs.cold_cache, runs.cold_cache, "cold"), {}

    document = benchmark.pedantic(_default_run, setup=setup, rounds=1, iterations=1)
    runs.cold_seconds = benchmark.stats.stats.min
    runs.cold_document = document
    benchmark.extra_info["cold_seconds"] = round(runs.cold_seconds, 2)
    transfer = _transfer(document)
    # Every bottleneck computed, but two sunflower photos are the same image and share one cache entry.
    # flowers-mini holds two pairs of byte-identical photos: each pair is extracted once, the twin is a cache hit
    assert transfer["extracted"] + transfer["cache_hits"] == FLOWERS_MINI_IMAGES and transfer["cache_hits"] <= 2
    assert transfer["test_accuracy"] > 0.4  # 5 shots of 5 classes: chance is 0.2
    benchmark.extra_info.update({f"{run['method']}_{run['shots']}_test_accuracy": round(run["test_accuracy"], 4)
                                 for run in document["runs"]})
    benchmark.extra_info["full_train_seconds"] = round(sum(
        run["train_seconds"] for run in document["runs"] if run["method"] == "full"), 2)
    assert runs.cold_seconds < COLD_BUDGET_SECONDS, f"cold default run took {runs.cold_seconds:.1f}s"


def test_default_warm(benchmark, runs: _Runs, tmp_path_factory):
    if runs.cold_cache is None:  # run alone (-k warm): fill a cache first, untimed
        runs.cold_cache = tmp_path_factory.mktemp("cold")
        runs.cold_document = _default_run(runs.cold_cache, runs.cold_cache, "cold")
    document = benchmark.pedantic(_default_run, args=(runs.cold_cache, tmp_path_factory.mktemp("warm"), "warm"),
                                  rounds=1, iterations=1)
    transfer = _transfer(document)
    assert transfer["extracted"] == 0 and transfer["cache_hits"] == FLOWERS_MINI_IMAGES
    assert runs.cold_document is not None
    # Same seed, same cached features: the transfer result is reproduced exactly.
    assert transfer["test_accuracy"] == _transfer(runs.cold_document)["test_accuracy"]
    warm = benchmark.stats.stats.min
    benchmark.extra_info["transfer_test_accuracy"] = round(transfer["test_accuracy"], 4)
    if runs.cold_seconds is not None:
        fraction = warm / runs.cold_seconds
        benchmark.extra_info.update(cold_seconds=round(runs.cold_seconds, 2), warm_fraction=round(fraction, 3))
        extraction = _transfer(runs.cold_document)["extract_seconds"] or 0.0
        saved = runs.cold_seconds - warm
        benchmark.extra_info.update(saved_seconds=round(saved, 2), cold_extract_seconds=round(extraction, 2))
        assert saved >= MIN_SAVED_EXTRACTION_SHARE * extraction, (
            f"the warm rerun took {warm:.1f} s against {runs.cold_seconds:.1f} s cold: it saved {saved:.1f} s, less than "
            f"{MIN_SAVED_EXTRACTION_SHARE:.0%} of the {extraction:.1f} s of extraction the cache spares it")
