"""The full comparison: transfer against full retraining and fine-tuning, over shots per class."""

from __future__ import annotations

import json

import pytest

from xferbench.results import validate_document


@pytest.mark.slow
def test_lenet5_full_comparison_over_shots(cli, tmp_path):
    result = cli("run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--backbone-opt",
                 "pretrain_on=digits:0-4", "--compare", "transfer,full,finetune", "--shots", "1,5,10,all",
                 "--full-epochs", "3", "--head-opt", "steps=500", "--output", "cmp.json")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "cmp.json").read_text())
    validate_document(document)
    runs = document["runs"]
    assert [(r["method"], r["shots"]) for r in runs] == [
        (m, s) for s in (1, 5, 10, "all") for m in ("transfer", "full", "finetune")]
    assert all(r["status"] == "ok" for r in runs)
    for shots in (1, 5, 10):
        same = [r for r in runs if r["shots"] == shots]
        # Every method sees the same k-shot subset; validation and test never change with shots.
        assert {r["n_train"] for r in same} == {5 * shots}
    assert len({(r["n_val"], r["n_test"]) for r in runs}) == 1
    for run in runs:
        assert run["curve"], run["method"]  # time to accuracy, recorded during training
        assert all(point["seconds"] >= 0 for point in run["curve"])
    finetune = [r for r in runs if r["method"] == "finetune"]
    assert all(r["training"]["run_dir"] for r in finetune)
    # The table shows every method at every shot count, and the speed-up against full.
    for method in ("transfer", "full", "finetune"):
        assert result.stdout.count(f" {method} ") >= 4
    assert "vs full, whole cost" in result.stdout and "vs full, head only" in result.stdout

    # The classic evaluator: reload each checkpoint of a training run, score its EMA weights.
    full_all = next(r for r in runs if r["method"] == "full" and r["shots"] == "all")
    watched = cli("evaluate", "--watch", full_all["training"]["run_dir"], "--interval", "0.1", "--until-done",
                  timeout=300)
    assert watched.returncode == 0, watched.stderr[-3000:]
    lines = [line for line in watched.stdout.splitlines() if line.startswith("After ")]
    steps = [int(line.split()[1]) for line in lines]
    assert steps and steps[-1] == full_all["training"]["steps"]
    assert steps == sorted(set(steps))
    final = float(lines[-1].rsplit("=", 1)[1])
    assert final == pytest.approx(full_all["training"]["final_val_accuracy"], abs=1e-4)
    missing = cli("evaluate", "--watch", str(tmp_path / "nope"), "--until-done")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
