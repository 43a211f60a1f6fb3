"""A stand-in for Google's Inception-v3 graph of December 2015, with random weights.

The real ``tensorflow_inception_graph.pb`` (~95 MB) cannot be downloaded in CI, so tests
build a GraphDef in the same 2015 format: producer version 5, a DT_STRING ``DecodeJpeg/contents``
Const feeding ``DecodeJpeg -> Cast -> ExpandDims -> ResizeBilinear -> Sub -> Mul``, every
convolution as ``<scope>/conv2d_params`` + ``Conv2D`` + the removed op
``BatchNormWithGlobalNormalization`` + ``CheckNumerics``/``control_dependency`` + ``Relu``,
pools guarded the same way, old ``Concat`` joins, ``pool_3`` (AvgPool) and the hard-coded
``pool_3/_reshape`` to ``[1, 2048]`` followed by the 1008-way softmax.

TF2's Python API cannot emit BatchNormWithGlobalNormalization, so the NodeDefs are written
directly. Weights are He-initialised; the batch-norm statistics are calibrated on synthetic
images (then perturbed) so that activations stay input-dependent through ~90 layers, which
a fidelity test needs: with uncalibrated statistics the features drift to a constant.

``size="full"`` is the real topology (~24 M parameters, ~5.7 G multiply-adds at 299x299);
``size="tiny"`` keeps the interface, the 299x299 input and the 2048-wide ``pool_3`` but uses
a handful of narrow blocks, so it runs in milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Size = Literal["tiny", "full"]
ArchiveKind = Literal["zip", "tgz", "pb"]

#: bump when the generated graph changes, so cached full-size stand-ins are rebuilt
GENERATOR_VERSION = "1"
#: the member names of the two real archives
ZIP_MEMBER = "tensorflow_inception_graph.pb"
TGZ_MEMBER = "classify_image_graph_def.pb"
FILE_NAMES = {"zip": "inception_dec_2015.zip", "tgz": "inception-2015-12-05.tgz", "pb": ZIP_MEMBER}
CACHE_ENV = "XFERBENCH_STANDIN_CACHE"

_EPSILON = 0.001
_CALIBRATION_IMAGES = 4


def _tf() -> Any:
    import tensorflow as tf

    return tf


@dataclass
class _Builder:
    """Emits NodeDefs and, alongside, computes each tensor on a calibration batch."""

    rng: np.random.Generator
    nodes: list[Any] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # node name -> eager tensor (calibration batch)
    params: int = 0
    macs: int = 0

    # -- NodeDef helpers ------------------------------------------------------------------
    def node(self, name: str, op: str, inputs: Sequence[str] = (), **attrs: Any) -> Any:
        from tensorflow.core.framework import node_def_pb2

        nd = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs))
        for key, value in attrs.items():
            _set_attr(nd.attr[key], value)
        self.nodes.append(nd)
        return nd

    def const(self, name: str, value: np.ndarray) -> str:
        tf = _tf()
        proto = tf.make_tensor_proto(value)
        nd = self.node(name, "Const")
        nd.attr["value"].tensor.CopyFrom(proto)
        nd.attr["dtype"].type = proto.dtype
        if value.dtype == np.float32 and value.ndim:
            self.params += value.size
        return name

    # -- layers ---------------------------------------------------------------------------
    def _guard(self, scope: str, x: str) -> str:
        """The 2015 graph checks every layer's input/output for NaN: CheckNumerics + Identity."""
        self.node(f"{scope}/CheckNumerics", "CheckNumerics", [x], T=_DT_FLOAT,
                  message=f"{scope} has NaN or Inf")
        self.node(f"{scope}/control_dependency", "Identity", [x, f"^{scope}/CheckNumerics"], T=_DT_FLOAT)
        self.values[f"{scope}/control_dependency"] = self.values[x]
        return f"{scope}/control_dependency"

    def conv(self, scope: str, x: str, filters: int, kernel: tuple[int, int] | int = 1, stride: int = 1,
             padding: str = "SAME") -> str:
        tf = _tf()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        cin = int(self.values[x].shape[-1])
        fan_in = kh * kw * cin
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(kh, kw, cin, filters)).astype(np.float32)
        self.const(f"{scope}/conv2d_params", w)
        strides = [1, stride, stride, 1]
        self.node(f"{scope}/Conv2D", "Conv2D", [x, f"{scope}/conv2d_params"], T=_DT_FLOAT, strides=strides,
                  padding=padding.encode(), use_cudnn_on_gpu=True, data_format=b"NHWC")
        y = tf.nn.conv2d(self.values[x], w, strides, padding)
        self.macs += int(np.prod(y.shape[1:])) * fan_in

        # Statistics near the calibration batch's, then perturbed so that folding them is not a no-op.
        mu = tf.reduce_mean(y, axis=[0, 1, 2]).numpy().astype(np.float64)
        var = tf.math.reduce_variance(y, axis=[0, 1, 2]).numpy().astype(np.float64) + 1e-6
        sigma = np.sqrt(var)
        mean = (mu + 0.2 * sigma * self.rng.standard_normal(filters)).astype(np.float32)
        variance = (var * self.rng.uniform(0.6, 1.6, filters)).astype(np.float32)
        beta = self.rng.normal(0.0, 0.2, filters).astype(np.float32)
        gamma = self.rng.uniform(0.6, 1.4, filters).astype(np.float32)
        scale_after = bool(self.rng.random() < 0.5)
        bn = f"{scope}/batchnorm"
        for part, arr in (("beta", beta), ("gamma", gamma), ("moving_mean", mean), ("moving_variance", variance)):
            self.const(f"{bn}/{part}", arr)
        self.node(bn, "BatchNormWithGlobalNormalization",
                  [f"{scope}/Conv2D", f"{bn}/moving_mean", f"{bn}/moving_variance", f"{bn}/beta", f"{bn}/gamma"],
                  T=_DT_FLOAT, variance_epsilon=_EPSILON, scale_after_normalization=scale_after)
        factor = tf.math.rsqrt(variance + np.float32(_EPSILON))
        if scale_after:
            factor = factor * gamma
        self.values[bn] = (y - mean) * factor + beta
        guarded = self._guard(scope, bn)
        self.node(scope, "Relu", [guarded], T=_DT_FLOAT)
        self.values[scope] = tf.nn.relu(self.values[bn])
        return scope

    def pool(self, name: str, x: str, kind: str, size: int = 3, stride: int = 1, padding: str = "SAME") -> str:
        tf = _tf()
        guarded = self._guard(name, x)
        op = {"max": "MaxPool", "avg": "AvgPool"}[kind]
        self.node(name, op, [guarded], T=_DT_FLOAT, ksize=[1, size, size, 1], strides=[1, stride, stride, 1],
                  padding=padding.encode(), data_format=b"NHWC")
        fn = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
        self.values[name] = fn(self.values[x], size, stride, padding)
        return name

    def concat(self, name: str, inputs: Sequence[str]) -> str:
        tf = _tf()
        dim = self.const(f"{name}/concat_dim", np.array(3, dtype=np.int32))
        self.node(name, "Concat", [dim, *inputs], T=_DT_FLOAT, N=len(inputs))
        self.values[name] = tf.concat([self.values[i] for i in inputs], axis=3)
        return name


_DT_FLOAT = "DT_FLOAT"  # marker resolved in _set_attr


def _set_attr(attr: Any, value: Any) -> None:
    from tensorflow.core.framework import types_pb2

    if value == _DT_FLOAT:
        attr.type = types_pb2.DT_FLOAT
    elif isinstance(value, bool):
        attr.b = value
    elif isinstance(value, int):
        attr.i = value
    elif isinstance(value, float):
        attr.f = value
    elif isinstance(value, bytes):
        attr.s = value
    elif isinstance(value, str):
        attr.s = value.encode()
    elif isinstance(value, list):
        attr.list.i.extend(value)
    else:  # pragma: no cover - programming error in this module
        raise TypeError(f"unsupported attr value {value!r}")


# -- the topology -----------------------------------------------------------------------------
# Widths per block, as in the 2015 graph (and the Inception-v3 paper's Figures 5, 6, 7 and 10).
_FULL_STEM = (32, 32, 64, 80, 192)
_TINY_STEM = (8, 8, 16, 16, 24)


def _block_a(b: _Builder, name: str, x: str, w: tuple[int, int, int, int, int, int, int]) -> str:
    c1, t0, t1, u0, u1, u2, proj = w
    a = b.conv(f"{name}/conv", x, c1)
    t = b.conv(f"{name}/tower/conv", x, t0)
    t = b.conv(f"{name}/tower/conv_1", t, t1, 5)
    u = b.conv(f"{name}/tower_1/conv", x, u0)
    u = b.conv(f"{name}/tower_1/conv_1", u, u1, 3)
    u = b.conv(f"{name}/tower_1/conv_2", u, u2, 3)
    p = b.pool(f"{name}/tower_2/pool", x, "avg")
    p = b.conv(f"{name}/tower_2/conv", p, proj)
    return b.concat(f"{name}/join", [a, t, u, p])


def _block_b(b: _Builder, name: str, x: str, w: tuple[int, int, int, int]) -> str:
    c, t0, t1, t2 = w
    a = b.conv(f"{name}/conv", x, c, 3, 2, "VALID")
    t = b.conv(f"{name}/tower/conv", x, t0)
    t = b.conv(f"{name}/tower/conv_1", t, t1, 3)
    t = b.conv(f"{name}/tower/conv_2", t, t2, 3, 2, "VALID")
    p = b.pool(f"{name}/pool", x, "max", 3, 2, "VALID")
    return b.concat(f"{name}/join", [a, t, p])


def _block_c(b: _Builder, name: str, x: str, c1: int, mid: int, out: int) -> str:
    a = b.conv(f"{name}/conv", x, c1)
    t = b.conv(f"{name}/tower/conv", x, mid)
    t = b.conv(f"{name}/tower/conv_1", t, mid, (1, 7))
    t = b.conv(f"{name}/tower/conv_2", t, out, (7, 1))
    u = b.conv(f"{name}/tower_1/conv", x, mid)
    u = b.conv(f"{name}/tower_1/conv_1", u, mid, (7, 1))
    u = b.conv(f"{name}/tower_1/conv_2", u, mid, (1, 7))
    u = b.conv(f"{name}/tower_1/conv_3", u, mid, (7, 1))
    u = b.conv(f"{name}/tower_1/conv_4", u, out, (1, 7))
    p = b.pool(f"{name}/tower_2/pool", x, "avg")
    p = b.conv(f"{name}/tower_2/conv", p, out)
    return b.concat(f"{name}/join", [a, t, u, p])


def _block_d(b: _Builder, name: str, x: str, w: tuple[int, int, int, int]) -> str:
    t0, t1, u0, u1 = w
    t = b.conv(f"{name}/tower/conv", x, t0)
    t = b.conv(f"{name}/tower/conv_1", t, t1, 3, 2, "VALID")
    u = b.conv(f"{name}/tower_1/conv", x, u0)
    u = b.conv(f"{name}/tower_1/conv_1", u, u0, (1, 7))
    u = b.conv(f"{name}/tower_1/conv_2", u, u0, (7, 1))
    u = b.conv(f"{name}/tower_1/conv_3", u, u1, 3, 2, "VALID")
    p = b.pool(f"{name}/pool", x, "max", 3, 2, "VALID")
    return b.concat(f"{name}/join", [t, u, p])


def _block_e(b: _Builder, name: str, x: str, w: tuple[int, int, int, int, int, int], pool: str) -> str:
    c1, t0, t1, u0, u1, proj = w
    a = b.conv(f"{name}/conv", x, c1)
    t = b.conv(f"{name}/tower/conv", x, t0)
    t = b.concat(f"{name}/tower/mixed", [b.conv(f"{name}/tower/mixed/conv", t, t1, (1, 3)),
                                         b.conv(f"{name}/tower/mixed/conv_1", t, t1, (3, 1))])
    u = b.conv(f"{name}/tower_1/conv", x, u0)
    u = b.conv(f"{name}/tower_1/conv_1", u, u1, 3)
    u = b.concat(f"{name}/tower_1/mixed", [b.conv(f"{name}/tower_1/mixed/conv", u, t1, (1, 3)),
                                           b.conv(f"{name}/tower_1/mixed/conv_1", u, t1, (3, 1))])
    p = b.pool(f"{name}/tower_2/pool", x, pool)
    p = b.conv(f"{name}/tower_2/conv", p, proj)
    return b.concat(f"{name}/join", [a, t, u, p])


def _body(b: _Builder, x: str, size: Size) -> str:
    s = _FULL_STEM if size == "full" else _TINY_STEM
    x = b.conv("conv", x, s[0], 3, 2, "VALID")
    x = b.conv("conv_1", x, s[1], 3, 1, "VALID")
    x = b.conv("conv_2", x, s[2], 3, 1, "SAME")
    x = b.pool("pool", x, "max", 3, 2, "VALID")
    x = b.conv("conv_3", x, s[3], 1, 1, "VALID")
    x = b.conv("conv_4", x, s[4], 3, 1, "VALID")
    x = b.pool("pool_1", x, "max", 3, 2, "VALID")
    if size == "full":
        x = _block_a(b, "mixed", x, (64, 48, 64, 64, 96, 96, 32))
        x = _block_a(b, "mixed_1", x, (64, 48, 64, 64, 96, 96, 64))
        x = _block_a(b, "mixed_2", x, (64, 48, 64, 64, 96, 96, 64))
        x = _block_b(b, "mixed_3", x, (384, 64, 96, 96))
        x = _block_c(b, "mixed_4", x, 192, 128, 192)
        x = _block_c(b, "mixed_5", x, 192, 160, 192)
        x = _block_c(b, "mixed_6", x, 192, 160, 192)
        x = _block_c(b, "mixed_7", x, 192, 192, 192)
        x = _block_d(b, "mixed_8", x, (192, 320, 192, 192))
        x = _block_e(b, "mixed_9", x, (320, 384, 384, 448, 384, 192), "avg")
        x = _block_e(b, "mixed_10", x, (320, 384, 384, 448, 384, 192), "max")
    else:
        # Same block kinds and spatial path (35 -> 17 -> 8), a few channels each; still 2048 at the end.
        x = _block_a(b, "mixed", x, (8, 6, 8, 8, 12, 12, 4))
        x = _block_b(b, "mixed_3", x, (32, 8, 12, 12))
        x = _block_c(b, "mixed_4", x, 16, 8, 16)
        x = _block_d(b, "mixed_8", x, (16, 24, 16, 16))
        x = _block_e(b, "mixed_9", x, (320, 8, 384, 8, 8, 192), "avg")
        x = _block_e(b, "mixed_10", x, (320, 8, 384, 8, 8, 192), "max")
    return x


def _calibration_batch(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour fields plus texture, already normalised to [-1, 1] like ``Mul:0``."""
    tf = _tf()
    coarse = rng.uniform(-1.0, 1.0, size=(_CALIBRATION_IMAGES, 6, 6, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (size, size), method="bicubic").numpy()
    texture = rng.normal(0.0, 0.25, size=smooth.shape).astype(np.float32)
    return np.clip(smooth + texture, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class StandinInfo:
    """What was generated: parameter and multiply-add counts of the convolutional body."""

    graph_bytes: bytes
    params: int
    macs: int
    batchnorms: int


def build_graph(size: Size = "tiny", seed: int = 0) -> StandinInfo:
    """Serialise a 2015-format GraphDef with random weights (see the module docstring)."""
    from tensorflow.core.framework import graph_pb2, types_pb2

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    side = 299
    # The input chain, exactly as in the 2015 graph; the contents Const is what users feed.
    b.const("DecodeJpeg/contents", np.array(b"", dtype=object))
    b.node("DecodeJpeg", "DecodeJpeg", ["DecodeJpeg/contents"], channels=3, ratio=1, fancy_upscaling=True,
           try_recover_truncated=False, acceptable_fraction=1.0)
    cast = b.node("Cast", "Cast", ["DecodeJpeg"])
    cast.attr["SrcT"].type = types_pb2.DT_UINT8
    cast.attr["DstT"].type = types_pb2.DT_FLOAT
    b.const("ExpandDims/dim", np.array(0, dtype=np.int32))
    b.node("ExpandDims", "ExpandDims", ["Cast", "ExpandDims/dim"], T=_DT_FLOAT)
    b.const("ResizeBilinear/size", np.array([side, side], dtype=np.int32))
    b.node("ResizeBilinear", "ResizeBilinear", ["ExpandDims", "ResizeBilinear/size"], T=_DT_FLOAT,
           align_corners=False)
    b.const("Sub/y", np.array(128.0, dtype=np.float32))
    b.node("Sub", "Sub", ["ResizeBilinear", "Sub/y"], T=_DT_FLOAT)
    b.const("Mul/y", np.array(1.0 / 128.0, dtype=np.float32))
    b.node("Mul", "Mul", ["Sub", "Mul/y"], T=_DT_FLOAT)
    b.values["Mul"] = _calibration_batch(rng, side)

    top = _body(b, "Mul", size)
    spatial = int(b.values[top].shape[1])
    pooled = b.pool("pool_3", top, "avg", spatial, 1, "VALID")
    dim = int(b.values[pooled].shape[-1])
    assert dim == 2048, dim
    b.const("pool_3/_reshape/shape", np.array([1, dim], dtype=np.int32))
    reshape = b.node("pool_3/_reshape", "Reshape", ["pool_3", "pool_3/_reshape/shape"], T=_DT_FLOAT)
    reshape.attr["Tshape"].type = types_pb2.DT_INT32
    classes = 1008
    b.const("softmax/weights", rng.normal(0.0, 0.02, size=(dim, classes)).astype(np.float32))
    b.const("softmax/biases", np.zeros(classes, dtype=np.float32))
    b.node("softmax/logits/MatMul", "MatMul", ["pool_3/_reshape", "softmax/weights"], T=_DT_FLOAT,
           transpose_a=False, transpose_b=False)
    b.node("softmax/logits", "BiasAdd", ["softmax/logits/MatMul", "softmax/biases"], T=_DT_FLOAT,
           data_format=b"NHWC")
    b.node("softmax", "Softmax", ["softmax/logits"], T=_DT_FLOAT)

    graph_def = graph_pb2.GraphDef()
    graph_def.node.extend(b.nodes)
    graph_def.versions.producer = 5  # before version 9, when BatchNormWithGlobalNormalization was removed
    batchnorms = sum(1 for n in b.nodes if n.op == "BatchNormWithGlobalNormalization")
    return StandinInfo(graph_def.SerializeToString(), b.params, b.macs, batchnorms)


def _labels(classes: int = 1008) -> bytes:
    return "".join(f"stand-in class {i}\n" for i in range(classes)).encode()


def pack(graph_bytes: bytes, path: Path, archive: ArchiveKind) -> Path:
    """Write ``graph_bytes`` as a bare .pb or inside a zip/tgz laid out like the real archives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    licence = b"Stand-in for tests: random weights, not Google's Inception-v3.\n"
    if archive == "pb":
        path.write_bytes(graph_bytes)
    elif archive == "zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(ZIP_MEMBER, graph_bytes)
            zf.writestr("imagenet_comp_graph_label_strings.txt", _labels())
            zf.writestr("LICENSE", licence)
    elif archive == "tgz":
        with tarfile.open(path, "w:gz") as tf:
            for name, data in ((TGZ_MEMBER, graph_bytes), ("imagenet_synset_to_human_label_map.txt", _labels()),
                               ("imagenet_2012_challenge_label_map_proto.pbtxt", b""), ("LICENSE", licence)):
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    else:
        raise ValueError(f"archive must be 'zip', 'tgz' or 'pb', got {archive!r}")
    return path


def write_standin(path: str | os.PathLike[str], size: Size = "tiny", seed: int = 0,
                  archive: ArchiveKind = "zip") -> Path:
    """Write a stand-in graph to ``path`` (a file, or a directory that gets the real file name).

    ``size="full"`` takes a few seconds and ~100 MB; use :func:`cached_standin` for it.
    """
    target = Path(path)
    if target.is_dir():
        target = target / FILE_NAMES[archive]
    return pack(build_graph(size, seed).graph_bytes, target, archive)


def standin_cache_dir() -> Path:
    """``$XFERBENCH_STANDIN_CACHE``, else ``<user cache>/xferbench-standins`` (never inside the repo)."""
    from xferbench.paths import user_cache_root

    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return user_cache_root() / "xferbench-standins"


def cached_standin(size: Size = "full", seed: int = 0, archive: ArchiveKind = "zip") -> Path:
    """Like :func:`write_standin`, generated once per (size, seed, archive, generator version) and reused."""
    from xferbench.atomic import atomic_path

    key = hashlib.sha256(f"{GENERATOR_VERSION}|{size}|{seed}|{archive}".encode()).hexdigest()[:12]
    target = standin_cache_dir() / key / FILE_NAMES[archive]
    if not target.is_file():
        # Atomic: pytest-xdist workers or parallel sessions may race to build the same file.
        with atomic_path(target) as tmp:
            pack(build_graph(size, seed).graph_bytes, tmp, archive)
    return target


# -- the reference: the original graph, one image at a time, as retrain.py runs it -------------
class ReferenceSession:
    """The original GraphDef imported as is into a TF1 Session (the only place its old op runs)."""

    def __init__(self, graph_bytes: bytes) -> None:
        tf = _tf()
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(graph_bytes)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self.session = tf.compat.v1.Session(graph=self.graph)

    def bottleneck(self, jpeg: bytes) -> np.ndarray:
        """``pool_3/_reshape:0`` for encoded bytes fed to ``DecodeJpeg/contents:0``, shape [2048]."""
        return self.session.run("pool_3/_reshape:0", {"DecodeJpeg/contents:0": jpeg})[0]

    def bottleneck_from_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """The same for decoded uint8 HxWx3 pixels fed in place of ``DecodeJpeg:0`` (into ``Cast``)."""
        return self.session.run("pool_3/_reshape:0", {"DecodeJpeg:0": rgb})[0]

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ReferenceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def graph_bytes_of(path: Path) -> bytes:
    """The .pb inside a stand-in archive written by :func:`pack` (or the file itself)."""
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.read(ZIP_MEMBER)
    if data[:2] == b"\x1f\x8b":
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
            member = tf.extractfile(f"./{TGZ_MEMBER}")
            assert member is not None
            return member.read()
    return data


__all__ = [
    "FILE_NAMES",
    "ReferenceSession",
    "StandinInfo",
    "build_graph",
    "cached_standin",
    "graph_bytes_of",
    "pack",
    "standin_cache_dir",
    "write_standin",
]
