"""The one data flow: dataset -> backbone -> bottleneck cache -> method -> record -> events -> reporters.

A plain sweep loop: for each (dataset, backbone) cell, each planned run is handed to its
method. A failing run is recorded with its one-line error and the others still run. The
lifecycle hooks see each run start and finish; the results file writer is one of their
consumers, so the document on disk always holds every finished run. Where the runs execute
is the executor's business (xferbench.executors): here, in this process (``local``), or as
tasks on a Ray cluster (``ray``), which hands the records back in the same order.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

from xferbench import machine
from xferbench.atomic import is_write_error, write_error
from xferbench.backbone import Backbone
from xferbench.cell import Cell
from xferbench.comparison import compare_methods
from xferbench.context import RunContext
from xferbench.data import ImageDataset, select_shots
from xferbench.errors import Interrupted, UserError, one_line
from xferbench.executors import Executor, LocalExecutor
from xferbench.lifecycle import Lifecycle
from xferbench.method import MethodContext, TrainingBudget
from xferbench.plan import DEFAULT_METHODS, RunRequest, make_plan
from xferbench.record import RunRecord
from xferbench.results import SCHEMA_VERSION
from xferbench.sweep import Sweep

__all__ = ["DEFAULT_METHODS", "RunRequest", "Runner", "parse_duration", "parse_shots"]


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h"`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise UserError(f"--full-budget {text!r}: write a duration like 90s, 10m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    if not 0 < seconds < math.inf:  # "9" * 400 is inf seconds
        raise UserError(f"--full-budget {text!r}: the budget must be longer than 0 s and finite")
    return seconds


def parse_shots(text: str) -> list[int | None]:
    """``"1,5,10,all"`` -> ``[1, 5, 10, None]``."""
    shots: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            shots.append(None)
        elif part.isascii() and part.isdigit() and len(part) <= 18 and int(part) > 0:  # int() refuses 4,300+ digits
            shots.append(int(part))
        else:
            raise UserError(f"--shots {text!r}: each entry must be a positive integer or 'all'")
    return shots


class Runner:
    """Runs a :class:`RunRequest` and keeps the results document at ``output`` up to date.

    With ``resume`` (the document an interrupted run of the same request left at ``output``),
    its finished runs are kept as they are and the others run again; methods that train a
    network go on from their newest checkpoints.
    """

    def __init__(self, request: RunRequest, context: RunContext, output: Path,
                 resume: dict[str, Any] | None = None, executor: Executor | None = None) -> None:
        self.request = request
        self.executor = executor or LocalExecutor()
        self.context = context
        self.output = output
        self.resuming = resume is not None
        self._finished = {RunRecord.from_dict(run).key: run for run in (resume or {}).get("runs", [])
                          if run.get("status") == "ok"}
        self._resumed_from = resume.get("created") if resume else None
        self.plan = make_plan(request, context.catalog, context.data_dir, context.weights)
        self._backbones: dict[str, Backbone | Exception] = {}
        self._logged_errors: set[str] = set()
        self.sweep: Sweep | None = None

    # -- the sweep -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every planned run; return the results document (also written to ``output``)."""
        self._check_support()
        with self.executor:
            sweep = self.sweep = Sweep(new_document(self.request, self.context, self._resume_info(),
                                                    self.executor.info()), self.output, self.plan.records)
            with Lifecycle(self.context.catalog, sweep) as lifecycle:
                self.lifecycle = self.executor.ordered(lifecycle, self.plan.records)
                for dataset_token in self.request.datasets:
                    dataset = self._load_dataset(dataset_token)
                    for backbone_token in self.request.backbones:
                        self._run_cell(backbone_token, dataset_token, dataset)
                self.executor.drain(self)
                sweep.document["executor"] = self.executor.info()
                sweep.document["comparison"] = compare_methods(sweep.document, self.request.target_accuracy)
        return sweep.document

    def _resume_info(self) -> dict[str, Any] | None:
        return {"created": self._resumed_from, "kept_runs": 0} if self.resuming else None

    def _check_support(self) -> None:
        """``--compare`` named a method that a backbone cannot do: say so before any work starts."""
        if not self.request.explicit_methods:
            return
        for token in self.request.backbones:
            backbone = self._backbone(token)
            if isinstance(backbone, Exception):
                continue  # its cell records the error
            for name, (_, _, method) in self.plan.methods.items():
                if not method.supports(backbone):
                    raise UserError(f"backbone {token!r} does not support method {name!r}; leave it out of "
                                    f"--compare (without --compare, unsupported methods are skipped)")

    def _load_dataset(self, token: str) -> ImageDataset | UserError:
        _, options = self.plan.datasets[token]
        try:
            dataset = self.context.load_dataset(token, options)
        except UserError as exc:
            return exc
        assert self.sweep is not None
        self.sweep.document["datasets"].append({
            "name": dataset.name, "token": token, "classes": len(dataset.class_names),
            "class_names": dataset.class_names, "split_sizes": dataset.split_sizes(),
            "skipped_files": dataset.skipped_counts(), "warnings": dataset.warnings,
        })
        for warning in dataset.warnings:
            self.context.progress.log(f"warning: {warning}")
        return dataset

    # -- one cell ------------------------------------------------------------------------------
    def _run_cell(self, backbone_token: str, dataset_token: str, dataset: ImageDataset | UserError) -> None:
        planned = self.plan.cell(backbone_token, dataset_token)
        if all(record.key in self._finished for record in planned):
            for record in planned:
                self.keep(record)
            self.context.progress.log(f"{backbone_token} on {dataset_token}: kept {len(planned)} finished runs")
            return
        try:
            if isinstance(dataset, UserError):
                raise dataset
            backbone = self._backbone(backbone_token)
            if isinstance(backbone, Exception):
                raise backbone
            backbone.prepare(self.context)
            _warn_about_precision(self.context, backbone_token, backbone, self.sweep)
        except Exception as exc:  # one broken cell (even a plugin bug) must not sink the sweep
            error = self.describe(exc, backbone_token, dataset_token)
            for record in planned:
                if not self.keep(record):
                    self.lifecycle.finish(record.update(status="error", error=error))
            self.log_error(f"{backbone_token} on {dataset_token}: {error}")
            return
        draws = {shots: select_shots(dataset, shots, self.context.seed) for shots in self.request.shots}
        self.executor.run_cell(self, backbone, dataset, draws, planned)

    def supported(self, record: RunRecord, backbone: Backbone) -> bool:
        """Whether ``record``'s method can run on ``backbone``; if not, its run is finished as skipped."""
        if self.plan.methods[record.method][2].supports(backbone):
            return True
        self.lifecycle.finish(record.update(status="skipped", error="not supported"))
        return False

    def run_one(self, record: RunRecord, cell: Cell, subset: ImageDataset) -> None:
        """Run ``record`` here and now: its start and its finish go through the lifecycle."""
        if not self.supported(record, cell.backbone):
            return
        self.lifecycle.start(record)
        try:
            record = self.execute(record, cell, subset)
        except KeyboardInterrupt as exc:
            self.lifecycle.finish(interrupted(record, exc, self.run_dir(record)))
            raise
        self.lifecycle.finish(record)

    def execute(self, record: RunRecord, cell: Cell, subset: ImageDataset) -> RunRecord:
        """Hand ``record`` to its method; an exception becomes the record's one-line error."""
        spec, options, method = self.plan.methods[record.method]
        head_spec, head_options = self.plan.heads.get(record.head, (None, {}))
        context = MethodContext(
            record=record, backbone=cell.backbone, dataset=cell.dataset, subset=subset, options=options,
            budget=TrainingBudget(self.request.full_epochs, self.request.full_budget_seconds), seed=self.context.seed,
            run_dir=self.run_dir(record), progress=self.context.progress, resume=self.resuming,
            harness=self.context, backbone_options=self.plan.backbones[record.backbone][1], head_spec=head_spec,
            dataset_options=self.plan.datasets[record.dataset][1], augmentation=self.request.augmentation,
            head_options=head_options, show_misclassified=self.request.show_misclassified, cell=cell)
        try:
            result = method.run(context)
            if not isinstance(result, RunRecord):
                raise TypeError(f"{type(method).__name__}.run returned {type(result).__name__}, not a RunRecord")
            return result.update(status="ok") if result.status == "pending" else result
        except Exception as exc:
            error = self.describe(exc, record.backbone, record.dataset, record.head, record.method)
            self.log_error(f"{record.method} {record.backbone} on {record.dataset}: {error}")
            return record.update(status="error", error=error)

    def keep(self, record: RunRecord) -> bool:
        """Put the interrupted run's finished result for ``record`` into the document, if it has one."""
        finished = self._finished.get(record.key)
        if finished is None:
            return False
        self.lifecycle.keep(finished)
        return True

    # -- components ----------------------------------------------------------------------------
    def _backbone(self, token: str) -> Backbone | Exception:
        """The backbone of ``token``, built once; a failure to build it is kept for its cells."""
        if token not in self._backbones:
            try:
                self._backbones[token] = self.make_backbone(token)
            except Exception as exc:
                self._backbones[token] = exc
        return self._backbones[token]

    def make_backbone(self, token: str) -> Backbone:
        spec, options = self.plan.backbones[token]
        _, arg = self.context.catalog.backbones.resolve(token)
        if not spec.parametric and arg:
            raise UserError(f"backbone {spec.name!r} takes no argument, got {token!r}")
        backbone = spec.load_factory()(arg, options, self.context)
        if not isinstance(backbone, Backbone):
            raise UserError(f"backbone {spec.name!r} (plugin {spec.plugin}) did not return a Backbone")
        return backbone

    def describe(self, exc: Exception, backbone: str, dataset: str, head: str | None = None,
                  method: str | None = None) -> str:
        """A UserError's message; anything else names the plugin whose component raised it."""
        if isinstance(exc, UserError):
            return one_line(exc)
        if is_write_error(exc):  # a full disk or a read-only folder is the machine's state, not a bug
            return one_line(write_error(exc))  # type: ignore[arg-type]
        specs = [self.plan.backbones[backbone][0], self.plan.datasets[dataset][0]]
        if head in self.plan.heads:
            specs.append(self.plan.heads[head][0])
        if method is not None:
            specs.append(self.plan.methods[method][0])
        return self.context.catalog.blame(exc, specs)

    def log_error(self, message: str) -> None:
        """Say a failed run's error as it happens, once, in sweeps over several backbones or datasets.

        With a single cell the summary table shows each failure, and when every run failed the
        CLI says the error once, as a one-line user error.
        """
        if len(self.request.backbones) * len(self.request.datasets) > 1 and message not in self._logged_errors:
            self._logged_errors.add(message)
            self.context.progress.log(f"error: {message}")

    def run_dir(self, record: RunRecord) -> Path:
        head = "" if record.head == "-" else f"-{record.head}"
        name = f"{record.method}-{record.backbone}-{record.dataset}{head}-{record.shots}"
        return self.output.with_suffix("") / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _warn_about_precision(context: RunContext, token: str, backbone: Backbone, sweep: Sweep | None) -> None:
    assert sweep is not None
    if backbone.precision() != "bfloat16" or sweep.document["machine"].get("gpu"):
        return
    if not machine.native_bfloat16():
        context.progress.log(f"warning: {token} computes in bfloat16, which this CPU has no instructions for "
                             f"(AVX512_BF16 or AMX); TensorFlow emulates it, usually slower than float32")


def new_document(req: RunRequest, context: RunContext, resumed: dict[str, Any] | None,
                 executor: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results document before any run: what was asked, on which machine, with which versions."""
    try:
        gpus = machine.gpus()
    except Exception:  # GPU discovery is informative only
        gpus = []
    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": req.command,
        "seed": context.seed,
        "options": {
            "backbones": req.backbones, "datasets": req.datasets, "heads": req.heads,
            "compare": req.method_names, "shots": ["all" if s is None else s for s in req.shots],
            "backbone_options": req.backbone_options, "dataset_options": req.dataset_options,
            "head_options": req.head_options, "method_options": req.method_options,
            "full_epochs": req.full_epochs, "full_budget_seconds": req.full_budget_seconds,
            "target_accuracy": req.target_accuracy,
            "augment": req.augmentation.describe() if req.augmentation is not None else None,
            "weights": context.weights, "data_dir": context.data_dir, "cache_dir": context.cache_dir,
        },
        "machine": {**machine.machine_info(with_gpus=False), "gpu": gpus},
        "versions": machine.versions(),
        "executor": executor or {"name": "local"},
        **({"suite": req.suite} if req.suite else {}),
        "datasets": [],
        "runs": [],
        **({"resumed": resumed} if resumed is not None else {}),
    }


def interrupted(record: RunRecord, exc: KeyboardInterrupt, run_dir: Path) -> RunRecord:
    """``record`` stopped by Ctrl-C or a stop signal, with where its training can go on from."""
    reason = f"stopped by {exc.signal_name}" if isinstance(exc, Interrupted) else "interrupted by Ctrl-C"
    return record.update(status="interrupted", error=reason, training=_checkpoint(run_dir))


def _checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """Where an interrupted run can go on from: the step of its newest checkpoint, if it wrote one."""
    from xferbench.run_folder import RunFolder

    try:
        status = RunFolder(run_dir).read_status()
    except (OSError, ValueError):
        return None
    return {"checkpoint_step": status.get("step"), "run_dir": str(run_dir)} if status else None
