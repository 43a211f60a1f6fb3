"""FLOPs per image, counted over a TensorFlow graph's convolutions and matrix products.

The count follows the convention of the published figures (Inception-v3: 5.7 G multiply-adds
at 299x299; MobileNet-v1 1.0: 569 M at 224): one multiply-add is 2 FLOPs, and only the ops
that hold nearly all the arithmetic count (Conv2D, DepthwiseConv2dNative, MatMul,
BatchMatMul); batch norms, activations, pools and additions are left out. The first dimension
of every tensor is the batch, so the count is per image whatever batch size the graph was
traced with. Calls to other functions (``PartitionedCall``, as a ``tf.function`` calling a
wrapped GraphDef makes) are counted through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

#: op type -> how it counts (see :func:`_op_macs`)
COUNTED_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


class UncountableGraph(ValueError):
    """A counted op has a shape that is not fully known beyond the batch dimension."""


def _dims(shape: Any) -> list[int | None]:
    return list(shape.as_list()) if shape.rank is not None else []


def _per_example(shape: Any, op: Any) -> int:
    """Elements of ``shape`` past the batch dimension."""
    dims = _dims(shape)[1:]
    if not dims and shape.rank is None or any(d is None for d in dims):
        raise UncountableGraph(f"{op.type} {op.name}: output shape {shape} is not known past the batch")
    return math.prod(dims)  # type: ignore[arg-type]


def _op_macs(op: Any) -> int:
    """Multiply-adds of one op for one example."""
    out = op.outputs[0].shape
    if op.type == "Conv2D":
        kh, kw, cin, _ = _dims(op.inputs[1].shape)
        return _per_example(out, op) * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":
        kh, kw, _, _ = _dims(op.inputs[1].shape)
        return _per_example(out, op) * kh * kw
    # matrix products: every output element is a dot product over the shared dimension
    a = _dims(op.inputs[0].shape)
    transposed = op.get_attr("transpose_a") if op.type == "MatMul" else op.get_attr("adj_x")
    depth = a[-2] if transposed else a[-1]
    if depth is None:
        raise UncountableGraph(f"{op.type} {op.name}: inner dimension unknown")
    return _per_example(out, op) * depth


def _called_graphs(op: Any) -> Iterable[Any]:
    """The graphs of the functions an op calls (``PartitionedCall``: its ``f``)."""
    name = op.get_attr("f").name
    function = op.graph._get_function(name)  # noqa: SLF001 - the one way to reach a called FuncGraph
    graph = getattr(function, "graph", None)
    if graph is None:
        raise UncountableGraph(f"{op.type} {op.name}: cannot see into the function it calls ({name})")
    yield graph


def graph_macs(graph: Any) -> int:
    """Multiply-adds per example over every counted op of ``graph`` and the functions it calls."""
    total = 0
    for op in graph.get_operations():
        if op.type in COUNTED_OPS:
            total += _op_macs(op)
        elif op.type in _CALL_OPS:
            total += sum(graph_macs(inner) for inner in _called_graphs(op))
    return total


def function_flops(function: Any, input_shape: tuple[int, ...], dtype: str = "float32") -> float:
    """FLOPs per image of a ``tf.function`` (or a plain callable of TensorFlow ops) on inputs ``[n, *input_shape]``."""
    import tensorflow as tf

    if not hasattr(function, "get_concrete_function"):
        function = tf.function(function)
    spec = tf.TensorSpec([None, *input_shape], getattr(tf, dtype))
    try:
        concrete = function.get_concrete_function(spec)
    except (ValueError, TypeError):  # a function with its own input_signature takes no argument here
        concrete = function.get_concrete_function()
    return 2.0 * graph_macs(concrete.graph)


def model_flops(model: Any) -> float:
    """FLOPs per image of a Keras model (its call in inference mode) at its own input shape."""
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return function_flops(lambda x: model(x, training=False), shape)
