"""Shared set-up of the performance benchmarks (``tox -e bench`` / ``python benchmarks/run_bench.py``).

Everything here is offline and real: the MobileNet (alpha 0.25) ImageNet weights and the 500
flower photographs of ``../shared/data`` (or ``$XFERBENCH_SHARED_DATA``). Nothing is copied
into the repository; caches live in pytest's temporary folders.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MOBILENET_WEIGHTS = "weights/mobilenet_2_5_224_tf_no_top.h5"
#: the input size of the flower features: small enough for a 2-core machine, still a real ImageNet model
MOBILENET_OPTIONS = {"alpha": "0.25", "input_size": "128"}


def peak_rss_kib() -> int:
    """This process's peak resident set (KiB): ``VmHWM``, the high-water mark of its own memory map.

    Not ``ru_maxrss``: Linux carries a process's peak over fork and exec, so a child started by a
    large pytest process reports at least the parent's size, whatever it uses itself.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (these memory benchmarks need Linux)")


def pytest_configure(config: pytest.Config) -> None:
    # Benchmarks are named bench_*.py so the default test run never collects them.
    config.addinivalue_line("python_files", "bench_*.py")


def shared_data_dir() -> Path:
    return Path(os.environ.get("XFERBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"real benchmark data not found at {path}; set XFERBENCH_SHARED_DATA")
    return path


def run_cli(*args: str, cache_dir: Path, cwd: Path, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """``xferbench ARGS`` in a fresh interpreter, as a user runs it (start-up included)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XFERBENCH_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "xferbench.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def make_context(cache_dir: Path, weights: Path | None = None) -> Any:
    """A quiet ``RunContext`` over the installed plugins."""
    from xferbench.context import RunContext
    from xferbench.plugin_manager import load_catalog
    from xferbench.progress import Progress

    return RunContext(catalog=load_catalog(), cache_dir=cache_dir, weights=weights, progress=Progress(quiet=True))


def make_backbone(context: Any, token: str, options: dict[str, str]) -> Any:
    """Resolve, build and prepare a backbone the way the runner does."""
    spec, arg = context.catalog.backbones.resolve(token)
    backbone = spec.load_factory()(arg, spec.validate(options), context)
    backbone.prepare(context)
    return backbone


def extract(backbone: Any, dataset: Any, cache_root: Path) -> Any:
    from xferbench.extraction import extract_features
    from xferbench.progress import Progress

    return extract_features(backbone, dataset, cache_root, Progress(quiet=True), batch_size=backbone.extract_batch_size)


@dataclasses.dataclass
class FlowerFeatures:
    """MobileNet bottlenecks of flower_photos_mini, by split, and how long the cold extraction took."""

    context: Any
    backbone: Any
    dataset: Any
    cache_root: Path  # holds every bottleneck of ``dataset``
    cold_seconds: float
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    num_classes: int


@pytest.fixture(scope="session")
def flower_features(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> FlowerFeatures:
    from xferbench.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    root = tmp_path_factory.mktemp("flower-cache")
    context = make_context(root, weights=shared_data / MOBILENET_WEIGHTS)
    dataset = context.load_dataset(f"folder:{shared_data / 'flower_photos_mini'}")
    backbone = make_backbone(context, "keras:MobileNet", MOBILENET_OPTIONS)
    # Warm-up on a few images in a throw-away cache: graph tracing is a one-off, not extraction cost.
    extract(backbone, dataclasses.replace(dataset, examples=dataset.examples[:8]), root / "warm-up")
    started = time.perf_counter()
    extraction = extract(backbone, dataset, root / "bottlenecks")
    cold_seconds = time.perf_counter() - started
    if extraction.failed:
        pytest.fail(f"{len(extraction.failed)} flower images failed to extract: {extraction.failed[:3]}")
    splits = {}
    for split in ("train", "val", "test"):
        index = [i for i, ex in enumerate(dataset.examples) if ex.split == split]
        splits[split] = (extraction.features[index], np.array([dataset.examples[i].label for i in index]))
    return FlowerFeatures(context, backbone, dataset, root / "bottlenecks", cold_seconds, splits,
                          len(dataset.class_names))


def accuracy(predicted: Sequence[int] | np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predicted) == labels))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of ``a`` with the same row of ``b``."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@dataclasses.dataclass
class Interleaved:
    """What :func:`time_interleaved` measured, per name: seconds per chunk (one per round), last round's features."""

    seconds: dict[str, list[list[float]]]
    outputs: dict[str, list[np.ndarray]]

    def best_images_per_second(self, images: int) -> dict[str, float]:
        """Images over the sum of each chunk's fastest round."""
        return {name: images / sum(min(times) for times in per_chunk) for name, per_chunk in self.seconds.items()}

    def mean_images_per_second(self, images: int, rounds: int) -> dict[str, float]:
        return {name: images * rounds / sum(sum(times) for times in per_chunk)
                for name, per_chunk in self.seconds.items()}

    def features(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.outputs.items()}


def time_interleaved(benchmark: Any, backbones: dict[str, Any], names: dict[str, str], chunks: list[list[Any]],
                     rounds: int) -> Interleaved:
    """Every backbone extracts every chunk in turn, the one that goes first rotating chunk by chunk.

    Side by side like this, a change in the machine's load falls on all of them alike, which matters
    more for their ratios than any one figure. ``benchmark`` times the ``rounds`` rounds as its own.
    """
    measured = Interleaved({names[key]: [[] for _ in chunks] for key in backbones},
                           {names[key]: [] for key in backbones})
    order = list(backbones)

    def one_round() -> None:
        for parts in measured.outputs.values():
            parts.clear()
        for k, chunk in enumerate(chunks):
            for key in order:
                started = time.perf_counter()
                measured.outputs[names[key]].append(backbones[key].extract(chunk))
                measured.seconds[names[key]][k].append(time.perf_counter() - started)
            order.append(order.pop(0))

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    return measured


def peak_rss_ratio(benchmark: Any, small: dict[str, Any], large: dict[str, Any], what: str) -> float:
    """The larger extraction's peak RSS over the smaller's, recorded in ``extra_info`` and printed."""
    ratio = large["peak_rss_kib"] / small["peak_rss_kib"]
    benchmark.extra_info.update(peak_rss_1k_mib=round(small["peak_rss_kib"] / 1024, 1),
                                peak_rss_10k_mib=round(large["peak_rss_kib"] / 1024, 1), rss_ratio=round(ratio, 3),
                                rss_before_extraction_mib=round(large["rss_before_extraction_kib"] / 1024, 1))
    print(f"memory: {what}: extraction peak RSS 1k {small['peak_rss_kib'] / 1024:.0f} MiB, 10k "
          f"{large['peak_rss_kib'] / 1024:.0f} MiB: {ratio:.3f}x (peak before extraction: "
          f"{small['rss_before_extraction_kib'] / 1024:.0f} / {large['rss_before_extraction_kib'] / 1024:.0f} MiB)")
    return ratio
