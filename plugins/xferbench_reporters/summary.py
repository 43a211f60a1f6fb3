"""The summary rows every text reporter shows, computed once from a results document."""

from __future__ import annotations

from typing import Any

from xferbench.comparison import compare_methods, data_needed_line, format_speedup, speedup

#: ``img/s`` is bottleneck extraction end to end (read, decode, forward); ``net img/s`` the network alone
#: (``-`` where the backbone does not time its forward passes); ``MFU`` the forward passes' GFLOP/s over the
#: machine's peak matmul GFLOP/s in the run's precision.
#: ``speed-up vs full`` is full retraining's time over the run's whole (cold) cost, extraction included;
#: ``head-only`` over its warm cost, once the bottlenecks are cached. ``> x`` when --full-budget cut full short.
SPEEDUP, HEAD_ONLY = "vs full, whole cost", "vs full, head only"
COLUMNS = ("backbone", "dataset", "method", "head", "shots", "test accuracy", "img/s", "net img/s", "MFU",
           "extract s", "train s", SPEEDUP, HEAD_ONLY, "status")


def _full_runs(runs: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(run["backbone"], run["dataset"], str(run["shots"])): run for run in runs
            if run.get("method") == "full" and run.get("status") == "ok"}


def verdicts(document: dict[str, Any]) -> list[str]:
    """The comparison in words: one paragraph, then the data-needed line, per backbone and dataset."""
    comparison = document.get("comparison") or compare_methods(document)
    lines = []
    for group in comparison.get("groups", []):
        if group.get("verdict"):
            lines.append(group["verdict"])
        needed = data_needed_line(group)
        if needed:
            lines.append(needed)
    return lines


def fmt_accuracy(run: dict[str, Any]) -> str:
    acc = run.get("test_accuracy")
    if acc is None:
        return "-"
    ci = run.get("test_accuracy_ci")
    if ci and None not in ci:
        half = (ci[1] - ci[0]) / 2
        return f"{acc:.1%} ± {half:.1%}"
    return f"{acc:.1%}"


def _num(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def short_name(token: str, limit: int = 32) -> str:
    """``folder:/long/path/to/photos`` -> ``folder:…/photos``: paths make tables unreadable."""
    if len(token) <= limit or ":" not in token:
        return token
    kind, _, arg = token.partition(":")
    tail = arg.rstrip("/").rsplit("/", 1)[-1]
    return f"{kind}:…/{tail}"


def _status(run: dict[str, Any]) -> str:
    """``ok``, ``error: ...``, or ``ok`` plus how far training got when a limit stopped it early."""
    if run.get("status") != "ok":
        return f"{run.get('status')}: {run.get('error')}"
    training = run.get("training") or {}
    if training.get("stopped_by") == "budget":
        # The accuracy of a network stopped by --full-budget says little about the method.
        return f"ok (budget: {training.get('epochs', 0):.2g} epochs)"
    return "ok"


def summary_rows(document: dict[str, Any]) -> list[dict[str, str]]:
    runs = document.get("runs", [])
    full = _full_runs(runs)
    rows = []
    for run in runs:
        base = full.get((run.get("backbone"), run.get("dataset"), str(run.get("shots"))))
        up = speedup(run, base) if base is not None and run.get("method") != "full" and run.get("status") == "ok" \
            else None
        status = _status(run)
        rows.append({
            "backbone": short_name(str(run.get("backbone"))), "dataset": short_name(str(run.get("dataset"))),
            "method": str(run.get("method")), "head": str(run.get("head")), "shots": str(run.get("shots")),
            "test accuracy": fmt_accuracy(run),
            "img/s": _num(run.get("extract_images_per_second"), ".1f")
            if run.get("method") == "transfer" else "-",
            "net img/s": _num(run.get("extract_forward_images_per_second"), ".1f")
            if run.get("method") == "transfer" else "-",
            "MFU": _num(run.get("mfu"), ".1%") if run.get("method") == "transfer" else "-",
            "extract s": _num(run.get("extract_seconds"), ".2f"),
            "train s": _num(run.get("train_seconds"), ".2f"),
            # Bottlenecks all from the cache: this run did not pay for extraction, so it has no whole cost.
            SPEEDUP: "cached" if up and run.get("cache_hits") and not run.get("extracted") else format_speedup(up),
            HEAD_ONLY: format_speedup(up, "warm") if up and run.get("cache_hits") is not None else "-",
            "status": status,
        })
        if run.get("method") == "transfer" and run.get("status") == "ok" and not run.get("extracted"):
            rows[-1]["img/s"] = f"cached ({run.get('cache_hits', 0)})"
            rows[-1]["net img/s"] = "-"
            rows[-1]["MFU"] = "-"
    return rows
