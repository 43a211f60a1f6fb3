"""The comparison on constructed runs whose answers are known: cost, time to equal accuracy, data needed."""

from __future__ import annotations

import io
import json

import pytest

from xferbench.compare import compare_documents
from xferbench.comparison import compare_methods, data_needed_line, format_speedup
from xferbench.record import RunRecord
from xferbench.results import validate_document


def run(method: str, shots: int | str, *, acc: float, ci: tuple[float, float], val: float | None = None,
        train: float = 2.0, extract: float = 0.0, curve: list[tuple[float, float]] = (), budget: bool = False,
        cached: bool = False, head: str = "logreg") -> dict:
    record = RunRecord(backbone="net", dataset="photos", method=method, head=head if method == "transfer" else "-",
                       shots=shots, status="ok", n_train=10, n_val=5, n_test=20, test_accuracy=acc,
                       test_accuracy_ci=list(ci), val_accuracy=val, train_seconds=train,
                       curve=[{"step": i + 1, "seconds": s, "val_accuracy": a} for i, (s, a) in enumerate(curve)])
    if method == "transfer":
        record.update(extract_seconds=extract, cold_seconds=extract + train, warm_seconds=train,
                      cache_hits=20 if cached else 0, extracted=0 if cached else 20)
    else:
        record.update(cold_seconds=train, warm_seconds=train,
                      training={"stopped_by": "budget" if budget else "epochs"})
    return record.to_dict()


def document(*runs: dict, heads=("logreg",)) -> dict:
    return {"schema_version": 2, "created": "2026-01-01T00:00:00+00:00", "command": ["xferbench", "run"], "seed": 0,
            "options": {"backbones": ["net"], "datasets": ["photos"], "heads": list(heads), "compare": [],
                        "shots": [], "backbone_options": {}, "dataset_options": {}, "head_options": {},
                        "method_options": {}},
            "machine": {"cpu": "test", "cores": 2, "gpu": []}, "versions": {"python": "3", "tensorflow": None,
                                                                          "xferbench": None},
            "datasets": [], "runs": list(runs)}


TRANSFER = run("transfer", "all", acc=0.9, ci=(0.85, 0.95), val=0.85, train=2.0, extract=8.0,
               curve=[(0.5, 0.6), (1.0, 0.8), (2.0, 0.85)])
FULL = run("full", "all", acc=0.88, ci=(0.83, 0.93), val=0.9, train=30.0,
           curve=[(5.0, 0.5), (10.0, 0.79), (20.0, 0.81), (30.0, 0.9)])


def entry(doc: dict, shots: str = "all", method: str = "full") -> dict:
    (group,) = compare_methods(doc)["groups"]
    return next(e for e in group["by_shots"] if e["shots"] == shots)[method]


def test_the_speed_up_counts_extraction_and_also_gives_the_head_alone():
    full = entry(document(TRANSFER, FULL))
    assert full["speedup"] == {"cold": pytest.approx(30 / 10), "warm": pytest.approx(30 / 2), "lower_bound": False}
    assert format_speedup(full["speedup"]) == "3.0x" and format_speedup(full["speedup"], "warm") == "15.0x"


def test_a_budget_cut_full_run_gives_a_bound_not_a_ratio():
    cut = run("full", "all", acc=0.4, ci=(0.3, 0.5), val=0.4, train=13.0, budget=True, curve=[(13.0, 0.4)])
    full = entry(document(TRANSFER, cut))
    assert full["speedup"]["lower_bound"] is True and full["stopped_by_budget"] is True
    assert format_speedup(full["speedup"]) == "> 1.3x"
    (group,) = compare_methods(document(TRANSFER, cut))["groups"]
    assert "stopped by --full-budget" in group["verdict"] and "> 1.3x transfer's whole cost" in group["verdict"]


def test_time_to_equal_accuracy_from_the_curves_with_extraction_on_transfers_clock():
    ttt = entry(document(TRANSFER, FULL))["time_to_target"]
    # The lower final validation accuracy is transfer's 0.85: transfer's head reaches it at 2.0 s, after 8 s of
    # extraction; full's curve first reaches 0.85 at 30 s.
    assert ttt["target"] == 0.85 and ttt["source"] == "lower final validation accuracy"
    assert ttt["transfer_seconds"] == pytest.approx(10.0) and ttt["seconds"] == pytest.approx(30.0)
    given = compare_methods(document(TRANSFER, FULL), target_accuracy=0.8)["groups"][0]["by_shots"][0]["full"]
    assert given["time_to_target"]["target"] == 0.8 and given["time_to_target"]["source"] == "given"
    assert given["time_to_target"]["transfer_seconds"] == pytest.approx(9.0)  # 8 s extraction + 1 s of head
    assert given["time_to_target"]["seconds"] == pytest.approx(20.0)  # full's 0.79 at 10 s is not yet 0.8


def test_a_target_never_reached_says_so_with_the_time_spent():
    slow = run("full", "all", acc=0.6, ci=(0.5, 0.7), val=0.6, train=30.0, curve=[(10.0, 0.4), (30.0, 0.6)])
    doc = document(TRANSFER, slow)
    ttt = compare_methods(doc, target_accuracy=0.8)["groups"][0]["by_shots"][0]["full"]["time_to_target"]
    assert ttt["seconds"] is None and ttt["total_seconds"] == 30.0
    (group,) = compare_methods(doc, target_accuracy=0.8)["groups"]
    assert "full did not reach it in 30.0 s" in group["verdict"]


def test_data_needed_finds_the_smallest_shot_count_that_matches_within_the_cis():
    doc = document(
        run("transfer", 5, acc=0.6, ci=(0.5, 0.7)), run("full", 5, acc=0.3, ci=(0.2, 0.4)),
        run("transfer", 20, acc=0.8, ci=(0.72, 0.88)), run("full", 20, acc=0.55, ci=(0.45, 0.65)),
        TRANSFER, FULL)
    (group,) = compare_methods(doc)["groups"]
    rows = {row["shots"]: row["matched_at"] for row in group["data_needed"]["full"]}
    # full at 5 shots tops out at 40% < transfer's 50% lower bound; at 20 shots its 65% reaches it.
    assert rows == {"5": "20", "20": "all", "all": "all"}
    assert data_needed_line(group).startswith("data needed (net on photos, full retraining vs transfer): "
                                              "transfer's 60.0% at 5 shots -> at 20 shots")
    assert "with 5 shots per class transfer scored 60.0% and full retraining 30.0%" in group["verdict"]
    never = document(run("transfer", 5, acc=0.9, ci=(0.85, 0.95)), run("full", 5, acc=0.3, ci=(0.2, 0.4)),
                     TRANSFER, run("full", "all", acc=0.5, ci=(0.4, 0.6), val=0.5, train=30.0))
    (group,) = compare_methods(never)["groups"]
    assert "not within the shots tried" in data_needed_line(group)


def test_the_first_head_is_the_comparisons_transfer_and_cached_bottlenecks_are_said():
    other_head = run("transfer", "all", acc=0.5, ci=(0.4, 0.6), val=0.5, train=0.1, head="softmax", cached=True)
    cached = run("transfer", "all", acc=0.9, ci=(0.85, 0.95), val=0.85, train=2.0, cached=True,
                 curve=[(2.0, 0.85)])
    (group,) = compare_methods(document(other_head, cached, FULL, heads=("logreg", "softmax")))["groups"]
    assert group["head"] == "logreg"
    assert "bottlenecks from the cache" in group["verdict"]


def test_the_comparison_is_in_the_results_and_compare_gates_on_it(tmp_path):
    base = document(TRANSFER, FULL)
    base["comparison"] = compare_methods(base)
    validate_document(base)
    slower = run("transfer", "all", acc=0.9, ci=(0.85, 0.95), val=0.85, train=2.0, extract=13.0,
                 curve=[(0.5, 0.6), (1.0, 0.8), (2.0, 0.85)])
    cand = document(slower, FULL)
    cand["comparison"] = compare_methods(cand)
    out = io.StringIO()
    assert compare_documents(base, cand, fail_on_regression=20, stream=out) == 1
    text = out.getvalue()
    assert "speed-up over full, whole cost, 3.00x -> 2.00x (-33.3%" in text
    assert "time to the target accuracy (vs full) 10.00 -> 15.00 s (+50.0%" in text
    assert compare_documents(base, json.loads(json.dumps(base)), fail_on_regression=0, stream=io.StringIO()) == 0


def test_the_table_and_markdown_show_the_whole_cost_speed_up_and_the_verdict(cli, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(document(TRANSFER, FULL)))
    table = cli("report", str(path))
    assert table.returncode == 0, table.stderr
    assert "vs full, whole cost" in table.stdout and "vs full, head only" in table.stdout
    assert "3.0x" in table.stdout and "15.0x" in table.stdout
    assert "net on photos, all shots: transfer (logreg) reached 90.0% in 10.0 s" in " ".join(table.stdout.split())
    markdown = cli("report", str(path), "--format", "markdown", "--target-accuracy", "80%")
    assert "to 80.0% validation accuracy transfer needed 9.00 s, full needed 20.0 s" in markdown.stdout
