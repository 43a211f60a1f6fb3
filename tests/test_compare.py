"""`xferbench compare`: matching, deltas, added/removed runs and the regression gate."""

from __future__ import annotations

import copy
import io
import json

import pytest

from support.cli import run_cli
from xferbench.compare import compare_documents, find_regressions, run_key
from xferbench.errors import UserError
from xferbench.results import migrate, validate_document


def make_run(method: str = "transfer", head: str = "softmax", shots: int | str = "all", *, acc: float = 0.9,
             ips: float | None = 200.0, train: float = 10.0, status: str = "ok", backbone: str = "lenet5",
             dataset: str = "digits:5-9") -> dict:
    ok = status == "ok"
    return {
        "backbone": backbone, "dataset": dataset, "head": head if method == "transfer" else "-",
        "method": method, "shots": shots, "status": status, "error": None if ok else "boom: something broke",
        "n_train": 700 if ok else None, "n_val": 90 if ok else None, "n_test": 90 if ok else None,
        "skipped_files": {}, "test_accuracy": acc if ok else None,
        "test_accuracy_ci": [acc - 0.05, min(1.0, acc + 0.05)] if ok else None,
        "extract_images_per_second": ips if ok and method == "transfer" else None,
        "extract_seconds": 4.0 if ok and method == "transfer" else None,
        "train_seconds": train if ok else None, "cache_hits": 0 if ok else None,
    }


def make_document(*runs: dict, seed: int = 0, cpu: str = "Test CPU") -> dict:
    document = {
        "schema_version": 1, "created": "2025-01-01T00:00:00+00:00", "command": ["xferbench", "run"],
        "seed": seed,
        "options": {"backbones": ["lenet5"], "datasets": ["digits:5-9"], "heads": ["softmax"],
                    "compare": ["transfer", "full"], "shots": ["all"], "backbone_options": {},
                    "dataset_options": {}, "head_options": {}},
        "machine": {"cpu": cpu, "cores": 2, "gpu": []},
        "versions": {"python": "3.11", "tensorflow": "2.21", "xferbench": "0.1.0"},
        "datasets": [], "runs": list(runs),
    }
    # Written as a version-1 file; compare reads every file through the migration to version 2.
    document = migrate(document)
    validate_document(document)
    return document


def compare(a: dict, b: dict, threshold: float | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = compare_documents(a, b, fail_on_regression=threshold, stream=out)
    return code, out.getvalue()


def regression_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("regression:")]


def test_identical_documents_pass_and_show_every_matched_run():
    doc = make_document(make_run(), make_run("full", train=60.0, acc=0.95))
    code, text = compare(doc, copy.deepcopy(doc), threshold=0)
    assert code == 0
    assert regression_lines(text) == []
    assert "no regression beyond 0 in 2 matched run(s)" in text
    assert "90.0%" in text and "95.0%" in text and "60.00" in text
    assert "added:" not in text and "removed:" not in text


def test_deltas_are_points_for_accuracy_and_percent_for_throughput_and_time():
    a = make_document(make_run(acc=0.90, ips=200.0, train=10.0))
    b = make_document(make_run(acc=0.93, ips=150.0, train=12.5))
    code, text = compare(a, b)
    assert code == 0  # no threshold: never fails
    row = next(line for line in text.splitlines() if "softmax" in line and "%" in line)
    assert "+3.0" in row  # 90% -> 93%: +3 points
    assert "-25.0%" in row  # 200 -> 150 img/s
    assert "+25.0%" in row  # 10 -> 12.5 s


@pytest.mark.parametrize(("candidate", "metric"), [
    (make_run(acc=0.84), "test accuracy 90.0% -> 84.0%"),  # 6 points > 5
    (make_run(ips=180.0), "extraction throughput 200.0 -> 180.0 img/s"),  # -10% > 5%
    (make_run(train=10.6), "train time 10.00 -> 10.60 s"),  # +6% > 5%
])
def test_each_kind_of_regression_fails_the_gate(candidate, metric):
    code, text = compare(make_document(make_run()), make_document(candidate), threshold=5)
    assert code == 1
    lines = regression_lines(text)
    assert len(lines) == 1, text
    assert metric in lines[0] and "lenet5 on digits:5-9, transfer softmax, shots=all" in lines[0]


def test_changes_within_the_threshold_or_improvements_pass():
    base = make_document(make_run(acc=0.90, ips=200.0, train=10.0))
    # 4 points lower, 4% slower extraction, 4% longer training: all within 5.
    assert compare(base, make_document(make_run(acc=0.86, ips=192.0, train=10.4)), threshold=5)[0] == 0
    # Better on every metric, by far.
    assert compare(base, make_document(make_run(acc=0.99, ips=900.0, train=1.0)), threshold=0)[0] == 0


def test_the_accuracy_threshold_is_in_points_not_relative_percent():
    # 50% -> 47.6% is a 4.8% relative drop but only 2.4 points: passes at 3, fails at 2.
    a, b = make_document(make_run(acc=0.50)), make_document(make_run(acc=0.476))
    assert compare(a, b, threshold=3)[0] == 0
    assert compare(a, b, threshold=2)[0] == 1


def test_a_fully_cached_rerun_is_not_a_throughput_change():
    code, text = compare(make_document(make_run(ips=200.0)), make_document(make_run(ips=None)), threshold=0)
    assert code == 0, text
    assert "cached" in text


def test_a_run_that_starts_failing_is_a_regression():
    code, text = compare(make_document(make_run()), make_document(make_run(status="error")), threshold=50)
    assert code == 1
    (line,) = regression_lines(text)
    assert "failed in the candidate: boom: something broke" in line


def test_added_and_removed_runs_are_listed_but_not_regressions():
    a = make_document(make_run(), make_run(shots=5))
    b = make_document(make_run(), make_run(head="logreg"), make_run("finetune", status="error"))
    code, text = compare(a, b, threshold=0)
    assert code == 0, text
    assert "removed: lenet5 on digits:5-9, transfer softmax, shots=5" in text
    assert "added: lenet5 on digits:5-9, transfer logreg, shots=all" in text
    assert "added: lenet5 on digits:5-9, finetune, shots=all (failed: boom: something broke)" in text


def test_runs_are_matched_on_all_five_keys():
    keys = {run_key(make_run(**kw)) for kw in (
        {}, {"head": "logreg"}, {"shots": 5}, {"method": "full"}, {"backbone": "keras:MobileNet"},
        {"dataset": "flowers"})}
    assert len(keys) == 6
    assert run_key(make_run(shots=5)) == run_key({**make_run(), "shots": "5"})
    code, text = compare(make_document(make_run(shots=5)), make_document(make_run(shots=10)), threshold=0)
    assert "no runs in common" in text and code == 0


def test_several_regressions_are_one_line_each():
    a = make_document(make_run(), make_run("full", acc=0.95, train=60))
    b = make_document(make_run(acc=0.5, ips=20.0), make_run("full", acc=0.95, train=600))
    code, text = compare(a, b, threshold=10)
    assert code == 1
    assert len(regression_lines(text)) == 3
    assert find_regressions([(run_key(a["runs"][1]), a["runs"][1], b["runs"][1])], 10)[0].metric == "train_seconds"


def test_negative_threshold_is_a_user_error():
    doc = make_document(make_run())
    with pytest.raises(UserError, match="0 or more"):
        compare(doc, doc, threshold=-1)


def test_context_differences_are_noted():
    a = make_document(make_run(), seed=0, cpu="CPU A")
    b = make_document(make_run(), seed=1, cpu="CPU B")
    b["schema_version"] = 0  # an older document (load_document refuses only newer ones)
    del b["runs"][0]["extract_seconds"]
    code, text = compare(a, b, threshold=5)
    assert code == 0
    assert "schema_version 2 vs 0" in text
    assert "different machines" in text and "different seeds" in text


def test_duplicate_runs_are_noted():
    doc = make_document(make_run(acc=0.5), make_run(acc=0.9))
    code, text = compare(doc, make_document(make_run(acc=0.9)), threshold=1)
    assert code == 0  # the last duplicate (0.9) is the one compared
    assert "more than once" in text


def test_cli_exit_codes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(make_document(make_run(acc=0.9))))
    b.write_text(json.dumps(make_document(make_run(acc=0.8))))
    failing = run_cli("compare", str(a), str(b), "--fail-on-regression", "5")
    assert failing.returncode == 1, failing.stderr
    assert "regression: lenet5 on digits:5-9, transfer softmax, shots=all: test accuracy 90.0% -> 80.0%" in (
        failing.stdout)
    assert run_cli("compare", str(a), str(b), "--fail-on-regression", "15").returncode == 0
    assert run_cli("compare", str(a), str(b)).returncode == 0
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**make_document(make_run()), "schema_version": 99}))
    refused = run_cli("compare", str(a), str(newer))
    assert refused.returncode == 2 and "upgrade xferbench" in refused.stderr
