"""``transfer``: the frozen backbone's cached bottlenecks, and a new head trained on them."""

from __future__ import annotations

import time
from typing import Any

from xferbench.method import Method, MethodContext
from xferbench.record import RunRecord
from xferbench.run_folder import RunFolder


class Transfer(Method):
    """retrain.py's recipe: bottlenecks once, then only the new final layer learns."""

    uses_heads = True

    def run(self, context: MethodContext) -> RunRecord:
        record = context.record
        train, val, test = context.training_features(), context.features("val"), context.features("test")
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
            eval_seconds = float(getattr(head, "eval_seconds", 0.0) or 0.0)
            train_seconds = time.perf_counter() - started - eval_seconds
        context.score(test, head.predict(test.x))
        val_accuracy = float((head.predict(val.x) == val.y).mean()) if len(val) else None
        save_transfer_run(context, head)
        record.update(status="ok", n_train=len(train), n_val=len(val), n_test=len(test), train_seconds=train_seconds,
                      eval_seconds=eval_seconds, val_accuracy=val_accuracy, curve=curve,
                      train_curve=steps.points() if (steps := getattr(head, "step_curve", None)) else [],
                      head_info=head.info(),
                      run_dir=str(context.run_dir))
        context.record_features()
        return record


def save_transfer_run(context: MethodContext, head: Any) -> None:
    """What ``xferbench export`` needs: the head as Keras, the labels and how to rebuild the backbone."""
    record = context.record
    RunFolder(context.run_dir).save_transfer_run(
        backbone_token=record.backbone, dataset_token=record.dataset, head_token=record.head, shots=record.shots,
        backbone=context.backbone, head=head, class_names=context.class_names, context=context.harness,
        backbone_options=context.backbone_options, dataset_options=context.dataset_options,
        test_accuracy=record.test_accuracy)
