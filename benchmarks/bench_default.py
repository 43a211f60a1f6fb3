"""The embedded default end to end: ``xferbench run`` with no arguments, in a fresh interpreter.

Cold starts from an empty cache: it loads the ImageNet MobileNet (alpha 0.25) shipped in the
package, extracts the bottlenecks of the 500 shipped flower photos, fits the logreg head and
retrains the whole network from scratch (10 epochs) at 5, 20 and all shots. Warm reruns it on that
cache: the bottlenecks are reused; the head and the full retraining run again. Interpreter and
TensorFlow start-up are part of both figures, as they are for a user.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from conftest import run_cli

#: the warm rerun must take at most this fraction of the cold run (measured 0.56 on a loaded 2-core machine: only
#: the bottleneck extraction is saved; the full retraining, which no cache can skip, dominates both)
MAX_WARM_FRACTION = 0.9
#: issue 19's budget for the cold default run on 2 cores. Measured: 145 s wall on a 2-core AMD EPYC shared with
#: other jobs (load average 6-7); the same command line used 82 s of CPU time, about 45 s of wall time on two
#: otherwise idle cores. Not yet measured on a quiet machine.
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
    assert transfer["extracted"] + transfer["cache_hits"] == FLOWERS_MINI_IMAGES and transfer["cache_hits"] <= 1
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
        assert fraction <= MAX_WARM_FRACTION, (
            f"the warm rerun took {warm:.1f} s, {fraction:.0%} of the cold run ({runs.cold_seconds:.1f} s); "
            f"reusing pretrained weights and bottlenecks should save more (floor: {MAX_WARM_FRACTION:.0%})")
