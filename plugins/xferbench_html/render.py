"""One self-contained HTML page from one results document (a report) or two (a comparison).

Charts are Plotly figures: their JSON sits in the page, and plotly.js (from the ``plotly``
package, gzip-compressed and base64-encoded: 1.9 MB instead of 4.8 MB) is unpacked by the
browser itself (``DecompressionStream``), so the page opens offline, from disk or as an
attachment, with no CDN and no server. The summary table sorts (click a header) and filters
(type in the box) with a few lines of plain JavaScript.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from xferbench.compare import (
    KEY_FIELDS,
    accuracy_delta_points,
    find_regressions,
    index_runs,
    relative_delta_percent,
    run_key,
)
from xferbench_reporters.summary import COLUMNS, summary_rows

THUMBNAIL_PX = 64
_ROW_FIELDS = {"test accuracy": "test_accuracy", "img/s": "extract_images_per_second",
               "net img/s": "extract_forward_images_per_second", "MFU": "mfu", "extract s": "extract_seconds",
               "train s": "train_seconds"}


@functools.cache
def plotly_js_gzip_base64() -> str:
    """plotly.min.js of the installed ``plotly`` package, gzip -9, base64 (computed once per process)."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode("ascii")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


# -- charts ----------------------------------------------------------------------------------------
class Charts:
    """Collects figures; each becomes a ``div.chart`` with its JSON beside it."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, figure: Any, title: str, height: int = 360) -> str:
        import plotly.io as pio

        self.count += 1
        figure.update_layout(title=title, height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                             template="plotly_white")
        spec = pio.to_json(figure, validate=True, pretty=False).replace("</", "<\\/")
        return (f'<div class="chart" id="chart-{self.count}" data-title="{esc(title)}"></div>'
                f'<script type="application/json" id="chart-{self.count}-spec">{spec}</script>')


def _shots_order(value: Any) -> tuple[int, float]:
    return (1, 0.0) if str(value) == "all" else (0, float(value))


def _series_name(run: dict[str, Any], *fields: str) -> str:
    parts = [str(run.get(f)) for f in fields if run.get(f) not in (None, "-")]
    return " ".join(parts)


def accuracy_vs_shots(charts: Charts, runs: list[dict[str, Any]]) -> str:
    """One chart per dataset: test accuracy against shots per (backbone, method, head), with 95% CI bands."""
    import plotly.graph_objects as go

    out = []
    ok = [r for r in runs if r.get("status") == "ok" and r.get("test_accuracy") is not None]
    for dataset in dict.fromkeys(r["dataset"] for r in ok):
        figure = go.Figure()
        series: dict[str, list[dict[str, Any]]] = {}
        for run in ok:
            if run["dataset"] == dataset:
                series.setdefault(_series_name(run, "method", "head", "backbone"), []).append(run)
        shots_axis = sorted({str(r["shots"]) for r in ok if r["dataset"] == dataset}, key=_shots_order)
        for index, (name, points) in enumerate(series.items()):
            points.sort(key=lambda r: _shots_order(r["shots"]))
            x = [str(r["shots"]) for r in points]
            y = [r["test_accuracy"] for r in points]
            colour = _COLOURS[index % len(_COLOURS)]
            with_ci = [r for r in points if r.get("test_accuracy_ci") and None not in r["test_accuracy_ci"]]
            if with_ci:
                band_x = [str(r["shots"]) for r in with_ci]
                figure.add_trace(go.Scatter(
                    x=band_x + band_x[::-1], y=[r["test_accuracy_ci"][1] for r in with_ci]
                    + [r["test_accuracy_ci"][0] for r in with_ci[::-1]], mode="lines", fill="toself", fillcolor=_alpha(colour),
                    line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=name, name=f"{name} 95% CI"))
            figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=name,
                                        line={"color": colour}, meta="accuracy",
                                        hovertemplate="%{y:.1%} at %{x} shots<extra>" + esc(name) + "</extra>"))
        figure.update_xaxes(title="training images per class (shots)", type="category",
                            categoryorder="array", categoryarray=shots_axis)
        figure.update_yaxes(title="test accuracy", tickformat=".0%", rangemode="tozero")
        out.append(charts.add(figure, f"Accuracy against shots: {dataset} (bands: 95% bootstrap CI)"))
    return "".join(out)


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")


def _alpha(colour: str, alpha: float = 0.18) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def time_to_accuracy(charts: Charts, runs: list[dict[str, Any]]) -> str:
    """Validation accuracy against training seconds: the heads, full retraining and fine-tuning."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for run in runs:
        points = [p for p in run.get("curve") or [] if p.get("val_accuracy") is not None]
        if run.get("status") != "ok" or not points:
            continue
        name = f"{_series_name(run, 'method', 'head', 'backbone')}, {run['shots']} shots"
        figure.add_trace(go.Scatter(x=[p["seconds"] for p in points], y=[p["val_accuracy"] for p in points],
                                    mode="lines", name=name, customdata=[p["step"] for p in points],
                                    hovertemplate="%{y:.1%} after %{x:.2f} s (step %{customdata})<extra>"
                                    + esc(name) + "</extra>"))
    if not figure.data:
        return '<p class="note">No run recorded a validation curve.</p>'
    figure.update_xaxes(title="training seconds", type="log")
    figure.update_yaxes(title="validation accuracy", tickformat=".0%")
    return charts.add(figure, "Time to accuracy (validation accuracy during training)", 420)


def _per_backbone(runs: list[dict[str, Any]], field: str) -> dict[str, float]:
    """The first measured value of ``field`` per backbone-on-dataset (one extraction serves every transfer run)."""
    out: dict[str, float] = {}
    for run in runs:
        value = run.get(field)
        label = f"{run.get('backbone')} on {run.get('dataset')}"
        if run.get("status") == "ok" and isinstance(value, int | float) and label not in out:
            out[label] = float(value)
    return out


def throughput_and_mfu(charts: Charts, runs: list[dict[str, Any]]) -> str:
    import plotly.graph_objects as go

    parts = []
    end_to_end = _per_backbone(runs, "extract_images_per_second")
    network = _per_backbone(runs, "extract_forward_images_per_second")
    if end_to_end or network:
        figure = go.Figure()
        for name, values in (("end to end (read, decode, forward)", end_to_end), ("network alone", network)):
            figure.add_trace(go.Bar(x=list(values), y=list(values.values()), name=name,
                                    texttemplate="%{y:.0f}", textposition="outside"))
        figure.update_layout(barmode="group")
        figure.update_yaxes(title="images per second")
        parts.append(charts.add(figure, "Bottleneck extraction throughput per backbone"))
    mfu = _per_backbone(runs, "mfu")
    if mfu:
        achieved = _per_backbone(runs, "achieved_gflops_per_second")
        figure = go.Figure(go.Bar(x=list(mfu), y=list(mfu.values()), name="MFU", texttemplate="%{y:.1%}",
                                  textposition="outside", customdata=[achieved.get(k) for k in mfu],
                                  hovertemplate="MFU %{y:.1%} (%{customdata:.1f} GFLOP/s)<extra>%{x}</extra>"))
        figure.update_yaxes(title="achieved / peak matmul GFLOP/s", tickformat=".0%", rangemode="tozero")
        parts.append(charts.add(figure, "Model FLOPs utilisation of the forward passes per backbone"))
    if not parts:
        return '<p class="note">No run measured extraction throughput (every bottleneck came from the cache).</p>'
    return "".join(parts)


def per_run(charts: Charts, runs: list[dict[str, Any]], thumbs: Thumbnails) -> str:
    """Per-class accuracy and the confusion matrix of each run, with misclassified thumbnails."""
    import plotly.graph_objects as go

    out = []
    for run in runs:
        if run.get("status") != "ok" or not run.get("per_class_accuracy"):
            continue
        title = f"{_series_name(run, 'method', 'head', 'backbone')} on {run['dataset']}, {run['shots']} shots"
        classes = list(run["per_class_accuracy"])
        per_class = go.Figure(go.Bar(x=classes, y=[run["per_class_accuracy"][c] for c in classes],
                                     texttemplate="%{y:.0%}", textposition="outside"))
        per_class.update_yaxes(title="test accuracy", tickformat=".0%", range=[0, 1.1])
        cells = [charts.add(per_class, f"Per-class accuracy: {title}", 320)]
        matrix = run.get("confusion_matrix")
        if matrix:
            heat = go.Figure(go.Heatmap(z=matrix, x=classes, y=classes, colorscale="Blues", texttemplate="%{z}",
                                        hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
            heat.update_xaxes(title="predicted")
            heat.update_yaxes(title="true", autorange="reversed")
            cells.append(charts.add(heat, f"Confusion matrix: {title}", 320))
        out.append(f'<section class="run"><h3>{esc(title)}</h3><div class="pair">{"".join(cells)}</div>'
                   f"{thumbs.section(run)}</section>")
    return "".join(out) or '<p class="note">No finished run with per-class results.</p>'


# -- misclassified thumbnails --------------------------------------------------------------------
class Thumbnails:
    """Small JPEGs of misclassified test images, where the image files can be read; capped per run and in all."""

    def __init__(self, document: dict[str, Any], per_run: int, total: int, images: str = "") -> None:
        self.per_run, self.total, self.left = per_run, total, total
        self.roots = _image_roots(document, images)

    def _find(self, dataset: str, key: str) -> Path | None:
        for root in self.roots.get(dataset, []) + self.roots.get("*", []):
            path = root / key
            if path.is_file():
                return path
        return None

    def section(self, run: dict[str, Any]) -> str:
        wrong = run.get("misclassified") or []
        if not wrong or self.per_run == 0:
            return ""
        figures, unreadable = [], 0
        for item in wrong:
            if len(figures) >= min(self.per_run, self.left + len(figures)):
                break
            data = _thumbnail(self._find(run["dataset"], item["key"]))
            if data is None:
                unreadable += 1
                continue
            figures.append(f'<figure><img alt="{esc(item["key"])}" src="data:image/jpeg;base64,{data}">'
                           f'<figcaption>{esc(item["true"])} → {esc(item["predicted"])}</figcaption></figure>')
        self.left -= len(figures)
        note = f"{len(wrong)} misclassified test images"
        if len(figures) < len(wrong):
            note += f"; showing {len(figures)}"
            reasons = []
            if unreadable:
                reasons.append(f"{unreadable} image files not readable here")
            if len(figures) + unreadable < len(wrong):
                reasons.append(f"capped at {self.per_run} per run and {self.total} per page")
            note += f" ({'; '.join(reasons)})"
        return f'<div class="thumbs"><p class="note">{esc(note)}</p>{"".join(figures)}</div>'


def _image_roots(document: dict[str, Any], images: str) -> dict[str, list[Path]]:
    roots: dict[str, list[Path]] = {}
    if images:
        roots["*"] = [Path(images).expanduser()]
    data_dir = (document.get("options") or {}).get("data_dir")
    for token in (document.get("options") or {}).get("datasets") or []:
        found = []
        name, _, arg = token.partition(":")
        if name == "folder" and arg:
            path = Path(arg)
            while not path.is_dir() and ":" in str(path):  # folder:PATH:daisy,roses
                path = Path(str(path).rsplit(":", 1)[0])
            found.append(path)
        if name == "flowers-mini":
            try:
                from xferbench_embedded.files import FLOWER_PHOTOS

                found.append(FLOWER_PHOTOS)
            except ImportError:
                pass
        if data_dir:
            found.append(Path(data_dir))
        roots[token] = found
    return roots


def _thumbnail(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        from PIL import Image

        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=70)
    except (OSError, ValueError):
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- tables ----------------------------------------------------------------------------------------
def _sort_value(run: dict[str, Any], column: str) -> str:
    field = _ROW_FIELDS.get(column)
    if field is not None:
        value = run.get(field)
        return "" if value is None else repr(float(value))
    if column == "shots":
        return "1e12" if str(run.get("shots")) == "all" else str(run.get("shots"))
    return ""


def summary_table(document: dict[str, Any]) -> str:
    runs = document.get("runs", [])
    head = "".join(f'<th data-col="{i}" title="click to sort">{esc(c)}</th>' for i, c in enumerate(COLUMNS))
    body = []
    for run, row in zip(runs, summary_rows(document), strict=True):
        cells = []
        for column in COLUMNS:
            value = _sort_value(run, column)
            attribute = f' data-value="{esc(value)}"' if value else ""
            cells.append(f'<td data-field="{esc(column)}"{attribute}>{esc(row[column])}</td>')
        status = "ok" if row["status"].startswith("ok") or row["status"].startswith("skipped") else "failed"
        body.append(f'<tr class="{status}" data-key="{esc("|".join(run_key(run)))}">{"".join(cells)}</tr>')
    return ('<input id="filter" type="search" placeholder="filter rows (backbone, method, status, ...)">'
            f'<table id="summary" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def header(document: dict[str, Any], source: str) -> str:
    machine, versions = document.get("machine") or {}, document.get("versions") or {}
    command = " ".join(document.get("command") or [])
    rows = [("results", source), ("created", document.get("created")), ("command", command),
            ("machine", f"{machine.get('cpu')} ({machine.get('cores')} cores, native bf16: "
                        f"{'yes' if machine.get('cpu_bf16') else 'no'}); GPU: {', '.join(machine.get('gpu') or []) or 'none'}"),
            ("platform", machine.get("platform")),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v))]
    return "<dl class=\"header\">" + "".join(f"<dt>{esc(k)}</dt><dd><code>{esc(v)}</code></dd>" if k == "command"
                                             else f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows) + "</dl>"


def skipped_files(document: dict[str, Any]) -> str:
    lines = []
    for ds in document.get("datasets", []):
        token = ds.get("token", ds.get("name"))
        counts = dict(ds.get("skipped_files") or {})
        for run in document.get("runs", []):
            count = (run.get("skipped_files") or {}).get("decode_error")
            if run.get("dataset") == token and count:
                counts[f"decode_error ({run['backbone']})"] = max(counts.get(f"decode_error ({run['backbone']})", 0),
                                                                  count)
        cells = "".join(f"<tr><td>{esc(reason)}</td><td>{n}</td></tr>" for reason, n in sorted(counts.items()))
        lines.append(f"<h3>{esc(ds.get('name'))}</h3>" + (f"<table class=\"small\"><tr><th>reason</th><th>files</th>"
                                                           f"</tr>{cells}</table>" if cells
                                                           else '<p class="note">none skipped</p>'))
    return "".join(lines) or '<p class="note">no dataset loaded</p>'


def leaderboard(document: dict[str, Any]) -> str:
    """A suite's leaderboard, when the document has one (a list of rows)."""
    rows = document.get("leaderboard")
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<h2>Suite leaderboard</h2><table class=\"small\"><tr>{head}</tr>{body}</table>"


# -- comparison ------------------------------------------------------------------------------------
def comparison(charts: Charts, baseline: dict[str, Any], candidate: dict[str, Any], threshold: float) -> str:
    import plotly.graph_objects as go

    base_runs, _ = index_runs(baseline)
    cand_runs, _ = index_runs(candidate)
    matched = [(key, base_runs[key], cand_runs[key]) for key in base_runs if key in cand_runs]
    regressions = find_regressions(matched, threshold)
    regressed = {r.key for r in regressions}
    head = "".join(f"<th>{esc(c)}</th>" for c in (*KEY_FIELDS, "accuracy A", "accuracy B", "Δ points", "img/s A",
                                                   "img/s B", "Δ img/s %", "train s A", "train s B", "Δ train s %"))
    body = []
    for key, base, cand in matched:
        acc = accuracy_delta_points(base, cand)
        ips = relative_delta_percent(base, cand, "extract_images_per_second")
        secs = relative_delta_percent(base, cand, "train_seconds")
        cells = [*key, _pct(base.get("test_accuracy")), _pct(cand.get("test_accuracy")), _signed(acc),
                 _num(base.get("extract_images_per_second")), _num(cand.get("extract_images_per_second")),
                 _signed(ips), _num(base.get("train_seconds"), ".2f"), _num(cand.get("train_seconds"), ".2f"),
                 _signed(secs)]
        cls = "regression" if key in regressed else ""
        body.append(f'<tr class="{cls}" data-key="{esc("|".join(key))}">'
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    verdict = (f'<p class="bad">{len(regressions)} regression(s) beyond {threshold:g} (accuracy: points; '
               f'throughput and time: percent)</p><ul class="regressions">'
               + "".join(f"<li>{esc(r.line())}</li>" for r in regressions) + "</ul>") if regressions else (
        f'<p class="good">no regression beyond {threshold:g} in {len(matched)} matched run(s)</p>')
    added = [k for k in cand_runs if k not in base_runs]
    removed = [k for k in base_runs if k not in cand_runs]
    extra = "".join(f"<li>{word}: {esc(' '.join(k))}</li>" for word, keys in (("added", added), ("removed", removed))
                    for k in keys)
    deltas = [(" ".join(k), accuracy_delta_points(b, c)) for k, b, c in matched]
    deltas = [(label, d) for label, d in deltas if d is not None]
    chart = ""
    if deltas:
        figure = go.Figure(go.Bar(x=[d for _, d in deltas], y=[label for label, _ in deltas], orientation="h",
                                  marker_color=["#d62728" if d < -threshold else "#2ca02c" if d > 0 else "#7f7f7f"
                                                for _, d in deltas], texttemplate="%{x:+.1f}"))
        figure.update_xaxes(title="test accuracy, candidate − baseline (points)")
        chart = charts.add(figure, "Accuracy change per run", max(300, 40 + 28 * len(deltas)))
    return (f"<h2>Comparison: baseline → candidate</h2>{verdict}<table id=\"comparison\"><thead><tr>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table><ul>{extra}</ul>{chart}")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: Any, pattern: str = ".1f") -> str:
    return "-" if value is None else format(value, pattern)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


# -- the page --------------------------------------------------------------------------------------
def render(documents: Sequence[dict[str, Any]], sources: Sequence[str], *, thumbnails: int = 8,
           max_thumbnails: int = 200, images: str = "", regression_pct: float = 5.0) -> str:
    """The page: a report of ``documents[0]``, or with two a comparison and the candidate's report."""
    charts = Charts()
    document, source = documents[-1], sources[-1]
    runs = document.get("runs", [])
    thumbs = Thumbnails(document, thumbnails, max_thumbnails, images)
    sections = []
    if len(documents) == 2:
        sections.append(f"<h2>Baseline</h2>{header(documents[0], sources[0])}<h2>Candidate</h2>")
    sections.append(header(document, source))
    if len(documents) == 2:
        sections.append(comparison(charts, documents[0], document, regression_pct))
    sections += [
        "<h2>Summary</h2>", summary_table(document), leaderboard(document),
        "<h2>Accuracy against shots</h2>", accuracy_vs_shots(charts, runs) or '<p class="note">no finished run</p>',
        "<h2>Time to accuracy</h2>", time_to_accuracy(charts, runs),
        "<h2>Throughput and MFU</h2>", throughput_and_mfu(charts, runs),
        "<h2>Per run: per-class accuracy, confusion matrix, misclassified images</h2>", per_run(charts, runs, thumbs),
        "<h2>Skipped files by reason</h2>", skipped_files(document),
    ]
    title = "xferbench comparison" if len(documents) == 2 else "xferbench report"
    return _PAGE.format(title=esc(title), body="".join(sections), plotly=plotly_js_gzip_base64(),
                        charts=charts.count)


def write_report(documents: Sequence[dict[str, Any]], sources: Sequence[str], path: Path, **options: Any) -> Path:
    """Render and write the page atomically; returns ``path``."""
    from xferbench.atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(documents, sources, **options))
    return path


def embedded_specs(page: str) -> Iterable[dict[str, Any]]:
    """The chart specs embedded in a page (for tests and tools that read the page back)."""
    import re

    for match in re.finditer(r'<script type="application/json" id="chart-\d+-spec">(.*?)</script>', page, re.S):
        yield json.loads(match.group(1).replace("<\\/", "</"))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
dl.header {{ display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
th, td {{ border: 1px solid #ddd; padding: .25em .5em; text-align: left; }}
table.sortable th {{ cursor: pointer; background: #f4f4f4; user-select: none; }}
th.asc::after {{ content: " ▲"; }} th.desc::after {{ content: " ▼"; }}
tr.failed td {{ color: #b00; }} tr.regression td {{ background: #fde2e2; }}
.bad {{ color: #b00; font-weight: 600; }} .good {{ color: #070; font-weight: 600; }}
.note {{ color: #666; font-style: italic; }}
#filter {{ width: 28em; padding: .3em; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }}
.chart {{ min-height: 300px; }}
.thumbs figure {{ display: inline-block; margin: .3em; text-align: center; font-size: 11px; }}
#loading {{ color: #666; }}
</style></head>
<body><h1>{title}</h1><p id="loading">drawing {charts} charts…</p>
{body}
<script id="plotly-js" type="application/octet-stream">{plotly}</script>
<script>
"use strict";
(function () {{
  const table = document.getElementById("summary");
  if (table) {{
    const body = table.tBodies[0];
    table.querySelectorAll("th").forEach(function (th) {{
      th.addEventListener("click", function () {{
        const col = Number(th.dataset.col);
        const asc = !th.classList.contains("asc");
        table.querySelectorAll("th").forEach(function (h) {{ h.classList.remove("asc", "desc"); }});
        th.classList.add(asc ? "asc" : "desc");
        const key = function (row) {{
          const cell = row.cells[col];
          const v = cell.dataset.value;
          return v !== undefined && v !== "" ? Number(v) : cell.textContent.trim().toLowerCase();
        }};
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {{
          const x = key(a), y = key(b);
          const missingX = x === "-" || x === "", missingY = y === "-" || y === "";
          if (missingX !== missingY) return missingX ? 1 : -1;  // no value: always last
          const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return asc ? order : -order;
        }});
        rows.forEach(function (row) {{ body.appendChild(row); }});
      }});
    }});
    document.getElementById("filter").addEventListener("input", function (event) {{
      const text = event.target.value.toLowerCase();
      Array.from(body.rows).forEach(function (row) {{
        row.style.display = row.textContent.toLowerCase().includes(text) ? "" : "none";
      }});
    }});
  }}
  async function loadPlotly() {{
    const packed = document.getElementById("plotly-js").textContent;
    const bytes = Uint8Array.from(atob(packed), function (c) {{ return c.charCodeAt(0); }});
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    const script = document.createElement("script");
    script.textContent = await new Response(stream).text();
    document.head.appendChild(script);
  }}
  loadPlotly().then(async function () {{
    for (const div of document.querySelectorAll("div.chart")) {{
      const spec = JSON.parse(document.getElementById(div.id + "-spec").textContent);
      await Plotly.newPlot(div, spec.data, spec.layout, {{responsive: true, displaylogo: false}});
    }}
    document.getElementById("loading").remove();
    document.body.dataset.charts = "drawn";
  }}).catch(function (error) {{
    document.getElementById("loading").textContent = "cannot draw the charts: " + error;
    throw error;
  }});
}})();
</script></body></html>
"""
