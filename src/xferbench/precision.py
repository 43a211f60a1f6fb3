"""Building Keras models in the precision a backbone was asked for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def keras_dtype_policy(precision: str) -> Iterator[None]:
    """Build layers under ``mixed_bfloat16`` (bfloat16 compute, float32 variables) or plain ``float32``.

    The global policy is restored on exit, so one backbone's precision never leaks into the next.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
