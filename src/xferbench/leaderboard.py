"""The leaderboard across backbones: accuracy per task group and overall, with bootstrap CIs.

Rows are (backbone, method, head). A task is a suite task (``document["suite"]``) or, for a
results file without a suite, a dataset. Only runs at the largest shot count of each task enter
the leaderboard; every shot count enters the sample-efficiency table.

Confidence intervals: 95% percentile bootstrap over the test images of each task. A task's test
accuracy ``p`` on ``n`` images is resampled as ``Binomial(n, p) / n`` (the bootstrap of its 0/1
outcomes), independently per task, and each resample gives the group and overall means.
Two neighbouring rows whose overall intervals overlap are marked as tied (``=``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from xferbench.reporter import Reporter

OVERALL = "overall"


@dataclass
class Row:
    backbone: str
    method: str
    head: str
    #: task -> (accuracy, test images)
    tasks: dict[str, tuple[float, int]] = field(default_factory=dict)
    groups: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # mean, low, high
    mean_rank: float | None = None
    images_per_second: float | None = None
    tied_with_previous: bool = False

    @property
    def label(self) -> str:
        head = "" if self.head == "-" else f"/{self.head}"
        return f"{self.backbone} {self.method}{head}"

    @property
    def overall(self) -> tuple[float, float, float]:
        return self.groups.get(OVERALL, (float("nan"),) * 3)


@dataclass
class Leaderboard:
    rows: list[Row]
    groups: list[str]
    tasks: dict[str, str]  # task -> group
    #: (backbone, method, head) label -> {shots: mean accuracy over tasks}
    sample_efficiency: dict[str, dict[str, float]]
    shot_counts: list[str]


def _task_map(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """dataset token -> (task, group)."""
    suite = document.get("suite") or {}
    return {t["token"]: (t["name"], t.get("group", "all")) for t in suite.get("tasks", [])}


def _shots_key(shots: Any) -> float:
    return float("inf") if shots == "all" else float(shots)


def build(documents: Iterable[dict[str, Any]], resamples: int = 2000, seed: int = 0) -> Leaderboard:
    runs: list[tuple[str, str, dict[str, Any]]] = []  # (task, group, run)
    order: dict[str, str] = {}
    for document in documents:
        tasks = _task_map(document)
        for run in document.get("runs", []):
            if run.get("status") != "ok" or run.get("test_accuracy") is None:
                continue
            task, group = tasks.get(run["dataset"], (run["dataset"], "all"))
            order.setdefault(task, group)
            runs.append((task, group, run))
    top_shots = {}
    for task, _, run in runs:
        top_shots[task] = max(top_shots.get(task, -1.0), _shots_key(run["shots"]))
    rows: dict[tuple[str, str, str], Row] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    extracted: dict[tuple[str, str, str], list[float]] = {}
    for task, _, run in runs:
        ident = (run["backbone"], run["method"], run.get("head", "-"))
        row = rows.setdefault(ident, Row(*ident))
        curves.setdefault(row.label, {}).setdefault(str(run["shots"]), []).append(run["test_accuracy"])
        if _shots_key(run["shots"]) == top_shots[task]:
            row.tasks[task] = (float(run["test_accuracy"]), int(run.get("n_test") or 0))
        if run.get("extracted") and run.get("extract_seconds"):
            images, seconds = extracted.setdefault(ident, [0.0, 0.0])
            extracted[ident] = [images + run["extracted"], seconds + run["extract_seconds"]]
    groups = list(dict.fromkeys(order.values()))
    rng = np.random.default_rng(seed)
    for ident, row in rows.items():
        _summarise(row, order, groups, rng, resamples)
        if ident in extracted and extracted[ident][1] > 0:
            row.images_per_second = extracted[ident][0] / extracted[ident][1]
    _rank(list(rows.values()), list(order))
    ranked = sorted(rows.values(), key=lambda r: (-np.nan_to_num(r.overall[0], nan=-1.0), r.label))
    for previous, row in zip(ranked, ranked[1:], strict=False):
        row.tied_with_previous = bool(row.overall[2] >= previous.overall[1])
    shot_counts = sorted({s for c in curves.values() for s in c}, key=_shots_key)
    efficiency = {label: {s: float(np.mean(v)) for s, v in c.items()} for label, c in curves.items()}
    return Leaderboard(ranked, groups, order, efficiency, shot_counts)


def _summarise(row: Row, order: dict[str, str], groups: list[str], rng: np.random.Generator,
               resamples: int) -> None:
    names = [t for t in order if t in row.tasks]
    if not names:
        return
    acc = np.array([row.tasks[t][0] for t in names])
    n = np.array([max(row.tasks[t][1], 1) for t in names])
    draws = rng.binomial(n[None, :], np.clip(acc, 0, 1)[None, :], size=(resamples, len(names))) / n[None, :]
    for group in [*groups, OVERALL]:
        cols = [i for i, t in enumerate(names) if group == OVERALL or order[t] == group]
        if not cols:
            continue
        means = draws[:, cols].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        row.groups[group] = (float(acc[cols].mean()), float(low), float(high))


def _rank(rows: list[Row], tasks: list[str]) -> None:
    """Mean over tasks of each row's rank (1 = best; ties share the mean of their ranks)."""
    ranks: dict[int, list[float]] = {id(r): [] for r in rows}
    for task in tasks:
        scored = [(r.tasks[task][0], r) for r in rows if task in r.tasks]
        for acc, row in scored:
            better = sum(1 for a, _ in scored if a > acc)
            equal = sum(1 for a, _ in scored if a == acc)
            ranks[id(row)].append(better + (equal + 1) / 2)
    for row in rows:
        row.mean_rank = float(np.mean(ranks[id(row)])) if ranks[id(row)] else None


# -- rendering ---------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _cell(group: tuple[float, float, float] | None) -> str:
    if group is None:
        return "-"
    return f"{_pct(group[0])} [{_pct(group[1])}, {_pct(group[2])}]"


def table_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["#", "backbone", "method", *board.groups, OVERALL, "mean rank", "tasks", "img/s"]
    body = []
    for i, row in enumerate(board.rows, start=1):
        body.append([f"{i}{' =' if row.tied_with_previous else ''}", row.backbone,
                     row.method + ("" if row.head == "-" else f"/{row.head}"),
                     *(_cell(row.groups.get(g)) for g in board.groups), _cell(row.groups.get(OVERALL)),
                     "-" if row.mean_rank is None else f"{row.mean_rank:.2f}", str(len(row.tasks)),
                     "-" if row.images_per_second is None else f"{row.images_per_second:.0f}"])
    return header, body


def efficiency_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["backbone method", *(f"{s} shots" for s in board.shot_counts)]
    body = [[label, *(_pct(curve.get(s)) for s in board.shot_counts)]
            for label, curve in sorted(board.sample_efficiency.items())]
    return header, body


def render(board: Leaderboard, fmt: str, stream: TextIO) -> None:
    tables = [("leaderboard (test accuracy %, 95% bootstrap CI; '=' ties with the row above)", table_rows(board))]
    if len(board.shot_counts) > 1:
        tables.append(("sample efficiency (mean test accuracy % over tasks)", efficiency_rows(board)))
    if fmt == "csv":
        for i, (_, (header, body)) in enumerate(tables):
            if i:
                stream.write("\n")
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(body)
            stream.write(buffer.getvalue())
        return
    if fmt == "markdown":
        for title, (header, body) in tables:
            stream.write(f"**{title}**\n\n| {' | '.join(header)} |\n|{'---|' * len(header)}\n")
            for line in body:
                stream.write(f"| {' | '.join(line)} |\n")
            stream.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=200 if not stream.isatty() else None)
    for title, (header, body) in tables:
        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, overflow="fold")
        for line in body:
            table.add_row(*line)
        console.print(table)


def merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Several results documents as one for the reporters: their runs one after the other."""
    merged = dict(documents[0])
    merged["runs"] = [run for document in documents for run in document.get("runs", [])]
    merged["datasets"] = [d for document in documents for d in document.get("datasets", [])]
    merged["merged_from"] = len(documents)
    tasks: dict[str, dict[str, Any]] = {}
    for document in documents:
        for task in (document.get("suite") or {}).get("tasks", []):
            tasks.setdefault(task["token"], task)
    if tasks:
        merged["suite"] = {**(merged.get("suite") or {"name": "merged"}), "tasks": list(tasks.values())}
    return merged


class LeaderboardReporter(Reporter):
    """``--report leaderboard``: see the module docstring."""

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        board = build([document], resamples=self.options.get("resamples", 2000))
        with self.output(stream) as out:
            if not board.rows:
                out.write("leaderboard: no finished runs\n")
                return
            render(board, self.options.get("format", "table"), out)
