"""The signal tests mean the same however pytest was started: here, under a parent that ignores SIGINT."""

from __future__ import annotations

import signal
import sys

import pytest

from support.cli import REPO
from support.procs import Child

# The cheapest Ctrl-C test. Its Child also checks that SIGHUP, which nohup ignores, is back at its default.
SIGNAL_TESTS = ["tests/test_training.py::test_watcher_stops_cleanly_on_ctrl_c[SIGINT]"]


@pytest.mark.slow
def test_signal_tests_pass_when_pytest_starts_with_sigint_and_sighup_ignored(tmp_path):
    # As under `nohup sh -c 'python -m pytest ...' &`: such a pytest passes SIGINT and SIGHUP on ignored
    # to every child it starts, unless the child is started through support.procs.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"),
               *SIGNAL_TESTS]
    with Child(command, log_dir=tmp_path / "log", cwd=REPO, ignore=(signal.SIGINT, signal.SIGHUP)) as pytest_run:
        assert pytest_run.wait(timeout=600) == 0, pytest_run.stdout()[-5000:]
        assert f"{len(SIGNAL_TESTS)} passed" in pytest_run.stdout(), pytest_run.stdout()[-5000:]
