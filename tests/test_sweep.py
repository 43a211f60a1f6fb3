"""Sweeps end to end: a failing cell does not stop the others, results are on disk as each run finishes,
an interrupted sweep keeps what it finished, and every summary format parses."""

from __future__ import annotations

import csv
import io
import json
import signal
from pathlib import Path

import pytest

from support.cli import run_cli
from support.procs import Child
from xferbench.results import validate_document

#: a short head so the sweeps spend their time on what they test, not on 4000 SGD steps
FAST_HEAD = ("--head", "softmax", "--head-opt", "steps=300")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the module: lenet5 is pretrained once and reused by every sweep here."""
    return tmp_path_factory.mktemp("sweep-cache")


@pytest.fixture(scope="module")
def failing_sweep(cache_dir, tmp_path_factory):
    """``keras:MobileNet`` (no ImageNet weights offline) then ``lenet5``, both on digits, CSV summary."""
    out = tmp_path_factory.mktemp("sweep") / "sweep.json"
    result = run_cli("run", "--backbone", "keras:MobileNet,lenet5", "--dataset", "digits:5-9",
                     "--compare", "transfer", *FAST_HEAD, "--format", "csv", "--output", str(out), "--quiet",
                     env={"XFERBENCH_CACHE_DIR": str(cache_dir)})
    return result, out


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_next_cell_still_runs(failing_sweep):
    result, out = failing_sweep
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    document = json.loads(out.read_text())
    validate_document(document)
    runs = {run["backbone"]: run for run in document["runs"]}
    assert list(runs) == ["keras:MobileNet", "lenet5"]  # the failing cell came first and did not stop the sweep
    failed = runs["keras:MobileNet"]
    assert failed["status"] == "error" and failed["test_accuracy"] is None
    assert "\n" not in failed["error"] and "weights" in failed["error"] and "--weights" in failed["error"]
    ok = runs["lenet5"]
    assert ok["status"] == "ok" and ok["error"] is None
    assert ok["test_accuracy"] > 0.5  # 5 classes: chance is 0.2
    assert ok["n_test"] > 50 and ok["extract_images_per_second"] > 0


def parse_summary(text: str, fmt: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a markdown or CSV summary."""
    if fmt == "csv":
        table = list(csv.reader(io.StringIO(text)))
        return table[0], table[1:]
    lines = text.splitlines()
    assert set(lines[1].replace("|", "").replace("-", "")) <= {" ", ":"}, lines[1]  # the separator row
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return split[0], split[2:]


@pytest.mark.slow
@pytest.mark.parametrize(("source", "fmt"), [("run", "csv"), ("report", "csv"), ("report", "markdown")])
def test_markdown_and_csv_summaries_parse(failing_sweep, source, fmt):
    """The sweep's own CSV on stdout, and both formats rendered again from its results file."""
    result, out = failing_sweep
    if source == "report":
        result = run_cli("report", str(out), "--format", fmt, "--quiet")
        assert result.returncode == 0, result.stderr
    header, rows = parse_summary(result.stdout, fmt)
    assert header[:5] == ["backbone", "dataset", "method", "head", "shots"]
    assert len(rows) == 2 and all(len(row) == len(header) for row in rows)
    status = header.index("status")
    assert rows[0][0] == "keras:MobileNet" and rows[0][status].startswith("error: ")
    assert rows[1][0] == "lenet5" and rows[1][status] == "ok"


@pytest.mark.slow
def test_json_summary_is_the_document_on_disk(failing_sweep, cache_dir, tmp_path):
    out = tmp_path / "again.json"
    # The module cache already holds lenet5 and its digits bottlenecks: this rerun is cheap.
    result = run_cli("run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--compare", "transfer", *FAST_HEAD,
                     "--format", "json", "--output", str(out), "--quiet", env={"XFERBENCH_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    validate_document(printed)
    assert printed == json.loads(out.read_text())
    (run,) = printed["runs"]
    assert run["status"] == "ok" and run["extracted"] == 0 and run["cache_hits"] > 0


@pytest.mark.slow
def test_an_interrupted_sweep_keeps_its_finished_runs(cache_dir, tmp_path):
    out = tmp_path / "interrupted.json"
    # The transfer run finishes first; the full retraining after it is held after its first epoch.
    command = ["run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--compare", "transfer,full", *FAST_HEAD,
               "--full-epochs", "2", "--output", str(out), "--quiet"]
    # Child restores SIGINT even when pytest itself was started with SIGINT ignored (a background job).
    with Child(command, log_dir=tmp_path / "log", env={"XFERBENCH_CACHE_DIR": str(cache_dir)},
               hold_at_epoch=1) as process:
        process.wait_until_held()
        process.send(signal.SIGINT)
        returncode, stderr = process.wait(), process.stderr()
    assert returncode == 130, stderr[-3000:]
    assert f"finished runs are in {out}" in stderr
    document = json.loads(out.read_text())
    validate_document(document)
    assert [(run["method"], run["status"]) for run in document["runs"]] == [("transfer", "ok"),
                                                                            ("full", "interrupted")]
    assert document["runs"][0]["test_accuracy"] > 0.5
    assert document["runs"][1]["error"] == "interrupted by Ctrl-C"
