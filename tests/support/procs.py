"""Subprocesses for tests that signal them: known signal dispositions, a hold point, sure cleanup.

A test that sends SIGINT must not depend on how pytest itself was started: under ``nohup`` or
as a background job (``... &`` in a script) every child inherits SIGINT (and SIGHUP) ignored,
and a Python process that starts so never raises KeyboardInterrupt. :class:`Child` starts its
process with SIGINT, SIGTERM and SIGHUP at their default action (or ignored, when the test asks),
checks in ``/proc`` that this took effect, and kills and reaps the process and everything it
started, whatever the outcome of the test.

With ``hold_at_epoch=N`` the child is ``xferbench`` run through :mod:`held_cli`: its first
training run with a run folder (full retraining, fine-tuning) stops after epoch N, tells the
test, and waits there for the signal. So a test never races the clock.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from support.cli import REPO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
HELD_CLI = Path(__file__).with_name("held_cli.py")


def ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores (``SigIgn`` in /proc/PID/status, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {signum for signum in range(1, 65) if mask >> (signum - 1) & 1}
    raise AssertionError(f"no SigIgn line in /proc/{pid}/status")


def _descendants(pid: int) -> list[int]:
    """Processes started by ``pid``, their children and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in field 2 may hold spaces and parentheses: the ppid follows the last ')'.
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Child:
    """A subprocess whose stop signals are known; use it as a context manager.

    ``ignore`` lists stop signals the child starts with ignored (as under ``nohup``); the other
    ones in :data:`STOP_SIGNALS` are at their default action. stdout and stderr go to files in
    ``log_dir``: a pipe nobody reads could block the child before its hold point. With
    ``hold_at_epoch``, ``argv`` is the arguments of ``xferbench`` (run through :mod:`held_cli`).
    ``stdin_pipe`` gives the test ``process.stdin`` to write to.
    """

    def __init__(self, argv: Sequence[str], *, log_dir: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, ignore: Sequence[int] = (),
                 hold_at_epoch: int | None = None, stdin_pipe: bool = False) -> None:
        self.ignore = tuple(ignore)
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(env or {})}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
        self._held_pipe: int | None = None
        pass_fds: tuple[int, ...] = ()
        if hold_at_epoch is not None:
            read_end, write_end = os.pipe()
            self._held_pipe, pass_fds = read_end, (write_end,)
            full_env.update(XFERBENCH_TEST_HOLD_EPOCH=str(hold_at_epoch), XFERBENCH_TEST_HOLD_FD=str(write_end))
            argv = [sys.executable, str(HELD_CLI), *argv]
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(list(argv), cwd=cwd or REPO, env=full_env, text=True,
                                            stdin=subprocess.PIPE if stdin_pipe else None, stdout=out, stderr=err,
                                            pass_fds=pass_fds, preexec_fn=self._set_signals)
        for fd in pass_fds:
            os.close(fd)  # the child holds the only write end: its exit reads as end of file
        try:
            ignored = ignored_signals(self.process.pid) & set(STOP_SIGNALS)
            assert ignored == set(self.ignore), f"child ignores {sorted(ignored)}, wanted {sorted(self.ignore)}"
        except BaseException:
            self.close()
            raise

    def _set_signals(self) -> None:  # runs in the child between fork and exec
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN if signum in self.ignore else signal.SIG_DFL)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Kill the child and whatever it started (unless already gone), and reap it."""
        if self.process.poll() is None:
            for pid in [*_descendants(self.process.pid), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        if self._held_pipe is not None:
            os.close(self._held_pipe)
            self._held_pipe = None

    def wait_until_held(self, timeout: float = 600) -> None:
        """Block until the child reached its hold point (``hold_at_epoch``); fail if it ended first."""
        assert self._held_pipe is not None, "started without hold_at_epoch"
        ready, _, _ = select.select([self._held_pipe], [], [], timeout)
        message = os.read(self._held_pipe, 64) if ready else b""
        assert message == b"held\n", (
            f"the child did not reach its hold point ({'it ended' if ready else f'not within {timeout} s'}; "
            f"exit code {self.process.poll()}): {self.stderr()[-3000:]}")

    def send(self, signum: int) -> None:
        assert self.process.poll() is None, f"the child ended before the signal: {self.stderr()[-3000:]}"
        self.process.send_signal(signum)

    def wait_for_output(self, text: str, timeout: float = 300) -> None:
        """Block until ``text`` is on the child's stdout; fail if the child ended first."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout():
            assert self.process.poll() is None, f"the child ended first: {self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, f"{text!r} not printed within {timeout} s"
            time.sleep(0.05)  # a poll interval, not a synchronisation

    def wait(self, timeout: float = 120) -> int:
        """The child's exit code once it ended by itself (a timeout fails the test; close() kills it)."""
        return self.process.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()
