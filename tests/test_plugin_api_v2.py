"""Plugin API v2 through its public face: methods, run records, lifecycle hooks, reporters, errors."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path

import numpy as np
import pytest

import xferbench
from support.cli import assert_one_line_error
from xferbench import (
    Backbone,
    BackboneSpec,
    HeadSpec,
    Method,
    MethodContext,
    MethodSpec,
    Option,
    PluginError,
    Reporter,
    ReporterSpec,
    RunRecord,
    UserError,
    hookimpl,
)
from xferbench.context import RunContext
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress
from xferbench.runner import Runner, RunRequest

REPO = Path(__file__).resolve().parents[1]


class BlockMeans(Backbone):
    """Means of 2x2 blocks of an 8x8 digit: honest features without TensorFlow; cannot be trained."""

    feature_dim = 16

    def __init__(self, arg, options, context) -> None:
        self.name = "block_means"

    @property
    def weights_sha256(self) -> str:
        return "1" * 64

    def extract(self, images):
        return np.stack([np.asarray(img, np.float32).reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel() / 255
                         for img in images])


class NearestMean(Method):
    """A third-party method: each test image takes the class of the nearest class mean."""

    def run(self, context: MethodContext) -> RunRecord:
        train, test = context.features("train"), context.features("test")
        means = np.stack([train.x[train.y == c].mean(axis=0) for c in range(context.num_classes)])
        distance = ((test.x[:, None, :] - means[None]) ** 2).sum(axis=2)
        context.score(test, distance.argmin(axis=1) * self.options["scale"])
        context.record_features()
        return context.record.update(n_train=len(train), n_test=len(test), train_seconds=0.0,
                                     method_info={"means": context.num_classes})


class Exploding(Method):
    def run(self, context: MethodContext) -> RunRecord:
        raise ZeroDivisionError("the method divided by zero")


def make_plugin(events: list | None = None, fail_in: str | None = None) -> types.SimpleNamespace:
    @hookimpl
    def xferbench_register_backbones(register):
        register(BackboneSpec("block_means", "2x2 block means", factory=BlockMeans))

    @hookimpl
    def xferbench_register_methods(register):
        register(MethodSpec("nearest_mean", "nearest class mean", factory=NearestMean,
                            options=(Option("scale", int, 1, "multiplies the predicted class", min=1),)))
        register(MethodSpec("exploding", "raises", factory=Exploding))

    def note(name, run, sweep):
        if events is not None:
            on_disk = json.loads(sweep.output.read_text())["runs"]
            events.append((name.removeprefix("xferbench_"), run.method if run else None,
                           run.status if run else None, len(on_disk)))
        if fail_in == name:
            raise KeyError("the logger's dict was empty")

    def record(name):
        if "run" in name:
            @hookimpl(specname=name)
            def run_hook(run, sweep):
                note(name, run, sweep)
            return run_hook

        @hookimpl(specname=name)
        def sweep_hook(sweep):
            note(name, None, sweep)
        return sweep_hook

    return types.SimpleNamespace(
        xferbench_register_backbones=xferbench_register_backbones,
        xferbench_register_methods=xferbench_register_methods,
        xferbench_sweep_started=record("xferbench_sweep_started"),
        xferbench_run_started=record("xferbench_run_started"),
        xferbench_run_finished=record("xferbench_run_finished"),
        xferbench_sweep_finished=record("xferbench_sweep_finished"),
    )


def run_sweep(tmp_path: Path, plugin, **request) -> dict:
    catalog = load_catalog(extra_plugins=[("thirdparty", plugin)])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    defaults = dict(backbones=["block_means"], datasets=["digits:0-3"], heads=["logreg"])
    return Runner(RunRequest(**{**defaults, **request}), context, tmp_path / "r.json").run()


def test_the_public_api_is_exported():
    assert xferbench.PLUGIN_API_VERSION == 2
    for name in ("Backbone", "Head", "ImageDataset", "RunContext", "BackboneSpec", "DatasetSpec", "HeadSpec",
                 "MethodSpec", "ReporterSpec", "CommandSpec", "Method", "MethodContext", "RunRecord", "Reporter",
                 "Sweep", "hookimpl", "PLUGIN_API_VERSION"):
        assert name in xferbench.__all__ and getattr(xferbench, name) is not None


def test_builtin_methods_come_through_the_same_hook(cli):
    catalog = load_catalog()
    assert {"transfer", "full", "finetune"} <= {spec.name for spec in catalog.methods}
    assert {spec.plugin for spec in catalog.methods if spec.name in ("transfer", "full", "finetune")} == {"methods"}
    listing = cli("list", "methods")
    assert listing.returncode == 0
    for name in ("transfer", "full", "finetune", "learning_rate=0.001", "default --compare: transfer,full"):
        assert name in listing.stdout


def test_a_plugin_method_runs_beside_the_builtins_and_gets_its_options(tmp_path):
    events: list = []
    document = run_sweep(tmp_path, make_plugin(events), methods=["transfer", "nearest_mean"], shots=[5, None],
                         method_options={"scale": "1"})
    runs = document["runs"]
    assert [(r["method"], r["shots"], r["status"]) for r in runs] == [
        ("transfer", 5, "ok"), ("nearest_mean", 5, "ok"), ("transfer", "all", "ok"), ("nearest_mean", "all", "ok")]
    mean = runs[3]
    assert mean["head"] == "-" and mean["method_options"] == {"scale": 1} and mean["method_info"] == {"means": 4}
    assert mean["test_accuracy"] > 0.6 and mean["n_test"] > 0  # chance is 0.25
    # Both methods share one extraction: the second method's bottlenecks all came from the cell.
    assert runs[0]["extracted"] == runs[1]["extracted"] > 0
    # Every run has every field of the record.
    assert all(set(run) == set(RunRecord.__dataclass_fields__) for run in runs)
    # The lifecycle: the results file holds each run before any other plugin hears of it.
    assert events[0] == ("sweep_started", None, None, 0)
    assert events[-1] == ("sweep_finished", None, None, 4)
    middle = events[1:-1]
    assert [e[0] for e in middle] == ["run_started", "run_finished"] * 4
    assert [e[3] for e in middle if e[0] == "run_finished"] == [1, 2, 3, 4]
    assert all(e[2] == "pending" for e in middle if e[0] == "run_started")


def test_method_options_are_validated(tmp_path):
    with pytest.raises(UserError, match="unknown option 'scael'.*did you mean 'scale'"):
        run_sweep(tmp_path, make_plugin(), methods=["nearest_mean"], method_options={"scael": "2"})
    with pytest.raises(UserError, match="scale='0' must be >= 1"):
        run_sweep(tmp_path, make_plugin(), methods=["nearest_mean"], method_options={"scale": "0"})
    with pytest.raises(UserError, match="unknown method 'nearest'.*did you mean 'nearest_mean'"):
        run_sweep(tmp_path, make_plugin(), methods=["nearest"])


def test_a_method_the_backbone_cannot_do_is_skipped_by_default_and_an_error_when_asked_for(tmp_path):
    with pytest.raises(UserError, match="backbone 'block_means' does not support method 'full'"):
        run_sweep(tmp_path, make_plugin(), methods=["transfer", "full"])
    assert not (tmp_path / "cache" / "bottlenecks").exists()  # refused before any work
    document = run_sweep(tmp_path, make_plugin())  # default --compare: transfer, full
    assert [(r["method"], r["status"], r["error"]) for r in document["runs"]] == [
        ("transfer", "ok", None), ("full", "skipped", "not supported")]


def test_a_crashing_plugin_method_is_recorded_with_its_plugin_and_the_sweep_goes_on(tmp_path):
    document = run_sweep(tmp_path, make_plugin(), methods=["exploding", "transfer"])
    crashed, fine = document["runs"]
    assert crashed["status"] == "error" and fine["status"] == "ok"
    assert crashed["error"].startswith("ZeroDivisionError: the method divided by zero")
    assert "method 'exploding' of plugin 'thirdparty'" in crashed["error"]
    assert "report it to the authors of plugin 'thirdparty'" in crashed["error"]


def test_a_failing_lifecycle_hook_names_its_plugin_and_loses_no_finished_run(tmp_path):
    with pytest.raises(PluginError) as err:
        run_sweep(tmp_path, make_plugin([], fail_in="xferbench_run_finished"), methods=["transfer", "nearest_mean"])
    message = str(err.value)
    assert "plugin 'thirdparty' failed in xferbench_run_finished: KeyError" in message
    assert "report it to the authors of plugin 'thirdparty'" in message
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [run["method"] for run in saved["runs"]] == ["transfer"] and saved["runs"][0]["status"] == "ok"


def test_hooks_are_called_through_pluggy_so_tryfirst_and_wrappers_work(tmp_path):
    order: list[str] = []

    class Early:
        @hookimpl(tryfirst=True)
        def xferbench_run_finished(self, run, sweep):
            order.append("early")

    class Late:
        @hookimpl(trylast=True)
        def xferbench_run_finished(self, run, sweep):
            order.append("late")

    class Wrapper:
        @hookimpl(wrapper=True)
        def xferbench_run_finished(self, run, sweep):
            order.append("before")
            result = yield
            order.append("after")
            return result

    catalog = load_catalog(extra_plugins=[("late", Late()), ("early", Early()), ("wrap", Wrapper()),
                                          ("thirdparty", make_plugin())])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["block_means"], datasets=["digits:0-1"], heads=["logreg"], methods=["transfer"])
    Runner(request, context, tmp_path / "r.json").run()
    assert order == ["before", "early", "late", "after"]


def test_run_records_round_trip_and_refuse_unknown_fields():
    record = RunRecord(backbone="b", dataset="d", method="m", shots=5)
    assert RunRecord.from_dict(record.to_dict()) == record
    with pytest.raises(AttributeError, match="method_info"):
        record.update(my_figure=1)


def test_the_schema_and_the_docs_are_generated_from_the_record():
    from xferbench.record import field_table
    from xferbench.results import SCHEMA_FILE, build_schema

    committed = json.loads((REPO / "src" / "xferbench" / SCHEMA_FILE).read_text())
    assert committed == build_schema(), "regenerate the schema file from xferbench.results.build_schema()"
    assert field_table() in (REPO / "docs" / "results.md").read_text(), "copy record.field_table() into docs"


def test_version_1_files_are_migrated_for_report_and_compare(cli, tmp_path):
    from xferbench.results import validate_document

    v1 = {
        "schema_version": 1, "created": "2025-01-01T00:00:00+00:00", "command": ["xferbench", "run"], "seed": 0,
        "options": {"backbones": ["lenet5"], "datasets": ["digits:5-9"], "heads": ["softmax"],
                    "compare": ["transfer"], "shots": ["all"], "backbone_options": {}, "dataset_options": {},
                    "head_options": {}},
        "machine": {"cpu": "Old CPU", "cores": 2, "gpu": []},
        "versions": {"python": "3.11", "tensorflow": "2.20", "xferbench": "0.1.0"},
        "datasets": [],
        "runs": [{"backbone": "lenet5", "dataset": "digits:5-9", "head": "softmax", "method": "transfer",
                  "shots": "all", "status": "ok", "error": None, "n_train": 700, "n_val": 90, "n_test": 100,
                  "skipped_files": {}, "test_accuracy": 0.93, "test_accuracy_ci": [0.88, 0.97],
                  "extract_images_per_second": 500.0, "extract_seconds": 1.5, "train_seconds": 0.4,
                  "cache_hits": 0}],
    }
    old = tmp_path / "old.json"
    old.write_text(json.dumps(v1))
    from xferbench.results import load_document

    migrated = load_document(old)
    validate_document(migrated)
    assert migrated["schema_version"] == 2 and migrated["migrated_from"] == 1
    assert migrated["runs"][0]["test_accuracy"] == 0.93 and migrated["runs"][0]["method_info"] == {}
    report = cli("report", str(old), "--format", "markdown")
    assert report.returncode == 0 and "| lenet5 | digits:5-9 | transfer | softmax | all | 93.0%" in report.stdout
    same = cli("compare", str(old), str(old), "--fail-on-regression", "1")
    assert same.returncode == 0, same.stderr


def test_several_reporters_with_options_in_one_run(cli, tmp_path):
    done = cli("run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--compare", "transfer", "--head",
               "logreg", "--backbone-opt", "pretrain_epochs=1", "--report", "markdown,csv",
               "--reporter-opt", "markdown.output=out/summary.md", "--reporter-opt", "csv.delimiter=;",
               "--output", "r.json", "--quiet")
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert markdown.startswith("| backbone | dataset | method |") and "| lenet5 | digits:5-9 | transfer |" in markdown
    assert done.stdout.startswith("backbone;dataset;method;head;shots;") and "lenet5;digits:5-9;transfer;" in done.stdout
    assert "| backbone |" not in done.stdout  # the markdown went to its file only


def test_reporter_options_are_validated(cli):
    assert_one_line_error(cli("run", "--report", "table", "--reporter-opt", "table.widht=10"),
                          "did you mean 'width'")
    assert_one_line_error(cli("run", "--report", "table", "--reporter-opt", "csv.delimiter=;"),
                          "reporter 'csv' is not among --report table")
    assert_one_line_error(cli("run", "--report", "table", "--reporter-opt", "width=3"), "NAME.KEY=VALUE")
    assert_one_line_error(cli("report", "nothing.json", "--report", "tabel"), "did you mean 'table'")


def test_reporters_also_run_when_every_run_failed(cli, tmp_path):
    done = cli("run", "--backbone", "lenet5", "--dataset", "folder:missing", "--compare", "transfer",
               "--report", "markdown", "--reporter-opt", "markdown.output=failed.md", "--output", "r.json")
    line = assert_one_line_error(done, "missing")
    assert "r.json" in line
    assert "| lenet5 | folder:missing | transfer | softmax | all | - |" in (tmp_path / "failed.md").read_text()


def test_no_plugin_with_an_unknown_name_is_an_error_with_did_you_mean(cli):
    assert_one_line_error(cli("list", "--no-plugin", "lenet"), "did you mean 'lenet5'")
    # The variable may name plugins of other environments: it blocks what it names, and no error.
    assert cli("list", "heads", env={"XFERBENCH_DISABLE_PLUGINS": "elsewhere,keras"}).returncode == 0
    assert cli("list", "heads", "--no-plugin", "keras").returncode == 0


def test_a_head_option_named_steps_is_not_the_progress_total(tmp_path):
    class CountingHead(xferbench.Head):
        name = "counting"

        def __init__(self, options):
            self.options = options

        def fit(self, x_train, y_train, x_val, y_val, *, num_classes, seed, on_progress=None):
            self.classes = num_classes
            for step in range(1, 41):  # reports 40 steps whatever `steps` says
                on_progress(step, None, 0.0)

        def predict_proba(self, x):
            return np.full((len(x), self.classes), 1.0 / self.classes)

    @hookimpl
    def xferbench_register_heads(register):
        register(HeadSpec("counting", "counts", factory=CountingHead, options=(Option("steps", int, 4),)))

    plugin = make_plugin()
    plugin.xferbench_register_heads = xferbench_register_heads
    log = io.StringIO()
    catalog = load_catalog(extra_plugins=[("thirdparty", plugin)])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(stream=log))
    request = RunRequest(backbones=["block_means"], datasets=["digits:0-1"], heads=["counting"], methods=["transfer"])
    (run,) = Runner(request, context, tmp_path / "r.json").run()["runs"]
    assert run["status"] == "ok"
    head_lines = [line for line in log.getvalue().splitlines() if "head counting" in line]
    assert head_lines and not any("/4 step" in line for line in head_lines), head_lines
    assert any("40 step" in line for line in head_lines), head_lines


def test_a_reporter_sees_each_run_as_it_finishes(tmp_path):
    seen: list[tuple[str, int]] = []

    class Watching(Reporter):
        def run_finished(self, run, sweep):
            seen.append((run.method, len(json.loads(sweep.output.read_text())["runs"])))

    from xferbench.lifecycle import ReporterBridge

    catalog = load_catalog(extra_plugins=[("thirdparty", make_plugin())])
    catalog.pm.register(ReporterBridge([Watching({})]), name="bridge")
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["block_means"], datasets=["digits:0-1"], heads=["logreg"],
                         methods=["transfer", "nearest_mean"])
    Runner(request, context, tmp_path / "r.json").run()
    assert seen == [("transfer", 1), ("nearest_mean", 2)]


def test_a_reporter_spec_is_a_component_like_the_others():
    spec = ReporterSpec("mine", "x", factory="builtins:object", options=(Option("path", str, ""),))
    assert spec.validate({"path": "a"}) == {"path": "a"}


def _documented(first_line: str) -> types.ModuleType:
    """The Python block of docs/plugins.md that starts with ``first_line``, run as a module."""
    text = (REPO / "docs" / "plugins.md").read_text()
    block = next(part.split("```", 1)[0] for part in text.split("```python\n")[1:] if part.startswith(first_line))
    module = types.ModuleType(first_line.split()[-1])
    exec(compile(block, "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own documentation
    return module


def test_the_documented_method_and_logger_run_as_written(tmp_path, capsys):
    method = _documented("# my_plugin/nearest_mean.py")
    logger = _documented("# my_plugin/__init__.py\nimport json")

    @hookimpl
    def xferbench_register_methods(register):
        register(MethodSpec("nearest_mean", "the documented example", factory=method.NearestMean))

    plugin = make_plugin()
    plugin.xferbench_register_methods = xferbench_register_methods
    catalog = load_catalog(extra_plugins=[("doc", plugin), ("doclog", logger)])
    context = RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
    request = RunRequest(backbones=["block_means"], datasets=["digits:0-3"], heads=["logreg"],
                         methods=["nearest_mean"])
    (run,) = Runner(request, context, tmp_path / "r.json").run()["runs"]
    assert run["status"] == "ok" and run["test_accuracy"] > 0.6 and run["method_info"] == {"classes": 4}
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert printed == [{"method": "nearest_mean", "status": "ok", "accuracy": run["test_accuracy"]}]


def test_reporters_read_only_fields_the_record_has():
    """The summary, table, text and HTML reporters name run fields by string: each must be a RunRecord field."""
    import re

    fields = set(RunRecord.__dataclass_fields__)
    sources = [*(REPO / "plugins" / "xferbench_reporters").glob("*.py"), *(REPO / "plugins" / "xferbench_html").glob("*.py"),
               REPO / "src" / "xferbench" / "comparison.py"]
    used = set()
    for source in sources:
        text = source.read_text()
        used |= set(re.findall(r"\brun\.get\(\"(\w+)\"", text)) | set(re.findall(r"\brun\[\"(\w+)\"\]", text))
    assert used, "the pattern found nothing: the test would pass vacuously"
    assert used <= fields, sorted(used - fields)
