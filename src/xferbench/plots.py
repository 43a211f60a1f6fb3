"""``xferbench report RESULT.json --plot DIR``: PNG charts of a results document.

Three charts, each written only when the document has the data for it:

* ``accuracy_vs_shots.png``: test accuracy against training images per class, one line per
  transfer head and one for full retraining and fine-tuning, with the 95% bootstrap interval
  as error bars; ``all`` is placed at the real training size per class of that run.
* ``accuracy_vs_time.png``: validation accuracy against training wall time (each run's
  ``curve``), transfer against full retraining, at the largest shots value of the run.
* ``throughput.png``: bottleneck extraction throughput per backbone (and dataset).

matplotlib is an optional dependency (``pip install 'xferbench[plot]'``). Figures are built
with the object API on the Agg canvas, so no display and no pyplot global state is involved.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xferbench.comparison import cold_seconds, compare_methods, warm_seconds
from xferbench.errors import UserError

Group = tuple[str, str]  # (backbone, dataset)
#: the order and look of the methods in every chart
_FULL_STYLE = {"full": ("tab:red", "s"), "finetune": ("tab:purple", "D")}
_HEAD_COLORS = ("tab:blue", "tab:green", "tab:orange", "tab:cyan", "tab:olive", "tab:brown")


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plots need matplotlib: install xferbench[plot] (pip install 'xferbench[plot]')") from None
    return Figure


def _ok_runs(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [run for run in document.get("runs", []) if run.get("status") == "ok"]


def _series_name(run: dict[str, Any]) -> str:
    return f"transfer ({run['head']})" if run["method"] == "transfer" else str(run["method"])


def _series_style(name: str, heads: list[str]) -> tuple[str, str]:
    method = name.split(" ")[0]
    if method in _FULL_STYLE:
        return _FULL_STYLE[method]
    head = name[len("transfer ("):-1]
    return _HEAD_COLORS[heads.index(head) % len(_HEAD_COLORS)], "o"


def _class_count(run: dict[str, Any], document: dict[str, Any]) -> int | None:
    per_class = run.get("per_class_accuracy")
    if per_class:
        return len(per_class)
    for entry in document.get("datasets", []):
        if run["dataset"] in (entry.get("token"), entry.get("name")):
            return int(entry["classes"])
    return None


def shots_per_class(run: dict[str, Any], document: dict[str, Any]) -> float | None:
    """x position of a run: its shots, or for ``all`` the training images per class it really used."""
    if run["shots"] != "all":
        return float(run["shots"])
    classes = _class_count(run, document)
    if not classes or not run.get("n_train"):
        return None
    return run["n_train"] / classes


def _grid(count: int) -> tuple[int, int]:
    cols = min(count, 2)
    return math.ceil(count / cols), cols


def _subplots(figure_class: Any, count: int) -> tuple[Any, list[Any]]:
    rows, cols = _grid(count)
    figure = figure_class(figsize=(6.4 * cols, 4.6 * rows), layout="constrained")
    axes = [figure.add_subplot(rows, cols, i + 1) for i in range(count)]
    return figure, axes


def _heads(runs: list[dict[str, Any]]) -> list[str]:
    return sorted({run["head"] for run in runs if run["method"] == "transfer"})


def plot_accuracy_vs_shots(document: dict[str, Any]) -> Any:
    """The chart as a matplotlib ``Figure``, or a string saying why there is none."""
    runs = _ok_runs(document)
    groups: dict[Group, dict[str, list[tuple[float, dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.get("test_accuracy") is None:
            continue
        x = shots_per_class(run, document)
        if x is not None:
            groups[(run["backbone"], run["dataset"])][_series_name(run)].append((x, run))
    # A line needs two shots values; a group is worth a panel when one of its series has a line.
    groups = {g: s for g, s in groups.items() if any(len({x for x, _ in pts}) >= 2 for pts in s.values())}
    if not groups:
        shots = sorted({str(run["shots"]) for run in runs})
        return f"needs at least two shots values per method (the document has: {', '.join(shots) or 'no ok runs'})"
    heads = _heads(runs)
    figure, axes = _subplots(_figure_class(), len(groups))
    for ax, ((backbone, dataset), series) in zip(axes, sorted(groups.items()), strict=True):
        ordered = sorted(series, key=lambda name: (not name.startswith("transfer"), name))
        ticks: dict[float, str] = {}
        for i, name in enumerate(ordered):
            points = sorted(series[name], key=lambda p: p[0])
            # Nudge each series a little along the log axis so overlapping error bars stay readable.
            nudge = 1.0 + 0.025 * (i - (len(ordered) - 1) / 2)
            xs = [x * nudge for x, _ in points]
            ys = [100 * run["test_accuracy"] for _, run in points]
            low = [100 * (run["test_accuracy"] - run["test_accuracy_ci"][0]) if run.get("test_accuracy_ci") else 0
                   for _, run in points]
            high = [100 * (run["test_accuracy_ci"][1] - run["test_accuracy"]) if run.get("test_accuracy_ci") else 0
                    for _, run in points]
            color, marker = _series_style(name, heads)
            ax.errorbar(xs, ys, yerr=[low, high], label=name, color=color, marker=marker, capsize=3, linewidth=1.5)
            for x, run in points:
                ticks[x] = f"all\n({x:.0f})" if run["shots"] == "all" else f"{x:g}"
        _style_log_axes(ax, f"{backbone} on {dataset}", "training images per class (log scale)",
                        "test accuracy (%), 95% CI")
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
        ax.minorticks_off()
        needed = _data_needed(document, backbone, dataset)
        if needed:  # the "far less data" half of the claim, under the lines it is read from
            ax.text(0.01, 0.01, needed, transform=ax.transAxes, fontsize="x-small", va="bottom", wrap=True)
    figure.suptitle("Test accuracy against training images per class")
    return figure


def _group(document: dict[str, Any], backbone: str, dataset: str) -> dict[str, Any] | None:
    comparison = document.get("comparison") or compare_methods(document)
    return next((g for g in comparison["groups"] if (g["backbone"], g["dataset"]) == (backbone, dataset)), None)


def _data_needed(document: dict[str, Any], backbone: str, dataset: str) -> str | None:
    group = _group(document, backbone, dataset)
    rows = (group or {}).get("data_needed", {}).get("full")
    if not rows:
        return None
    said = [f"{row['shots']} -> {row['matched_at'] or 'not within the shots tried'}" for row in rows]
    return "shots full retraining needed to match transfer at k shots (within CIs): " + ", ".join(said)


def _target(document: dict[str, Any], backbone: str, dataset: str, shots: str) -> float | None:
    group = _group(document, backbone, dataset)
    entry = next((e for e in (group or {}).get("by_shots", []) if str(e["shots"]) == shots), None)
    ttt = ((entry or {}).get("full") or {}).get("time_to_target")
    return ttt["target"] if ttt else None


def _style_log_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """The look both accuracy charts share: log x axis, labels, light grid, legend."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _largest_shots(runs: list[dict[str, Any]]) -> str:
    values = {str(run["shots"]) for run in runs}
    if "all" in values:
        return "all"
    return max(values, key=int)


def plot_accuracy_vs_time(document: dict[str, Any]) -> Any:
    """The chart as a matplotlib ``Figure``, or a string saying why there is none."""
    runs = [run for run in _ok_runs(document)
            if any(p.get("val_accuracy") is not None for p in run.get("curve") or [])]
    if not runs:
        return "no run has a validation curve (runs without a validation split record none)"
    by_group: dict[Group, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_group[(run["backbone"], run["dataset"])].append(run)
    heads = _heads(runs)
    figure, axes = _subplots(_figure_class(), len(by_group))
    for ax, ((backbone, dataset), group) in zip(axes, sorted(by_group.items()), strict=True):
        shots = _largest_shots(group)
        chosen = sorted((r for r in group if str(r["shots"]) == shots),
                        key=lambda r: (r["method"] != "transfer", _series_name(r)))
        for run in chosen:
            # Transfer's clock starts with its extraction: a head cannot train before the bottlenecks exist.
            offset = (cold_seconds(run) or 0.0) - (warm_seconds(run) or 0.0)
            points = [(offset + p["seconds"], 100 * p["val_accuracy"]) for p in run["curve"]
                      if p.get("val_accuracy") is not None and offset + p.get("seconds", 0) > 0]
            if not points:
                continue
            color, marker = _series_style(_series_name(run), heads)
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=_series_name(run), color=color, marker=marker if len(points) < 15 else None,
                    markersize=4, linewidth=1.5)
        target = _target(document, backbone, dataset, shots)
        if target is not None:
            ax.axhline(100 * target, color="0.5", linestyle=":", linewidth=1, label=f"target {target:.1%}")
        _style_log_axes(ax, f"{backbone} on {dataset}, shots={shots}",
                        "wall time (s, log scale; transfer: extraction, then the head)", "validation accuracy (%)")
    figure.suptitle("Validation accuracy against training time")
    return figure


def plot_throughput(document: dict[str, Any]) -> Any:
    """The chart as a matplotlib ``Figure``, or a string saying why there is none."""
    end_to_end: dict[Group, float] = {}
    forward: dict[Group, float] = {}
    for run in _ok_runs(document):
        ips = run.get("extract_images_per_second")
        if run["method"] == "transfer" and ips:
            # Every transfer row of a cell shares one extraction: its figures appear once per cell.
            key = (run["backbone"], run["dataset"])
            end_to_end[key] = float(ips)
            if run.get("extract_forward_images_per_second"):
                forward[key] = float(run["extract_forward_images_per_second"])
    if not end_to_end:
        return "no extraction throughput (no transfer run, or every bottleneck came from the cache)"
    keys = sorted(end_to_end)
    datasets = {dataset for _, dataset in keys}
    labels = [backbone if len(datasets) == 1 else f"{backbone}\n{dataset}" for backbone, dataset in keys]
    figure = _figure_class()(figsize=(max(5.5, 1.6 * len(keys) + 2.5), 4.4), layout="constrained")
    ax = figure.add_subplot()
    width = 0.38 if forward else 0.5
    offset = width / 2 if forward else 0.0
    positions = range(len(keys))
    bars = ax.bar([p - offset for p in positions], [end_to_end[k] for k in keys], width,
                  color="tab:blue", label="end to end (read, decode, forward)")
    ax.bar_label(bars, fmt="%.0f", padding=2)
    if forward:
        bars = ax.bar([p + offset for p in positions], [forward.get(k, 0.0) for k in keys], width,
                      color="tab:gray", label="backbone forward pass only")
        ax.bar_label(bars, fmt="%.0f", padding=2)
    ax.set_xticks(list(positions), labels)
    ax.set_xlim(-0.75, len(keys) - 0.25)
    ax.set_xlabel("backbone" if len(datasets) == 1 else "backbone and dataset")
    ax.set_ylabel("bottleneck extraction (images / s)")
    only = f" on {next(iter(datasets))}" if len(datasets) == 1 else ""
    ax.set_title(f"Extraction throughput per backbone{only}")
    # Head room above the tallest bar so its label never runs into the legend.
    ax.set_ylim(0, max([*end_to_end.values(), *forward.values()]) * 1.4)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return figure


#: (file name, what it shows, builder) of every chart ``write_plots`` knows
PLOTS: tuple[tuple[str, str, Callable[[dict[str, Any]], Any]], ...] = (
    ("accuracy_vs_shots.png", "accuracy against shots", plot_accuracy_vs_shots),
    ("accuracy_vs_time.png", "accuracy against time", plot_accuracy_vs_time),
    ("throughput.png", "throughput per backbone", plot_throughput),
)


def write_plots(document: dict[str, Any], out_dir: Path,
                log: Callable[[str], None] | None = None) -> list[Path]:
    """Write every chart the document has data for into ``out_dir``; return their paths.

    A chart without data is skipped with one ``log`` line saying why (default: stderr).
    """
    _figure_class()  # fail before creating anything when matplotlib is missing
    log = log or (lambda line: print(line, file=sys.stderr))
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--plot {out_dir}: cannot create the folder: {exc.strerror or exc}") from None
    written = []
    for filename, title, build in PLOTS:
        figure = build(document)
        if isinstance(figure, str):
            log(f"plot skipped: {title}: {figure}")
            continue
        path = out_dir / filename
        figure.savefig(path, dpi=110)
        written.append(path)
    return written
