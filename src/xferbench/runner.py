"""The one data flow: dataset -> backbone -> bottleneck cache -> head -> metrics -> result.

Every (backbone, dataset) cell of a sweep runs in turn; a failing cell is recorded
with its one-line error and the others still run. The results document is
rewritten after each cell, so an interrupted sweep keeps what it finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xferbench import machine
from xferbench.atomic import is_write_error, write_error
from xferbench.backbone import Backbone
from xferbench.context import RunContext
from xferbench.data import Example, ImageDataset, select_shots
from xferbench.errors import OptionError, UserError, one_line
from xferbench.extraction import Extraction, extract_features
from xferbench.results import SCHEMA_VERSION, write_document

METHODS = ("transfer", "full", "finetune")
#: inputs for full retraining larger than this go to a temporary file on disk instead of memory
IN_MEMORY_INPUTS_BYTES = 1 << 30
_INPUT_CHUNK = 256


@dataclass
class RunRequest:
    """Everything ``xferbench run`` was asked to do."""

    backbones: list[str]
    datasets: list[str]
    heads: list[str]
    methods: list[str] = field(default_factory=lambda: ["transfer", "full"])
    shots: list[int | None] = field(default_factory=lambda: [None])
    backbone_options: dict[str, str] = field(default_factory=dict)
    dataset_options: dict[str, str] = field(default_factory=dict)
    head_options: dict[str, str] = field(default_factory=dict)
    full_epochs: int | None = None
    full_budget_seconds: float | None = None
    finetune_learning_rate: float = 1e-4
    full_learning_rate: float = 1e-3
    full_batch_size: int = 32
    show_misclassified: bool = False
    command: list[str] = field(default_factory=list)


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h"`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise UserError(f"--full-budget {text!r}: write a duration like 90s, 10m or 1h")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    if not 0 < seconds < float("inf"):
        raise UserError(f"--full-budget {text!r}: the duration must be above zero and finite")
    return seconds


def parse_shots(text: str) -> list[int | None]:
    """``"1,5,10,all"`` -> ``[1, 5, 10, None]``."""
    shots: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            shots.append(None)
        elif part.isdecimal() and len(part) <= 18 and int(part) > 0:  # isdigit() admits "²", which int() refuses
            shots.append(int(part))
        else:
            raise UserError(f"--shots {text!r}: each entry must be a positive integer or 'all'")
    return shots


class Runner:
    """Runs a :class:`RunRequest` and keeps the results document up to date.

    With ``resume`` (the document an interrupted run of the same request left at ``output``),
    its finished runs are kept as they are and the others run again; full retraining and
    fine-tuning go on from their newest checkpoints.
    """

    def __init__(self, request: RunRequest, context: RunContext, output: Path,
                 resume: dict[str, Any] | None = None) -> None:
        self.request = request
        self.context = context
        self.output = output
        self.resuming = resume is not None
        self._finished = {_run_key(run): run for run in (resume or {}).get("runs", []) if run.get("status") == "ok"}
        self._resumed_from = resume.get("created") if resume else None
        self.document: dict[str, Any] = {}
        self._logged_errors: set[str] = set()
        self._validate()

    # -- set-up --------------------------------------------------------------------------
    def _validate(self) -> None:
        """Resolve every name and option before any work starts, so typos fail in a second."""
        catalog = self.context.catalog
        req = self.request
        for method in req.methods:
            if method not in METHODS:
                raise UserError(f"--compare: unknown method {method!r}; choose from {', '.join(METHODS)}")
        self.backbone_specs = _validated(catalog.backbones, req.backbones, req.backbone_options)
        self.dataset_specs = _validated(catalog.datasets, req.datasets, req.dataset_options)
        self.head_specs = _validated(catalog.heads, req.heads, req.head_options)
        for token, (spec, _) in self.head_specs.items():
            if catalog.heads.resolve(token)[1]:
                raise UserError(f"head {spec.name!r} takes no argument, got {token!r}")
        if self.context.data_dir is not None and not Path(self.context.data_dir).is_dir():
            raise UserError(f"--data-dir {self.context.data_dir}: no such directory")
        if self.context.weights is not None and not Path(self.context.weights).exists():
            raise UserError(f"--weights {self.context.weights}: no such file")

    def _new_document(self) -> dict[str, Any]:
        req = self.request
        return {
            "schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": req.command,
            "seed": self.context.seed,
            "options": {
                "backbones": req.backbones, "datasets": req.datasets, "heads": req.heads,
                "compare": req.methods, "shots": ["all" if s is None else s for s in req.shots],
                "backbone_options": req.backbone_options, "dataset_options": req.dataset_options,
                "head_options": req.head_options, "full_epochs": req.full_epochs,
                "full_budget_seconds": req.full_budget_seconds,
                "weights": self.context.weights, "data_dir": self.context.data_dir,
                "cache_dir": self.context.cache_dir,
            },
            "machine": machine.machine_info(with_gpus=False),
            "versions": machine.versions(),
            "datasets": [],
            "runs": [],
            **({"resumed": {"created": self._resumed_from, "kept_runs": 0}} if self.resuming else {}),
        }

    # -- the sweep -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.document = self._new_document()
        self._save()
        try:
            self.document["machine"]["gpu"] = machine.gpus()
        except Exception:  # GPU discovery is informative only
            self.document["machine"]["gpu"] = []
        for dataset_token in self.request.datasets:
            dataset = self._load_dataset(dataset_token)
            for backbone_token in self.request.backbones:
                self._run_cell(backbone_token, dataset_token, dataset)
                self._save()
        return self.document

    def _save(self) -> None:
        write_document(self.output, self.document)

    def _load_dataset(self, token: str) -> ImageDataset | UserError:
        spec, options = self.dataset_specs[token]
        try:
            dataset = self.context.load_dataset(token, options)
        except UserError as exc:
            return exc
        self.document["datasets"].append({
            "name": dataset.name, "token": token, "classes": len(dataset.class_names),
            "class_names": dataset.class_names, "split_sizes": dataset.split_sizes(),
            "skipped_files": dataset.skipped_counts(), "warnings": dataset.warnings,
        })
        for warning in dataset.warnings:
            self.context.progress.log(f"warning: {warning}")
        return dataset

    def _planned_rows(self, backbone: str, dataset: str) -> list[dict[str, Any]]:
        rows = []
        for shots in self.request.shots:
            for method in self.request.methods:
                heads = self.request.heads if method == "transfer" else ["-"]
                for head in heads:
                    rows.append(_row(backbone, dataset, head, method, shots))
        return rows

    def _kept(self, row: dict[str, Any]) -> bool:
        """Append the interrupted run's finished result for ``row``, if it has one."""
        finished = self._finished.get(_run_key(row))
        if finished is None:
            return False
        self.document["runs"].append(finished)
        self.document["resumed"]["kept_runs"] += 1
        return True

    def _run_cell(self, backbone_token: str, dataset_token: str, dataset: ImageDataset | UserError) -> None:
        planned = self._planned_rows(backbone_token, dataset_token)
        if all(_run_key(row) in self._finished for row in planned):
            for row in planned:
                self._kept(row)
            self.context.progress.log(f"{backbone_token} on {dataset_token}: kept {len(planned)} finished runs")
            return
        try:
            if isinstance(dataset, UserError):
                raise dataset
            backbone = self.make_backbone(backbone_token)
            backbone.prepare(self.context)
            self._warn_about_precision(backbone_token, backbone)
        except Exception as exc:  # one broken cell (even a plugin bug) must not sink the sweep
            exc = _as_cell_error(exc)
            for row in planned:
                if not self._kept(row):
                    self.document["runs"].append(_failed(row, exc))
            self._log_error(f"{backbone_token} on {dataset_token}: {exc}")
            return
        extraction = None
        if any(row["method"] == "transfer" and _run_key(row) not in self._finished for row in planned):
            try:
                extraction = extract_features(backbone, dataset, self.context.subdir("bottlenecks"),
                                              self.context.progress, batch_size=backbone.extract_batch_size)
            except Exception as exc:
                extraction = _as_cell_error(exc)
        model_inputs: _Inputs | None = None
        # Inputs over IN_MEMORY_INPUTS_BYTES live in a temporary file until the cell is done.
        with contextlib.ExitStack() as scratch:
            for shots in self.request.shots:
                subset = select_shots(dataset, shots, self.context.seed)
                for method in self.request.methods:
                    if method == "transfer":
                        for head_token in self.request.heads:
                            row = _row(backbone_token, dataset_token, head_token, method, shots)
                            if self._kept(row):
                                continue
                            self._append(row, lambda r=row, h=head_token, s=subset: self._transfer(
                                r, backbone, dataset, s, extraction, h))
                        continue
                    row = _row(backbone_token, dataset_token, "-", method, shots)
                    if self._kept(row):
                        continue
                    if not backbone.supports(method):
                        self.document["runs"].append(_failed(row, UserError(
                            f"backbone {backbone_token!r} does not support {method!r}")))
                        continue
                    if model_inputs is None:
                        try:
                            model_inputs = self._model_inputs(backbone, dataset, self._trained_on(dataset),
                                                              scratch)
                        except Exception as exc:
                            self.document["runs"].append(_failed(row, _as_cell_error(exc)))
                            continue
                    self._append(row, lambda r=row, m=method, s=subset, x=model_inputs: self._train_network(
                        r, backbone, dataset, s, x, m))

    def _trained_on(self, dataset: ImageDataset) -> list[Example]:
        """The examples full training or fine-tuning will see over all ``--shots``: with few shots, few."""
        keys: set[str] = set()
        for shots in self.request.shots:
            keys.update(ex.key for ex in select_shots(dataset, shots, self.context.seed).examples)
        return [ex for ex in dataset.examples if ex.key in keys]

    def _model_inputs(self, backbone: Backbone, dataset: ImageDataset, examples: list[Example],
                      scratch: contextlib.ExitStack) -> _Inputs:
        """``examples`` as the network's inputs, computed a chunk at a time (NaN rows: undecodable).

        Above IN_MEMORY_INPUTS_BYTES (all 3670 flowers at 299 px take 3.9 GB) they go to a
        temporary .npy file mapped into memory, so the page cache, not the process, holds them.
        """

        def chunk(start: int) -> np.ndarray:
            part = examples[start:start + _INPUT_CHUNK]
            return np.asarray(backbone.model_inputs([dataset.read(ex) for ex in part]))

        first = chunk(0)
        shape = (len(examples), *first.shape[1:])
        if first.nbytes * (len(examples) / max(len(first), 1)) <= IN_MEMORY_INPUTS_BYTES:
            inputs = np.empty(shape, dtype=first.dtype)
        else:
            folder = scratch.enter_context(tempfile.TemporaryDirectory(
                prefix="model-inputs-", dir=self.context.subdir("tmp"), ignore_cleanup_errors=True))
            inputs = np.lib.format.open_memmap(Path(folder) / "inputs.npy", mode="w+", dtype=first.dtype,
                                               shape=shape)
        inputs[:len(first)] = first
        for start in range(_INPUT_CHUNK, len(examples), _INPUT_CHUNK):
            inputs[start:start + _INPUT_CHUNK] = chunk(start)
        return _Inputs(inputs, {ex.key: i for i, ex in enumerate(examples)})

    def _append(self, row: dict[str, Any], work: Callable[[], dict[str, Any]]) -> None:
        try:
            row = work()
        except Exception as exc:
            row = _failed(row, _as_cell_error(exc))
            self._log_error(f"{row['method']} {row['backbone']} on {row['dataset']}: {exc}")
        self.document["runs"].append(row)
        self._save()

    def _warn_about_precision(self, token: str, backbone: Backbone) -> None:
        if backbone.precision() != "bfloat16" or self.document["machine"].get("gpu"):
            return
        if not machine.native_bfloat16():
            self.context.progress.log(
                f"warning: {token} computes in bfloat16, which this CPU has no instructions for (AVX512_BF16 "
                f"or AMX); TensorFlow emulates it, usually slower than float32")

    def _log_error(self, message: str) -> None:
        """Say a failed run's error as it happens, once, in sweeps over several backbones or datasets.

        With a single cell the summary table shows each failure, and when every run failed the
        CLI says the error once, as a one-line user error.
        """
        if len(self.request.backbones) * len(self.request.datasets) > 1 and message not in self._logged_errors:
            self._logged_errors.add(message)
            self.context.progress.log(f"error: {message}")

    def make_backbone(self, token: str) -> Backbone:
        spec, options = self.backbone_specs[token]
        _, arg = self.context.catalog.backbones.resolve(token)
        if not spec.parametric and arg:
            raise UserError(f"backbone {spec.name!r} takes no argument, got {token!r}")
        backbone = spec.load_factory()(arg, options, self.context)
        if not isinstance(backbone, Backbone):
            raise UserError(f"backbone {spec.name!r} (plugin {spec.plugin}) did not return a Backbone")
        return backbone

    # -- methods -------------------------------------------------------------------------
    def _transfer(self, row: dict[str, Any], backbone: Backbone, dataset: ImageDataset, subset: ImageDataset,
                  extraction: Extraction | UserError | None, head_token: str) -> dict[str, Any]:
        from xferbench import metrics

        if isinstance(extraction, UserError):
            raise extraction
        assert extraction is not None
        failed = set(extraction.failed)
        position = {ex.key: i for i, ex in enumerate(dataset.examples)}
        parts = {}
        for split in ("train", "val", "test"):
            examples = [ex for ex in subset.split(split) if ex.key not in failed]
            index = np.array([position[ex.key] for ex in examples], dtype=np.int64)
            parts[split] = (extraction.features[index], np.array([ex.label for ex in examples], dtype=np.int64),
                            [ex.key for ex in examples])
        (x_train, y_train, _), (x_val, y_val, _), (x_test, y_test, test_keys) = (
            parts["train"], parts["val"], parts["test"])
        _require_splits(len(y_train), len(y_test), row)
        spec, options = self.head_specs[head_token]
        head = spec.load_factory()(options)
        curve: list[dict[str, float]] = []
        num_classes = len(dataset.class_names)
        with self.context.progress.task(f"head {head_token} ({_shots_label(row['shots'])} shots)",
                                        total=options.get("steps"), unit="step") as task:
            def on_progress(step: int, val_acc: float | None, elapsed: float) -> None:
                curve.append({"step": step, "seconds": elapsed, "val_accuracy": val_acc})
                task.completed = step
                task.set_status("" if val_acc is None else f"val acc {val_acc:.3f}")

            started = time.perf_counter()
            head.fit(x_train, y_train, x_val, y_val, num_classes=num_classes, seed=self.context.seed,
                     on_progress=on_progress)
            train_seconds = time.perf_counter() - started
        predicted = head.predict(x_test)
        summary = metrics.summarize(y_test, predicted, dataset.class_names, keys=test_keys, seed=self.context.seed)
        run_dir = self._run_dir(row)
        save_transfer_run(run_dir, row, backbone, head, dataset.class_names, self.context,
                          self.backbone_specs[row["backbone"]][1])
        row.update(
            status="ok", n_train=len(y_train), n_val=len(y_val), n_test=len(y_test),
            skipped_files={**dataset.skipped_counts(), **({"decode_error": len(failed)} if failed else {})},
            extract_images_per_second=extraction.images_per_second,
            extract_forward_images_per_second=extraction.forward_images_per_second,
            extract_seconds=extraction.seconds, train_seconds=train_seconds, cache_hits=extraction.cache_hits,
            cache_write_errors=extraction.cache_write_errors,
            extracted=extraction.computed, precision=backbone.precision(), curve=curve,
            backbone_info=backbone.info(), head_info=head.info(), run_dir=str(run_dir),
            **_metric_fields(summary, self.request),
        )
        return row

    def _linear_probe(self, model: Any, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                      y_val: np.ndarray, epochs: int | None, common: dict[str, Any]) -> None:
        """Stage one of fine-tuning: only the new layer learns, at the full-training rate."""
        from xferbench import training

        _set_backbone_trainable(model, False)
        steps_per_epoch = max(1, -(-len(y_train) // self.request.full_batch_size))
        # At least ~300 steps: with few shots an epoch is a single step, far too few for a new layer.
        probe_epochs = max((epochs or 10) // 2, -(-300 // steps_per_epoch))
        try:
            training.train_model(model, x_train, y_train, x_val, y_val, epochs=probe_epochs,
                                 budget_seconds=None if self.request.full_budget_seconds is None
                                 else self.request.full_budget_seconds / 2,
                                 learning_rate=self.request.full_learning_rate, run_dir=None,
                                 **{**common, "on_epoch": None, "eval_every_steps": 100})
        finally:
            _set_backbone_trainable(model, True)

    def _run_dir(self, row: dict[str, Any]) -> Path:
        head = "" if row["method"] != "transfer" else f"-{row['head']}"
        name = f"{row['method']}-{row['backbone']}-{row['dataset']}{head}-{_shots_label(row['shots'])}"
        return self.output.with_suffix("") / _slug(name)

    def _train_network(self, row: dict[str, Any], backbone: Backbone, dataset: ImageDataset,
                       subset: ImageDataset, model_inputs: _Inputs, method: str) -> dict[str, Any]:
        from xferbench import metrics, training

        inputs, position = model_inputs.array, model_inputs.position
        parts = {}
        for split in ("train", "val", "test"):
            examples = subset.split(split)
            index = np.array([position[ex.key] for ex in examples], dtype=np.int64)
            ok = _decodable_rows(inputs, index)
            # The training split is read a batch at a time rather than copied: it is most of the data.
            x = _Rows(inputs, index[ok]) if split == "train" else np.asarray(inputs[index[ok]])
            parts[split] = (x, np.array([ex.label for ex in examples], dtype=np.int64)[ok],
                            [ex.key for ex, good in zip(examples, ok, strict=True) if good])
        (x_train, y_train, _), (x_val, y_val, _), (x_test, y_test, test_keys) = (
            parts["train"], parts["val"], parts["test"])
        _require_splits(len(y_train), len(y_test), row)
        req = self.request
        pretrained = method == "finetune"
        model = backbone.build_model(len(dataset.class_names), pretrained=pretrained, seed=self.context.seed)
        epochs = req.full_epochs
        if epochs is None and req.full_budget_seconds is None:
            epochs = 30
        run_dir = self._run_dir(row)
        label = "fine-tuning" if pretrained else "full training"
        with self.context.progress.task(f"{label} {row['backbone']} ({_shots_label(row['shots'])} shots)",
                                        total=epochs, unit="epoch") as task:
            def on_progress(step: int, val_acc: float | None, elapsed: float) -> None:
                task.set_status("" if val_acc is None else f"step {step}, val acc {val_acc:.3f}")

            steps_per_epoch = max(1, -(-len(y_train) // req.full_batch_size))
            common = dict(batch_size=req.full_batch_size, optimizer="adam", seed=self.context.seed,
                          eval_every_steps=steps_per_epoch,
                          on_epoch=lambda epoch: task.advance(epoch - task.completed))  # resumed: not from 0
            # LP-FT (Kumar et al., 2022): train the new softmax layer on the frozen network first,
            # so unfreezing does not push random-head gradients into good features. A resumed
            # fine-tuning run has it in its checkpoint already.
            probe = (lambda: self._linear_probe(model, x_train, y_train, x_val, y_val, epochs, common)) \
                if pretrained else None
            outcome = training.train_model(
                model, x_train, y_train, x_val, y_val, epochs=epochs, budget_seconds=req.full_budget_seconds,
                learning_rate=req.finetune_learning_rate if pretrained else req.full_learning_rate,
                run_dir=run_dir, checkpoint_every_steps=steps_per_epoch * 5, on_progress=on_progress,
                prologue=probe, resume=self.resuming, **common)
            task.completed = outcome.epochs  # fractional when the budget stopped it mid-epoch
            if outcome.stopped_by == "budget":
                task.set_status(f"stopped by --full-budget at step {outcome.steps}")
        predicted = outcome.predict_proba(x_test).argmax(axis=1)
        summary = metrics.summarize(y_test, predicted, dataset.class_names, keys=test_keys, seed=self.context.seed)
        row.update(
            status="ok", n_train=len(y_train), n_val=len(y_val), n_test=len(y_test),
            skipped_files=dataset.skipped_counts(), train_seconds=outcome.seconds, cache_hits=0,
            extract_images_per_second=None, extract_seconds=None, curve=outcome.curve,
            training={"steps": outcome.steps, "epochs": outcome.epochs, "stopped_by": outcome.stopped_by,
                      "resumed_from_step": outcome.resumed_from_step,
                      "setup_seconds": outcome.setup_seconds, "final_val_accuracy": outcome.val_accuracy,
                      "optimizer": "adam", "ema_decay": 0.99, "run_dir": str(run_dir)},
            backbone_info=backbone.info(), **_metric_fields(summary, req),
        )
        return row


def _validated(registry: Any, tokens: list[str], given: dict[str, str]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Resolve each token and validate the options it receives.

    In a sweep (several tokens) each component takes the options it declares, so
    ``--backbone-opt pretrain_epochs=5`` can go with ``--backbone lenet5,keras:MobileNet``;
    a key that no component declares is still an error.
    """
    specs = {token: registry.resolve(token)[0] for token in tokens}
    if len(specs) <= 1:
        return {token: (spec, spec.validate(given)) for token, spec in specs.items()}
    declared = {opt.name for spec in specs.values() for opt in spec.options}
    unknown = sorted(set(given) - declared)
    if unknown:
        import difflib

        kind = next(iter(specs.values())).kind
        hint = difflib.get_close_matches(unknown[0], sorted(declared), n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        raise OptionError(f"unknown option {unknown[0]!r} for the {kind}s {', '.join(specs)}{did_you_mean} "
                          f"(known options: {', '.join(sorted(declared))})")
    result = {}
    for token, spec in specs.items():
        own = {opt.name for opt in spec.options}
        result[token] = (spec, spec.validate({k: v for k, v in given.items() if k in own}))
    return result


RUN_FILE = "run.json"
HEAD_FILE = "head.keras"
LABELS_FILE = "labels.txt"


def save_transfer_run(run_dir: Path, row: dict[str, Any], backbone: Backbone, head: Any,
                      class_names: list[str], context: RunContext, backbone_options: dict[str, Any]) -> None:
    """What ``xferbench export`` needs: the head as Keras, the labels and how to rebuild the backbone."""
    import json

    from xferbench.atomic import atomic_path, atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        keras_head = head.to_keras(backbone.feature_dim)
    except NotImplementedError:
        keras_head = None  # the run still counts; only `xferbench export` will refuse it
    if keras_head is not None:
        with atomic_path(run_dir / HEAD_FILE) as tmp:
            keras_head.save(tmp)
    atomic_write_text(run_dir / LABELS_FILE, "".join(f"{name}\n" for name in class_names))
    atomic_write_text(run_dir / RUN_FILE, json.dumps({
        "method": "transfer", "backbone": row["backbone"], "backbone_options": backbone_options,
        # Absolute paths: export may run from another folder.
        "weights": str(Path(context.weights).resolve()) if context.weights else None,
        "cache_dir": str(Path(context.cache_dir).resolve()),
        "data_dir": str(Path(context.data_dir).resolve()) if context.data_dir else None,
        "seed": context.seed, "dataset": row["dataset"], "head": row["head"], "shots": row["shots"],
        "feature_dim": backbone.feature_dim, "weights_sha256": backbone.weights_sha256,
        "class_names": class_names,
    }, indent=2, default=str) + "\n")


def _set_backbone_trainable(model: Any, trainable: bool) -> None:
    """Everything but the final (new) classifier layer."""
    for layer in model.layers[:-1]:
        layer.trainable = trainable


def _metric_fields(summary: dict[str, Any], request: RunRequest) -> dict[str, Any]:
    fields = {k: summary[k] for k in ("test_accuracy", "test_accuracy_ci", "per_class_accuracy", "confusion_matrix")}
    fields["misclassified"] = summary.get("misclassified", []) if request.show_misclassified else None
    return fields


def _require_splits(n_train: int, n_test: int, row: dict[str, Any]) -> None:
    if n_train == 0 or n_test == 0:
        raise UserError(f"dataset {row['dataset']!r} has {n_train} training and {n_test} test images; "
                        f"it needs both (add images or change test_pct/val_pct)")


def _row(backbone: str, dataset: str, head: str, method: str, shots: int | None) -> dict[str, Any]:
    return {"backbone": backbone, "dataset": dataset, "head": head, "method": method,
            "shots": "all" if shots is None else shots, "status": "pending", "error": None,
            "n_train": None, "n_val": None, "n_test": None, "skipped_files": {}, "test_accuracy": None,
            "test_accuracy_ci": None, "extract_images_per_second": None, "extract_seconds": None,
            "train_seconds": None, "cache_hits": None}


def _as_cell_error(exc: Exception) -> UserError:
    """A UserError as it is; anything else (a bug, in xferbench or a plugin) named by its type."""
    if isinstance(exc, UserError):
        return exc
    if is_write_error(exc):  # a full disk or a read-only folder is the machine's state, not a bug
        return write_error(exc)  # type: ignore[arg-type]
    return UserError(f"{type(exc).__name__}: {exc} (an internal error; please report it)")


@dataclass
class _Inputs:
    """Network inputs of some examples: row ``position[key]`` of ``array``."""

    array: np.ndarray
    position: dict[str, int]


class _Rows:
    """Rows ``index`` of ``base`` (an array or a memmap) as an array-like that copies only what is asked for."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base, self.index = base, index
        self.shape = (len(index), *base.shape[1:])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.base[self.index[key]])


def _decodable_rows(inputs: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Which of ``inputs[index]`` hold no NaN (NaN rows are images the backbone could not decode)."""
    ok = np.empty(len(index), dtype=bool)
    for start in range(0, len(index), _INPUT_CHUNK):
        rows = np.asarray(inputs[index[start:start + _INPUT_CHUNK]])
        ok[start:start + _INPUT_CHUNK] = ~np.isnan(rows.reshape(len(rows), -1)).any(axis=1)
    return ok


def _run_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return row.get("backbone"), row.get("dataset"), row.get("head"), row.get("method"), row.get("shots")


def _failed(row: dict[str, Any], exc: Exception) -> dict[str, Any]:
    return {**row, "status": "error", "error": one_line(exc)}


def _shots_label(shots: int | str | None) -> str:
    return "all" if shots in (None, "all") else str(shots)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)
