"""``transfer``: the frozen backbone's cached bottlenecks, and a new head trained on them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from xferbench.method import Method, MethodContext
from xferbench.record import RunRecord
from xferbench.runner import HEAD_FILE, LABELS_FILE, RUN_FILE


class Transfer(Method):
    """retrain.py's recipe: bottlenecks once, then only the new final layer learns."""

    uses_heads = True

    def run(self, context: MethodContext) -> RunRecord:
        record = context.record
        train, val, test = (context.features(split) for split in ("train", "val", "test"))
        context.require_splits(train, test)
        head = context.make_head()
        curve: list[dict[str, Any]] = []
        shots = record.shots
        with context.progress.task(f"head {record.head} ({shots} shots)", total=getattr(head, "total_steps", None),
                                   unit="step") as task:
            def on_progress(step: int, val_acc: float | None, elapsed: float) -> None:
                curve.append({"step": step, "seconds": elapsed, "val_accuracy": val_acc})
                task.completed = step
                task.set_status("" if val_acc is None else f"val acc {val_acc:.3f}")

            started = time.perf_counter()
            head.fit(train.x, train.y, val.x, val.y, num_classes=context.num_classes, seed=context.seed,
                     on_progress=on_progress)
            train_seconds = time.perf_counter() - started
        context.score(test, head.predict(test.x))
        save_transfer_run(context, head)
        context.record_features()
        return record.update(status="ok", n_train=len(train), n_val=len(val), n_test=len(test),
                             train_seconds=train_seconds, curve=curve, head_info=head.info(),
                             run_dir=str(context.run_dir))


def save_transfer_run(context: MethodContext, head: Any) -> None:
    """What ``xferbench export`` needs: the head as Keras, the labels and how to rebuild the backbone."""
    from xferbench.atomic import atomic_path, atomic_write_text

    run_dir, record, backbone, harness = context.run_dir, context.record, context.backbone, context.harness
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        keras_head = head.to_keras(backbone.feature_dim)
    except NotImplementedError:
        keras_head = None  # the run still counts; only `xferbench export` will refuse it
    if keras_head is not None:
        with atomic_path(run_dir / HEAD_FILE) as tmp:
            keras_head.save(tmp)
    atomic_write_text(run_dir / LABELS_FILE, "".join(f"{name}\n" for name in context.class_names))
    atomic_write_text(run_dir / RUN_FILE, json.dumps({
        "method": "transfer", "backbone": record.backbone, "backbone_options": context.backbone_options,
        # Absolute paths: export may run from another folder.
        "weights": str(Path(harness.weights).resolve()) if harness.weights else None,
        "cache_dir": str(Path(harness.cache_dir).resolve()),
        "data_dir": str(Path(harness.data_dir).resolve()) if harness.data_dir else None,
        "seed": context.seed, "dataset": record.dataset, "head": record.head, "shots": record.shots,
        "feature_dim": backbone.feature_dim, "weights_sha256": backbone.weights_sha256,
        "class_names": context.class_names,
    }, indent=2, default=str) + "\n")
