"""The classic evaluator loop: watch a training run's checkpoints from another process.

Every ``interval`` seconds the newest checkpoint of ``run_dir`` is restored with its
EMA weights into a rebuilt model and scored on the validation split that training
saved, printing ``After <step> training steps, validation accuracy = <acc>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xferbench import training
from xferbench.errors import Interrupted, UserError


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; pass the folder a training run writes "
                        f"(it holds status.json and checkpoints/)")


def latest_checkpoint(run_dir: Path, status: dict[str, Any]) -> str | None:
    """Path prefix of the newest checkpoint, or None before the first one."""
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(run_dir / status.get("checkpoint_dir", training.CHECKPOINT_DIR)))


def evaluate_checkpoint(run_dir: Path | str, checkpoint: str | None = None) -> tuple[int, float | None]:
    """Restore ``checkpoint`` (default: the newest) with EMA weights; return (step, validation accuracy)."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    status = training.read_status(run_dir)
    if status is None:
        raise UserError(f"{run_dir} holds no status.json yet; has training started there?")
    checkpoint = checkpoint or latest_checkpoint(run_dir, status)
    if checkpoint is None:
        raise UserError(f"{run_dir} holds no checkpoint yet")
    x_val, y_val = training.load_val(run_dir)
    model = training.rebuild_model(run_dir, status)
    step = training.load_checkpoint(model, checkpoint)
    return step, training.accuracy_of(model, x_val, y_val)


def format_line(step: int, accuracy: float | None) -> str:
    shown = "n/a (empty validation split)" if accuracy is None else f"{accuracy:.4f}"
    return f"After {step} training steps, validation accuracy = {shown}"


def _print_now(line: str) -> None:
    # Flushed, so `xferbench evaluate --watch ... | tee log` shows each line as it comes.
    print(line, flush=True)


def watch(run_dir: Path | str, interval: float = 10.0, until_done: bool = False,
          out: Callable[[str], None] = _print_now) -> list[tuple[int, float | None]]:
    """Evaluate each new checkpoint of ``run_dir`` as it appears; return what was printed.

    Runs until interrupted (Ctrl-C returns normally; SIGTERM or SIGHUP, raised by the CLI as
    :class:`~xferbench.errors.Interrupted`, propagate), or with ``until_done`` until the final
    checkpoint has been evaluated once status.json says training is done. A checkpoint that
    training deletes (it keeps the newest 5) before it is read is skipped.
    """
    import tensorflow as tf

    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    seen: set[str] = set()
    results: list[tuple[int, float | None]] = []
    model: Any = None
    val: tuple[np.ndarray, np.ndarray] | None = None
    try:
        while True:
            # status before checkpoint: training saves its last checkpoint before it writes done.
            status = training.read_status(run_dir)
            newest = latest_checkpoint(run_dir, status) if status is not None else None
            if newest is not None and newest not in seen:
                seen.add(newest)
                if model is None:
                    model = training.rebuild_model(run_dir, status)
                    val = training.load_val(run_dir)
                assert val is not None
                try:
                    step = training.load_checkpoint(model, newest)
                except tf.errors.OpError as exc:
                    # Training keeps only the newest 5; one deleted under us is skipped, the
                    # next poll finds a newer one. Anything else is a real failure.
                    if Path(newest + ".index").exists():
                        raise UserError(f"cannot restore checkpoint {newest}: {' '.join(exc.message.split())}") from None
                    continue
                accuracy = training.accuracy_of(model, *val)
                results.append((step, accuracy))
                out(format_line(step, accuracy))
            if until_done and status is not None and status.get("done") and newest in seen:
                return results
            time.sleep(interval)
    except Interrupted:
        raise  # SIGTERM or SIGHUP (the CLI turns them into Interrupted): the process was stopped, not done
    except KeyboardInterrupt:
        return results
