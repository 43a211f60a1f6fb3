"""``xferbench run --tensorboard DIR``: each finished run as a TensorBoard run, written with ``tf.summary``.

One subfolder per run (named like its run folder) holds its training curves: ``curve/loss`` and
``curve/train_accuracy`` at the steps of the record's ``train_curve`` (window means, at most 200 points),
``curve/val_accuracy`` at each validation evaluation of ``curve`` (``curve/seconds`` beside it); the
final ``test/accuracy``, the extraction figures
(``extract/images_per_second``, ``extract/network_images_per_second``, ``extract/mfu``) and one HParams
record (backbone, dataset, method, head, shots, seed), so runs line up in the HParams dashboard.
A lifecycle-hook consumer, registered for the sweep like the reporters.

``xferbench evaluate --watch RUN_DIR --tensorboard DIR`` adds the watcher's validation accuracy of each
checkpoint (``evaluate/val_accuracy`` at the checkpoint's step) to the same TensorBoard run: the run folders
of a sweep are named like :func:`run_name`, so ``DIR/<name of RUN_DIR>`` is the training run's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from xferbench.hookspecs import hookimpl
from xferbench.record import RunRecord
from xferbench.sweep import Sweep

HPARAMS = ("backbone", "dataset", "method", "head", "shots", "seed")


def run_name(run: RunRecord) -> str:
    head = "" if run.head == "-" else f"-{run.head}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{run.method}-{run.backbone}-{run.dataset}{head}-{run.shots}")


def last_training_step(run: RunRecord) -> int:
    """The step the run's final figures (test accuracy, throughput) are written at: its last curve point."""
    return max((int(p["step"]) for p in [*run.curve, *run.train_curve]), default=0)


def write_run(folder: Path, run: RunRecord, seed: int) -> Path:
    """Write one finished run's event file under ``folder/<run name>``; returns that folder."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    target = Path(folder) / run_name(run)
    writer = tf.summary.create_file_writer(str(target))
    try:
        with writer.as_default():
            hp.hparams({**{name: str(getattr(run, name)) for name in HPARAMS if name != "seed"}, "seed": seed},
                       trial_id=run_name(run))
            for point in run.train_curve:
                tf.summary.scalar("curve/loss", point["loss"], step=int(point["step"]))
                tf.summary.scalar("curve/train_accuracy", point["train_accuracy"], step=int(point["step"]))
            last_step = last_training_step(run)
            for point in run.curve:
                if point.get("val_accuracy") is not None:
                    tf.summary.scalar("curve/val_accuracy", point["val_accuracy"], step=int(point["step"]))
                tf.summary.scalar("curve/seconds", point["seconds"], step=int(point["step"]))
            for tag, value in (("test/accuracy", run.test_accuracy),
                               ("extract/images_per_second", run.extract_images_per_second),
                               ("extract/network_images_per_second", run.extract_forward_images_per_second),
                               ("extract/mfu", run.mfu), ("train/seconds", run.train_seconds)):
                if value is not None:
                    tf.summary.scalar(tag, value, step=last_step)
        writer.flush()
    finally:
        writer.close()
    return target


#: the tag of ``evaluate --watch --tensorboard``: validation accuracy of each checkpoint, at its step
WATCH_TAG = "evaluate/val_accuracy"


class CheckpointLog:
    """Where ``evaluate --watch --tensorboard folder`` writes: the TensorBoard run of the watched run folder."""

    def __init__(self, folder: Path, run_dir: Path | str) -> None:
        self.target = Path(folder) / Path(run_dir).resolve().name
        self._writer: Any = None

    def write(self, step: int, accuracy: float | None) -> None:
        """One evaluated checkpoint, flushed at once so TensorBoard shows it while training goes on."""
        if accuracy is None:  # an empty validation split: nothing to draw
            return
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.target))
        with self._writer.as_default():
            tf.summary.scalar(WATCH_TAG, accuracy, step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TensorBoardLogger:
    """Writes each finished ``ok`` run to ``folder`` (hook ``xferbench_run_finished``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @hookimpl
    def xferbench_run_finished(self, run: RunRecord, sweep: Sweep) -> None:
        if run.status == "ok":
            write_run(self.folder, run, int(sweep.document.get("seed") or 0))


def register(catalog: Any, folder: Path | None) -> TensorBoardLogger | None:
    """Register the logger for ``xferbench run --tensorboard folder`` (None: nothing to do)."""
    if folder is None:
        return None
    logger = TensorBoardLogger(folder)
    catalog.pm.register(logger, name="xferbench-tensorboard")
    return logger
