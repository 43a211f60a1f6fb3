"""One typed run record: every field of one (backbone, dataset, method, head, shots) run.

The JSON schema of a run (``results.schema()``) and the field table in docs/results.md are
generated from :class:`RunRecord`; a test checks both against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pending", "ok", "error", "skipped", "interrupted"]
STATUSES: tuple[str, ...] = ("pending", "ok", "error", "skipped", "interrupted")

_NUMBER = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_OBJECT = {"type": "object"}
_SHOTS = {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "all"}]}


def _field(doc: str, schema: dict[str, Any], default: Any = None, factory: Any = None, optional: bool = False) -> Any:
    """``optional``: a field added after files of this schema version were written; they may lack it."""
    metadata = {"doc": doc, "schema": schema, "optional": optional}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunRecord:
    """What one run measured. Methods fill it in; the harness fills in the identity and the status."""

    backbone: str = _field("as given on the command line (`keras:MobileNet`, ...)", {"type": "string"}, "")
    dataset: str = _field("as given on the command line (`digits:5-9`, ...)", {"type": "string"}, "")
    method: str = _field("the method's registered name: `transfer` (frozen backbone + new head), `full` (same "
                         "architecture from random initialisation), `finetune` (LP-FT), or a plugin's",
                         {"type": "string"}, "")
    head: str = _field("the head of a method that trains one (`transfer`); `-` otherwise", {"type": "string"}, "-")
    shots: int | str = _field("training images per class, or `\"all\"`", _SHOTS, "all")
    status: Status = _field("`ok`; `error` (see `error`; a failing run never stops a sweep); `skipped` (e.g. "
                            "`not supported` by the backbone); `interrupted` (stopped by a signal; `--resume` "
                            "goes on); `pending` only while it runs", {"enum": list(STATUSES)}, "pending")
    error: str | None = _field("the one-line reason of an `error`, `skipped` or `interrupted` run, else null",
                               {"type": ["string", "null"]})
    n_train: int | None = _field("training images used", _INT)
    n_val: int | None = _field("validation images used", _INT)
    n_test: int | None = _field("test images used", _INT)
    skipped_files: dict[str, int] = _field(
        "images left out, counted by reason: `zero_byte`, `not_an_image`, `corrupt`, `unreadable`, "
        "`symlink_loop`, `too_large`, and `decode_error` (the backbone could not decode it)",
        {"$ref": "#/$defs/skipped"}, factory=dict)
    test_accuracy: float | None = _field("top-1 accuracy on the test split",
                                         {"type": ["number", "null"], "minimum": 0, "maximum": 1})
    test_accuracy_ci: list[float] | None = _field(
        "95% percentile-bootstrap interval `[low, high]` of the test accuracy",
        {"oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]})
    per_class_accuracy: dict[str, float | None] | None = _field(
        "test accuracy per class name", {"type": ["object", "null"], "additionalProperties": {"type": ["number", "null"]}})
    confusion_matrix: list[list[int]] | None = _field(
        "rows are true classes, columns predictions",
        {"type": ["array", "null"], "items": {"type": "array", "items": {"type": "integer"}}})
    misclassified: list[dict[str, Any]] | None = _field(
        "with `--show-misclassified`: `[{key, true, predicted}]`; else null",
        {"type": ["array", "null"], "items": {"type": "object", "required": ["key", "true", "predicted"]}})
    extract_images_per_second: float | None = _field(
        "methods on bottlenecks: extraction throughput end to end (read, decode, forward) over the images computed "
        "in this run; null when every image came from the cache", _NUMBER)
    extract_forward_images_per_second: float | None = _field(
        "the same over the network's forward passes alone (decoding excluded); null for a backbone that does not "
        "time them", _NUMBER)
    gflops_per_image: float | None = _field(
        "the backbone's GFLOPs for one image's forward pass, counted from its graph (2 per multiply-add of its "
        "convolutions and matrix products); null for a backbone that cannot tell", _NUMBER)
    achieved_gflops_per_second: float | None = _field(
        "`gflops_per_image` x `extract_forward_images_per_second`: the arithmetic rate of the forward passes", _NUMBER)
    mfu: float | None = _field(
        "model FLOPs utilisation: `achieved_gflops_per_second` / the machine's measured peak matmul GFLOP/s in the "
        "run's `precision` (`xferbench machine`), 0..1 (above 1 when the network beats a plain matmul)",
        {"type": ["number", "null"], "minimum": 0})
    extract_seconds: float | None = _field("wall time of the bottleneck extraction (the misses)", _NUMBER)
    cache_hits: int | None = _field("bottlenecks taken from the cache", _INT)
    extracted: int | None = _field("bottlenecks computed in this run", _INT)
    cache_write_errors: int | None = _field("bottlenecks that could not be stored in the cache (disk full, "
                                            "read-only cache); the run still used them", _INT)
    train_seconds: float | None = _field("wall time of training: the head for transfer, the whole network for "
                                         "full and finetune; validation evaluations for the curve left out", _NUMBER)
    eval_seconds: float | None = _field("time spent scoring the validation split for the curve (not in "
                                        "`train_seconds`)", _NUMBER)
    cold_seconds: float | None = _field(
        "what the run cost from scratch: for methods on bottlenecks the cell's extraction in this run (counted once "
        "per backbone and dataset, not once per head) plus training; for methods that train the network, "
        "training", _NUMBER)
    warm_seconds: float | None = _field("what the run costs once the bottlenecks are cached: training alone",
                                        _NUMBER)
    val_accuracy: float | None = _field("validation accuracy of the final model (the comparison's default target "
                                        "is the lower of two methods')",
                                        {"type": ["number", "null"], "minimum": 0, "maximum": 1})
    precision: str | None = _field("the backbone's compute precision (`float32`, `bfloat16`, `int8`: a full-integer TFLite model of the network)",
                                   {"type": ["string", "null"]})
    curve: list[dict[str, Any]] = _field(
        "time to accuracy: `[{step, seconds, val_accuracy}]` recorded during training",
        {"type": "array", "items": {"type": "object", "required": ["step", "seconds", "val_accuracy"],
                                    "properties": {"step": {"type": "integer"}, "seconds": {"type": "number"},
                                                   "val_accuracy": {"type": ["number", "null"]}}}},
        factory=list)
    train_curve: list[dict[str, Any]] = _field(
        "the training loss and accuracy per step: `[{step, loss, train_accuracy}]`, the training batch's mean "
        "cross-entropy (regularisation terms left out) and top-1 accuracy as the step saw them (dropout on, before "
        "its update). At most 200 points: each the mean over a window of consecutive steps (windows of equal, "
        "doubling width), at the window's last step. `logreg`: one point per C of its grid (step i = the i-th C, "
        "as in `curve`), scored on the whole training split. full/finetune: the network's steps (finetune: "
        "after its linear probe). Empty for a method or head that records none; absent from files of earlier "
        "releases",
        {"type": "array", "items": {"type": "object", "required": ["step", "loss", "train_accuracy"],
                                    "properties": {"step": {"type": "integer"}, "loss": {"type": "number"},
                                                   "train_accuracy": {"type": "number"}}}},
        factory=list, optional=True)
    training: dict[str, Any] | None = _field(
        "full/finetune: `steps`, `epochs`, `stopped_by` (`epochs` or `budget`), `resumed_from_step`, "
        "`setup_seconds`, `final_val_accuracy`, `optimizer`, `ema_decay`, `run_dir`; an interrupted run: "
        "`checkpoint_step`", {"type": ["object", "null"]})
    strategy: str | None = _field(
        "full/finetune: the `tf.distribute` strategy training used: `mirrored` (`MirroredStrategy`) or `none` (one "
        "device); null for methods that train no network; absent from files of earlier releases",
        {"type": ["string", "null"]}, optional=True)
    replicas: int | None = _field("full/finetune: the replicas that trained in sync (1 for `none`); null for "
                                  "methods that train no network; absent from files of earlier releases",
                                  _INT, optional=True)
    method_options: dict[str, Any] = _field("the method's options after validation (defaults filled in)", _OBJECT,
                                            factory=dict)
    method_info: dict[str, Any] = _field("what the method reports beyond these fields (plugin methods put "
                                         "their own figures here)", _OBJECT, factory=dict)
    backbone_info: dict[str, Any] = _field("what the backbone reports: weights file, source data of "
                                           "pretraining, ...", _OBJECT, factory=dict)
    head_info: dict[str, Any] = _field("what the head reports: the L2 strength `logreg` chose, ...", _OBJECT,
                                       factory=dict)
    augment: dict[str, Any] | None = _field(
        "`--augment`: `spec` (`flip,crop=10,...`), `flip`, `crop`, `scale`, `brightness` (retrain.py's "
        "percentages), `copies`, `applied` (`cached copies` or `on the fly`); cached copies also "
        "`copies_total`, `copies_from_cache`, `copies_extracted`, `copies_failed`, `copies_seconds`; null without",
        {"type": ["object", "null"]})
    run_dir: str | None = _field("the run folder (`xferbench export`, `evaluate --watch`), if the method wrote one",
                                 {"type": ["string", "null"]})

    # -- identity and (de)serialisation ------------------------------------------------------
    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What identifies a run within a sweep: kept runs of ``--resume`` are matched on it."""
        return self.backbone, self.dataset, self.head, self.method, str(self.shots)

    def update(self, **values: Any) -> RunRecord:
        """Set several fields at once; an unknown name is an error (plugins: use ``method_info``)."""
        for name, value in values.items():
            if name not in _FIELD_NAMES:
                raise AttributeError(f"RunRecord has no field {name!r}; put extra figures in method_info")
            setattr(self, name, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record from a results file's entry; fields it lacks get their defaults, unknown ones are dropped."""
        return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RunRecord))
#: what every run of a results file has (fields added later within schema version 2 may be absent)
REQUIRED_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if not f.metadata["optional"])


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def run_schema() -> dict[str, Any]:
    """The JSON schema of one entry of ``runs``, generated from :class:`RunRecord`."""
    properties = {}
    for f in dataclasses.fields(RunRecord):
        properties[f.name] = {**f.metadata["schema"], "description": f.metadata["doc"]}
    return {
        "type": "object",
        "required": list(REQUIRED_FIELDS),
        "properties": properties,
        "allOf": [
            {"if": {"properties": {"status": {"const": "ok"}}},
             "then": {"properties": {"test_accuracy": {"type": "number"}, "n_train": {"type": "integer"},
                                     "n_test": {"type": "integer"}}}},
            {"if": {"properties": {"status": {"enum": ["error", "skipped", "interrupted"]}}},
             "then": {"properties": {"error": {"type": "string"}}}},
        ],
    }


def field_table() -> str:
    """The Markdown table of run fields in docs/results.md."""
    lines = ["| field | meaning |", "|---|---|"]
    for f in dataclasses.fields(RunRecord):
        lines.append(f"| `{f.name}` | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"
