"""The run folder: the one module that knows its layout and reads and writes its files.

A training run (full retraining, fine-tuning) writes, for the evaluator (``xferbench evaluate``)
and for ``--resume``:

``status.json``
    step, done, how to rebuild the model, where the checkpoints are (rewritten atomically);
``model.keras``
    the architecture (unless the status names a ``rebuild`` target);
``val.npz``
    the validation split (``x``, ``y``; no pickle);
``checkpoints/ckpt-<step>``
    ``tf.train.Checkpoint`` files, the newest 5 kept.

A transfer run writes, for ``xferbench export``: ``head.keras`` (the trained head, when the head
can be written as Keras), ``labels.txt`` (one class name per line, in output order) and
``run.json`` (how to rebuild the backbone). Every file is written atomically.

TensorFlow and Keras are imported inside methods, so importing this module is cheap.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.atomic import atomic_path, atomic_write_text
from xferbench.errors import UserError
from xferbench.specs import resolve_target

if TYPE_CHECKING:
    from xferbench.backbone import Backbone
    from xferbench.context import RunContext

STATUS_FILE = "status.json"
MODEL_FILE = "model.keras"
VAL_FILE = "val.npz"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = "ckpt"
CHECKPOINTS_KEPT = 5
HEAD_FILE = "head.keras"
LABELS_FILE = "labels.txt"
RUN_FILE = "run.json"
#: what a previous training run left behind; only these are removed when a new one starts there
_TRAINING_FILES = (STATUS_FILE, MODEL_FILE, VAL_FILE)


def write_labels(path: Path, class_names: Sequence[str]) -> None:
    """``labels.txt``: one class name per line, in output order (atomically)."""
    atomic_write_text(path, "".join(f"{name}\n" for name in class_names))


def read_labels(path: Path) -> list[str]:
    """The class names of a ``labels.txt``; blank lines are ignored."""
    return [line.rstrip("\r") for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


class RunFolder:
    """One run's folder (``run_dir`` in the results JSON) and every file in it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_dir()

    def create(self) -> None:
        """Make the folder (and its parents); a one-line UserError when that is not possible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run folder {self.path}: {exc.strerror}") from None

    # -- training: status, validation split, model, checkpoints ------------------------------
    def start_training(self, model: Any, x_val: np.ndarray, y_val: np.ndarray,
                       rebuild: tuple[str, Mapping[str, Any]] | None) -> dict[str, Any]:
        """Clear a previous run's files, save the validation split; return the model recipe for the status.

        ``rebuild=("module:function", kwargs)`` names a function that rebuilds the architecture
        in another process; without it the model is saved as ``model.keras``.
        """
        self.create()
        # A stale status.json or checkpoint would make a watching evaluator report the old run.
        for name in _TRAINING_FILES:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        with atomic_path(self.path / VAL_FILE) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=np.asarray(x_val), y=np.asarray(y_val, dtype=np.int64))
        if rebuild is not None:
            target, kwargs = rebuild
            recipe: dict[str, Any] = {"target": target, "kwargs": dict(kwargs)}
            try:
                json.dumps(recipe)
            except TypeError as exc:
                raise UserError(f"rebuild kwargs for {target!r} must be JSON values: {exc}") from None
            return recipe
        try:
            with atomic_path(self.path / MODEL_FILE) as tmp:
                model.save(tmp)
        except Exception as exc:  # Keras raises many types for unserialisable custom layers
            raise UserError(f"cannot save the model architecture to {self.path / MODEL_FILE} "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                            f"pass rebuild=('module:function', kwargs) instead") from None
        return {"file": MODEL_FILE}

    def new_status(self, recipe: Mapping[str, Any]) -> dict[str, Any]:
        """The file fields of a fresh status: the model recipe and where the split and checkpoints are."""
        return {"model": dict(recipe), "val_file": VAL_FILE, "checkpoint_dir": CHECKPOINT_DIR}

    def write_status(self, status: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / STATUS_FILE, json.dumps(status, indent=1) + "\n")

    def read_status(self) -> dict[str, Any] | None:
        """The run's status.json, or None while it does not exist yet."""
        try:
            return json.loads((self.path / STATUS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {self.path / STATUS_FILE}: {exc}") from None

    def load_val(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation split saved at the start of training."""
        try:
            with np.load(self.path / VAL_FILE, allow_pickle=False) as data:
                return data["x"], data["y"]
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"cannot read the validation split {self.path / VAL_FILE}: {exc}") from None

    def rebuild_model(self, status: Mapping[str, Any]) -> Any:
        """The run's architecture, from its ``rebuild`` target or its ``model.keras`` file."""
        import keras

        recipe = status.get("model") or {}
        if "target" in recipe:
            return resolve_target(recipe["target"], f"run {self.path}")(**recipe.get("kwargs", {}))
        if "file" in recipe:
            return keras.models.load_model(self.path / recipe["file"], compile=False)
        raise UserError(f"{self.path / STATUS_FILE} does not say how to rebuild the model")

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def checkpoint_manager(self, checkpoint: Any) -> Any:
        """A ``tf.train.CheckpointManager`` that writes ``checkpoint`` as ``checkpoints/ckpt-<step>``."""
        import tensorflow as tf

        return tf.train.CheckpointManager(checkpoint, str(self.checkpoint_dir), max_to_keep=CHECKPOINTS_KEPT,
                                          checkpoint_name=CHECKPOINT_NAME)

    def latest_checkpoint(self, status: Mapping[str, Any] | None = None) -> str | None:
        """Path prefix of the newest checkpoint (in the folder ``status`` names), or None before the first."""
        import tensorflow as tf

        folder = (status or {}).get("checkpoint_dir", CHECKPOINT_DIR)
        return tf.train.latest_checkpoint(str(self.path / folder))

    @staticmethod
    def checkpoint_exists(prefix: str) -> bool:
        """Whether the checkpoint ``prefix`` is still on disk (training deletes all but the newest few)."""
        return Path(prefix + ".index").exists()

    # -- transfer runs: what `xferbench export` needs ------------------------------------------
    def save_transfer_run(self, *, backbone_token: str, dataset_token: str, head_token: str, shots: Any,
                          backbone: Backbone, head: Any, class_names: list[str], context: RunContext,
                          backbone_options: Mapping[str, Any], dataset_options: Mapping[str, Any] | None = None,
                          test_accuracy: float | None = None) -> None:
        """The head as Keras, the labels, how to rebuild the backbone and the dataset, and the test accuracy.

        The dataset's options and the harness's test accuracy let a TFLite export score itself on the
        same test split and compare (``xferbench export --format tflite``).
        """
        self.create()
        try:
            keras_head = head.to_keras(backbone.feature_dim)
        except NotImplementedError:
            keras_head = None  # the run still counts; only `xferbench export` will refuse it
        if keras_head is not None:
            with atomic_path(self.path / HEAD_FILE) as tmp:
                keras_head.save(tmp)
        write_labels(self.path / LABELS_FILE, class_names)
        atomic_write_text(self.path / RUN_FILE, json.dumps({
            "method": "transfer", "backbone": backbone_token, "backbone_options": dict(backbone_options),
            # Absolute paths: export may run from another folder.
            "weights": str(Path(context.weights).resolve()) if context.weights else None,
            "cache_dir": str(Path(context.cache_dir).resolve()),
            "data_dir": str(Path(context.data_dir).resolve()) if context.data_dir else None,
            "seed": context.seed, "dataset": dataset_token, "dataset_options": dict(dataset_options or {}),
            "head": head_token, "shots": shots, "test_accuracy": test_accuracy,
            "feature_dim": backbone.feature_dim, "weights_sha256": backbone.weights_sha256,
            "class_names": class_names,
        }, indent=2, default=str) + "\n")

    def missing_transfer_file(self) -> str | None:
        """The first file of a transfer run that the folder lacks, or None when all are there."""
        for name in (RUN_FILE, HEAD_FILE, LABELS_FILE):
            if not (self.path / name).is_file():
                return name
        return None

    def read_run_record(self) -> dict[str, Any]:
        """``run.json`` as written; raises OSError, UnicodeDecodeError or json.JSONDecodeError."""
        return json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))

    def read_labels(self) -> list[str]:
        return read_labels(self.path / LABELS_FILE)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def head_file(self) -> Path:
        return self.path / HEAD_FILE

    @property
    def labels_file(self) -> Path:
        return self.path / LABELS_FILE
