"""The tutorial's training loop, as the baseline xferbench's heads are measured against.

A faithful TF2 reimplementation of the final-layer training of TensorFlow's image_retraining
``retrain.py`` (``add_final_training_ops`` and the loop in ``main``), on bottlenecks that are
already computed:

* one fully-connected layer, weights ``truncated_normal(stddev=0.001)``, zero biases;
* loss: mean sparse softmax cross-entropy on the logits; plain gradient descent, lr 0.01
  (``GradientDescentOptimizer.minimize``; here ``assign_sub`` inside one ``tf.function`` step);
* 4000 steps; every step draws 100 training bottlenecks at random, with replacement
  (``get_random_cached_bottlenecks``), fed from NumPy like ``feed_dict``;
* every 10 steps and after the last: training accuracy and cross-entropy on that batch and
  accuracy on 100 random validation bottlenecks (``eval_step_interval``, ``validation_batch_size``);
* then accuracy on the whole test split (``test_batch_size=-1``).

With distortions (``--flip_left_right``, ``--random_crop``, ``--random_scale``, ``--random_brightness``)
retrain.py caches nothing for training: every step, ``get_random_distorted_bottlenecks`` draws 100
training images, and for each one runs the distortion graph (``add_input_distortions``) on its JPEG,
then the whole network on the distorted image, one image per ``sess.run``. :class:`RetrainDistortions`
and :func:`distorted_batches` do the same here; :func:`retrain_final_layer`'s ``next_batch`` takes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RetrainConfig:
    steps: int = 4000
    batch_size: int = 100
    learning_rate: float = 0.01
    eval_step_interval: int = 10
    validation_batch_size: int = 100


@dataclass(frozen=True)
class RetrainResult:
    test_accuracy: float
    final_val_accuracy: float
    kernel: np.ndarray
    bias: np.ndarray


def retrain_final_layer(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        x_test: np.ndarray, y_test: np.ndarray, num_classes: int, *, seed: int = 0,
                        config: RetrainConfig = RetrainConfig(),
                        next_batch: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
                        ) -> RetrainResult:
    """Train retrain.py's final layer on the given bottlenecks and evaluate it on the test split.

    ``next_batch(rng)``: each step's training batch (default: 100 cached training bottlenecks drawn at
    random); :func:`distorted_batches` makes retrain.py's distorted ones.
    """
    import tensorflow as tf

    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    dim = x_train.shape[1]
    weights = tf.Variable(tf.random.truncated_normal([dim, num_classes], stddev=0.001), name="final_weights")
    biases = tf.Variable(tf.zeros([num_classes]), name="final_biases")
    lr = tf.constant(config.learning_rate)

    def logits_of(x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, weights) + biases

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32), tf.TensorSpec([None], tf.int64)])
    def train_step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                                           logits=logits_of(x)))
        grad_w, grad_b = tape.gradient(cross_entropy, [weights, biases])
        weights.assign_sub(lr * grad_w)
        biases.assign_sub(lr * grad_b)
        return cross_entropy

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32), tf.TensorSpec([None], tf.int64)])
    def evaluate(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = logits_of(x)
        correct = tf.equal(tf.argmax(tf.nn.softmax(logits), axis=1), y)
        cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        return tf.reduce_mean(tf.cast(correct, tf.float32)), cross_entropy

    x_train, x_val, x_test = (np.asarray(a, dtype=np.float32) for a in (x_train, x_val, x_test))
    y_train, y_val, y_test = (np.asarray(a, dtype=np.int64) for a in (y_train, y_val, y_test))
    val_accuracy = float("nan")
    for step in range(config.steps):
        if next_batch is None:
            batch = rng.integers(0, len(x_train), size=config.batch_size)
            xb, yb = x_train[batch], y_train[batch]
        else:
            xb, yb = next_batch(rng)
        train_step(xb, yb)
        if step % config.eval_step_interval == 0 or step + 1 == config.steps:
            evaluate(xb, yb)  # retrain.py logs train accuracy and cross-entropy here
            if len(x_val):
                val_batch = rng.integers(0, len(x_val), size=config.validation_batch_size)
                val_accuracy = float(evaluate(x_val[val_batch], y_val[val_batch])[0])
    test_accuracy = float(evaluate(x_test, y_test)[0])
    return RetrainResult(test_accuracy, val_accuracy, weights.numpy(), biases.numpy())


class RetrainDistortions:
    """retrain.py's ``add_input_distortions`` graph: one JPEG -> one distorted, normalised ``[1, H, W, 3]`` input.

    ``precrop = input_size * (1 + crop/100) * U(1, 1 + scale/100)``; bilinear resize of the decoded
    image to ``precrop``; a random ``input_size`` crop; a random left-right flip; a brightness factor
    ``U(1 - b/100, 1 + b/100)``; then ``normalise`` (retrain.py: ``(x - input_mean) / input_std``).
    """

    def __init__(self, size: tuple[int, int], normalise: Callable[[Any], Any], *, flip: bool, crop: float,
                 scale: float, brightness: float, seed: int = 0) -> None:
        import tensorflow as tf

        height, width = size
        margin = 1.0 + crop / 100.0
        generator = tf.random.Generator.from_seed(seed)
        self._generator = generator

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def distort(jpeg: Any) -> Any:
            decoded = tf.cast(tf.image.decode_jpeg(jpeg, channels=3), tf.float32)[None]
            scale_value = margin * generator.uniform([], 1.0, 1.0 + scale / 100.0)
            precrop = tf.cast(scale_value * tf.constant([height, width], tf.float32), tf.int32)
            precropped = tf.squeeze(tf.image.resize(decoded, precrop, method="bilinear"), axis=0)
            cropped = tf.image.stateless_random_crop(precropped, [height, width, 3],
                                                     seed=generator.make_seeds(1)[:, 0])
            if flip:
                cropped = tf.image.stateless_random_flip_left_right(cropped, seed=generator.make_seeds(1)[:, 0])
            brightened = cropped * generator.uniform([], 1.0 - brightness / 100.0, 1.0 + brightness / 100.0)
            return normalise(brightened)[None]

        self.distort = distort

    def __call__(self, jpeg: bytes) -> Any:
        return self.distort(jpeg)


def distorted_batches(jpegs: Sequence[bytes], labels: np.ndarray, distortions: RetrainDistortions,
                      network: Callable[[Any], Any], batch_size: int = 100,
                      ) -> Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """retrain.py's ``get_random_distorted_bottlenecks``: per image, distort it and run the whole network on it."""

    def next_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        picks = rng.integers(0, len(jpegs), size=batch_size)
        rows = [np.asarray(network(distortions(jpegs[i])), dtype=np.float32)[0] for i in picks]
        return np.stack(rows), labels[picks]

    return next_batch
