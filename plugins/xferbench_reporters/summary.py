"""The summary rows every text reporter shows, computed once from a results document."""

from __future__ import annotations

from typing import Any

#: ``img/s`` is bottleneck extraction end to end (read, decode, forward); ``net img/s`` the network alone
#: ``MFU`` the forward passes' GFLOP/s over the machine's peak matmul GFLOP/s in the run's precision
COLUMNS = ("backbone", "dataset", "method", "head", "shots", "test accuracy", "img/s", "net img/s", "MFU",
           "extract s", "train s", "speed-up vs full", "status")


def _full_seconds(runs: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    out = {}
    for run in runs:
        if run.get("method") == "full" and run.get("status") == "ok" and run.get("train_seconds"):
            out[(run["backbone"], run["dataset"], run["shots"])] = run["train_seconds"]
    return out


def speedup(run: dict[str, Any], full: dict[tuple[Any, ...], float]) -> float | None:
    """How many times less training time than full retraining (same backbone, data, shots)."""
    base = full.get((run["backbone"], run["dataset"], run["shots"]))
    if base is None or run.get("method") == "full" or not run.get("train_seconds"):
        return None
    return base / run["train_seconds"]


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
    full = _full_seconds(runs)
    rows = []
    for run in runs:
        up = speedup(run, full)
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
            "speed-up vs full": "-" if up is None else f"{up:.1f}x",
            "status": status,
        })
        if run.get("method") == "transfer" and run.get("status") == "ok" and not run.get("extracted"):
            rows[-1]["img/s"] = f"cached ({run.get('cache_hits', 0)})"
            rows[-1]["net img/s"] = "-"
            rows[-1]["MFU"] = "-"
    return rows
