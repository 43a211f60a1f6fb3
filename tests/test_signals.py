"""The signal tests mean the same however pytest was started: here, under a parent that ignores SIGINT."""

from __future__ import annotations

import signal
import sys

import pytest

from support.cli import REPO
from support.procs import Child
from xferbench.cli import stop_signals_interrupt
from xferbench.errors import Interrupted, interrupt_exit_code

# The cheapest Ctrl-C test. Its Child also checks that SIGHUP, which nohup ignores, is back at its default.
SIGNAL_TESTS = ["tests/test_training.py::test_watcher_stops_cleanly_on_ctrl_c[SIGINT]"]


@pytest.mark.slow
def test_signal_tests_pass_when_pytest_starts_with_sigint_and_sighup_ignored(tmp_path):
    # As under `nohup sh -c 'python -m pytest ...' &`: such a pytest passes SIGINT and SIGHUP on ignored
    # to every child it starts, unless the child is started through support.procs.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "--basetemp", str(tmp_path / "inner"),
               *SIGNAL_TESTS]
    with Child(command, log_dir=tmp_path / "log", cwd=REPO, ignore=(signal.SIGINT, signal.SIGHUP)) as pytest_run:
        assert pytest_run.wait(timeout=600) == 0, pytest_run.stdout()[-5000:]
        assert f"{len(SIGNAL_TESTS)} passed" in pytest_run.stdout(), pytest_run.stdout()[-5000:]


def test_a_stop_signal_raises_interrupted_once_and_a_second_one_takes_its_default_action():
    # SIGHUP as in a terminal: under nohup pytest starts with it ignored, which the next test covers.
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        before = signal.getsignal(signal.SIGTERM)
        with stop_signals_interrupt():
            with pytest.raises(KeyboardInterrupt) as caught:  # what every Ctrl-C path already handles
                signal.raise_signal(signal.SIGTERM)
            assert isinstance(caught.value, Interrupted) and caught.value.signum == signal.SIGTERM
            assert interrupt_exit_code(caught.value) == 143 and caught.value.signal_name == "SIGTERM"
            # A second SIGTERM or SIGHUP would end the process at once, cleanup or not.
            assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) == before
        assert interrupt_exit_code(KeyboardInterrupt()) == 130 and Interrupted(signal.SIGHUP).exit_code == 129
    finally:
        signal.signal(signal.SIGHUP, hangup)


def test_a_stop_signal_ignored_at_start_stays_ignored():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with stop_signals_interrupt():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)  # nothing happens
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
