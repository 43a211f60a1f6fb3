"""``--augment`` on the real flower photos: accuracy with and without it, and its time against retrain.py's.

keras:MobileNet alpha 0.25 at 128 px (the ImageNet weights in ../shared/data) on all 500 photos of
``flower_photos_mini``, split by retrain.py's file-name rule with 30% test and 10% validation (so the
test split has ~150 photos, not ~50).

1. Accuracy (``test_augment_accuracy``): the ``transfer`` method with the ``logreg`` head, without and
   with ``--augment flip,crop=10,scale=10,brightness=10`` (5 cached copies per training photo), for
   seeds 0, 1 and 2 (the seed draws the copies). Each run's test accuracy comes with its bootstrap
   interval from the record; the difference (with - without) gets a paired bootstrap interval over
   the test photos (each run's head is reloaded and its predictions recomputed from the cached
   features, checked against the recorded accuracy). No floor: the figures are reported either way.

2. Time (``test_augment_time_against_retrain_py``): the same number of head training steps
   (``XFERBENCH_BENCH_STEPS``, default 100, batches of 100) trained with retrain.py's final-layer loop
   (``retrain_baseline``) in two ways:

   - retrain.py's: every step distorts 100 random training JPEGs (its ``add_input_distortions``) and
     runs the whole network on each, one image per call, as its ``get_random_distorted_bottlenecks`` does;
   - xferbench's: the distorted copies are extracted once and cached (``extract_copies``, cold cache),
     then the steps draw from the cached originals and copies. Timed cold, and warm (a second run: the
     copies come from the cache).

   The ratio retrain.py / xferbench is reported; retrain.py's cost grows with every step, xferbench's
   is mostly the one-off extraction, so the ratio grows with the number of steps (retrain.py's default
   is 4000). Floor: xferbench cold is faster than retrain.py's at this step count (ratio > 1).

Run: ``pytest benchmarks/bench_augment.py --benchmark-only -s`` (about 3-5 minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from conftest import MOBILENET_OPTIONS, MOBILENET_WEIGHTS, extract, make_backbone, make_context
from retrain_baseline import RetrainConfig, RetrainDistortions, distorted_batches, retrain_final_layer

SPEC = "flip,crop=10,scale=10,brightness=10"
COPIES = 5
SEEDS = (0, 1, 2)
SPLIT_OPTIONS = {"test_pct": "30", "val_pct": "10"}
STEPS = int(os.environ.get("XFERBENCH_BENCH_STEPS", "100"))
BOOTSTRAP = 2000


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]


def _runs(context: Any, dataset_token: str, augmentation: Any, out: Path) -> dict:
    from xferbench.runner import Runner, RunRequest

    request = RunRequest(backbones=["keras:MobileNet"], datasets=[dataset_token], heads=["logreg"],
                         methods=["transfer"], backbone_options=dict(MOBILENET_OPTIONS),
                         dataset_options=dict(SPLIT_OPTIONS), augmentation=augmentation)
    (row,) = Runner(request, context, out).run()["runs"]
    assert row["status"] == "ok", row["error"]
    return row


def test_augment_accuracy(benchmark: Any, shared_data: Path, tmp_path: Path) -> None:
    import keras

    from xferbench.augment import parse_augment
    from xferbench.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    token = f"folder:{shared_data / 'flower_photos_mini'}"
    rows: dict[str, list[dict]] = {"plain": [], "augmented": []}

    def all_runs() -> None:
        for seed in SEEDS:
            context = dataclasses.replace(make_context(tmp_path / "cache", weights=shared_data / MOBILENET_WEIGHTS),
                                          seed=seed)
            rows["plain"].append(_runs(context, token, None, tmp_path / f"plain-{seed}.json"))
            rows["augmented"].append(_runs(context, token, parse_augment(SPEC, COPIES),
                                           tmp_path / f"augmented-{seed}.json"))

    benchmark.pedantic(all_runs, rounds=1, iterations=1)

    context = make_context(tmp_path / "cache", weights=shared_data / MOBILENET_WEIGHTS)
    dataset = context.load_dataset(token, SPLIT_OPTIONS)
    backbone = make_backbone(context, "keras:MobileNet", MOBILENET_OPTIONS)
    extraction = extract(backbone, dataset, context.subdir("bottlenecks"))
    assert extraction.computed == 0  # the runs cached every photo
    test = [i for i, ex in enumerate(dataset.examples) if ex.split == "test"]
    x_test, y_test = extraction.features[test], np.array([dataset.examples[i].label for i in test])
    correct = {}
    for name, runs in rows.items():
        per_seed = []
        for row in runs:
            head = keras.models.load_model(Path(row["run_dir"]) / "head.keras", compile=False)
            right = np.asarray(head.predict(x_test, verbose=0)).argmax(1) == y_test
            assert abs(right.mean() - row["test_accuracy"]) < 1e-9, (right.mean(), row["test_accuracy"])
            per_seed.append(right.astype(np.float64))
        correct[name] = np.array(per_seed)  # [seeds, test photos]
    rng = np.random.default_rng(0)
    resamples = rng.integers(0, len(test), size=(BOOTSTRAP, len(test)))
    difference = correct["augmented"].mean(0) - correct["plain"].mean(0)  # per photo, averaged over seeds
    per_seed_difference = correct["augmented"] - correct["plain"]
    augmented_copies = rows["augmented"][0]["augment"]
    benchmark.extra_info.update({
        "model": "keras:MobileNet alpha 0.25, 128 px; transfer, logreg head", "augment": SPEC, "copies": COPIES,
        "split": dataset.split_sizes(), "seeds": list(SEEDS),
        "plain_test_accuracy": [r["test_accuracy"] for r in rows["plain"]],
        "plain_test_accuracy_ci": [r["test_accuracy_ci"] for r in rows["plain"]],
        "augmented_test_accuracy": [r["test_accuracy"] for r in rows["augmented"]],
        "augmented_test_accuracy_ci": [r["test_accuracy_ci"] for r in rows["augmented"]],
        "difference_points_per_seed": [round(100 * float(d.mean()), 2) for d in per_seed_difference],
        "difference_points_per_seed_ci": [[round(100 * v, 2) for v in _interval(d[resamples].mean(1))]
                                          for d in per_seed_difference],
        "difference_points_mean_of_seeds": round(100 * float(difference.mean()), 2),
        "difference_points_mean_of_seeds_ci": [round(100 * v, 2) for v in _interval(difference[resamples].mean(1))],
        "augment_record": augmented_copies,
        "load_average": os.getloadavg()[0],
    })
    print(f"\n--augment accuracy on flower photos: {benchmark.extra_info}")
    assert augmented_copies["copies_total"] == COPIES * dataset.split_sizes()["train"]


def test_augment_time_against_retrain_py(benchmark: Any, shared_data: Path, tmp_path: Path) -> None:
    from xferbench.augment import extract_copies, parse_augment
    from xferbench.cli import import_tensorflow_quietly
    from xferbench.progress import Progress

    import_tensorflow_quietly()
    context = make_context(tmp_path / "cache", weights=shared_data / MOBILENET_WEIGHTS)
    dataset = context.load_dataset(f"folder:{shared_data / 'flower_photos_mini'}", SPLIT_OPTIONS)
    backbone = make_backbone(context, "keras:MobileNet", MOBILENET_OPTIONS)
    originals = extract(backbone, dataset, context.subdir("bottlenecks"))  # both ways start from these
    split = {s: [i for i, ex in enumerate(dataset.examples) if ex.split == s] for s in ("train", "val", "test")}
    x = {s: originals.features[rows] for s, rows in split.items()}
    y = {s: np.array([dataset.examples[i].label for i in rows]) for s, rows in split.items()}
    train = dataset.split("train")
    settings = parse_augment(SPEC, COPIES)
    config = RetrainConfig(steps=STEPS)
    classes = len(dataset.class_names)
    # Warm-up of both paths on a throw-away cache: tracing is a one-off, not the cost of either.
    extract_copies(backbone, dataset, train[:2], settings, 99, tmp_path / "warm-up", Progress(quiet=True))
    distortions = RetrainDistortions(backbone.preprocessing.size, backbone.preprocessing.normalise, flip=True,
                                     crop=10, scale=10, brightness=10)
    jpegs = [dataset.read(ex) for ex in train]
    retrain_batches = distorted_batches(jpegs, y["train"], distortions, backbone.forward)
    retrain_batches(np.random.default_rng(1))
    seconds: dict[str, float] = {}

    def xferbench_way(name: str) -> float:
        started = time.perf_counter()
        copies = extract_copies(backbone, dataset, train, settings, 0, context.subdir("bottlenecks"),
                                Progress(quiet=True))
        result = retrain_final_layer(np.concatenate([x["train"], copies.features]),
                                     np.concatenate([y["train"], copies.labels]), x["val"], y["val"], x["test"],
                                     y["test"], classes, config=config)
        seconds[name] = time.perf_counter() - started
        seconds[f"{name}_extracted"] = copies.computed
        return result.test_accuracy

    def both() -> None:
        seconds["xferbench_accuracy"] = xferbench_way("xferbench_cold")
        seconds["xferbench_warm_accuracy"] = xferbench_way("xferbench_warm")
        started = time.perf_counter()
        result = retrain_final_layer(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], classes,
                                     config=config, next_batch=retrain_batches)
        seconds["retrain_py"] = time.perf_counter() - started
        seconds["retrain_py_accuracy"] = result.test_accuracy

    benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update({
        "model": "keras:MobileNet alpha 0.25, 128 px", "augment": SPEC, "copies": COPIES, "steps": STEPS,
        "train_photos": len(train), **{k: round(v, 4) for k, v in seconds.items()},
        "retrain_py_seconds_per_step": round(seconds["retrain_py"] / STEPS, 4),
        "retrain_py_vs_xferbench_cold": seconds["retrain_py"] / seconds["xferbench_cold"],
        "retrain_py_vs_xferbench_warm": seconds["retrain_py"] / seconds["xferbench_warm"],
        "load_average": os.getloadavg()[0],
    })
    print(f"\n--augment time against retrain.py's distortions: {benchmark.extra_info}")
    assert seconds["xferbench_cold_extracted"] == COPIES * len(train) and seconds["xferbench_warm_extracted"] == 0
    assert benchmark.extra_info["retrain_py_vs_xferbench_cold"] > 1.0, benchmark.extra_info


def test_copies_distorted_in_one_call_per_image(benchmark: Any, shared_data: Path) -> None:
    """``CopyPreprocessor.many`` (every copy of a photo in one call, decoded once) against ``one`` per copy."""
    from xferbench.augment import CopyPreprocessor, draw_for_copy, parse_augment
    from xferbench.cli import import_tensorflow_quietly
    from xferbench.decoding import Preprocessing

    import_tensorflow_quietly()
    files = sorted((shared_data / "flower_photos_mini").glob("*/*.jpg"))[::5]
    photos = [path.read_bytes() for path in files]
    settings = parse_augment(SPEC, COPIES)
    draws = [np.stack([draw_for_copy(settings, 0, str(i), k) for k in range(COPIES)]) for i in range(len(photos))]
    preprocessor = CopyPreprocessor(Preprocessing(size=(128, 128), scale=1 / 127.5, mean=(1.0,)))
    preprocessor.one(photos[0], draws[0][0])  # tracing is a one-off
    preprocessor.many(photos[0], draws[0])
    seconds: dict[str, list[float]] = {"per_copy": [], "per_photo": []}

    def one_round() -> None:
        started = time.perf_counter()
        singles = [preprocessor.one(photo, row) for photo, rows in zip(photos, draws, strict=True) for row in rows]
        seconds["per_copy"].append(time.perf_counter() - started)
        started = time.perf_counter()
        batched = [preprocessor.many(photo, rows) for photo, rows in zip(photos, draws, strict=True)]
        seconds["per_photo"].append(time.perf_counter() - started)
        np.testing.assert_array_equal(np.stack(singles), np.concatenate(batched))

    benchmark.pedantic(one_round, rounds=3, iterations=1)
    best = {name: min(times) for name, times in seconds.items()}
    benchmark.extra_info.update({"photos": len(photos), "copies": COPIES, "best_seconds": best,
                                 "per_copy_vs_per_photo": best["per_copy"] / best["per_photo"],
                                 "load_average": os.getloadavg()[0]})
    print(f"\ncopies in one call per photo: {benchmark.extra_info}")
    assert benchmark.extra_info["per_copy_vs_per_photo"] > 1.0, benchmark.extra_info
