"""``xferbench ARGS`` whose training stops at a known point and waits there for the test's signal.

Run as ``python held_cli.py ARGS`` with ``XFERBENCH_TEST_HOLD_EPOCH=N`` and
``XFERBENCH_TEST_HOLD_FD=FD`` (see :class:`support.procs.Child`). The first training run with a
run folder (full retraining, fine-tuning) finishes epoch N (a checkpoint is on disk when N is a
multiple of the runner's checkpoint interval), writes ``held`` to FD and waits: a signal raises
out of the wait, as it would out of a training step. A child whose test has gone (it was
re-parented) exits instead of waiting for ever.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from xferbench import cli, training

HOLD_EPOCH = int(os.environ["XFERBENCH_TEST_HOLD_EPOCH"])
HOLD_FD = int(os.environ["XFERBENCH_TEST_HOLD_FD"])
_train_model = training.train_model
_held = False


def _hold() -> None:
    global _held
    _held = True
    parent = os.getppid()
    os.write(HOLD_FD, b"held\n")
    os.close(HOLD_FD)
    while os.getppid() == parent:
        time.sleep(0.05)  # short sleeps: signal handlers run between them
    raise SystemExit("held_cli: the test holding this process has gone")


def train_model(*args: Any, run_dir: Any = None, on_epoch: Any = None, **kwargs: Any) -> Any:
    if run_dir is None or _held:  # fine-tuning's linear probe, or the hold is spent
        return _train_model(*args, run_dir=run_dir, on_epoch=on_epoch, **kwargs)

    def on_epoch_then_hold(epoch: int) -> None:
        if on_epoch is not None:
            on_epoch(epoch)
        if epoch == HOLD_EPOCH and not _held:
            _hold()

    return _train_model(*args, run_dir=run_dir, on_epoch=on_epoch_then_hold, **kwargs)


training.train_model = train_model

if __name__ == "__main__":
    sys.exit(cli.main())
