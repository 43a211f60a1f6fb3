"""The run folder: one owner of its layout, written atomically, read back by evaluate, export and resume."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from xferbench.errors import UserError
from xferbench.export import read_run
from xferbench.run_folder import RunFolder

REBUILD = ("keras.layers:Dense", {"units": 3})


def test_a_new_training_run_clears_the_previous_runs_files_only(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start_training(None, np.zeros((2, 4), np.float32), [0, 1], REBUILD)
    folder.write_status({"step": 7, "done": True, **folder.new_status({"target": REBUILD[0]})})
    (folder.checkpoint_dir / "ckpt-7.index").parent.mkdir(parents=True, exist_ok=True)
    (folder.checkpoint_dir / "ckpt-7.index").write_bytes(b"old")
    notes = folder.path / "my-notes.txt"
    notes.write_text("mine")

    recipe = folder.start_training(None, np.ones((3, 4), np.float32), np.array([2, 1, 0]), REBUILD)

    assert recipe == {"target": REBUILD[0], "kwargs": REBUILD[1]}
    assert folder.read_status() is None  # a watching evaluator must not report the old run
    assert not folder.checkpoint_dir.exists()
    assert notes.read_text() == "mine"
    x, y = folder.load_val()
    assert x.shape == (3, 4) and y.dtype == np.int64 and y.tolist() == [2, 1, 0]
    assert not list(folder.path.glob(".tmp-*"))  # atomic writes leave no temp files


def test_status_round_trips_and_a_damaged_one_is_a_one_line_error(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.read_status() is None
    status = {"step": 3, "done": False, "curve": [{"step": 3, "val_accuracy": 0.5}]}
    folder.write_status(status)
    assert folder.read_status() == status
    (tmp_path / "status.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read .*status.json"):
        folder.read_status()
    with pytest.raises(UserError, match="cannot read the validation split"):
        folder.load_val()


def test_unserialisable_rebuild_arguments_are_refused(tmp_path):
    with pytest.raises(UserError, match="must be JSON values"):
        RunFolder(tmp_path).start_training(None, np.zeros((1, 1)), [0], ("m:f", {"x": object()}))


def test_the_newest_checkpoint_is_found_and_old_ones_are_pruned(tmp_path):
    import tensorflow as tf

    folder = RunFolder(tmp_path)
    assert folder.latest_checkpoint() is None
    step = tf.Variable(0, dtype=tf.int64)
    manager = folder.checkpoint_manager(tf.train.Checkpoint(step=step))
    for number in range(1, 8):
        step.assign(number)
        manager.save(checkpoint_number=number)
    newest = folder.latest_checkpoint({"checkpoint_dir": "checkpoints"})
    assert newest is not None and Path(newest).name == "ckpt-7"
    assert folder.checkpoint_exists(newest)
    assert not folder.checkpoint_exists(str(folder.checkpoint_dir / "ckpt-1"))  # only the newest 5 are kept
    assert len(list(folder.checkpoint_dir.glob("*.index"))) == 5


class _NoKerasHead:
    def to_keras(self, feature_dim: int):
        raise NotImplementedError


def test_a_transfer_run_is_read_back_by_export_and_a_head_without_keras_is_refused(tmp_path):
    folder = RunFolder(tmp_path / "run")
    backbone = types.SimpleNamespace(feature_dim=4, weights_sha256="ab" * 32)
    context = types.SimpleNamespace(weights=None, cache_dir=tmp_path / "cache", data_dir=None, seed=3)
    folder.save_transfer_run(backbone_token="lenet5", dataset_token="digits:5-9", head_token="softmax", shots=5,
                             backbone=backbone, head=_NoKerasHead(), class_names=["five", "six"], context=context,
                             backbone_options={"pretrain_epochs": 1})
    assert folder.read_labels() == ["five", "six"]
    record = folder.read_run_record()
    assert record["backbone_options"] == {"pretrain_epochs": 1} and record["shots"] == 5
    assert Path(record["cache_dir"]).is_absolute()
    assert folder.missing_transfer_file() == "head.keras"
    with pytest.raises(UserError, match="no head.keras in it"):
        read_run(folder.path)
    folder.head_file.write_bytes(b"")  # what export reads next; its content is export's business
    run = read_run(folder.path)
    assert (run.backbone, run.seed, run.feature_dim, run.class_names) == ("lenet5", 3, 4, ["five", "six"])
