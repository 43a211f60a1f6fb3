"""The classic evaluator loop: watch a training run's checkpoints from another process.

Every ``interval`` seconds the newest checkpoint of ``run_dir`` is restored with its
EMA weights into a rebuilt model and scored on the validation split that training
saved, printing ``After <step> training steps, validation accuracy = <acc>``; with a
TensorBoard folder, each accuracy also goes to the training run's TensorBoard run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xferbench import training
from xferbench.errors import Interrupted, UserError
from xferbench.run_folder import RunFolder


def _open_run_folder(run_dir: Path | str) -> RunFolder:
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise UserError(f"run folder {folder.path} does not exist; pass the folder a training run writes "
                        f"(its run_dir in the results JSON)")
    return folder


def evaluate_checkpoint(run_dir: Path | str, checkpoint: str | None = None) -> tuple[int, float | None]:
    """Restore ``checkpoint`` (default: the newest) with EMA weights; return (step, validation accuracy)."""
    folder = _open_run_folder(run_dir)
    status = folder.read_status()
    if status is None:
        raise UserError(f"{folder.path} holds no training status yet; has training started there?")
    checkpoint = checkpoint or folder.latest_checkpoint(status)
    if checkpoint is None:
        raise UserError(f"{folder.path} holds no checkpoint yet")
    x_val, y_val = folder.load_val()
    model = folder.rebuild_model(status)
    step = training.load_checkpoint(model, checkpoint)
    return step, training.accuracy_of(model, x_val, y_val)


def format_line(step: int, accuracy: float | None) -> str:
    shown = "n/a (empty validation split)" if accuracy is None else f"{accuracy:.4f}"
    return f"After {step} training steps, validation accuracy = {shown}"


def _print_now(line: str) -> None:
    # Flushed, so `xferbench evaluate --watch ... | tee log` shows each line as it comes.
    print(line, flush=True)


def watch(run_dir: Path | str, interval: float = 10.0, until_done: bool = False,
          out: Callable[[str], None] = _print_now,
          tensorboard: Path | str | None = None) -> list[tuple[int, float | None]]:
    """Evaluate each new checkpoint of ``run_dir`` as it appears; return what was printed.

    Runs until interrupted (Ctrl-C returns normally; SIGTERM or SIGHUP, raised by the CLI as
    :class:`~xferbench.errors.Interrupted`, propagate), or with ``until_done`` until the final
    checkpoint has been evaluated once the run's status says training is done. A checkpoint that
    training deletes (it keeps the newest 5) before it is read is skipped. With ``tensorboard``
    (``--tensorboard DIR``), each accuracy is also written as ``evaluate/val_accuracy`` at the
    checkpoint's step into ``DIR/<name of run_dir>``, the run ``xferbench run --tensorboard DIR`` writes.
    """
    import tensorflow as tf

    from xferbench.tensorboard import CheckpointLog

    folder = _open_run_folder(run_dir)
    log = CheckpointLog(Path(tensorboard), folder.path) if tensorboard is not None else None
    seen: set[str] = set()
    results: list[tuple[int, float | None]] = []
    model: Any = None
    val: tuple[np.ndarray, np.ndarray] | None = None
    try:
        while True:
            # status before checkpoint: training saves its last checkpoint before it writes done.
            status = folder.read_status()
            newest = folder.latest_checkpoint(status) if status is not None else None
            if newest is not None and newest not in seen:
                seen.add(newest)
                if model is None:
                    model = folder.rebuild_model(status)
                    val = folder.load_val()
                assert val is not None
                try:
                    step = training.load_checkpoint(model, newest)
                except tf.errors.OpError as exc:
                    # Training keeps only the newest 5; one deleted under us is skipped, the
                    # next poll finds a newer one. Anything else is a real failure.
                    if folder.checkpoint_exists(newest):
                        raise UserError(f"cannot restore checkpoint {newest}: {' '.join(exc.message.split())}") from None
                    continue
                accuracy = training.accuracy_of(model, *val)
                results.append((step, accuracy))
                if log is not None:
                    log.write(step, accuracy)
                out(format_line(step, accuracy))
            if until_done and status is not None and status.get("done") and newest in seen:
                return results
            time.sleep(interval)
    except Interrupted:
        raise  # SIGTERM or SIGHUP (the CLI turns them into Interrupted): the process was stopped, not done
    except KeyboardInterrupt:
        return results
    finally:
        if log is not None:
            log.close()
