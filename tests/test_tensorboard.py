"""xferbench run --tensorboard DIR: the event files, read back with TensorBoard's own reader, hold the results."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from support.procs import Child  # noqa: E402
from xferbench.record import RunRecord  # noqa: E402
from xferbench.tensorboard import WATCH_TAG, run_name  # noqa: E402


def _scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    import tensorflow as tf

    return [(event.step, float(tf.make_ndarray(event.tensor_proto))) for event in accumulator.Tensors(tag)]


def _accumulator(folder) -> EventAccumulator:
    # size_guidance 0: keep every event (the default samples 10 per tag; logreg alone has 21 points)
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def _assert_curves_and_results_match(accumulator: EventAccumulator, run: dict) -> None:
    """Every curve point of the JSON is an event at its step, and the final figures sit at the last step."""
    curve = [p for p in run["curve"] if p["val_accuracy"] is not None]
    assert curve
    assert _scalars(accumulator, "curve/val_accuracy") == [
        (p["step"], pytest.approx(p["val_accuracy"], abs=1e-6)) for p in curve]
    assert 2 <= len(run["train_curve"]) <= 200
    for tag, key in (("curve/loss", "loss"), ("curve/train_accuracy", "train_accuracy")):
        assert _scalars(accumulator, tag) == [(p["step"], pytest.approx(p[key], rel=1e-6, abs=1e-7))
                                              for p in run["train_curve"]]
    last = max(p["step"] for p in run["curve"] + run["train_curve"])
    assert _scalars(accumulator, "test/accuracy") == [(last, pytest.approx(run["test_accuracy"], abs=1e-6))]
    for tag, field in (("extract/images_per_second", "extract_images_per_second"),
                       ("extract/network_images_per_second", "extract_forward_images_per_second"),
                       ("extract/mfu", "mfu")):
        if run[field] is None:
            assert tag not in accumulator.Tags()["tensors"]
        else:
            assert _scalars(accumulator, tag) == [(last, pytest.approx(run[field], rel=1e-6))]


def _hparams(accumulator: EventAccumulator) -> dict:
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    return {k: v.string_value or v.number_value for k, v in start.session_start_info.hparams.items()}


@pytest.mark.realdata
def test_run_writes_curves_accuracy_throughput_and_hparams(cli, tmp_path):
    result = cli("run", "--backbone", "lenet5", "--dataset", "digits:0-4", "--head", "softmax,logreg,mlp",
                 "--head-opt", "steps=60", "--compare", "transfer", "--shots", "5,all", "--seed", "3",
                 "--output", "r.json", "--tensorboard", "tb", "--quiet")
    assert result.returncode == 0, result.stderr
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert len(runs) == 6
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(run_name(RunRecord.from_dict(r))
                                                                          for r in runs)
    by_head = {(run["head"], run["shots"]): run for run in runs}
    # softmax: every one of its 60 steps; logreg: one point per C of its 21-value grid, as its validation curve
    assert [p["step"] for p in by_head["softmax", "all"]["train_curve"]] == list(range(1, 61))
    assert [p["step"] for p in by_head["logreg", "all"]["train_curve"]] == [p["step"] for p in
                                                                              by_head["logreg", "all"]["curve"]]
    # mlp on all images takes more steps than a curve keeps: windows of equal width, ending at the last step
    mlp_steps = [p["step"] for p in by_head["mlp", "all"]["train_curve"]]
    assert mlp_steps[-1] == by_head["mlp", "all"]["head_info"]["steps"] > 200 >= len(mlp_steps)
    assert len({b - a for a, b in zip(mlp_steps[:-2], mlp_steps[1:-1], strict=True)}) == 1
    for run in runs:
        accumulator = _accumulator(tmp_path / "tb" / run_name(RunRecord.from_dict(run)))
        _assert_curves_and_results_match(accumulator, run)
        # one HParams record per run, with its identity
        assert _hparams(accumulator) == {"backbone": "lenet5", "dataset": "digits:0-4", "method": "transfer",
                                         "head": run["head"], "shots": str(run["shots"]), "seed": 3}


@pytest.mark.realdata
def test_full_training_writes_loss_and_accuracy_per_step(cli, tmp_path):
    result = cli("run", "--backbone", "lenet5", "--dataset", "digits:0-4", "--compare", "full", "--shots", "all",
                 "--full-epochs", "3", "--seed", "1", "--output", "r.json", "--tensorboard", "tb", "--quiet")
    assert result.returncode == 0, result.stderr
    [run] = json.loads((tmp_path / "r.json").read_text())["runs"]
    steps = run["training"]["steps"]
    assert [p["step"] for p in run["train_curve"]] == list(range(1, steps + 1))  # fewer than 200: every step
    assert run["train_curve"][-1]["train_accuracy"] > run["train_curve"][0]["train_accuracy"]
    accumulator = _accumulator(tmp_path / "tb" / run_name(RunRecord.from_dict(run)))
    _assert_curves_and_results_match(accumulator, run)
    assert _hparams(accumulator)["method"] == "full"
    # evaluate --watch writes into the same TensorBoard run: the final checkpoint holds the final EMA weights
    watched = cli("evaluate", "--watch", run["run_dir"], "--until-done", "--interval", "0.1", "--tensorboard", "tb")
    assert watched.returncode == 0, watched.stderr[-3000:]
    printed = _printed(watched.stdout)
    assert [step for step, _ in printed] == [steps]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == [run_name(RunRecord.from_dict(run))]
    accumulator = _accumulator(tmp_path / "tb" / run_name(RunRecord.from_dict(run)))
    assert _scalars(accumulator, WATCH_TAG) == [(steps, pytest.approx(printed[0][1], abs=5e-5))]
    assert _scalars(accumulator, WATCH_TAG)[0][1] == pytest.approx(run["val_accuracy"], abs=1.5 / run["n_val"])
    assert "curve/loss" in accumulator.Tags()["tensors"]  # the training run's events are still there


def _printed(stdout: str) -> list[tuple[int, float]]:
    """``(step, accuracy)`` of each ``After <step> training steps, validation accuracy = <acc>`` line."""
    return [(int(line.split()[1]), float(line.rsplit("=", 1)[1])) for line in stdout.splitlines()
            if line.startswith("After ")]


WATCHER = [sys.executable, "-m", "xferbench.cli", "evaluate", "--interval", "0.05", "--until-done"]


@pytest.mark.slow
def test_watcher_writes_each_checkpoints_accuracy_as_training_goes_on(tmp_path):
    """Training waits after each epoch's checkpoint until the watcher has printed it: it sees every one."""
    import keras
    import numpy as np

    from xferbench import training

    rng = np.random.default_rng(0)
    x = rng.normal(size=(420, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    run_dir = tmp_path / "runs" / "full-tiny-quadrants-all"
    run_dir.mkdir(parents=True)
    command = [*WATCHER, "--watch", str(run_dir), "--tensorboard", str(tmp_path / "tb")]
    with Child(command, log_dir=tmp_path / "watcher") as watcher:
        def held_until_watched(epoch: int) -> None:  # the epoch's checkpoint is on disk
            watcher.wait_for_output(f"After {10 * epoch} training steps,")

        result = training.train_model(model, x[:320], y[:320], x[320:], y[320:], epochs=3, budget_seconds=None,
                                      batch_size=32, learning_rate=0.05, seed=0, run_dir=run_dir,
                                      checkpoint_every_steps=10, on_epoch=held_until_watched)
        assert watcher.wait(timeout=120) == 0, watcher.stderr()[-3000:]
        printed = _printed(watcher.stdout())
    assert [step for step, _ in printed] == [10, 20, 30] == [10 * (i + 1) for i in range(3)]
    assert result.steps == 30
    accumulator = _accumulator(tmp_path / "tb" / run_dir.name)
    assert _scalars(accumulator, WATCH_TAG) == [(step, pytest.approx(acc, abs=5e-5)) for step, acc in printed]
    assert printed[-1][1] == pytest.approx(result.val_accuracy, abs=1.5 / 100)


def test_step_curves_keep_at_most_max_points_of_equal_windows_and_resume_where_they_were():
    from xferbench.step_curve import StepCurve

    losses = [1.0 / step for step in range(1, 1001)]
    whole = StepCurve(max_points=50)
    for step, loss in enumerate(losses, 1):
        whole.add(step, loss, step % 2)
    points = whole.points()
    assert len(points) <= 50 and points[-1]["step"] == 1000
    width = points[0]["step"]
    assert [p["step"] for p in points] == [min(1000, width * i) for i in range(1, len(points) + 1)]
    assert points[0]["loss"] == pytest.approx(sum(losses[:width]) / width, abs=1e-6)
    assert points[0]["train_accuracy"] == pytest.approx(0.5)
    # stopped at step 613 and resumed from its state: the same points as one uninterrupted run
    first = StepCurve(max_points=50)
    for step, loss in enumerate(losses[:613], 1):
        first.add(step, loss, step % 2)
    resumed = StepCurve.from_state(json.loads(json.dumps(first.state())))
    for step, loss in enumerate(losses[613:], 614):
        resumed.add(step, loss, step % 2)
    assert resumed.points() == points
