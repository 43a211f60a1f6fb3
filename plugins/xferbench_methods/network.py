"""``full`` and ``finetune``: the whole network is trained, the classic TensorFlow way.

Both keep an exponential moving average of the weights, evaluate it on the validation
split every epoch (the curve) and write checkpoints into the run folder, so
``xferbench evaluate --watch`` can follow them and ``--resume`` can go on from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xferbench.method import Method, MethodContext, SplitData
from xferbench.record import RunRecord

OPTIMIZER = "adam"


class NetworkTraining(Method):
    """Train ``backbone.build_model(...)`` end to end; subclasses choose the start and the rate."""

    pretrained = False
    label = "full training"
    #: it trains on model inputs, not on bottlenecks: a Ray sweep extracts no features for it
    uses_features = False

    def run(self, context: MethodContext) -> RunRecord:
        from xferbench import training

        record = context.record
        train, val, test = (context.inputs(split) for split in ("train", "val", "test"))
        context.require_splits(train, test)
        distribution = training.distribution(self.options["strategy"])
        with distribution.scope():  # the model's variables are mirrored on every replica
            model = context.backbone.build_model(context.num_classes, pretrained=self.pretrained, seed=context.seed)
        epochs, batch_size = context.budget.effective_epochs, self.options["batch_size"]
        steps_per_epoch = max(1, -(-len(train) // batch_size))
        with context.progress.task(f"{self.label} {record.backbone} ({record.shots} shots)", total=epochs,
                                   unit="epoch") as task:
            def on_progress(step: int, val_acc: float | None, elapsed: float) -> None:
                task.set_status("" if val_acc is None else f"step {step}, val acc {val_acc:.3f}")

            common = dict(batch_size=batch_size, optimizer=OPTIMIZER, seed=context.seed,
                          ema_decay=self.options["ema_decay"], eval_every_steps=None, augment=on_the_fly(context),
                          distribution=distribution,
                          on_epoch=lambda epoch: task.advance(epoch - task.completed))  # resumed: not from 0
            outcome = training.train_model(
                model, train.x, train.y, val.x, val.y, epochs=epochs, budget_seconds=context.budget.seconds,
                learning_rate=self.options["learning_rate"], run_dir=context.run_dir,
                checkpoint_every_steps=steps_per_epoch * self.options["checkpoint_every"], on_progress=on_progress,
                prologue=self.prologue(context, model, train, val, common), resume=context.resume, **common)
            task.completed = outcome.epochs  # fractional when the budget stopped it mid-epoch
            if outcome.stopped_by == "budget":
                task.set_status(f"stopped by --full-budget at step {outcome.steps}")
        context.score(test, outcome.predict_proba(test.x).argmax(axis=1))
        if context.augmentation is not None:
            record.augment = {**context.augmentation.describe(), "applied": "on the fly"}
        return record.update(
            status="ok", n_train=len(train), n_val=len(val), n_test=len(test),
            skipped_files=context.dataset.skipped_counts(), train_seconds=outcome.seconds, curve=outcome.curve,
            train_curve=outcome.train_curve,
            eval_seconds=outcome.eval_seconds, cold_seconds=outcome.seconds, warm_seconds=outcome.seconds,
            val_accuracy=outcome.val_accuracy, strategy=distribution.name, replicas=distribution.replicas,
            training={"steps": outcome.steps, "epochs": outcome.epochs, "stopped_by": outcome.stopped_by,
                      "resumed_from_step": outcome.resumed_from_step, "setup_seconds": outcome.setup_seconds,
                      "eval_seconds": outcome.eval_seconds,
                      "final_val_accuracy": outcome.val_accuracy, "optimizer": OPTIMIZER,
                      "ema_decay": self.options["ema_decay"], "run_dir": str(context.run_dir)},
            backbone_info=context.backbone.info(), run_dir=str(context.run_dir))

    def prologue(self, context: MethodContext, model: Any, train: SplitData, val: SplitData,
                 common: dict[str, Any]) -> Callable[[], Any] | None:
        """Work before the first step of a fresh (not resumed) run; its time counts as training."""
        return None


class FullTraining(NetworkTraining):
    """The same architecture from random initialisation: what transfer learning is measured against."""

    requires = "full"


class FineTuning(NetworkTraining):
    """LP-FT (Kumar et al., 2022): train the new softmax layer on the frozen network first, so
    unfreezing does not push random-head gradients into good features; then train everything."""

    requires = "finetune"
    pretrained = True
    label = "fine-tuning"

    def prologue(self, context: MethodContext, model: Any, train: SplitData, val: SplitData,
                 common: dict[str, Any]) -> Callable[[], Any] | None:
        return lambda: self._linear_probe(context, model, train, val, common)

    def _linear_probe(self, context: MethodContext, model: Any, train: SplitData, val: SplitData,
                      common: dict[str, Any]) -> None:
        from xferbench import training

        _set_backbone_trainable(model, False)
        steps_per_epoch = max(1, -(-len(train) // common["batch_size"]))
        # At least ~300 steps: with few shots an epoch is a single step, far too few for a new layer.
        probe_epochs = max((context.budget.effective_epochs or 10) // 2, -(-300 // steps_per_epoch))
        budget = context.budget.seconds
        try:
            training.train_model(model, train.x, train.y, val.x, val.y, epochs=probe_epochs,
                                 budget_seconds=None if budget is None else budget / 2,
                                 learning_rate=self.options["probe_learning_rate"], run_dir=None,
                                 **{**common, "on_epoch": None, "eval_every_steps": 100})
        finally:
            _set_backbone_trainable(model, True)


def on_the_fly(context: MethodContext) -> Callable[[Any], Any] | None:
    """``--augment`` for a training step: a fresh distortion of every batch, seeded by the run's seed."""
    if context.augmentation is None:
        return None
    import tensorflow as tf

    from xferbench.backbone import NetworkBackbone
    from xferbench.errors import UserError

    if not isinstance(context.backbone, NetworkBackbone):
        raise UserError(f"--augment needs a backbone built on NetworkBackbone; {context.backbone.name!r} is not one")
    return BatchDistortion(context.backbone.model_preprocessing, context.augmentation,
                           tf.random.Generator.from_seed(context.seed))


class BatchDistortion:
    """A fresh distortion of every training batch; ``train_model`` checkpoints its ``generator``."""

    def __init__(self, preprocessing: Any, settings: Any, generator: Any) -> None:
        self.preprocessing, self.settings, self.generator = preprocessing, settings, generator

    def __call__(self, batch: Any) -> Any:
        from xferbench.augment import tf_distort_batch

        return tf_distort_batch(batch, self.preprocessing, self.settings, self.generator)


def _set_backbone_trainable(model: Any, trainable: bool) -> None:
    """Everything but the final (new) classifier layer."""
    for layer in model.layers[:-1]:
        layer.trainable = trainable
