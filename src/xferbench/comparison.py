"""The comparison the tool exists for: transfer against full retraining (and fine-tuning).

Computed from the finished runs of a results document, per backbone and dataset:

* **cost, counted whole.** Transfer's cold cost is the cell's extraction plus head training;
  its warm cost, head training alone (bottlenecks cached). The speed-up compares the
  baseline's training time with transfer's cold cost (and, second, its warm cost). A baseline
  that ``--full-budget`` stopped gives a lower bound (``> 1.3x``), not a ratio.
* **time to equal accuracy.** From the validation curves: the wall time each method needed to
  first reach a target validation accuracy (default: the lower of the two methods' final ones);
  transfer's clock starts with its extraction.
* **data needed.** With several ``--shots``: the smallest shot count at which the baseline's
  test accuracy matches transfer's at k shots, within the confidence intervals (the two
  95% intervals overlap, or the baseline is higher).

The result is the ``comparison`` key of the results document (docs/results.md).
"""

from __future__ import annotations

from typing import Any

TRANSFER = "transfer"
BASELINES = ("full", "finetune")
_LABEL = {"full": "full retraining", "finetune": "fine-tuning"}


def compare_methods(document: dict[str, Any], target_accuracy: float | None = None) -> dict[str, Any]:
    """The ``comparison`` of a results document (see the module docstring)."""
    runs = [run for run in document.get("runs", []) if run.get("status") == "ok"]
    heads = list((document.get("options") or {}).get("heads") or [])
    groups = []
    for backbone, dataset in dict.fromkeys((run.get("backbone"), run.get("dataset")) for run in runs):
        cell = [run for run in runs if run.get("backbone") == backbone and run.get("dataset") == dataset]
        transfer = _transfer_runs(cell, heads)
        baselines = {method: {_shots_key(r): r for r in cell if r.get("method") == method} for method in BASELINES}
        if not transfer or not any(baselines.values()):
            continue
        head = next(iter(transfer.values())).get("head")
        entries = []
        for shots in sorted(set(transfer) | {s for runs_ in baselines.values() for s in runs_}, key=_shots_order):
            t = transfer.get(shots)
            entry: dict[str, Any] = {"shots": shots, "transfer": _summary(t)}
            for method, by_shots in baselines.items():
                other = by_shots.get(shots)
                if other is None:
                    continue
                entry[method] = {**_summary(other), "speedup": speedup(t, other),
                                 "time_to_target": time_to_target(t, other, target_accuracy)}
            entries.append(entry)
        group = {"backbone": backbone, "dataset": dataset, "head": head, "by_shots": entries,
                 "data_needed": {method: data_needed(transfer, by_shots)
                                 for method, by_shots in baselines.items() if len(by_shots) and len(transfer) > 1}}
        group["verdict"] = verdict(group)
        groups.append(group)
    return {"target_accuracy": target_accuracy, "groups": groups}


def _transfer_runs(cell: list[dict[str, Any]], heads: list[str]) -> dict[str, dict[str, Any]]:
    """Transfer runs by shots, with the first head of ``--head`` (the comparison's transfer)."""
    runs = [r for r in cell if r.get("method") == TRANSFER]
    present = [h for h in heads if any(r.get("head") == h for r in runs)] or [r.get("head") for r in runs]
    if not present:
        return {}
    return {_shots_key(r): r for r in runs if r.get("head") == present[0]}


def _shots_key(run: dict[str, Any]) -> str:
    return str(run.get("shots"))


def _shots_order(shots: str) -> tuple[int, int]:
    return (1, 0) if shots == "all" else (0, int(shots)) if shots.isdigit() else (2, 0)


def _num(run: dict[str, Any] | None, field: str) -> float | None:
    value = (run or {}).get(field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def cold_seconds(run: dict[str, Any]) -> float | None:
    """A run's whole cost; for results written before it was recorded, extraction + training."""
    cold = _num(run, "cold_seconds")
    if cold is not None:
        return cold
    train = _num(run, "train_seconds")
    return None if train is None else train + (_num(run, "extract_seconds") or 0.0)


def warm_seconds(run: dict[str, Any]) -> float | None:
    warm = _num(run, "warm_seconds")
    return warm if warm is not None else _num(run, "train_seconds")


def stopped_by_budget(run: dict[str, Any]) -> bool:
    return ((run.get("training") or {}).get("stopped_by")) == "budget"


def _summary(run: dict[str, Any] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"test_accuracy": _num(run, "test_accuracy"), "test_accuracy_ci": run.get("test_accuracy_ci"),
            "val_accuracy": final_val_accuracy(run), "cold_seconds": cold_seconds(run),
            "warm_seconds": warm_seconds(run), "extract_seconds": _num(run, "extract_seconds"),
            "cached_bottlenecks": bool(run.get("cache_hits")) and not run.get("extracted"),
            "stopped_by_budget": stopped_by_budget(run)}


def final_val_accuracy(run: dict[str, Any]) -> float | None:
    value = _num(run, "val_accuracy")
    if value is None:
        curve = [p for p in run.get("curve") or [] if p.get("val_accuracy") is not None]
        value = float(curve[-1]["val_accuracy"]) if curve else None
    return value


def speedup(transfer: dict[str, Any] | None, other: dict[str, Any]) -> dict[str, Any] | None:
    """How many times transfer's cost the baseline's is: cold (extraction counted) and warm (head only)."""
    if transfer is None:
        return None
    base, cold, warm = cold_seconds(other), cold_seconds(transfer), warm_seconds(transfer)
    if base is None or not cold:
        return None
    return {"cold": base / cold, "warm": base / warm if warm else None, "lower_bound": stopped_by_budget(other)}


def reach_seconds(run: dict[str, Any], target: float) -> float | None:
    """Wall time at which ``run``'s validation curve first reached ``target``; transfer's starts with extraction."""
    offset = (cold_seconds(run) or 0.0) - (warm_seconds(run) or 0.0)
    for point in run.get("curve") or []:
        value = point.get("val_accuracy")
        if value is not None and value >= target - 1e-9:
            return offset + float(point.get("seconds") or 0.0)
    final = final_val_accuracy(run)
    if final is not None and final >= target - 1e-9:
        return cold_seconds(run)  # the final model reached it, though no curve point shows it
    return None


def time_to_target(transfer: dict[str, Any] | None, other: dict[str, Any],
                   target: float | None = None) -> dict[str, Any] | None:
    """When each of the two first reached the target validation accuracy."""
    if transfer is None:
        return None
    source = "given"
    if target is None:
        finals = [final_val_accuracy(transfer), final_val_accuracy(other)]
        if None in finals:
            return None
        target, source = min(finals), "lower final validation accuracy"  # type: ignore[type-var]
    return {"target": target, "source": source, "transfer_seconds": reach_seconds(transfer, target),
            "seconds": reach_seconds(other, target), "total_seconds": cold_seconds(other),
            "stopped_by_budget": stopped_by_budget(other)}


def _interval(run: dict[str, Any]) -> tuple[float, float] | None:
    ci, acc = run.get("test_accuracy_ci"), _num(run, "test_accuracy")
    if ci and len(ci) == 2 and None not in ci:
        return float(ci[0]), float(ci[1])
    return None if acc is None else (acc, acc)


def data_needed(transfer: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each shot count k of transfer: the smallest shot count at which ``other`` matches it within the CIs."""
    rows = []
    for k in sorted(transfer, key=_shots_order):
        wanted = _interval(transfer[k])
        matched = None
        for s in sorted(other, key=_shots_order):
            have = _interval(other[s])
            if wanted is not None and have is not None and have[1] >= wanted[0]:
                matched = s
                break
        rows.append({"shots": k, "transfer_accuracy": _num(transfer[k], "test_accuracy"),
                     "accuracy": _num(other.get(k), "test_accuracy"), "matched_at": matched})
    return rows


# -- in words ---------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def format_speedup(value: dict[str, Any] | None, which: str = "cold") -> str:
    """``3.4x``, or ``> 1.3x`` when the baseline was stopped by its budget."""
    if not value or value.get(which) is None:
        return "-"
    return f"{'> ' if value.get('lower_bound') else ''}{value[which]:.1f}x"


def verdict(group: dict[str, Any]) -> str:
    """One short paragraph: what was measured, in the seed's terms."""
    entries = group["by_shots"]
    main = next((e for e in entries if e["shots"] == "all"), entries[-1])
    t = main["transfer"]
    parts = []
    if t is not None:
        extraction = (t["cold_seconds"] or 0.0) - (t["warm_seconds"] or 0.0)
        spent = "bottlenecks from the cache" if t["cached_bottlenecks"] else f"{_secs(extraction)} extraction"
        parts.append(f"{group['backbone']} on {group['dataset']}, {main['shots']} shots: transfer "
                     f"({group['head']}) reached {_pct(t['test_accuracy'])} in {_secs(t['cold_seconds'])} "
                     f"({spent}, {_secs(t['warm_seconds'])} head)")
    for method in BASELINES:
        other = main.get(method)
        if other is None:
            continue
        budget = " (stopped by --full-budget)" if other["stopped_by_budget"] else ""
        text = (f"{_LABEL[method]} reached {_pct(other['test_accuracy'])} in {_secs(other['cold_seconds'])}{budget}, "
                f"{format_speedup(other['speedup'])} transfer's whole cost "
                f"({format_speedup(other['speedup'], 'warm')} its head alone)")
        ttt = other["time_to_target"]
        if ttt and ttt["target"] is not None:
            reached = (f"needed {_secs(ttt['seconds'])}" if ttt["seconds"] is not None
                       else f"did not reach it in {_secs(ttt['total_seconds'])}")
            text += (f"; to {_pct(ttt['target'])} validation accuracy transfer needed "
                     f"{_secs(ttt['transfer_seconds'])}, {_LABEL[method].split()[0]} {reached}")
        parts.append(text)
    few = [e for e in entries if e["shots"] != "all" and e.get("full") and e["transfer"]]
    if few:
        e = few[0]
        parts.append(f"with {e['shots']} shots per class transfer scored {_pct(e['transfer']['test_accuracy'])} "
                     f"and full retraining {_pct(e['full']['test_accuracy'])}")
    return "; ".join(parts) + "." if parts else ""


def data_needed_line(group: dict[str, Any], method: str = "full") -> str | None:
    """``data needed: ...``: where full retraining caught up with transfer's accuracy at each shot count."""
    rows = group.get("data_needed", {}).get(method)
    if not rows:
        return None
    said = []
    for row in rows:
        where = f"at {row['matched_at']} shots" if row["matched_at"] is not None else "not within the shots tried"
        said.append(f"transfer's {_pct(row['transfer_accuracy'])} at {row['shots']} shots -> {where}")
    return f"data needed ({group['backbone']} on {group['dataset']}, {_LABEL[method]} vs transfer): " + "; ".join(said)
