"""``xferbench run --resume``: an interrupted run goes on where it stopped, through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cli import assert_one_line_error
from xferbench.results import validate_document

FULL_EPOCHS = 60
STEPS_PER_EPOCH = 14  # digits 0-2: 431 training images in batches of 32
COMMAND = ["run", "--dataset", "digits:0-2", "--compare", "transfer,full", "--full-epochs", str(FULL_EPOCHS),
           "--backbone-opt", "pretrain_epochs=2", "--head-opt", "steps=300", "--output", "r.json"]


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_finished_runs_and_full_training_goes_on(tmp_path, cli):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "XFERBENCH_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "xferbench.cli", *COMMAND], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    full_dir = tmp_path / "r" / "full-lenet5-digits_0-2-all"
    deadline = time.monotonic() + 300
    # Interrupt once the first checkpoint (every 5 epochs) is on disk, well before the 60th epoch.
    while _status(full_dir).get("step", 0) < 5 * STEPS_PER_EPOCH:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "xferbench run --resume r.json" in stderr
    interrupted = json.loads((tmp_path / "r.json").read_text())
    (transfer,) = interrupted["runs"]
    assert transfer["method"] == "transfer" and transfer["status"] == "ok"
    checkpoint_step = _status(full_dir)["step"]
    assert _status(full_dir)["done"] is False and 0 < checkpoint_step < FULL_EPOCHS * STEPS_PER_EPOCH

    result = cli("run", "--resume", "r.json", "--format", "csv")
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    validate_document(document)
    assert document["command"] == interrupted["command"]
    assert document["resumed"] == {"created": interrupted["created"], "kept_runs": 1}
    kept, full = document["runs"]
    assert kept == transfer  # not run again: the very same result, timings and all
    assert full["status"] == "ok" and full["method"] == "full"
    assert full["training"]["resumed_from_step"] == checkpoint_step
    assert full["training"]["steps"] == FULL_EPOCHS * STEPS_PER_EPOCH
    # Time spent before the interruption counts: the curve runs on from where it stopped.
    seconds = [point["seconds"] for point in full["curve"]]
    assert seconds == sorted(seconds) and full["train_seconds"] >= seconds[-1]
    assert [point["step"] for point in full["curve"]] == [STEPS_PER_EPOCH * (k + 1) for k in range(FULL_EPOCHS)]


def test_resume_refuses_other_run_settings_and_files_it_cannot_use(tmp_path, cli):
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": 1, "command": ["xferbench", "run"], "runs": []}))
    assert_one_line_error(cli("run", "--resume", "r.json", "--shots", "5"), "--resume repeats", "leave out --shots")
    assert_one_line_error(cli("run", "--resume", "missing.json"), "no results file at missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema_version": 1, "command": ["python", "x.py"]}))
    assert_one_line_error(cli("run", "--resume", "other.json"), "does not record an `xferbench run` command")

