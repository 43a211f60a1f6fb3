"""A backbone's ``tf_features`` module: traced, saved and restored, it must still give ``extract``'s features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def assert_tf_features_round_trip(backbone: Any, files: list[bytes], expected: np.ndarray, folder: Path,
                                  rtol: float) -> None:
    import tensorflow as tf

    features = backbone.tf_features()
    graph = tf.function(features, input_signature=[tf.TensorSpec([None], tf.string)])
    np.testing.assert_allclose(graph(tf.constant(files)).numpy(), expected, rtol=rtol, atol=1e-5)

    holder = tf.Module()
    holder.features = features
    holder.serve = graph
    tf.saved_model.save(holder, str(folder / "exported"))
    restored = tf.saved_model.load(str(folder / "exported"))
    np.testing.assert_allclose(restored.serve(tf.constant(files)).numpy(), expected, rtol=rtol, atol=1e-5)
