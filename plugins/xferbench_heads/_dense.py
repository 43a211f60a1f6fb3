"""What the heads share: a stack of dense layers that NumPy and Keras evaluate alike."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from xferbench.errors import UserError
from xferbench.head import Head, ProgressCallback
from xferbench.options import Option, validate_options

Activation = Literal["relu", "softmax"]


@dataclass(frozen=True)
class DenseLayer:
    """``activation(x @ kernel + bias)``: the exact computation of a Keras ``Dense``."""

    kernel: np.ndarray  # [in, out]
    bias: np.ndarray  # [out]
    activation: Activation


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits do not overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


#: a training matrix that is not already in memory and is larger than this (as float64) is read a
#: chunk at a time, never copied whole (features memory-mapped from disk may be larger than RAM)
IN_MEMORY_TRAINING_BYTES = 512 << 20
#: rows per chunk when a matrix is read or evaluated a piece at a time
ROW_CHUNK = 8192


def forward(layers: Sequence[DenseLayer], x: Any) -> np.ndarray:
    """Run ``x`` through ``layers`` in float64 (the exported Keras model uses float32), a chunk of rows at a time."""
    if len(x) > ROW_CHUNK and not (isinstance(x, np.ndarray) and not isinstance(x, np.memmap)):
        return np.concatenate([forward(layers, x[i:i + ROW_CHUNK]) for i in range(0, len(x), ROW_CHUNK)])
    out = np.asarray(x, dtype=np.float64)
    for layer in layers:
        out = out @ layer.kernel + layer.bias
        out = np.maximum(out, 0.0) if layer.activation == "relu" else softmax(out)
    return out


class OutOfCoreRows:
    """A training matrix too large to copy (a memory map, or the cell's row view of one): float64 rows on demand."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.shape = tuple(base.shape)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.base[key], dtype=np.float64)

    def chunks(self) -> Any:
        """``(start, float64 rows)`` over the whole matrix, ROW_CHUNK rows at a time."""
        for start in range(0, len(self), ROW_CHUNK):
            yield start, self[start:start + ROW_CHUNK]


def is_out_of_core(x: Any) -> bool:
    """Whether ``x`` stays where it is (disk) rather than being copied into memory as float64."""
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        return False
    shape = getattr(x, "shape", None)
    return shape is not None and len(shape) == 2 and shape[0] * shape[1] * 8 > IN_MEMORY_TRAINING_BYTES


def fold_standardization(mean: np.ndarray, scale: np.ndarray, kernel: np.ndarray,
                         bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias that act on raw ``x`` as ``kernel``/``bias`` act on ``(x - mean) / scale``.

    This is what lets an exported head take raw bottleneck features with no scaler layer.
    """
    folded_kernel = kernel / scale[:, None]
    folded_bias = bias - (mean / scale) @ kernel
    return folded_kernel, folded_bias


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of ``x``; constant features keep scale 1 (as scikit-learn does)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while a head trains.

    The heads multiply small matrices (a batch of ~100 rows), where a multi-threaded
    OpenBLAS spends more time waking threads than computing, and on a busy machine a
    step can take 50x longer. threadpoolctl ships with scikit-learn; without it this is a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def check_training_data(name: str, x_train: Any, y_train: np.ndarray, x_val: np.ndarray,
                        y_val: np.ndarray, num_classes: int,
                        out_of_core: bool = False) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 features and int labels, with one-line errors for the mistakes a caller can make.

    With ``out_of_core``, a large training matrix that is not in memory (see :func:`is_out_of_core`)
    comes back as :class:`OutOfCoreRows`, read a batch or chunk at a time.
    """
    if out_of_core and is_out_of_core(x_train):
        xt: Any = OutOfCoreRows(x_train)
    else:
        xt = np.asarray(x_train, dtype=np.float64)
    xv = np.asarray(x_val, dtype=np.float64)
    yt = np.asarray(y_train).astype(np.int64, copy=False)
    yv = np.asarray(y_val).astype(np.int64, copy=False)
    if xt.ndim != 2 or len(xt) == 0:
        raise UserError(f"head {name!r}: needs a non-empty 2-D training feature matrix, got shape {xt.shape}")
    if len(xt) != len(yt) or len(xv) != len(yv):
        raise UserError(f"head {name!r}: features and labels differ in length")
    if len(xv) and (xv.ndim != 2 or xv.shape[1] != xt.shape[1]):
        raise UserError(f"head {name!r}: validation features have shape {xv.shape}, training {xt.shape}")
    for split, labels in (("training", yt), ("validation", yv)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise UserError(f"head {name!r}: {split} labels must lie in 0..{num_classes - 1}")
    finite = (all(np.isfinite(rows).all() for _, rows in xt.chunks()) if isinstance(xt, OutOfCoreRows)
              else np.isfinite(xt).all())
    if not (finite and np.isfinite(xv).all()):
        raise UserError(f"head {name!r}: features contain NaN or infinity; drop the unreadable images first")
    return xt, yt, xv.reshape(-1, xt.shape[1]), yv


class DenseHead(Head):
    """A head whose fitted state is a list of :class:`DenseLayer`.

    Subclasses set ``name`` and ``OPTIONS`` and fill ``self.layers`` in ``fit``.
    """

    OPTIONS: tuple[Option, ...] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        # Validating again here makes a head safe to build directly, not only through the registry.
        self.options = validate_options(self.OPTIONS, options or {}, f"head {self.name!r}")
        self.layers: list[DenseLayer] = []
        self._info: dict[str, Any] = {}

    def _require_fitted(self) -> None:
        if not self.layers:
            raise RuntimeError(f"head {self.name!r} is not fitted yet")

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return forward(self.layers, x)

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def to_keras(self, feature_dim: int) -> Any:
        """A ``keras.Sequential`` of ``Dense`` layers with the learned weights (same probabilities)."""
        import keras

        self._require_fitted()
        if self.layers[0].kernel.shape[0] != feature_dim:
            raise UserError(f"head {self.name!r} was fitted on {self.layers[0].kernel.shape[0]} features, "
                            f"not {feature_dim}")
        model = keras.Sequential([keras.Input(shape=(feature_dim,), dtype="float32")], name=f"{self.name}_head")
        for i, layer in enumerate(self.layers):
            dense = keras.layers.Dense(layer.kernel.shape[1], activation=layer.activation, name=f"{self.name}_{i}")
            model.add(dense)
            dense.set_weights([layer.kernel.astype(np.float32), layer.bias.astype(np.float32)])
        return model


class NumpyTrainedHead(DenseHead):
    """A head trained by its own NumPy loop (``_fit``), on one BLAS thread.

    Its matrices are tiny; on a busy 2-core machine multi-threaded BLAS made them erratic.
    """

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            num_classes: int, seed: int, on_progress: ProgressCallback | None = None) -> None:
        with single_threaded_blas():
            self._fit(x_train, y_train, x_val, y_val, num_classes, seed, on_progress)

    def _fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             num_classes: int, seed: int, on_progress: ProgressCallback | None) -> None:
        raise NotImplementedError
