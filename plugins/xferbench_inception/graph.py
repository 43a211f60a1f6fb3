"""Reading, checking and rewriting the Inception-v3 GraphDef of December 2015.

The 2015 graph runs one JPEG at a time and normalises its convolutions with
``BatchNormWithGlobalNormalization``, an op TF2 only runs in a TF1 Session on a GraphDef
imported as is. :func:`rewrite` turns it into a graph that ``tf.compat.v1.wrap_function``
can import (so it batches, compiles with XLA and runs on a GPU):

* every batch norm is folded into the convolution before it (Conv2D with scaled weights +
  BiasAdd), so the removed op disappears;
* the ``CheckNumerics`` guards are dropped (they stop the graph on NaN; here a NaN simply
  shows in the features, and the guards would cost a full pass over every activation);
* the input becomes a batched float placeholder in place of the ``ResizeBilinear`` output,
  so the graph's own ``Sub``/``Mul`` normalise it;
* the output is ``pool_3`` reshaped to ``[-1, 2048]`` instead of the hard-coded ``[1, 2048]``;
* optionally (``bfloat16``) the body after ``Mul`` computes in bfloat16 and casts back.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.errors import UserError

#: the .pb members of the two published archives, in the order they are looked for
GRAPH_MEMBERS = ("tensorflow_inception_graph.pb", "classify_image_graph_def.pb")
INPUT_NAME = "xferbench/input"
OUTPUT_NAME = "xferbench/features"
FEATURE_DIM = 2048
# A guard against a hostile archive that inflates to many GiB; the real graph is ~95 MB.
_MAX_GRAPH_BYTES = 1 << 30
_HINT = ("pass tensorflow_inception_graph.pb from inception_dec_2015.zip (or classify_image_graph_def.pb "
         "from inception-2015-12-05.tgz), or either archive, with --weights")
_DECODE_DEFAULTS: dict[str, Any] = {"channels": 0, "ratio": 1, "fancy_upscaling": True,
                                    "try_recover_truncated": False, "acceptable_fraction": 1.0, "dct_method": ""}


class GraphError(UserError):
    """The file is not (a usable copy of) the 2015 Inception-v3 graph."""


@dataclass(frozen=True)
class GraphFile:
    """The serialized graph and where it came from."""

    data: bytes
    source: Path
    member: str | None  # the archive member it was read from, None for a bare .pb


@dataclass(frozen=True)
class Interface:
    """What the preprocessing must reproduce, read from the graph's own nodes."""

    decode_attrs: dict[str, Any]  # DecodeJpeg's attributes, as tf.io.decode_jpeg arguments
    size: tuple[int, int]  # ResizeBilinear/size
    align_corners: bool
    half_pixel_centers: bool
    producer: int
    feature_dim: int


# -- reading ---------------------------------------------------------------------------------
def _sniff(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tgz"
    return "pb"


def file_kind(path: Path) -> str:
    """``"zip"``, ``"tgz"`` or ``"pb"`` by content (names of downloads and temp files are unreliable)."""
    try:
        with open(path, "rb") as fh:
            return _sniff(fh.read(4))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _pick(names: Iterable[str], source: Path) -> str:
    names = list(names)
    by_base = {n.rsplit("/", 1)[-1]: n for n in names}
    for wanted in GRAPH_MEMBERS:
        if wanted in by_base:
            return by_base[wanted]
    graphs = [n for n in names if n.endswith(".pb")]
    if len(graphs) == 1:
        return graphs[0]
    raise GraphError(f"{source}: the archive holds no {' or '.join(GRAPH_MEMBERS)}; {_HINT}")


def read_graph_file(path: Path) -> GraphFile:
    """The graph's bytes from a .pb, or from the .pb inside the .zip or .tgz.

    Archives are read in memory: only one member is needed, so nothing is written to disk.
    An archive with a member that would escape an extraction (absolute, ``..``, links out) is
    refused all the same: the published archives hold none, so it is not one of them.
    """
    from xferbench.archive import UnsafeArchive, check_archive

    path = Path(path)
    kind = file_kind(path)
    if kind in ("zip", "tgz"):
        try:
            check_archive(path, action="use", fmt="zip" if kind == "zip" else "tar")
        except UnsafeArchive:
            raise
        except UserError:
            pass  # unreadable: said below, in the graph's own words, when its member is read
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                name = _pick((i.filename for i in zf.infolist() if not i.is_dir()), path)
                if zf.getinfo(name).file_size > _MAX_GRAPH_BYTES:
                    raise GraphError(f"{path}: {name} is larger than 1 GiB; {_HINT}")
                return GraphFile(zf.read(name), path, name)
        if kind == "tgz":
            with tarfile.open(path, "r:*") as tf:
                members = {m.name: m for m in tf.getmembers() if m.isfile()}
                name = _pick(members, path)
                if members[name].size > _MAX_GRAPH_BYTES:
                    raise GraphError(f"{path}: {name} is larger than 1 GiB; {_HINT}")
                fh = tf.extractfile(members[name])
                assert fh is not None  # a regular file member always has contents
                return GraphFile(fh.read(), path, name.removeprefix("./"))
        return GraphFile(path.read_bytes(), path, None)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise GraphError(f"{path}: cannot read the {kind} file ({exc}); delete it and fetch it again") from None


def parse(graph: GraphFile) -> Any:
    """The GraphDef proto, or GraphError for bytes that are not one."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(graph.data)
    except (DecodeError, RuntimeWarning, ValueError):
        raise GraphError(f"{_where(graph)} is not a TensorFlow GraphDef; {_HINT}") from None
    return graph_def


def _where(graph: GraphFile) -> str:
    return f"{graph.source}:{graph.member}" if graph.member else str(graph.source)


# -- checking --------------------------------------------------------------------------------
def base_name(tensor: str) -> str:
    """``"^a/b"`` or ``"a/b:1"`` -> ``"a/b"``."""
    return tensor.lstrip("^").split(":", 1)[0]


def _const_value(node: Any) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(node.attr["value"].tensor)


def verify(graph_def: Any, where: str = "the graph") -> Interface:
    """Check the interface the 2015 graph is known by; GraphError names the first thing missing."""
    nodes = {n.name: n for n in graph_def.node}

    def fail(what: str) -> GraphError:
        return GraphError(f"{where} is not the Inception-v3 (Dec 2015) graph: {what}; {_HINT}")

    def need(name: str, ops: tuple[str, ...]) -> Any:
        node = nodes.get(name)
        if node is None:
            raise fail(f"node {name!r} is missing")
        if node.op not in ops:
            raise fail(f"node {name!r} is a {node.op}, expected {' or '.join(ops)}")
        return node

    def producer_of(node: Any, index: int, ops: tuple[str, ...]) -> Any:
        if len(node.input) <= index:
            raise fail(f"node {node.name!r} has no input {index}")
        return need(base_name(node.input[index]), ops)

    contents = need("DecodeJpeg/contents", ("Const", "Placeholder", "PlaceholderWithDefault"))
    if contents.attr["dtype"].type != 7:  # DT_STRING
        raise fail("DecodeJpeg/contents is not a string tensor")
    decode = need("DecodeJpeg", ("DecodeJpeg",))
    if base_name(decode.input[0]) != "DecodeJpeg/contents":
        raise fail("DecodeJpeg does not read DecodeJpeg/contents")
    mul = need("Mul", ("Mul",))
    sub = producer_of(mul, 0, ("Sub",))
    resize = producer_of(sub, 0, ("ResizeBilinear",))
    expand = producer_of(resize, 0, ("ExpandDims",))
    cast = producer_of(expand, 0, ("Cast",))
    if base_name(cast.input[0]) != "DecodeJpeg":
        raise fail("Cast does not read DecodeJpeg")
    size_node = producer_of(resize, 1, ("Const",))
    for node in (producer_of(sub, 1, ("Const",)), producer_of(mul, 1, ("Const",))):
        if _const_value(node).size != 1:
            raise fail(f"{node.name} is not a scalar")
    size = tuple(int(v) for v in _const_value(size_node).reshape(-1))
    if len(size) != 2 or min(size) < 1:
        raise fail(f"ResizeBilinear/size is {size}, not (height, width)")

    need("pool_3", ("AvgPool",))
    reshape = need("pool_3/_reshape", ("Reshape",))
    if base_name(reshape.input[0]) != "pool_3":
        raise fail("pool_3/_reshape does not read pool_3")
    shape = _const_value(producer_of(reshape, 1, ("Const",))).reshape(-1)
    if shape.size != 2 or int(shape[-1]) != FEATURE_DIM:
        raise fail(f"pool_3/_reshape has shape {shape.tolist()}, expected [1, {FEATURE_DIM}]")

    attrs = {}
    for key, default in _DECODE_DEFAULTS.items():
        if key in decode.attr:
            value = decode.attr[key]
            attrs[key] = {"channels": lambda v: int(v.i), "ratio": lambda v: int(v.i),
                          "fancy_upscaling": lambda v: bool(v.b), "try_recover_truncated": lambda v: bool(v.b),
                          "acceptable_fraction": lambda v: float(v.f),
                          "dct_method": lambda v: v.s.decode()}[key](value)
        else:  # graphs older than the attribute: TF fills in the op's default on import
            attrs[key] = default
    if attrs["channels"] != 3:
        raise fail(f"DecodeJpeg has channels={attrs['channels']}, expected 3")
    return Interface(
        decode_attrs=attrs,
        size=(size[0], size[1]),
        align_corners=bool(resize.attr["align_corners"].b) if "align_corners" in resize.attr else False,
        half_pixel_centers=(bool(resize.attr["half_pixel_centers"].b)
                            if "half_pixel_centers" in resize.attr else False),
        producer=int(graph_def.versions.producer),
        feature_dim=FEATURE_DIM,
    )


def verify_file(path: Path) -> None:
    """For download/import: raise GraphError unless ``path`` holds a usable 2015 graph."""
    graph = read_graph_file(path)
    verify(parse(graph), _where(graph))


# -- rewriting -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rewritten:
    graph_def: Any
    folded: int  # batch norms folded into convolutions
    dropped_checks: int


def _const(name: str, value: np.ndarray) -> Any:
    import tensorflow as tf
    from tensorflow.core.framework import node_def_pb2

    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    node.attr["dtype"].type = node.attr["value"].tensor.dtype
    return node


def _fold(bn: Any, nodes: dict[str, Any], fail: Callable[[str], GraphError]) -> list[Any]:
    """Conv2D + BatchNormWithGlobalNormalization -> Conv2D(scaled weights) + BiasAdd named like ``bn``."""
    from tensorflow.core.framework import node_def_pb2

    if len(bn.input) != 5:
        raise fail(f"{bn.name} has {len(bn.input)} inputs, expected 5")
    conv = nodes.get(base_name(bn.input[0]))
    if conv is None or conv.op != "Conv2D" or ":" in bn.input[0].lstrip("^"):
        raise fail(f"{bn.name} does not follow a Conv2D, so it cannot be folded")
    filt_node = nodes.get(base_name(conv.input[1]))
    if filt_node is None or filt_node.op != "Const":
        raise fail(f"{conv.name} has no constant filter")
    params = []
    for tensor in bn.input[1:]:
        node = nodes.get(base_name(tensor))
        if node is None or node.op != "Const":
            raise fail(f"{bn.name} input {tensor!r} is not a constant")
        params.append(_const_value(node).astype(np.float64).reshape(-1))
    mean, var, beta, gamma = params
    data_format = conv.attr["data_format"].s.decode() if "data_format" in conv.attr else "NHWC"
    if data_format != "NHWC":
        raise fail(f"{conv.name} uses {data_format}, expected NHWC")
    filt = _const_value(filt_node).astype(np.float64)
    if filt.ndim != 4 or not (mean.size == var.size == beta.size == gamma.size == filt.shape[3]):
        raise fail(f"{bn.name} parameters do not match {conv.name}'s {filt.shape} filter")
    eps = float(bn.attr["variance_epsilon"].f)
    # Exactly the kernel's algebra: (conv - mean) * rsqrt(var + eps) [* gamma] + beta.
    scale = 1.0 / np.sqrt(var + eps)
    if bn.attr["scale_after_normalization"].b:
        scale = scale * gamma
    w_name, b_name, conv_name = f"{bn.name}/folded_filter", f"{bn.name}/folded_bias", f"{bn.name}/folded_conv"
    new_conv = node_def_pb2.NodeDef()
    new_conv.CopyFrom(conv)
    new_conv.name = conv_name
    new_conv.input[1] = w_name
    bias_add = node_def_pb2.NodeDef(name=bn.name, op="BiasAdd", input=[conv_name, b_name])
    bias_add.attr["T"].CopyFrom(conv.attr["T"])
    bias_add.attr["data_format"].s = b"NHWC"
    return [
        _const(w_name, (filt * scale).astype(np.float32)),
        _const(b_name, (beta - mean * scale).astype(np.float32)),
        new_conv,
        bias_add,
    ]


def rewrite(graph_def: Any, interface: Interface, where: str = "the graph", precision: str = "float32") -> Rewritten:
    """The batched, foldable, TF2-runnable form of the 2015 graph (see the module docstring)."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2

    def fail(what: str) -> GraphError:
        return GraphError(f"{where}: cannot rewrite the Inception graph: {what}; {_HINT}")

    nodes = {n.name: n for n in graph_def.node}
    out: dict[str, Any] = {}
    folded = 0
    for node in graph_def.node:
        if node.op == "BatchNormWithGlobalNormalization":
            for new in _fold(node, nodes, fail):
                out[new.name] = new
            folded += 1
        elif node.name not in out:
            copy = node_def_pb2.NodeDef()
            copy.CopyFrom(node)
            out[node.name] = copy

    # CheckNumerics guards: drop them and the control edges on them; their Identity stays (free).
    checks = {name for name, n in out.items() if n.op == "CheckNumerics"}
    for name in checks:
        del out[name]
    for n in out.values():
        kept = [i for i in n.input if not (i.startswith("^") and base_name(i) in checks)]
        if len(kept) != len(n.input):
            del n.input[:]
            n.input.extend(kept)

    # Input: a batched float image in place of ResizeBilinear's output; the graph's Sub/Mul stay.
    sub = out[base_name(out["Mul"].input[0])]
    placeholder = node_def_pb2.NodeDef(name=INPUT_NAME, op="Placeholder")
    placeholder.attr["dtype"].type = types_pb2.DT_FLOAT
    dims = placeholder.attr["shape"].shape.dim
    for size in (-1, *interface.size, 3):
        dims.add().size = size
    sub.input[0] = INPUT_NAME
    out[INPUT_NAME] = placeholder

    # Body in bfloat16: cast the normalised input, convert every float node downstream of Mul.
    body_input = "Mul"
    if precision == "bfloat16":
        body = _downstream(out, "Mul", stop="pool_3")
        cast_in = node_def_pb2.NodeDef(name="xferbench/to_bfloat16", op="Cast", input=["Mul"])
        cast_in.attr["SrcT"].type = types_pb2.DT_FLOAT
        cast_in.attr["DstT"].type = types_pb2.DT_BFLOAT16
        out[cast_in.name] = cast_in
        body_input = cast_in.name
        for name in body:
            _to_bfloat16(out[name])
        for name in body:
            node = out[name]
            for k, tensor in enumerate(node.input):
                if base_name(tensor) == "Mul" and not tensor.startswith("^"):
                    node.input[k] = body_input
    elif precision != "float32":
        raise ValueError(f"precision must be float32 or bfloat16, got {precision!r}")

    # Output: pool_3 for any batch size (the graph's own reshape hard-codes a batch of 1).
    top = "pool_3"
    if precision == "bfloat16":
        cast_out = node_def_pb2.NodeDef(name="xferbench/to_float32", op="Cast", input=["pool_3"])
        cast_out.attr["SrcT"].type = types_pb2.DT_BFLOAT16
        cast_out.attr["DstT"].type = types_pb2.DT_FLOAT
        out[cast_out.name] = cast_out
        top = cast_out.name
    shape = _const(f"{OUTPUT_NAME}/shape", np.array([-1, interface.feature_dim], dtype=np.int32))
    reshape = node_def_pb2.NodeDef(name=OUTPUT_NAME, op="Reshape", input=[top, shape.name])
    reshape.attr["T"].type = types_pb2.DT_FLOAT
    reshape.attr["Tshape"].type = types_pb2.DT_INT32
    out[shape.name] = shape
    out[OUTPUT_NAME] = reshape

    kept_names = _upstream(out, OUTPUT_NAME)
    leftover = [n for n in kept_names if out[n].op in ("BatchNormWithGlobalNormalization", "DecodeJpeg")]
    if leftover:
        raise fail(f"node {leftover[0]!r} ({out[leftover[0]].op}) is still needed after the rewrite")
    result = graph_pb2.GraphDef()
    # The original producer version stays: no op removed since then remains, so it imports as is.
    result.versions.CopyFrom(graph_def.versions)
    result.node.extend(out[n] for n in out if n in kept_names)
    return Rewritten(result, folded, len(checks))


def _consumers(nodes: dict[str, Any]) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for name, node in nodes.items():
        for tensor in node.input:
            users.setdefault(base_name(tensor), []).append(name)
    return users


def _downstream(nodes: dict[str, Any], start: str, stop: str) -> set[str]:
    """Nodes fed (directly or not) by ``start``, up to and including ``stop``; plus their constants."""
    users = _consumers(nodes)
    seen: set[str] = set()
    todo = list(users.get(start, []))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name != stop:
            todo.extend(users.get(name, []))
    for name in list(seen):
        for tensor in nodes[name].input:
            src = base_name(tensor)
            if nodes[src].op == "Const":
                seen.add(src)
    return seen


def _upstream(nodes: dict[str, Any], target: str) -> set[str]:
    seen: set[str] = set()
    todo = [target]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(base_name(t) for t in nodes[name].input)
    return seen


def _to_bfloat16(node: Any) -> None:
    """Retype one body node (or float constant) from float32 to bfloat16 in place."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    if node.op == "Const":
        if node.attr["dtype"].type != types_pb2.DT_FLOAT:
            return  # shapes, concat axes
        value = tf.constant(_const_value(node), dtype=tf.bfloat16).numpy()
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        node.attr["dtype"].type = types_pb2.DT_BFLOAT16
        return
    if "T" in node.attr and node.attr["T"].type == types_pb2.DT_FLOAT:
        node.attr["T"].type = types_pb2.DT_BFLOAT16


__all__ = ["FEATURE_DIM", "GraphError", "GraphFile", "Interface", "Rewritten", "file_kind", "parse",
           "read_graph_file", "rewrite", "verify", "verify_file"]
