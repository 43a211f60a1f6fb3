"""Full retraining and fine-tuning of a whole Keras network, the classic TF way.

A custom loop (``tf.GradientTape`` in a ``tf.function``) keeps an exponential moving
average of the trainable weights like ``tf.train.ExponentialMovingAverage``; evaluation
uses the averaged weights. With a ``run_dir`` the loop writes what a separate evaluator
process (:mod:`xferbench.evaluate`) and a resumed run need: status, the architecture, the
validation split and ``tf.train.Checkpoint`` files of ``step``, all model ``weights``, the
``ema`` shadows and the ``optimizer`` state (:class:`xferbench.run_folder.RunFolder` owns
their layout), so an interrupted run can go on from its newest checkpoint (``resume``).

TensorFlow and Keras are imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xferbench.errors import UserError
from xferbench.head import ProgressCallback
from xferbench.run_folder import RunFolder
from xferbench.step_curve import StepCurve

OPTIMIZERS = ("sgd", "momentum", "adam")
#: ``--method-opt strategy=`` of ``full`` and ``finetune``
STRATEGIES = ("auto", "mirrored", "none")

StopReason = Literal["epochs", "budget"]


@dataclass
class TrainingResult:
    """What the loop reached. ``model`` holds the EMA weights on return."""

    model: Any
    steps: int
    epochs: float  # completed passes over the training set, fractional
    seconds: float  # wall time of the loop, checkpoints included, the validation evaluations not
    stopped_by: StopReason
    val_accuracy: float | None  # of the EMA weights at the last step
    #: time-to-accuracy: ``{"step", "seconds", "val_accuracy"}`` at every evaluation (EMA weights)
    curve: list[dict[str, Any]] = field(default_factory=list)
    #: the training batches' loss and accuracy: ``{"step", "loss", "train_accuracy"}``, at most 200 windows
    train_curve: list[dict[str, Any]] = field(default_factory=list)
    #: the checkpoint step training went on from (``resume=True``), else None
    resumed_from_step: int | None = None
    checkpoint: str | None = None  # path prefix of the final checkpoint
    setup_seconds: float = 0.0  # before the loop: run-dir files, tf.function tracing (not in the budget)
    eval_seconds: float = 0.0  # spent scoring the validation split for the curve (not in ``seconds``)

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return predict_proba(self.model, x, batch_size=batch_size)


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax outputs of ``model`` in inference mode, batch by batch.

    Call it on the model that :func:`train_model` returned (or :func:`load_checkpoint`
    restored): that model holds the EMA weights.
    """
    x = np.asarray(x)
    if len(x) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        # Keras' predict_on_batch hands the whole batch to every replica and concatenates their
        # outputs (one row per replica per image); one device's forward pass is what scoring needs.
        forward = _inference_function(model)
        parts = [np.asarray(forward(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts)
    # predict_on_batch compiles its function once per model and reuses it.
    parts = [np.asarray(model.predict_on_batch(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def _inference_function(model: Any) -> Any:
    """``model(x, training=False)`` as a tf.function, traced once per model (for a mirrored model)."""
    forward = getattr(model, "_xferbench_inference", None)
    if forward is None:
        import tensorflow as tf

        forward = tf.function(lambda xb: model(xb, training=False), reduce_retracing=True)
        model._xferbench_inference = forward
    return forward


@dataclass(frozen=True)
class Distribution:
    """How a network trains: ``strategy`` is a ``tf.distribute.MirroredStrategy``, or None for one device."""

    name: str  # "mirrored" or "none"
    replicas: int
    strategy: Any = None

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Build the model (and anything else holding variables) inside it."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def distribution(name: str) -> Distribution:
    """``strategy=`` of ``full``/``finetune``: ``mirrored`` mirrors the model on every visible GPU (on every
    logical CPU device when there is no GPU), ``none`` trains on one device, ``auto`` is mirrored with at
    least 2 GPUs, else none (as make_image_classifier's ``--distribution_strategy``)."""
    if name not in STRATEGIES:
        raise UserError(f"unknown training strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        name = "mirrored" if len(gpus) >= 2 else "none"
    if name == "none":
        return Distribution("none", 1)
    devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    return Distribution("mirrored", strategy.num_replicas_in_sync, strategy)


def accuracy_of(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float | None:
    """Top-1 accuracy, or None on an empty split."""
    if len(y) == 0:
        return None
    return float(np.mean(predict_proba(model, x, batch_size).argmax(axis=1) == np.asarray(y)))


def ema_decay_at(step: int, decay: float) -> float:
    """The decay applied by the ``step``-th update (1-based), as ``ExponentialMovingAverage(num_updates=step)``.

    ``min(decay, (1 + step) / (10 + step))``: early on the average follows the weights
    quickly, so short runs are not judged on their random initialisation.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


@contextlib.contextmanager
def ema_weights(variables: Sequence[Any], shadows: Sequence[Any]) -> Iterator[None]:
    """Temporarily give ``variables`` the values of their ``shadows``; restore them on exit."""
    backup = [np.asarray(v.numpy()) for v in variables]
    for v, s in zip(variables, shadows, strict=True):
        v.assign(s)
    try:
        yield
    finally:
        for v, b in zip(variables, backup, strict=True):
            v.assign(b)


def _make_optimizer(name: str, learning_rate: float) -> Any:
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise UserError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def _check_inputs(model: Any, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  epochs: int | None, budget_seconds: float | None, batch_size: int,
                  checkpoint_every_steps: int) -> int:
    """Validate the arguments; return the number of classes of the model's output."""
    if epochs is None and budget_seconds is None:
        raise UserError("full retraining needs a stopping rule: give a number of epochs or a time budget")
    if epochs is not None and epochs < 1:
        raise UserError(f"epochs must be at least 1, got {epochs}")
    if budget_seconds is not None and budget_seconds <= 0:
        raise UserError(f"the training time budget must be positive, got {budget_seconds}s")
    if batch_size < 1 or checkpoint_every_steps < 1:
        raise UserError("batch_size and checkpoint_every_steps must be at least 1")
    if len(x_train) == 0 or len(x_train) != len(y_train) or len(x_val) != len(y_val):
        raise UserError(f"training needs matching, non-empty inputs and labels (train {len(x_train)} inputs, "
                        f"{len(y_train)} labels; val {len(x_val)} inputs, {len(y_val)} labels)")
    num_classes = int(model.outputs[0].shape[-1])
    for split, labels in (("training", y_train), ("validation", y_val)):
        if len(labels) and (np.min(labels) < 0 or np.max(labels) >= num_classes):
            raise UserError(f"{split} labels must lie in 0..{num_classes - 1} (the model has {num_classes} outputs)")
    return num_classes


def train_model(model: Any, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
                epochs: int | None, budget_seconds: float | None, batch_size: int = 32, learning_rate: float,
                seed: int, ema_decay: float = 0.99, run_dir: Path | str | None = None,
                checkpoint_every_steps: int = 1000, eval_every_steps: int | None = None, min_evaluations: int = 20,
                optimizer: str = "sgd", rebuild: tuple[str, Mapping[str, Any]] | None = None,
                on_progress: ProgressCallback | None = None,
                on_epoch: Callable[[int], None] | None = None, resume: bool = False,
                prologue: Callable[[], Any] | None = None, augment: Callable[[Any], Any] | None = None,
                distribution: Distribution | None = None) -> TrainingResult:
    """Train ``model`` (Keras 3, softmax outputs) on sparse labels with cross-entropy.

    Stops after ``epochs`` passes or ``budget_seconds`` of wall time, whichever comes first
    (at least one step is always taken); the clock starts after setup (saving the run
    files, tracing the step function), which is reported as ``setup_seconds``. Every ``eval_every_steps`` (default: the checkpoint
    interval) and at the end, the EMA weights are scored on the validation split: that is
    the curve and ``on_progress(step, val_accuracy, seconds)``. With ``run_dir``, a
    checkpoint is saved every ``checkpoint_every_steps`` and at the end (the newest 5 are
    kept). Without ``eval_every_steps``, at least ``min_evaluations`` points make the curve: with
    ``epochs``, evaluations are at most ``total steps / min_evaluations`` apart; with only a budget,
    at most ``budget / min_evaluations`` seconds apart. Evaluation time is kept out of the clock (the budget, ``seconds`` and the curve)
    and reported as ``eval_seconds``. ``rebuild=("module:function", kwargs)`` names a function that rebuilds the same
    architecture in another process; without it ``model.keras`` is written instead.
    On return ``model`` holds the EMA weights. Only trainable weights are averaged;
    non-trainable state (batch-norm moving statistics) is used as training left it. ``seed`` seeds Keras (dropout, ...) and the
    batch order; TensorFlow may still be non-deterministic in some kernels.

    With ``resume`` and a ``run_dir`` that an interrupted run of the same settings left behind
    (see :func:`resumable`), training goes on from its newest checkpoint: weights, averages,
    optimizer state, the step, the batch order and the time already spent (which counts against
    ``budget_seconds``) all continue where they were. ``prologue()`` runs first on a fresh start
    only (fine-tuning's linear probe); its time counts as training time. ``augment(batch)``, traced
    into the step, distorts each training batch on the fly (``--augment``; validation is never distorted);
    its ``generator`` attribute, a ``tf.random.Generator`` where it has one, is saved in the checkpoints.

    ``distribution`` (see :func:`distribution`; build ``model`` inside its ``scope()``) trains on several
    replicas with a ``tf.distribute`` strategy. The global batch stays ``batch_size`` (each replica takes its
    slice of it) and the loss is the mean over the global batch, so the updates are those of one device up
    to the order of floating-point sums; batch-norm statistics are computed per replica.
    """
    import keras
    import tensorflow as tf

    num_classes = _check_inputs(model, x_train, y_train, x_val, y_val, epochs, budget_seconds, batch_size,
                                checkpoint_every_steps)
    if not 0.0 <= ema_decay < 1.0:
        raise UserError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    folder = RunFolder(run_dir) if run_dir is not None else None
    settings = {"num_classes": num_classes, "ema_decay": ema_decay, "seed": seed, "batch_size": batch_size,
                "optimizer": optimizer, "learning_rate": learning_rate, "n_train": len(x_train)}
    previous = resumable(folder.path, settings) if resume and folder is not None else None
    prologue_seconds = 0.0
    if previous is None and prologue is not None:
        prologue_started = time.perf_counter()
        prologue()
        prologue_seconds = time.perf_counter() - prologue_started
    setup_started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    eval_every = eval_every_steps or checkpoint_every_steps
    x_val, y_val = np.asarray(x_val), np.asarray(y_val, dtype=np.int64)
    strategy = distribution.strategy if distribution is not None else None
    with distribution.scope() if distribution is not None else contextlib.nullcontext():
        opt = _make_optimizer(optimizer, learning_rate)
        trainable = list(model.trainable_variables)
        opt.build(trainable)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # Shadows start at the initial weights, as tf.train.ExponentialMovingAverage's do.
        shadows = [tf.Variable(v.value, trainable=False, name=f"ema_{i}") for i, v in enumerate(trainable)]
    decay_cap = tf.constant(ema_decay, tf.float32)

    if not (hasattr(x_train, "shape") and hasattr(x_train, "dtype")):
        x_train = np.asarray(x_train)  # else an array-like read a batch at a time (a memmap, rows of one)
    y_train = np.asarray(y_train, dtype=np.int64)
    signature = [tf.TensorSpec([None, *x_train.shape[1:]], tf.as_dtype(x_train.dtype)),
                 tf.TensorSpec([None], tf.int64)]

    def update_ema() -> None:
        step_var.assign_add(1)
        n = tf.cast(step_var, tf.float32)
        decay = tf.minimum(decay_cap, (1.0 + n) / (10.0 + n))
        for shadow, var in zip(shadows, trainable, strict=True):
            shadow.assign_sub((1.0 - decay) * (shadow - tf.cast(var.value, shadow.dtype)))

    @tf.function(input_signature=signature)
    def train_step(xb: Any, yb: Any) -> Any:
        if augment is not None:
            xb = augment(xb)
        if strategy is not None:
            losses = _mirrored_step(strategy, model, opt, trainable, xb, yb)
            update_ema()  # cross-replica context: every copy of the shadows gets the same update
            return losses
        with tf.GradientTape() as tape:
            probs = model(xb, training=True)
            cross_entropy = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, probs))
            loss = cross_entropy + tf.add_n(model.losses) if model.losses else cross_entropy  # kernel regularisers
        # the train curve: the batch as this step saw it (training mode, the weights before the update)
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int64), yb), tf.float32)
        grads = tape.gradient(loss, [v.value for v in trainable])
        opt.apply_gradients(zip(grads, trainable, strict=True))
        update_ema()
        return tf.cast(cross_entropy, tf.float32), tf.reduce_mean(correct)

    manager = None
    status: dict[str, Any] = {}
    if folder is not None:
        # The distortions' random state too, so a resumed run draws what the unbroken run would have.
        augment_state = ({"augment_generator": augment.generator}
                         if getattr(augment, "generator", None) is not None else {})
        checkpoint = tf.train.Checkpoint(step=step_var, weights=[w.value for w in model.weights], ema=shadows,
                                         optimizer=[v.value for v in opt.variables], **augment_state)
        manager = folder.checkpoint_manager(checkpoint)
        if previous is not None:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            status = previous
        else:
            recipe = folder.start_training(model, x_val, y_val, rebuild)
            status = {"step": 0, "done": False, "epochs": 0.0, "seconds": 0.0, "stopped_by": None,
                      "val_accuracy": None, **folder.new_status(recipe), "curve": [], **settings}
            folder.write_status(status)

    # Trace and compile before the clock starts, so a small budget buys training, not tracing.
    train_step.get_concrete_function()
    predict_proba(model, (x_val if len(x_val) else x_train)[:1])
    setup_seconds = time.perf_counter() - setup_started
    # Resumed: the clock and the curve go on from what the interrupted run had spent and seen.
    started = time.perf_counter() - (previous["seconds"] if previous else prologue_seconds)
    rng = np.random.default_rng(seed)
    n_train = len(x_train)
    steps_per_epoch = -(-n_train // batch_size)
    densify = eval_every_steps is None and min_evaluations > 0  # an explicit interval is kept as given
    if densify and epochs is not None:
        eval_every = max(1, min(eval_every, epochs * steps_per_epoch // min_evaluations))
    eval_interval = budget_seconds / min_evaluations if densify and epochs is None and budget_seconds else None
    eval_spent = 0.0  # evaluation time of this process: the training clock leaves it out

    def clock() -> float:
        return time.perf_counter() - started - eval_spent
    curve: list[dict[str, Any]] = list(previous.get("curve", [])) if previous else []
    steps_seen = StepCurve.from_state(previous.get("train_curve_state") if previous else None)
    step = int(step_var.numpy())
    resumed_from_step = step if previous else None
    last_ckpt = step if previous else -1
    last_eval = step if curve and curve[-1]["step"] == step else -1
    val_acc: float | None = previous.get("val_accuracy") if previous else None
    eval_before = float(previous.get("eval_seconds") or 0.0) if previous else 0.0
    stopped_by: StopReason = (previous.get("stopped_by") or "epochs") if previous else "epochs"

    def evaluate() -> None:
        nonlocal val_acc, last_eval, eval_spent
        eval_started = time.perf_counter()
        with ema_weights(trainable, shadows):
            val_acc = accuracy_of(model, x_val, y_val)
        eval_spent += time.perf_counter() - eval_started
        seconds = clock()
        curve.append({"step": step, "seconds": round(seconds, 4), "val_accuracy": val_acc})
        last_eval = step
        if on_progress is not None:
            on_progress(step, val_acc, seconds)

    def save(done: bool) -> None:
        nonlocal last_ckpt
        if manager is None or folder is None:
            return
        if last_ckpt != step:
            manager.save(checkpoint_number=step)
            last_ckpt = step
        # The checkpoint is on disk before the status can say done: an evaluator relies on that order.
        status.update(step=step, done=done, epochs=round(step / steps_per_epoch, 4), val_accuracy=val_acc,
                      seconds=round(clock(), 4), stopped_by=stopped_by if done else None, curve=curve,
                      train_curve_state=steps_seen.state(),
                      eval_seconds=round(eval_before + eval_spent, 4))
        folder.write_status(status)

    # The batch order is the seeded permutation of each epoch: replay the finished epochs' draws,
    # then skip the batches of the current epoch that the checkpoint already holds.
    epoch, skip = divmod(step, steps_per_epoch)
    for _ in range(epoch):
        rng.permutation(n_train)
    finished = bool(previous and previous.get("done"))
    while not finished and (epochs is None or epoch < epochs):
        order = rng.permutation(n_train)
        for start in range(skip * batch_size, n_train, batch_size):
            idx = np.sort(order[start:start + batch_size])  # sorted: faster gathers, same batch
            batch_loss, batch_accuracy = train_step(tf.constant(x_train[idx]), tf.constant(y_train[idx]))
            step += 1
            steps_seen.add(step, float(batch_loss), float(batch_accuracy))
            if step % eval_every == 0 or (eval_interval is not None and clock() - (curve[-1]["seconds"] if curve
                                                                                   else 0.0) >= eval_interval):
                evaluate()
            if step % checkpoint_every_steps == 0:
                save(done=False)
            if budget_seconds is not None and clock() >= budget_seconds:
                stopped_by = "budget"
                break
        else:
            epoch += 1
            skip = 0
            if on_epoch is not None:
                on_epoch(epoch)
            continue
        break

    if last_eval != step:
        evaluate()
    save(done=True)
    # From here on the model is the averaged one, which is what gets tested and exported.
    for var, shadow in zip(trainable, shadows, strict=True):
        var.assign(shadow)
    return TrainingResult(model=model, steps=step, epochs=round(step / steps_per_epoch, 4),
                          seconds=clock(), stopped_by=stopped_by, val_accuracy=val_acc,
                          curve=curve, train_curve=steps_seen.points(),
                          checkpoint=manager.latest_checkpoint if manager is not None else None,
                          setup_seconds=setup_seconds, resumed_from_step=resumed_from_step,
                          eval_seconds=eval_before + eval_spent)


def _mirrored_step(strategy: Any, model: Any, opt: Any, trainable: list[Any], xb: Any, yb: Any) -> Any:
    """One step on every replica: replica ``r`` takes the ``r``-th slice of the global batch, its loss is
    its share of the global batch's mean (so the all-reduced gradients are those of the mean). Returns the
    global batch's mean cross-entropy and accuracy, as the one-device step does."""
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    global_size = tf.shape(xb)[0]

    def replica_step(xb: Any, yb: Any) -> Any:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        low, high = global_size * replica // replicas, global_size * (replica + 1) // replicas
        labels = yb[low:high]
        with tf.GradientTape() as tape:
            probs = model(xb[low:high], training=True)
            share = tf.cast(global_size, tf.float32)
            cross_entropy = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, probs)) / share
            loss = cross_entropy
            if model.losses:  # every replica adds them and the gradients are summed: its share
                loss += tf.add_n(model.losses) / replicas
        correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int64), labels), tf.float32)
        grads = tape.gradient(loss, [v.value for v in trainable])
        opt.apply_gradients(zip(grads, trainable, strict=True))  # Keras all-reduces (sums) across replicas
        return tf.cast(cross_entropy, tf.float32), tf.reduce_sum(correct) / share

    cross_entropy, accuracy = strategy.run(replica_step, args=(xb, yb))
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, cross_entropy, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, accuracy, axis=None))


def resumable(run_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The status of an earlier run in ``run_dir`` that training with ``settings`` may go on from.

    None unless its status records the same settings (classes, seed, batch size, optimizer,
    learning rate, EMA decay, training-set size) and a checkpoint was written.
    """
    folder = RunFolder(run_dir)
    status = folder.read_status()
    if not status or not status.get("step") or not folder.latest_checkpoint():
        return None
    if any(status.get(key) != value for key, value in settings.items()):
        return None
    return status


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The status of a training run in ``run_dir``, or None while it has none yet."""
    return RunFolder(run_dir).read_status()


def load_checkpoint(model: Any, checkpoint_path: str) -> int:
    """Restore a checkpoint into ``model`` with the EMA weights in place; return its step."""
    import tensorflow as tf

    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    trainable = list(model.trainable_variables)
    shadows = [tf.Variable(tf.zeros_like(v.value), trainable=False) for v in trainable]
    checkpoint = tf.train.Checkpoint(step=step, weights=[w.value for w in model.weights], ema=shadows)
    # assert_consumed would also demand the optimizer-free object graph to match exactly; the
    # variables we read are what matter, and a shape mismatch still raises.
    try:
        checkpoint.restore(checkpoint_path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        raise UserError(f"checkpoint {checkpoint_path} does not fit the rebuilt model: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    for var, shadow in zip(trainable, shadows, strict=True):
        var.assign(shadow)
    return int(step.numpy())
