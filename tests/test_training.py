"""Full retraining loop (EMA, checkpoints, stopping rules) and the checkpoint evaluator."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support.procs import Child
from xferbench.errors import UserError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from xferbench import evaluate, training  # noqa: E402  (after the importorskip guards)


def build_tiny(classes: int = 4, dim: int = 8, hidden: int = 16, seed: int = 0):
    """A small MLP with dropout and batch norm; also the ``rebuild`` target of one test."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dropout(0.2), keras.layers.BatchNormalization(),
                             keras.layers.Dense(classes, activation="softmax")])


def quadrant_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return x, ((x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0))


@pytest.fixture(scope="module")
def data():
    return quadrant_data(320, 0), quadrant_data(100, 1)


@pytest.mark.parametrize("decay", [0.99, 0.5])
def test_ema_shadows_equal_the_analytic_average(tmp_path: Path, decay: float) -> None:
    """One softmax layer, full-batch plain SGD: replay the weights in NumPy and average them by hand."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    w, b = (np.asarray(v, np.float64) for v in model.get_weights())
    shadow_w, shadow_b = w.copy(), b.copy()
    lr, steps = 0.5, 12
    for k in range(1, steps + 1):
        logits = x @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(16), y] -= 1.0
        w, b = w - lr * x.T @ p / 16, b - lr * p.mean(0)
        d = min(decay, (1 + k) / (10 + k))
        shadow_w, shadow_b = d * shadow_w + (1 - d) * w, d * shadow_b + (1 - d) * b
    assert min(0.5, 13 / 22) != min(0.5, 2 / 11)  # both regimes of the decay occur with decay=0.5

    result = training.train_model(model, x, y, x, y, epochs=steps, budget_seconds=None, batch_size=16,
                                  learning_rate=lr, seed=0, ema_decay=decay, run_dir=tmp_path,
                                  checkpoint_every_steps=100)
    assert result.steps == steps
    reader = tf.train.load_checkpoint(result.checkpoint)
    names = {name for name, _ in tf.train.list_variables(result.checkpoint)}
    ema = [reader.get_tensor(f"ema/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(2)]
    raw = [reader.get_tensor(f"weights/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(2)]
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in names
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == steps
    np.testing.assert_allclose(raw[0], w, atol=1e-5)
    np.testing.assert_allclose(ema[0], shadow_w, atol=1e-5)
    np.testing.assert_allclose(ema[1], shadow_b, atol=1e-5)
    assert not np.allclose(ema[0], raw[0], atol=1e-3)  # the average really lags the weights
    # The returned model carries the EMA weights.
    np.testing.assert_allclose(model.get_weights()[0], shadow_w, atol=1e-5)
    assert training.ema_decay_at(1, 0.99) == pytest.approx(2 / 11)
    assert training.ema_decay_at(10_000, 0.99) == 0.99


def test_stops_after_epochs_and_records_the_curve(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    progress, epochs_seen = [], []
    result = training.train_model(build_tiny(), xt, yt, xv, yv, epochs=3, budget_seconds=None, batch_size=32,
                                  learning_rate=0.1, seed=0, run_dir=tmp_path, checkpoint_every_steps=7,
                                  eval_every_steps=10, on_progress=lambda *a: progress.append(a),
                                  on_epoch=epochs_seen.append)
    assert (result.steps, result.epochs, result.stopped_by) == (30, 3.0, "epochs")
    assert epochs_seen == [1, 2, 3]
    assert [p["step"] for p in result.curve] == [10, 20, 30] == [p[0] for p in progress]
    assert [p["seconds"] for p in result.curve] == sorted(p["seconds"] for p in result.curve)
    assert result.val_accuracy == result.curve[-1]["val_accuracy"] > 0.6  # learned, well above 1/4
    # The returned model predicts with the weights the curve was measured on.
    assert training.accuracy_of(result.model, xv, yv) == result.val_accuracy
    np.testing.assert_array_equal(result.predict_proba(xv), training.predict_proba(result.model, xv))
    # Checkpoints every 7 steps plus the last; the newest five are kept.
    kept = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints")).all_model_checkpoint_paths
    assert [int(p.rsplit("-", 1)[1]) for p in kept] == [7, 14, 21, 28, 30]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["done"] is True and status["step"] == 30 and status["stopped_by"] == "epochs"
    with np.load(tmp_path / "val.npz", allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["x"], xv)
        np.testing.assert_array_equal(saved["y"], yv)


def test_stops_on_the_time_budget(data) -> None:
    (xt, yt), (xv, yv) = data
    result = training.train_model(build_tiny(), xt, yt, xv, yv, epochs=None, budget_seconds=1.5, batch_size=8,
                                  learning_rate=0.05, seed=0, checkpoint_every_steps=50)
    assert result.stopped_by == "budget"
    assert 1.5 <= result.seconds < 6.0
    assert result.steps > 40 and result.checkpoint is None
    assert result.epochs == pytest.approx(result.steps / 40, abs=1e-4)


def test_same_seed_same_weights_other_seed_differs(data) -> None:
    (xt, yt), (xv, yv) = data

    def run(seed: int) -> list[np.ndarray]:
        model = build_tiny(seed=0)
        training.train_model(model, xt, yt, xv, yv, epochs=2, budget_seconds=None, learning_rate=0.1, seed=seed,
                             checkpoint_every_steps=1000)
        return model.get_weights()

    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, c) for a, c in zip(first, other, strict=True))


def test_a_new_run_replaces_an_old_one_in_the_same_folder(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    common = dict(budget_seconds=None, batch_size=32, learning_rate=0.1, seed=0, run_dir=tmp_path)
    training.train_model(build_tiny(), xt, yt, xv, yv, epochs=3, checkpoint_every_steps=4, **common)
    training.train_model(build_tiny(), xt, yt, xv, yv, epochs=1, checkpoint_every_steps=100, **common)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-10.index"]
    assert evaluate.evaluate_checkpoint(tmp_path)[0] == 10


def test_rebuild_target_instead_of_model_file(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    result = training.train_model(build_tiny(hidden=12), xt, yt, xv, yv, epochs=1, budget_seconds=None,
                                  learning_rate=0.1, seed=0, run_dir=tmp_path, checkpoint_every_steps=100,
                                  rebuild=("test_training:build_tiny", {"hidden": 12}))
    assert not (tmp_path / "model.keras").exists()
    assert evaluate.evaluate_checkpoint(tmp_path) == (result.steps, result.val_accuracy)


def test_bad_arguments_are_user_errors(data) -> None:
    (xt, yt), (xv, yv) = data
    with pytest.raises(UserError, match="stopping rule"):
        training.train_model(build_tiny(), xt, yt, xv, yv, epochs=None, budget_seconds=None, learning_rate=0.1,
                             seed=0)
    with pytest.raises(UserError, match=r"labels must lie in 0\.\.3"):
        training.train_model(build_tiny(), xt, yt + 1, xv, yv, epochs=1, budget_seconds=None, learning_rate=0.1,
                             seed=0)
    with pytest.raises(UserError, match="optimizer"):
        training.train_model(build_tiny(), xt, yt, xv, yv, epochs=1, budget_seconds=None, learning_rate=0.1,
                             seed=0, optimizer="lion")


def test_watch_evaluates_a_finished_run_once(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    result = training.train_model(build_tiny(), xt, yt, xv, yv, epochs=2, budget_seconds=None, learning_rate=0.1,
                                  seed=0, run_dir=tmp_path, checkpoint_every_steps=5)
    lines: list[str] = []
    seen = evaluate.watch(tmp_path, interval=0.01, until_done=True, out=lines.append)
    assert seen == [(20, result.val_accuracy)]
    assert lines == [f"After 20 training steps, validation accuracy = {result.val_accuracy:.4f}"]
    # An older checkpoint restores that step's averaged weights.
    step, acc = evaluate.evaluate_checkpoint(tmp_path, str(tmp_path / "checkpoints" / "ckpt-10"))
    curve = {point["step"]: point["val_accuracy"] for point in result.curve}
    assert sorted(curve) == list(range(1, 21))  # no eval_every_steps: at least 20 points, here every step
    assert (step, acc) == (10, curve[10])


def test_watch_missing_run_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        evaluate.watch(tmp_path / "nope", interval=0.01, until_done=True)


TRAINER = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    from xferbench import training
    sys.stdin.readline()  # go: the watcher has imported TensorFlow and is polling
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 32)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + 2 * (x[:, 1] > 0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    result = training.train_model(model, x[:1600], y[:1600], x[1600:], y[1600:], epochs=None,
                                  budget_seconds=float(sys.argv[2]), batch_size=16, learning_rate=0.05, seed=0,
                                  run_dir=sys.argv[1], checkpoint_every_steps=int(sys.argv[3]))
    print("trained", result.steps)
""")
WATCHER = ("import sys, tensorflow; from xferbench.evaluate import watch; print('ready', flush=True); "
           "watch(sys.argv[1], interval=0.2, until_done=True)")


@pytest.mark.slow
def test_trainer_and_watcher_in_separate_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with Child([sys.executable, "-c", WATCHER, str(run_dir)], log_dir=tmp_path / "watcher") as watcher, \
            Child([sys.executable, "-c", TRAINER, str(run_dir), "3", "40"], log_dir=tmp_path / "trainer",
                  stdin_pipe=True) as trainer:
        # Both import TensorFlow at once; training starts only when the watcher is ready, so
        # a slow import cannot make it miss the run (no sleeps needed).
        watcher.wait_for_output("ready")
        trainer.process.stdin.write("go\n")
        trainer.process.stdin.close()
        assert trainer.wait(timeout=300) == 0, trainer.stderr()[-2000:]
        assert watcher.wait(timeout=60) == 0, watcher.stderr()[-2000:]
        t_out, w_out = trainer.stdout(), watcher.stdout()
    final_steps = int(t_out.split("trained")[1])
    lines = [line for line in w_out.splitlines() if line.startswith("After ")]
    steps = [int(line.split()[1]) for line in lines]
    assert len(steps) >= 2, w_out
    assert steps == sorted(set(steps)) and steps[-1] == final_steps
    assert final_steps // 40 >= 3  # at least three periodic checkpoints were written
    assert all(line.endswith(tuple("0123456789")) and "validation accuracy = " in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 0), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_watcher_stops_cleanly_on_ctrl_c(tmp_path: Path, data, signum: int, exit_code: int) -> None:
    """Ctrl-C ends ``xferbench evaluate --watch`` (exit 0); SIGTERM too, with 143 as a stopped process."""
    (xt, yt), (xv, yv) = data
    training.train_model(build_tiny(), xt, yt, xv, yv, epochs=1, budget_seconds=None, learning_rate=0.1, seed=0,
                         run_dir=tmp_path / "run", checkpoint_every_steps=100)
    command = [sys.executable, "-m", "xferbench.cli", "evaluate", "--watch", str(tmp_path / "run"),
               "--interval", "0.2"]
    with Child(command, log_dir=tmp_path / "log") as watcher:
        # The known point: the final checkpoint was evaluated, so the watcher is in its polling loop.
        watcher.wait_for_output("After 10 training steps")
        watcher.send(signum)
        assert watcher.wait(timeout=60) == exit_code, watcher.stderr()[-3000:]
        err = watcher.stderr()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert ("stopped by SIGTERM" in err) == (signum == signal.SIGTERM), err


def _no_dropout(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(4, activation="softmax")])


def test_an_interrupted_run_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    settings = dict(epochs=3, budget_seconds=None, batch_size=32, learning_rate=0.01, seed=0, optimizer="adam",
                    checkpoint_every_steps=4, eval_every_steps=5)
    whole = training.train_model(_no_dropout(), xt, yt, xv, yv, run_dir=tmp_path / "whole", **settings)

    def stop_at_step_15(step: int, *_: object) -> None:
        if step == 15:  # mid-epoch 2 (10 steps an epoch); the newest checkpoint is step 12
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train_model(_no_dropout(), xt, yt, xv, yv, run_dir=tmp_path / "cut", on_progress=stop_at_step_15,
                             **settings)
    assert training.read_status(tmp_path / "cut")["done"] is False
    # A fresh model (other random weights): everything must come from the checkpoint.
    resumed = training.train_model(_no_dropout(seed=7), xt, yt, xv, yv, run_dir=tmp_path / "cut", resume=True,
                                   **settings)
    assert resumed.resumed_from_step == 12 and resumed.steps == whole.steps == 30
    assert [p["step"] for p in resumed.curve] == [p["step"] for p in whole.curve] == [5, 10, 15, 20, 25, 30]
    for got, want in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert resumed.val_accuracy == whole.val_accuracy
    # the per-step train curve goes on too: steps 13-15, trained twice, count once
    assert [p["step"] for p in resumed.train_curve] == [p["step"] for p in whole.train_curve] == list(range(1, 31))
    for got, want in zip(resumed.train_curve, whole.train_curve, strict=True):
        assert (got["loss"], got["train_accuracy"]) == (pytest.approx(want["loss"], rel=1e-4),
                                                        pytest.approx(want["train_accuracy"]))
    assert training.read_status(tmp_path / "cut")["done"] is True
    # Finished before its result was recorded: resuming trains no further and gives the same model.
    again = training.train_model(_no_dropout(seed=3), xt, yt, xv, yv, run_dir=tmp_path / "cut", resume=True,
                                 **settings)
    assert (again.resumed_from_step, again.steps, again.val_accuracy) == (30, 30, whole.val_accuracy)
    for got, want in zip(again.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _Noise:
    """An on-the-fly distortion with its own random state, as ``--augment`` gives ``full``/``finetune``."""

    def __init__(self) -> None:
        self.generator = tf.random.Generator.from_seed(11)

    def __call__(self, batch):
        return batch + self.generator.normal(tf.shape(batch), stddev=0.5)


def test_a_resumed_run_draws_the_distortions_of_the_unbroken_run(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    settings = dict(epochs=2, budget_seconds=None, batch_size=32, learning_rate=0.01, seed=0, optimizer="adam",
                    checkpoint_every_steps=4, eval_every_steps=5)
    whole = training.train_model(_no_dropout(), xt, yt, xv, yv, run_dir=tmp_path / "whole", augment=_Noise(),
                                 **settings)

    def stop_at_step_15(step: int, *_: object) -> None:
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train_model(_no_dropout(), xt, yt, xv, yv, run_dir=tmp_path / "cut", augment=_Noise(),
                             on_progress=stop_at_step_15, **settings)
    # A fresh generator, back at its seed: the state must come from the checkpoint (step 12).
    resumed = training.train_model(_no_dropout(seed=7), xt, yt, xv, yv, run_dir=tmp_path / "cut", resume=True,
                                   augment=_Noise(), **settings)
    assert resumed.resumed_from_step == 12 and resumed.steps == whole.steps == 20
    for got, want in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_resume_starts_afresh_when_the_settings_differ_or_nothing_was_saved(tmp_path: Path, data) -> None:
    (xt, yt), (xv, yv) = data
    settings = dict(epochs=1, budget_seconds=None, batch_size=32, seed=0, checkpoint_every_steps=4)
    training.train_model(build_tiny(), xt, yt, xv, yv, learning_rate=0.1, run_dir=tmp_path / "a", **settings)
    other_rate = training.train_model(build_tiny(), xt, yt, xv, yv, learning_rate=0.2, run_dir=tmp_path / "a",
                                      resume=True, **settings)
    assert other_rate.resumed_from_step is None and other_rate.steps == 10
    empty = training.train_model(build_tiny(), xt, yt, xv, yv, learning_rate=0.1, run_dir=tmp_path / "b",
                                 resume=True, **settings)
    assert empty.resumed_from_step is None and empty.steps == 10


def test_the_prologue_runs_on_a_fresh_start_only_and_its_time_counts(tmp_path: Path, data) -> None:
    import time

    (xt, yt), (xv, yv) = data
    calls: list[None] = []
    settings = dict(epochs=1, budget_seconds=None, batch_size=32, learning_rate=0.1, seed=0,
                    checkpoint_every_steps=4, run_dir=tmp_path, prologue=lambda: calls.append(time.sleep(0.3)))
    first = training.train_model(build_tiny(), xt, yt, xv, yv, **settings)
    assert len(calls) == 1 and first.seconds >= 0.3 and first.curve[-1]["seconds"] >= 0.3
    training.train_model(build_tiny(), xt, yt, xv, yv, resume=True, **settings)
    assert len(calls) == 1  # the checkpoint holds what the prologue did
