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
"""

from __future__ import annotations

from dataclasses import dataclass

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
                        config: RetrainConfig = RetrainConfig()) -> RetrainResult:
    """Train retrain.py's final layer on the given bottlenecks and evaluate it on the test split."""
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
        batch = rng.integers(0, len(x_train), size=config.batch_size)
        xb, yb = x_train[batch], y_train[batch]
        train_step(xb, yb)
        if step % config.eval_step_interval == 0 or step + 1 == config.steps:
            evaluate(xb, yb)  # retrain.py logs train accuracy and cross-entropy here
            if len(x_val):
                val_batch = rng.integers(0, len(x_val), size=config.validation_batch_size)
                val_accuracy = float(evaluate(x_val[val_batch], y_val[val_batch])[0])
    test_accuracy = float(evaluate(x_test, y_test)[0])
    return RetrainResult(test_accuracy, val_accuracy, weights.numpy(), biases.numpy())
