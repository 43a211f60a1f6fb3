"""``xferbench run --resume``: an interrupted or stopped run goes on where it stopped, through the CLI.

The signals are real ones, sent to a real ``xferbench run`` held at a known point of its full
training (:mod:`support.held_cli`), so the outcome does not depend on the machine's speed or on
how pytest itself was started.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from support.cli import assert_one_line_error
from support.procs import Child
from xferbench.results import validate_document

FULL_EPOCHS = 10
HOLD_EPOCH = 5  # the runner checkpoints every 5 epochs: the hold is right after the first checkpoint
STEPS_PER_EPOCH = 14  # digits 0-2: 431 training images in batches of 32
COMMAND = ["run", "--dataset", "digits:0-2", "--compare", "transfer,full", "--full-epochs", str(FULL_EPOCHS),
           "--backbone-opt", "pretrain_epochs=2", "--head-opt", "steps=300", "--output", "r.json"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> dict[str, str]:
    """One cache for the module: lenet5 is pretrained and the bottlenecks extracted once."""
    return {"XFERBENCH_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _stopped_run(tmp_path: Path, env: dict[str, str], signum: int, expected_exit: int, *, hold_at_epoch: int,
                 ignore: tuple[int, ...] = (), then: int | None = None) -> dict:
    """Run COMMAND held at ``hold_at_epoch`` of full training, send ``signum`` (and ``then``); the results file."""
    with Child(COMMAND, log_dir=tmp_path / "log", cwd=tmp_path, env=env, ignore=ignore,
               hold_at_epoch=hold_at_epoch) as child:
        child.wait_until_held()
        child.send(signum)
        if then is not None:
            child.send(then)
        assert child.wait() == expected_exit, child.stderr()[-3000:]
        stderr = child.stderr()
    assert "xferbench run --resume r.json" in stderr and "finished runs are in r.json" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    document = json.loads((tmp_path / "r.json").read_text())
    validate_document(document)
    assert [(run["method"], run["status"]) for run in document["runs"]] == [("transfer", "ok"), ("full", "interrupted")]
    return document


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                             (signal.SIGTERM, 143, "stopped by SIGTERM")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_keeps_its_finished_runs_and_full_training_goes_on(tmp_path, cli, shared_cache, signum,
                                                                         exit_code, said):
    interrupted = _stopped_run(tmp_path, shared_cache, signum, exit_code, hold_at_epoch=HOLD_EPOCH)
    assert f"xferbench: {said};" in (tmp_path / "log" / "stderr.txt").read_text()
    transfer, stopped = interrupted["runs"]
    full_dir = tmp_path / "r" / "full-lenet5-digits_0-2-all"
    checkpoint_step = _status(full_dir)["step"]
    assert _status(full_dir)["done"] is False and checkpoint_step == HOLD_EPOCH * STEPS_PER_EPOCH
    assert stopped["training"]["checkpoint_step"] == checkpoint_step

    result = cli("run", "--resume", "r.json", "--format", "csv", env=shared_cache)
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
    # At least 20 evaluations (every total/20 steps), the interrupted ones kept and the rest added.
    every = FULL_EPOCHS * STEPS_PER_EPOCH // 20
    assert [point["step"] for point in full["curve"]] == [every * (k + 1) for k in range(20)]


@pytest.mark.slow
def test_sighup_stops_a_run_like_ctrl_c_with_exit_code_129(tmp_path, shared_cache):
    _stopped_run(tmp_path, shared_cache, signal.SIGHUP, 129, hold_at_epoch=1)
    assert "xferbench: stopped by SIGHUP;" in (tmp_path / "log" / "stderr.txt").read_text()


@pytest.mark.slow
def test_a_run_started_with_sighup_ignored_keeps_ignoring_it(tmp_path, shared_cache):
    # As under nohup. Pending signals are handled lowest number first: were SIGHUP (1) caught, the
    # exit code would be 129 whether or not SIGTERM (15) had arrived yet.
    _stopped_run(tmp_path, shared_cache, signal.SIGHUP, 143, hold_at_epoch=1, ignore=(signal.SIGHUP,),
                 then=signal.SIGTERM)


def test_resume_refuses_other_run_settings_and_files_it_cannot_use(tmp_path, cli):
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": 1, "command": ["xferbench", "run"], "runs": []}))
    assert_one_line_error(cli("run", "--resume", "r.json", "--shots", "5"), "--resume repeats", "leave out --shots")
    assert_one_line_error(cli("run", "--resume", "missing.json"), "no results file at missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema_version": 1, "command": ["python", "x.py"], "runs": []}))
    assert_one_line_error(cli("run", "--resume", "other.json"), "does not record an `xferbench run` command")

