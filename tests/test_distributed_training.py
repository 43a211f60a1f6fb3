"""``full``/``finetune`` under ``tf.distribute.MirroredStrategy`` (``--method-opt strategy=``), on CPU.

A child process splits the CPU into two logical devices before TensorFlow initialises: to
``tf.distribute`` that is a machine with two accelerators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from support.cli import REPO, assert_one_line_error

CHILD = REPO / "tests" / "support" / "logical_devices_cli.py"
#: lenet5 pretrained briefly on digits 0-4 (prepare does it even for `full`), full training on 5-9
FULL_RUN = ["run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--compare", "full", "--backbone-opt",
            "pretrain_on=digits:0-4", "--backbone-opt", "pretrain_epochs=1", "--full-epochs", "3"]
#: Largest absolute difference allowed between a final weight (and its moving average) trained on two
#: replicas and on one device. The two differ only in the order of floating-point sums (each replica sums
#: its half of the batch's gradients, then the halves are added): about one float32 rounding (~1e-8 for
#: weights below 1) per step. Measured after lenet5's 69 steps: 1.3e-7; the bound leaves ~75x room.
WEIGHT_TOLERANCE = 1e-5


def _logical_devices_cli(tmp_path, devices: int, *invocations: list[str]) -> None:
    args: list[str] = []
    for invocation in invocations:
        args += [*(["--then"] if args else []), *invocation]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XFERBENCH_CACHE_DIR": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, str(CHILD), str(devices), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=600)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0, (out[-2000:], err[-3000:])


def _run(path) -> dict:
    [run] = json.loads(path.read_text())["runs"]
    assert run["status"] == "ok", run["error"]
    return run


def _weights(tmp_path, run: dict) -> dict[str, np.ndarray]:
    """The final checkpoint's model weights and their moving averages, by checkpoint name."""
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(tmp_path / run["run_dir"] / "checkpoints"))  # relative to the cwd
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
            if name.startswith(("weights/", "ema/"))}


def test_mirrored_on_two_devices_matches_one_device(tmp_path):
    _logical_devices_cli(tmp_path, 2,
                         [*FULL_RUN, "--method-opt", "strategy=mirrored", "--output", "mirrored.json"],
                         [*FULL_RUN, "--method-opt", "strategy=none", "--output", "none.json"])
    mirrored, single = _run(tmp_path / "mirrored.json"), _run(tmp_path / "none.json")
    assert (mirrored["strategy"], mirrored["replicas"]) == ("mirrored", 2)
    assert (single["strategy"], single["replicas"]) == ("none", 1)
    # The same global batch: the same number of steps.
    assert mirrored["training"]["steps"] == single["training"]["steps"] > 0
    # Weights a few rounding errors apart move no prediction unless two classes tie within ~1e-6:
    # at most one test image may flip.
    assert abs(mirrored["test_accuracy"] - single["test_accuracy"]) <= 1 / single["n_test"]
    mirrored_weights, single_weights = _weights(tmp_path, mirrored), _weights(tmp_path, single)
    assert mirrored_weights.keys() == single_weights.keys() and len(single_weights) >= 10
    for name, value in single_weights.items():
        np.testing.assert_allclose(mirrored_weights[name], value, rtol=0, atol=WEIGHT_TOLERANCE, err_msg=name)


def test_mirrored_on_one_device_is_one_replica(tmp_path):
    _logical_devices_cli(tmp_path, 1, [*FULL_RUN, "--full-epochs", "1", "--method-opt", "strategy=mirrored",
                                       "--output", "one.json"])
    run = _run(tmp_path / "one.json")
    assert (run["strategy"], run["replicas"]) == ("mirrored", 1)


def test_unknown_strategy_is_a_one_line_error(cli):
    line = assert_one_line_error(cli(*FULL_RUN, "--method-opt", "strategy=ring"), "strategy='ring'")
    for choice in ("auto", "mirrored", "none"):
        assert choice in line
