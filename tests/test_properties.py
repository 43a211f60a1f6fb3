"""Property-based tests: everything a user types or a file supplies either works or is one line, exit 2.

Every example runs the real CLI in-process (``xferbench.cli.main``), stopped before any work by a
--weights file that does not exist, or on ``report``/``compare`` of files; TensorFlow is never
reached (reaching it fails the test). The property for each parser, over ``EXAMPLES`` generated
inputs: exit 0, or exactly one line on stderr with exit 2; never a traceback, never a hang.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xferbench.cli as cli
from support.hang import hang_guard
from xferbench.data import parse_class_subset
from xferbench.errors import UserError
from xferbench.options import parse_assignments
from xferbench.plugin_manager import load_catalog
from xferbench.results import migrate, validate_document

#: generated inputs per property: 300 in the default run (about a minute for all); a soak takes more,
#: e.g. XFERBENCH_PROPERTY_EXAMPLES=10000
EXAMPLES = int(os.environ.get("XFERBENCH_PROPERTY_EXAMPLES", "300"))
#: a hang guard, not a speed claim: one parse takes milliseconds
HANG_SECONDS = 60
MISSING_WEIGHTS = "/nonexistent-xferbench-property/weights.h5"

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
CATALOG = load_catalog(blocked=[])


@pytest.fixture(autouse=True)
def _in_process(monkeypatch):
    """One plugin catalog and one parser for all examples (building them is not what is tested); no TensorFlow."""

    def reached_tensorflow() -> None:
        raise AssertionError("the input reached TensorFlow: the property test must stop before work")

    monkeypatch.setattr(cli, "_catalog", lambda args: CATALOG)
    # Building the argparse tree takes most of a call; a copy of one built tree is the same parser
    # (a copy: the CLI may change defaults on the tree it gets).
    built = functools.cache(cli.build_parser)
    monkeypatch.setattr(cli, "build_parser", lambda catalog=None: copy.deepcopy(built(catalog)))
    monkeypatch.setattr(cli, "import_tensorflow_quietly", reached_tensorflow)




_calls = [0]


def run_property(check: Any) -> None:
    """Run a Hypothesis ``check`` and make sure it really tried ``EXAMPLES`` inputs on the CLI."""
    before = _calls[0]
    check()
    tried = _calls[0] - before
    assert tried >= EXAMPLES, f"only {tried} inputs were tried"
    print(f"{tried} inputs")


def call(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``xferbench ARGV`` in-process: (exit code, stdout, stderr). Any exception but SystemExit fails the test."""
    _calls[0] += 1
    capsys.readouterr()
    with hang_guard(HANG_SECONDS):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:  # argparse's usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def works_or_one_line(code: int, err: str) -> str | None:
    """The property; returns the error line when there is one."""
    assert "Traceback" not in err, err
    if code == 0:
        return None
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("xferbench"), lines[0]
    return lines[0]


def run_args(tmp: Path, *extra: str) -> list[str]:
    return ["run", "--weights", MISSING_WEIGHTS, "--output", str(tmp / "never-written.json"), *extra]


# -- what a user types ---------------------------------------------------------------------------

odd_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
special = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "-0", "0x10", "1_000", "١٢٣", "²", "½",
                           "true", "False", "yes", "off", "1.5", "-1", "0", "9" * 30, "9" * 5000, "=", ":", ",",
                           "all", "digits", "\t7\n", "\x00"])
numbers = st.one_of(st.integers(-(10**12), 10**12).map(str), st.floats().map(str), st.floats().map(repr))
values = st.one_of(special, numbers, odd_text)


def _option_cases(kind: str) -> st.SearchStrategy[tuple[str, str, str]]:
    """(component token, key, value) drawn against each built-in's declared options."""
    registry = CATALOG.registry(kind)
    tokens = [spec.name + (":MobileNet" if spec.parametric else "") for spec in registry
              if spec.plugin in {"lenet5", "keras", "inception", "heads", "digits", "mnist", "folder"}]

    def for_token(token: str) -> st.SearchStrategy[tuple[str, str, str]]:
        spec = registry.resolve(token)[0]
        keys = st.one_of(st.sampled_from([opt.name for opt in spec.options] or ["x"]), odd_text)
        return st.tuples(st.just(token), keys, values)

    return st.sampled_from(tokens).flatmap(for_token)


@pytest.mark.parametrize("kind", ["backbone", "head"])
def test_component_options(kind, tmp_path, capsys):
    others = {"backbone": ["--head", "softmax"], "head": ["--backbone", "lenet5"]}[kind]

    @SETTINGS
    @given(case=_option_cases(kind))
    def check(case: tuple[str, str, str]) -> None:
        token, key, value = case
        code, _, err = call(capsys, *run_args(tmp_path, f"--{kind}={token}", f"--{kind}-opt={key}={value}",
                                              *others))
        line = works_or_one_line(code, err)
        assert line is not None  # the missing weights stop every run before work
        # The verdict agrees with the public Option API: a value it accepts gets as far as --weights.
        spec = CATALOG.registry(kind).resolve(token)[0]
        try:
            spec.validate(parse_assignments([f"{key}={value}"], f"--{kind}-opt"))
        except UserError:
            assert MISSING_WEIGHTS not in line, line
        else:
            assert MISSING_WEIGHTS in line, line

    run_property(check)


def test_dataset_tokens_and_options(tmp_path, capsys):
    names = st.sampled_from(["digits", "mnist", "flowers", "folder", "digit", "DIGITS", ""])
    subsets = st.one_of(st.sampled_from(["5-9", "0,2,7", "daisy,roses", "9-5", "0-10", "-", ",", "1-", "a:b"]),
                        odd_text)
    token = st.tuples(names, st.sampled_from([":", "", "::"]), subsets).map("".join)
    tokens = st.lists(token, min_size=1, max_size=3).map(",".join) | odd_text

    @SETTINGS
    @given(text=tokens, option=st.one_of(st.none(), st.tuples(st.sampled_from(["test_pct", "val_pct", "x"]),
                                                              values)))
    def check(text: str, option: tuple[str, str] | None) -> None:
        opts = [] if option is None else [f"--dataset-opt={option[0]}={option[1]}"]
        code, _, err = call(capsys, *run_args(tmp_path, f"--dataset={text}", *opts))
        works_or_one_line(code, err)

    run_property(check)


class_names = st.lists(st.one_of(st.sampled_from(["daisy", "roses", "0", "1", "a,b", "x:y", "5-9", " ", "é", "-"]),
                                 odd_text), min_size=1, max_size=12, unique=True)
subset_texts = st.one_of(odd_text, st.lists(st.one_of(odd_text, st.sampled_from(
    ["0", "1-3", "2-1", "-1", "1-", "daisy", " roses ", "", "99999999999999999999"])), max_size=5).map(",".join))


def test_class_subsets():
    """``NAME:SUBSET`` as the dataset loader reads it: indices, ranges or class names, or one UserError."""

    @SETTINGS
    @given(names=class_names, subset=subset_texts)
    def check(names: list[str], subset: str) -> None:
        _calls[0] += 1
        try:
            chosen = parse_class_subset(subset, names, "d")
        except UserError as exc:
            assert str(exc).strip()
            return
        assert chosen == sorted(set(chosen)) and chosen
        assert all(0 <= index < len(names) for index in chosen)

    run_property(check)


def test_class_subsets_through_a_real_dataset(tmp_path):
    """digits:SUBSET loaded through the plugin API (scikit-learn's digits, no TensorFlow)."""
    from xferbench.context import RunContext

    context = RunContext(catalog=CATALOG, cache_dir=tmp_path)

    @settings(max_examples=30, deadline=None, database=None)
    @given(subset=st.one_of(st.sampled_from(["5-9", "0,2,7", "3", "9-5", "0-10", ",,", "1,,2"]), odd_text))
    def check(subset: str) -> None:
        try:
            dataset = context.load_dataset(f"digits:{subset}")
        except UserError:
            return
        assert 1 <= len(dataset.class_names) <= 10 and dataset.examples

    check()


def test_shots(tmp_path, capsys):
    parts = st.one_of(st.integers(-5, 10**6).map(str), st.sampled_from(["all", "ALL", "", " 5 ", "²", "١٢", "1e3",
                                                                      "9" * 5000, "+3", "0"]), odd_text)

    @SETTINGS
    @given(text=st.lists(parts, min_size=1, max_size=5).map(",".join) | odd_text)
    def check(text: str) -> None:
        works_or_one_line(*_code_err(call(capsys, *run_args(tmp_path, f"--shots={text}"))))

    run_property(check)


def test_full_budget(tmp_path, capsys):
    number = st.one_of(st.integers(0, 10**9).map(str), st.floats(allow_nan=True).map(str),
                       st.sampled_from(["9" * 400, "١٢", "0", "0.0", ".5", "5.", "-3"]))
    unit = st.sampled_from(["", "s", "m", "h", "d", " s", "S", "ms", "min"])

    @SETTINGS
    @given(text=st.one_of(st.tuples(number, unit).map("".join), odd_text))
    def check(text: str) -> None:
        works_or_one_line(*_code_err(call(capsys, *run_args(tmp_path, f"--full-budget={text}"))))

    run_property(check)


def test_compare_lists(tmp_path, capsys):
    method = st.one_of(st.sampled_from(["transfer", "full", "finetune", "Transfer", "", " full ", "fine-tune"]),
                       odd_text)

    @SETTINGS
    @given(text=st.lists(method, max_size=5).map(",".join))
    def check(text: str) -> None:
        works_or_one_line(*_code_err(call(capsys, *run_args(tmp_path, f"--compare={text}"))))

    run_property(check)


def _code_err(result: tuple[int, str, str]) -> tuple[int, str]:
    return result[0], result[2]


# -- what a file supplies ------------------------------------------------------------------------

def _run(method: str, shots: int | str, acc: float) -> dict[str, Any]:
    return {
        "backbone": "lenet5", "dataset": "digits:5-9", "head": "softmax" if method == "transfer" else "-",
        "method": method, "shots": shots, "status": "ok", "error": None, "n_train": 700, "n_val": 90,
        "n_test": 90, "skipped_files": {"corrupt": 1}, "test_accuracy": acc, "test_accuracy_ci": [acc - 0.05, acc],
        "extract_images_per_second": 250.0 if method == "transfer" else None,
        "extract_seconds": 3.0 if method == "transfer" else None, "train_seconds": 12.5, "cache_hits": 10,
        "cache_write_errors": 0, "extracted": 890, "precision": "float32",
        "per_class_accuracy": {"5": acc, "6": 1.0}, "confusion_matrix": [[40, 5], [0, 45]],
        "misclassified": [{"key": "5/a.png", "true": "5", "predicted": "6"}],
        "curve": [{"step": 10, "seconds": 1.5, "val_accuracy": 0.5}, {"step": 20, "seconds": 3.0,
                                                                        "val_accuracy": None}],
        "training": {"steps": 20, "epochs": 2.0, "stopped_by": "epochs"} if method != "transfer" else None,
        "backbone_info": {"weights_file": "/w"}, "head_info": {},
    }


def base_document(tmp: Path) -> dict[str, Any]:
    runs = [_run("transfer", 5, 0.8), _run("transfer", "all", 0.95), _run("full", "all", 0.97)]
    runs[2].pop("training")
    runs[2]["training"] = {"steps": 20, "epochs": 2.0, "stopped_by": "epochs", "resumed_from_step": None}
    for run in runs[:2]:
        run.pop("training")
    failed = {**_run("finetune", "all", 0.0), "status": "error", "error": "boom", "test_accuracy": None}
    failed.pop("training")
    command = ["xferbench", "run", "--weights", MISSING_WEIGHTS, "--output", str(tmp / "resumed.json")]
    document = {
        "schema_version": 1, "created": "2026-01-01T00:00:00+00:00", "command": command, "seed": 0,
        "options": {"backbones": ["lenet5"], "datasets": ["digits:5-9"], "heads": ["softmax"],
                    "compare": ["transfer", "full", "finetune"], "shots": [5, "all"], "backbone_options": {},
                    "dataset_options": {}, "head_options": {}, "full_epochs": None, "full_budget_seconds": None,
                    "weights": MISSING_WEIGHTS, "data_dir": None, "cache_dir": str(tmp / "cache")},
        "machine": {"cpu": "Test CPU", "cores": 2, "gpu": []},
        "versions": {"python": "3.11", "tensorflow": "2.21", "xferbench": "0.1.0"},
        "datasets": [{"name": "digits:5-9", "classes": 2, "class_names": ["5", "6"],
                      "split_sizes": {"train": 700, "val": 90, "test": 90}, "skipped_files": {}, "warnings": []}],
        "runs": [*runs, failed],
    }
    document = migrate(document)  # written as version 1, read as the current version
    validate_document(document)
    return document


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=10)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated_files(draw: Any, base: dict[str, Any]) -> str:
    """The text of a results file: whole, truncated, a node replaced or removed, another schema version."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(document)[1:]))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        document["schema_version"] = draw(st.one_of(st.integers(), st.text(max_size=3), st.floats(), st.none(),
                                                    st.booleans()))
    text = json.dumps(document, allow_nan=True)
    if draw(st.integers(0, 4)) == 0:
        text = text[:draw(st.integers(0, len(text)))]
    if draw(st.integers(0, 19)) == 0:
        text = draw(st.sampled_from(["", "null", "[]", "{}", "\ufeff{}", '{"schema_version": 1}', "NaN", "[" * 100000]))
    return text


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def test_report_files(tmp_path, capsys):
    @SETTINGS
    @given(text=mutated_files(base_document(tmp_path)), fmt=st.sampled_from(["table", "json", "markdown", "csv"]))
    def check(text: str, fmt: str) -> None:
        path = _write(tmp_path, "r.json", text)
        works_or_one_line(*_code_err(call(capsys, "report", str(path), "--format", fmt)))

    run_property(check)


def test_compare_files(tmp_path, capsys):
    good = json.dumps(base_document(tmp_path))

    @SETTINGS
    @given(text=mutated_files(base_document(tmp_path)), candidate_first=st.booleans(),
           threshold=st.one_of(st.none(), st.sampled_from(["0", "5", "-1", "nan", "1e400"])))
    def check(text: str, candidate_first: bool, threshold: str | None) -> None:
        a, b = _write(tmp_path, "a.json", good), _write(tmp_path, "b.json", text)
        pair = [str(b), str(a)] if candidate_first else [str(a), str(b)]
        gate = [] if threshold is None else [f"--fail-on-regression={threshold}"]
        code, _, err = call(capsys, "compare", *pair, *gate)
        if code == 1:  # the regression gate: a verdict, not an error
            assert "Traceback" not in err
            return
        works_or_one_line(code, err)

    run_property(check)


def test_resume_files(tmp_path, capsys):
    @SETTINGS
    @given(text=mutated_files(base_document(tmp_path)))
    def check(text: str) -> None:
        path = _write(tmp_path, "interrupted.json", text)
        line = works_or_one_line(*_code_err(call(capsys, "run", "--resume", str(path), "--quiet")))
        assert line is not None  # a whole file goes on as far as the missing weights

    run_property(check)


def test_the_generators_reach_every_outcome(tmp_path, capsys):
    """Not vacuous: the unmutated file is accepted, and each kind of input reaches both verdicts."""
    path = _write(tmp_path, "r.json", json.dumps(base_document(tmp_path)))
    assert call(capsys, "report", str(path))[0] == 0
    assert MISSING_WEIGHTS in call(capsys, "run", "--resume", str(path))[2]
    assert MISSING_WEIGHTS in call(capsys, *run_args(tmp_path, "--shots=1,5,all", "--full-budget=10m"))[2]
    assert "--shots" in call(capsys, *run_args(tmp_path, "--shots=²"))[2]
