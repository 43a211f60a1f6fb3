"""The ``inception_2015`` backbone: Google's Inception-v3 graph of December 2015, cut at pool_3."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xferbench.backbone import NetworkBackbone
from xferbench.data import ImageData
from xferbench.decoding import Preprocessing, decoder_for
from xferbench_inception import graph as graphs
from xferbench_inception import pipeline

if TYPE_CHECKING:
    from xferbench.context import RunContext

_MIN_CAPTURED_BYTES = 1024


@dataclass
class _Loaded:
    """A prepared graph: the callable and what it was built from."""

    function: Any  # float [n, H, W, 3] (resized, 0..255) -> float32 [n, 2048]
    interface: graphs.Interface
    preprocessing: Preprocessing
    weights_sha256: str
    source: Path
    member: str | None
    folded: int
    dropped_checks: int
    load_seconds: float


class Inception2015(NetworkBackbone):
    """Bottlenecks (``pool_3``, 2048 floats) of the 2015 graph, batched and bit-faithful in preprocessing."""

    name = "inception_2015"
    feature_dim = graphs.FEATURE_DIM
    preprocessing_version = "1"

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self._precision: str = self.options.get("precision") or "float32"
        self.calibration_images = int(self.options.get("int8_calibration_images") or self.calibration_images)
        self._batch_size: int = int(self.options.get("batch_size") or 0)  # 0: chosen in load()
        self._xla: bool = bool(self.options.get("xla"))
        self._prefetch: str = self.options.get("prefetch") or "auto"
        self._loaded: _Loaded | None = None

    # -- preparing ------------------------------------------------------------------------
    def prepare(self, context: RunContext) -> None:
        from xferbench_inception.fetching import resolve

        self.load(resolve(self.options, context))

    def load(self, path: Path) -> None:
        """Read, verify and rewrite the graph at ``path`` (.pb, .zip or .tgz) and build the function."""
        started = time.perf_counter()
        graph_file = graphs.read_graph_file(Path(path))
        where = f"{graph_file.source}:{graph_file.member}" if graph_file.member else str(graph_file.source)
        graph_def = graphs.parse(graph_file)
        interface = graphs.verify(graph_def, where)
        # int8 converts the float32 graph (xferbench.int8)
        network_precision = "float32" if self._precision == "int8" else self._precision
        rewritten = graphs.rewrite(graph_def, interface, where, network_precision)
        function = _build_function(rewritten.graph_def, interface, self._xla)
        on_gpu = _has_gpu()
        if not self._batch_size:
            # 1..16 images per pass run at the same speed per image on 2 CPU cores (activations of
            # bigger batches outgrow the caches); a GPU needs large batches to be kept busy.
            self._batch_size = 64 if on_gpu else 8
        self.prefetch = self._prefetch == "yes" or (self._prefetch == "auto" and on_gpu)
        self._loaded = _Loaded(
            function=function,
            interface=interface,
            preprocessing=pipeline.preprocessing(interface),
            weights_sha256=hashlib.sha256(graph_file.data).hexdigest(),
            source=graph_file.source,
            member=graph_file.member,
            folded=rewritten.folded,
            dropped_checks=rewritten.dropped_checks,
            load_seconds=time.perf_counter() - started,
        )

    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise RuntimeError("inception_2015: call prepare(context) or load(path) before using the backbone")
        return self._loaded

    # -- the Backbone contract ------------------------------------------------------------
    @property
    def weights_sha256(self) -> str:
        """sha256 of the graph's .pb bytes (the same for the .pb alone or inside either archive)."""
        return self._require().weights_sha256

    def cache_namespace(self) -> str:
        # bfloat16 features differ from float32 ones, so they must not share cache entries.
        base = super().cache_namespace()
        return base if self._precision == "float32" else f"{base}|{self._precision}"

    def precision(self) -> str:
        return self._precision

    @property
    def preprocessing(self) -> Preprocessing:  # type: ignore[override]
        """The graph's own decoding and resizing (its Sub and Mul normalise inside the network)."""
        return self._require().preprocessing

    def flops_per_image(self) -> float:
        from xferbench.flops import function_flops

        loaded = self._require()
        return function_flops(loaded.function, (*loaded.interface.size, 3))


    @property
    def batch_size(self) -> int:  # type: ignore[override]
        self._require()  # chosen in load() by default
        return self._batch_size

    def forward(self, batch: Any) -> np.ndarray:
        """The network alone on resized float images ``[n, H, W, 3]`` (0..255) -> float32 ``[n, 2048]``."""
        function = self._require().function
        valid = int(batch.shape[0])
        if self._xla and valid < self._batch_size:
            # One shape only: XLA would otherwise compile a program for every tail size.
            import tensorflow as tf

            batch = tf.pad(batch, [[0, self._batch_size - valid], [0, 0], [0, 0], [0, 0]])
        return function(batch).numpy()[:valid]

    def preprocess(self, images: Sequence[ImageData]) -> Iterator[tuple[np.ndarray, Any]]:
        """Decoded, resized batches ``(indices, float [n, H, W, 3])`` as :meth:`extract` feeds them."""
        return decoder_for(self.preprocessing, prefetch=self.prefetch).batches(images, self.batch_size)

    # -- export -----------------------------------------------------------------------------
    def tf_forward(self, batch: Any) -> Any:
        # The rewritten graph, so the SavedModel holds no BatchNormWithGlobalNormalization and
        # loads in current TensorFlow and TF Serving.
        return self._require().function(batch)

    # -- full retraining ----------------------------------------------------------------------
    def supports(self, method: str) -> bool:
        # A frozen GraphDef has no trainable counterpart to fine-tune; "full" trains Keras's
        # InceptionV3 from scratch: the same architecture, but not the same graph.
        return method == "full"

    @property
    def model_preprocessing(self) -> Preprocessing:
        """The graph's ``Mul:0``: decoded, resized like the graph, then (x - 128) / 128."""
        return replace(self.preprocessing, mean=(128.0,), std=(128.0,))

    def build_model(self, num_classes: int, *, pretrained: bool, seed: int) -> Any:
        if pretrained:
            raise NotImplementedError("inception_2015 cannot be fine-tuned (a frozen 2015 graph)")
        import keras

        keras.utils.set_random_seed(seed)
        height, width = self._require().interface.size
        base = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                              input_shape=(height, width, 3))
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="logits")(base.output)
        return keras.Model(base.input, outputs, name="inceptionv3_from_scratch")

    def info(self) -> dict[str, Any]:
        loaded = self._require()
        return {
            "source": str(loaded.source),
            "member": loaded.member,
            "graph_producer_version": loaded.interface.producer,
            "input_size": list(loaded.interface.size),
            "batchnorms_folded": loaded.folded,
            "checknumerics_dropped": loaded.dropped_checks,
            "precision": self._precision,
            "xla": self._xla,
            "prefetch": self.prefetch,
            "batch_size": self._batch_size,
            "load_seconds": round(loaded.load_seconds, 3),
        }


def _build_function(graph_def: Any, interface: graphs.Interface, xla: bool) -> Any:
    """Import the rewritten GraphDef into a TF2 function (it holds no removed op any more).

    The weights leave the GraphDef and enter the function as captured tensors: with ~95 MB of
    Const nodes inside it, building and first-calling the function took ~25 s (Grappler
    walks every constant); as captures it takes ~3 s and runs as fast.
    """
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2, node_def_pb2

    light = graph_pb2.GraphDef()
    light.versions.CopyFrom(graph_def.versions)
    weights: dict[str, Any] = {}
    for node in graph_def.node:
        value = node.attr["value"].tensor if node.op == "Const" else None
        if value is not None and len(value.tensor_content) >= _MIN_CAPTURED_BYTES:
            # identity() puts the tensor where eager ops run (the GPU if there is one), once.
            weights[node.name] = tf.identity(tf.constant(tf.make_ndarray(value)))
            placeholder = node_def_pb2.NodeDef(name=node.name, op="Placeholder")
            placeholder.attr["dtype"].CopyFrom(node.attr["dtype"])
            placeholder.attr["shape"].shape.CopyFrom(value.tensor_shape)
            light.node.append(placeholder)
        else:
            light.node.append(node)

    def import_graph() -> None:
        feeds = {f"{name}:0": tf.identity(tensor) for name, tensor in weights.items()}
        tf.compat.v1.import_graph_def(light, input_map=feeds, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    pruned = wrapped.prune(wrapped.graph.get_tensor_by_name(f"{graphs.INPUT_NAME}:0"),
                           wrapped.graph.get_tensor_by_name(f"{graphs.OUTPUT_NAME}:0"))
    height, width = interface.size
    signature = [tf.TensorSpec([None, height, width, 3], tf.float32)]
    # tf.function around the pruned graph: one place to switch XLA on, and a stable signature.
    return tf.function(lambda x: pruned(x), input_signature=signature, jit_compile=xla or None)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def create(arg: str | None, options: Mapping[str, Any], context: RunContext) -> Inception2015:
    """Factory registered for ``inception_2015``."""
    return Inception2015(options)
