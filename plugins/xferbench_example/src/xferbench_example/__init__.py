"""xferbench-example: a third-party xferbench plugin, complete but small.

xferbench imports this module through the ``xferbench`` entry point in pyproject.toml and
calls the ``xferbench_register_*`` hooks below. Each registers a spec whose factory is a
lazy ``"module:attr"`` string, so importing this module (which ``xferbench list`` does)
costs nothing: the component modules are imported only when a run uses them. The
lifecycle hooks of :mod:`xferbench_example.events` come in with this module too.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import (
    BackboneSpec,
    CommandSpec,
    DatasetSpec,
    HeadSpec,
    MethodSpec,
    Option,
    ReporterSpec,
    hookimpl,
)
from xferbench_example.events import (  # noqa: F401 - lifecycle hooks, found by pluggy on this module
    xferbench_run_finished,
    xferbench_run_started,
    xferbench_sweep_finished,
    xferbench_sweep_started,
)

__version__ = "0.2.0"

PIXELS_OPTIONS = (
    Option("size", int, 16, "side of the square grayscale image that is flattened into features", min=1, max=512),
)

BARS_OPTIONS = (
    Option("n_per_class", int, 60, "images generated per class", min=1, max=100_000),
    Option("noise", float, 0.15, "standard deviation of the Gaussian pixel noise (1.0 = full brightness)",
           min=0, max=1),
    Option("split_seed", int, 0, "seed of the image generator: same seed, same images (splits follow the file names)"),
    Option("test_pct", float, 10.0, "percent of images in the test split (by file-name hash, retrain.py rule)",
           min=0, max=100),
    Option("val_pct", float, 10.0, "percent of images in the validation split (by file-name hash)",
           min=0, max=100),
)

CENTROID_OPTIONS = (
    Option("metric", str, "cosine", "distance to the class centroids", choices=("cosine", "euclidean")),
    Option("center", bool, True, "subtract the training mean first (helps cosine on all-positive features)"),
    Option("temperature", float, 0.1, "softmax temperature over negative distances; changes probabilities, "
           "never the predicted class", gt=0),
)


@hookimpl
def xferbench_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    register(BackboneSpec("pixels", "no learned weights: grayscale pixels resized to size x size (no-transfer baseline)",
                          factory="xferbench_example.pixels:PixelsBackbone", options=PIXELS_OPTIONS))


@hookimpl
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec("bars", "generated 32x32 grayscale bars: horizontal, vertical, diagonal, with noise",
                         factory="xferbench_example.bars:load_bars", options=BARS_OPTIONS))


@hookimpl
def xferbench_register_heads(register: Callable[[HeadSpec], None]) -> None:
    register(HeadSpec("centroid", "nearest class centroid (cosine or euclidean); nothing to train",
                      factory="xferbench_example.centroid:CentroidHead", options=CENTROID_OPTIONS))


KNN_OPTIONS = (
    Option("k", int, 0, "neighbours that vote; 0 chooses k on the validation split", min=0, max=1000),
    Option("metric", str, "cosine", "distance between bottlenecks", choices=("cosine", "euclidean")),
)

JSONL_OPTIONS = (
    Option("path", str, "", "append each run to this file as it finishes (empty: print all runs at the end)"),
    Option("fields", str, "backbone,dataset,method,head,shots,status,test_accuracy",
           "comma-separated run fields to write"),
)


@hookimpl
def xferbench_register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec("knn", "k-nearest-neighbour probe on the cached bottlenecks: no training at all",
                        factory="xferbench_example.knn:KNNProbe", options=KNN_OPTIONS))


@hookimpl
def xferbench_register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    register(ReporterSpec("jsonl", "one JSON line per run, written as each run finishes",
                          factory="xferbench_example.events:JsonLinesReporter", options=JSONL_OPTIONS))


@hookimpl
def xferbench_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(CommandSpec("bars-folder", "write the generated bars as PNG class folders (for folder:)",
                         factory="xferbench_example.command:bars_folder",
                         arguments="xferbench_example.command:add_arguments"))
