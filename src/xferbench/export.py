"""``xferbench export`` and ``xferbench predict``: a transfer run as one TF SavedModel, and using it.

The exported model is self-contained: the backbone's decoding, resizing, normalisation and
network (from :meth:`Backbone.tf_features`) followed by the trained head. Its serving
signature takes a batch of encoded image files (``tf.string [N]``) and returns
``{"probabilities": float32 [N, C], "classes": int64 [N]}``; ``labels.txt`` (one class name per
line, in output order) sits next to ``saved_model.pb`` and is also stored as an asset.

TensorFlow is imported inside functions only, so that the CLI can quiet it first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xferbench.backbone import Backbone
from xferbench.context import RunContext
from xferbench.errors import UserError
from xferbench.run_folder import RunFolder, read_labels, write_labels

SIGNATURE = "serving_default"
INPUT_NAME = "images"
#: what xferbench itself writes next to saved_model.pb: where the model came from
EXPORT_FILE = "xferbench_export.json"
#: the class names next to saved_model.pb (and as its asset), one per line in output order
LABELS_FILE = "labels.txt"
EXPORT_FORMAT = 1
#: images per call of the serving signature in :func:`predict`
PREDICT_BATCH = 32


@dataclass(frozen=True)
class TransferRun:
    """What ``run.json`` says about a transfer run: how to rebuild its backbone, and its labels."""

    path: Path
    backbone: str
    backbone_options: dict[str, Any]
    weights: Path | None
    cache_dir: Path
    data_dir: Path | None
    seed: int
    feature_dim: int
    weights_sha256: str
    class_names: list[str]
    record: dict[str, Any]


def read_run(run_dir: Path) -> TransferRun:
    """Read and check a run directory written by ``RunFolder.save_transfer_run``; one-line UserError if unusable."""
    folder = RunFolder(run_dir)
    run_dir = folder.path
    hint = "pass a transfer run's run_dir from the results JSON (made by xferbench run --compare transfer)"
    if not folder.exists():
        raise UserError(f"--run {run_dir}: no such directory; {hint}")
    missing = folder.missing_transfer_file()
    if missing is not None:
        raise UserError(f"--run {run_dir}: no {missing} in it, so it is not a transfer run directory; {hint}")
    run_file = folder.run_file.name
    try:
        record = folder.read_run_record()
        labels = folder.read_labels()
        run = TransferRun(
            path=run_dir, backbone=str(record["backbone"]), backbone_options=dict(record["backbone_options"]),
            weights=Path(record["weights"]) if record.get("weights") else None,
            data_dir=Path(record["data_dir"]) if record.get("data_dir") else None,
            cache_dir=Path(record["cache_dir"]), seed=int(record["seed"]), feature_dim=int(record["feature_dim"]),
            weights_sha256=str(record["weights_sha256"]), class_names=[str(c) for c in record["class_names"]],
            record=record)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise UserError(f"--run {run_dir}: {run_file} is damaged ({detail}); run the experiment again") from None
    if record.get("method", "transfer") != "transfer":
        raise UserError(f"--run {run_dir}: only transfer runs can be exported, this is a {record['method']!r} run")
    if labels != run.class_names:
        raise UserError(f"--run {run_dir}: {folder.labels_file.name} does not match the class names in {run_file}; "
                        f"run the experiment again")
    return run


def rebuild_backbone(run: TransferRun, context: RunContext) -> Backbone:
    """The run's backbone with its saved options, cache, weights and seed, prepared and verified."""
    # Relative paths in run.json are relative to where the run was started; say so when they miss.
    if not run.cache_dir.is_dir():
        raise UserError(f"the run's cache folder {run.cache_dir} (from {RunFolder(run.path).run_file}) does not exist here; "
                        f"export from the folder the run was started in, on the same machine")
    if run.weights is not None and not run.weights.exists():
        raise UserError(f"the run's weights file {run.weights} (from {RunFolder(run.path).run_file}) does not exist here; "
                        f"export on the machine and from the folder the run was started in")
    spec, arg = context.catalog.backbones.resolve(run.backbone)
    if not spec.parametric and arg:
        raise UserError(f"backbone {spec.name!r} takes no argument, got {run.backbone!r} in {RunFolder(run.path).run_file}")
    options = spec.validate(run.backbone_options)
    run_context = RunContext(catalog=context.catalog, cache_dir=run.cache_dir, seed=run.seed, weights=run.weights,
                             data_dir=context.data_dir or run.data_dir, progress=context.progress)
    backbone = spec.load_factory()(arg if spec.parametric else None, options, run_context)
    if not isinstance(backbone, Backbone):
        raise UserError(f"backbone {spec.name!r} (plugin {spec.plugin}) did not return a Backbone")
    backbone.prepare(run_context)
    if backbone.weights_sha256 != run.weights_sha256:
        raise UserError(f"the backbone's weights changed since the run (sha256 {backbone.weights_sha256[:12]}..., "
                        f"the run used {run.weights_sha256[:12]}...); run the experiment again to export it")
    if backbone.feature_dim != run.feature_dim:
        raise UserError(f"backbone {run.backbone!r} now gives {backbone.feature_dim} features, the run's head "
                        f"takes {run.feature_dim}; run the experiment again")
    return backbone


def _load_head(run: TransferRun) -> Any:
    import keras

    path = RunFolder(run.path).head_file
    try:
        head = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged archive
        raise UserError(f"cannot load the trained head {path}: {' '.join(str(exc).split())}") from None
    outputs = head.output_shape[-1]
    if head.input_shape[-1] != run.feature_dim or outputs != len(run.class_names):
        raise UserError(f"{path} maps {head.input_shape[-1]} features to {outputs} classes, but the run has "
                        f"{run.feature_dim} features and {len(run.class_names)} classes; run the experiment again")
    return head


def build_module(features: Any, head: Any, labels_file: Path) -> Any:
    """The ``tf.Module`` that is saved: encoded images -> backbone features -> head probabilities."""
    import tensorflow as tf

    class ExportedClassifier(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="xferbench_classifier")
            # Attributes are tracked, so the backbone's and head's weights and the labels are saved.
            self.features = features
            self.head = head
            self.labels = tf.saved_model.Asset(str(labels_file))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            probabilities = tf.cast(self.head(self.features(images), training=False), tf.float32)
            return {"probabilities": probabilities,
                    "classes": tf.argmax(probabilities, axis=1, output_type=tf.int64)}

    return ExportedClassifier()


def export_run(run_dir: Path, out: Path, context: RunContext) -> Path:
    """Write the transfer run in ``run_dir`` as one SavedModel folder ``out``; return ``out``.

    ``out`` is written next to itself under a temp name and renamed into place, so it is
    either the complete new export or what was there before. An earlier export there is replaced.
    """
    import tensorflow as tf

    run = read_run(run_dir)
    out = Path(out).expanduser().absolute()
    _check_target(out)
    backbone = rebuild_backbone(run, context)
    features = backbone.tf_features()
    head = _load_head(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp) so the folder gets the umask's permissions, like any other output.
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        labels = tmp / LABELS_FILE
        write_labels(labels, run.class_names)
        module = build_module(features, head, labels)
        context.progress.log(f"exporting {run.backbone} + {run.record.get('head', 'head')} to {out}")
        try:
            tf.saved_model.save(module, str(tmp), signatures={SIGNATURE: module.serve})
        except (ValueError, TypeError, tf.errors.OpError) as exc:
            raise UserError(f"backbone {run.backbone!r} could not be saved as a SavedModel: "
                            f"{' '.join(str(exc).split())}") from None
        check_ops(tmp)
        (tmp / EXPORT_FILE).write_text(json.dumps({
            "format": EXPORT_FORMAT, "signature": SIGNATURE, "input": INPUT_NAME,
            "outputs": ["probabilities", "classes"], "run_dir": str(run.path.absolute()),
            "backbone": run.backbone, "backbone_options": run.backbone_options, "head": run.record.get("head"),
            "dataset": run.record.get("dataset"), "feature_dim": run.feature_dim,
            "weights_sha256": run.weights_sha256, "class_names": run.class_names,
            "tensorflow_version": tf.__version__,
        }, indent=2, default=str) + "\n", encoding="utf-8")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_target(out: Path) -> None:
    """``out`` may be absent, an empty folder or an earlier export; anything else is the user's data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder name for the exported model")
    entries = {p.name for p in out.iterdir()}
    if entries and not {"saved_model.pb", EXPORT_FILE} <= entries:
        raise UserError(f"--out {out} is a folder with other files in it; give a new or empty folder "
                        f"(an earlier xferbench export there is replaced)")


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished export into place, replacing an earlier one only after the new one is complete."""
    from xferbench.atomic import fsync_dir

    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old)  # an empty folder of ours is replaced; a gap without ``out`` lasts one rename
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    fsync_dir(out.parent)


def saved_op_types(model_dir: Path) -> set[str]:
    """Every op type in the SavedModel's graphs and function library (called functions excluded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(model_dir) / "saved_model.pb").read_bytes())
    ops: set[str] = set()
    functions: set[str] = set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for function in meta.graph_def.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return ops - functions


def check_ops(model_dir: Path) -> None:
    """Refuse a SavedModel that the running TensorFlow (and so TF Serving of today) cannot load.

    That is the classic failure of re-exported 2015 graphs: "Op BatchNormWithGlobalNormalization
    is not available in GraphDef version 21". Checking before publishing turns it into an
    export error instead of a broken model found at serving time.
    """
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    producer = int(tf.version.GRAPH_DEF_VERSION)
    for op in sorted(saved_op_types(model_dir)):
        op_def = op_def_registry.get(op)
        if op_def is None:
            raise UserError(f"the exported graph uses op {op!r}, which this TensorFlow does not know; "
                            f"the backbone's tf_features() must use current ops only")
        if op_def.HasField("deprecation") and 0 < op_def.deprecation.version <= producer:
            raise UserError(f"the exported graph uses op {op!r}, removed in GraphDef version "
                            f"{op_def.deprecation.version} ({op_def.deprecation.explanation}); the backbone's "
                            f"tf_features() must rewrite it")


# -- predict ----------------------------------------------------------------------------------
@dataclass
class ExportedModel:
    """A loaded export: its serving function and its labels."""

    path: Path
    serve: Any
    labels: list[str]
    #: the loaded SavedModel object; the signature's variables belong to it, so it must stay alive
    loaded: Any = None

    def probabilities(self, images: Sequence[bytes]) -> np.ndarray:
        """float32 ``[len(images), C]`` for encoded image files."""
        import tensorflow as tf

        if not images:
            return np.zeros((0, len(self.labels)), np.float32)
        outputs = self.serve(**{INPUT_NAME: tf.constant(list(images), dtype=tf.string)})
        return np.asarray(outputs["probabilities"], dtype=np.float32)


def load_model(model_dir: Path) -> ExportedModel:
    """Load an export made by :func:`export_run`; one-line UserError when ``model_dir`` is not one."""
    import tensorflow as tf

    model_dir = Path(model_dir)
    hint = "give a folder written by xferbench export"
    if not model_dir.is_dir():
        raise UserError(f"--model {model_dir}: no such folder; {hint}")
    if not (model_dir / "saved_model.pb").is_file():
        raise UserError(f"--model {model_dir}: no saved_model.pb in it, so it is not an exported model; {hint}")
    labels_path = model_dir / LABELS_FILE
    if not labels_path.is_file():
        labels_path = model_dir / "assets" / LABELS_FILE
    if not labels_path.is_file():
        raise UserError(f"--model {model_dir}: no {LABELS_FILE} in it; {hint}")
    try:
        labels = read_labels(labels_path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--model {model_dir}: cannot read {labels_path.name} ({exc})") from None
    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as exc:  # protobuf, op and checkpoint errors all mean a damaged model
        raise UserError(f"--model {model_dir}: cannot load the SavedModel ({' '.join(str(exc).split())[:300]})"
                        ) from None
    serve = getattr(loaded, "signatures", {}).get(SIGNATURE)
    if serve is None:
        raise UserError(f"--model {model_dir}: the SavedModel has no {SIGNATURE!r} signature; {hint}")
    _, inputs = serve.structured_input_signature
    if set(inputs) != {INPUT_NAME} or "probabilities" not in serve.structured_outputs:
        raise UserError(f"--model {model_dir}: its {SIGNATURE!r} signature does not take {INPUT_NAME!r} and "
                        f"return 'probabilities'; {hint}")
    return ExportedModel(path=model_dir, serve=serve, labels=labels, loaded=loaded)


def predict(model_dir: Path, images: list[Path], top_k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (label, probability) pairs of each image, most probable first."""
    import tensorflow as tf

    if top_k < 1:
        raise UserError(f"--top-k {top_k}: must be at least 1")
    model = load_model(model_dir)
    contents: list[bytes] = []
    for image in images:
        try:
            contents.append(Path(image).read_bytes())
        except OSError as exc:
            raise UserError(f"{image}: cannot read the image ({exc.strerror})") from None
    rows: list[np.ndarray] = []
    for start in range(0, len(contents), PREDICT_BATCH):
        batch = contents[start:start + PREDICT_BATCH]
        try:
            rows.append(model.probabilities(batch))
        except tf.errors.InvalidArgumentError:
            # One undecodable file fails its whole batch; find it so the message names it.
            for offset, data in enumerate(batch):
                try:
                    model.probabilities([data])
                except tf.errors.InvalidArgumentError:
                    raise UserError(f"{images[start + offset]}: cannot decode the image (JPEG, PNG, GIF or BMP "
                                    f"expected)") from None
            raise
    probabilities = np.concatenate(rows) if rows else np.zeros((0, len(model.labels)), np.float32)
    if probabilities.shape[1] != len(model.labels):
        raise UserError(f"--model {model_dir}: the model has {probabilities.shape[1]} outputs but {LABELS_FILE} "
                        f"lists {len(model.labels)} labels")
    k = min(top_k, len(model.labels))
    results = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:k]
        results.append([(model.labels[i], float(row[i])) for i in order])
    return results
