"""``xferbench compare A.json B.json``: what changed between two results documents.

Runs are matched on (backbone, dataset, method, head, shots). For every matched pair the
table shows test accuracy (delta in percentage points), bottleneck extraction throughput
and training wall time (deltas relative to the baseline, in percent).

With ``--fail-on-regression PCT`` a matched pair is a regression when

* test accuracy drops by more than PCT percentage points (0.912 -> 0.860 is a 5.2 point drop);
* extraction throughput (``extract_images_per_second``) drops by more than PCT percent of the
  baseline (100 -> 80 img/s is a 20 % drop);
* training time (``train_seconds``) rises by more than PCT percent of the baseline
  (10 s -> 12 s is a 20 % rise);
* or the run was ``ok`` in the baseline and failed in the candidate.

and, from the documents' ``comparison`` (transfer against full retraining and fine-tuning, per
backbone, dataset and shots; computed for older files), when

* transfer's speed-up over the baseline, counted whole (extraction included), drops by more
  than PCT percent (4.0x -> 3.0x is a 25 % drop);
* or the time transfer needs to reach the target validation accuracy rises by more than PCT percent.

A metric is compared only when both runs have it: throughput is ``null`` when every
bottleneck came from the cache, so a warm rerun never counts as a throughput change.
Runs present in only one document are listed as added or removed, never as regressions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from xferbench.errors import UserError

RunKey = tuple[str, str, str, str, str]
KEY_FIELDS = ("backbone", "dataset", "method", "head", "shots")


def run_key(run: dict[str, Any]) -> RunKey:
    """The identity of a run; shots as text so ``5`` and ``"5"`` (and ``"all"``) compare alike."""
    return tuple(str(run.get(field, "-")) for field in KEY_FIELDS)  # type: ignore[return-value]


def _label(key: RunKey) -> str:
    backbone, dataset, method, head, shots = key
    head_part = f" {head}" if head != "-" else ""
    return f"{backbone} on {dataset}, {method}{head_part}, shots={shots}"


@dataclass(frozen=True)
class Regression:
    """One metric of one run that got worse by more than the threshold."""

    key: RunKey
    metric: str
    message: str

    def line(self) -> str:
        return f"regression: {_label(self.key)}: {self.message}"


def index_runs(document: dict[str, Any]) -> tuple[dict[RunKey, dict[str, Any]], list[RunKey]]:
    """Runs by key, and the keys that occur more than once (the last occurrence wins)."""
    runs: dict[RunKey, dict[str, Any]] = {}
    duplicates: list[RunKey] = []
    for run in document.get("runs", []):
        key = run_key(run)
        if key in runs and key not in duplicates:
            duplicates.append(key)
        runs[key] = run
    return runs, duplicates


def _number(run: dict[str, Any], field: str) -> float | None:
    value = run.get(field)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ok(run: dict[str, Any]) -> bool:
    return run.get("status") == "ok"


def accuracy_delta_points(baseline: dict[str, Any], candidate: dict[str, Any]) -> float | None:
    """Candidate minus baseline test accuracy, in percentage points."""
    a, b = _number(baseline, "test_accuracy"), _number(candidate, "test_accuracy")
    if a is None or b is None or not (_ok(baseline) and _ok(candidate)):
        return None
    return 100.0 * (b - a)


def relative_delta_percent(baseline: dict[str, Any], candidate: dict[str, Any], field: str) -> float | None:
    """(candidate - baseline) / baseline in percent; None when either is missing or the baseline is 0."""
    a, b = _number(baseline, field), _number(candidate, field)
    if a is None or b is None or a <= 0 or not (_ok(baseline) and _ok(candidate)):
        return None
    return 100.0 * (b - a) / a


def find_regressions(pairs: Iterable[tuple[RunKey, dict[str, Any], dict[str, Any]]],
                     threshold: float) -> list[Regression]:
    """Every metric of every matched pair that regressed by more than ``threshold`` (see module doc)."""
    found: list[Regression] = []
    for key, base, cand in pairs:
        if _ok(base) and not _ok(cand):
            found.append(Regression(key, "status", f"ok in the baseline, failed in the candidate: {cand.get('error')}"))
            continue
        acc = accuracy_delta_points(base, cand)
        if acc is not None and -acc > threshold:
            found.append(Regression(key, "test_accuracy", (
                f"test accuracy {base['test_accuracy']:.1%} -> {cand['test_accuracy']:.1%} "
                f"({acc:+.1f} points, limit -{threshold:g})")))
        ips = relative_delta_percent(base, cand, "extract_images_per_second")
        if ips is not None and -ips > threshold:
            found.append(Regression(key, "extract_images_per_second", (
                f"extraction throughput {base['extract_images_per_second']:.1f} -> "
                f"{cand['extract_images_per_second']:.1f} img/s ({ips:+.1f}%, limit -{threshold:g}%)")))
        secs = relative_delta_percent(base, cand, "train_seconds")
        if secs is not None and secs > threshold:
            found.append(Regression(key, "train_seconds", (
                f"train time {base['train_seconds']:.2f} -> {cand['train_seconds']:.2f} s "
                f"({secs:+.1f}%, limit +{threshold:g}%)")))
    return found


def _comparison_index(document: dict[str, Any]) -> dict[RunKey, dict[str, Any]]:
    """(backbone, dataset, baseline method, transfer head, shots) -> that baseline's entry in the comparison."""
    from xferbench.comparison import BASELINES, compare_methods

    comparison = document.get("comparison") or compare_methods(document)
    index = {}
    for group in comparison.get("groups", []):
        for entry in group.get("by_shots", []):
            for method in BASELINES:
                if entry.get(method):
                    key = (group["backbone"], group["dataset"], method, str(group["head"]), str(entry["shots"]))
                    index[key] = entry[method]
    return index


def comparison_regressions(baseline: dict[str, Any], candidate: dict[str, Any], threshold: float) -> list[Regression]:
    """Transfer's whole-cost speed-up or its time to the target accuracy got worse by more than ``threshold`` %."""
    base, cand = _comparison_index(baseline), _comparison_index(candidate)
    found = []
    for key in (k for k in base if k in cand):
        label: RunKey = (key[0], key[1], "transfer", key[3], key[4])
        was, now = (base[key].get("speedup") or {}).get("cold"), (cand[key].get("speedup") or {}).get("cold")
        if was and now is not None and (now - was) / was * 100 < -threshold:
            found.append(Regression(label, "speedup", f"speed-up over {key[2]}, whole cost, {was:.2f}x -> {now:.2f}x "
                                                      f"({(now - was) / was * 100:+.1f}%, limit -{threshold:g}%)"))
        was_t = (base[key].get("time_to_target") or {}).get("transfer_seconds")
        now_t = (cand[key].get("time_to_target") or {}).get("transfer_seconds")
        if was_t and now_t is not None and (now_t - was_t) / was_t * 100 > threshold:
            found.append(Regression(label, "time_to_target", (
                f"time to the target accuracy (vs {key[2]}) {was_t:.2f} -> {now_t:.2f} s "
                f"({(now_t - was_t) / was_t * 100:+.1f}%, limit +{threshold:g}%)")))
    return found


def _fmt(value: float | None, pattern: str, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, pattern)}{suffix}"


def _fmt_delta(value: float | None, suffix: str, worse_if_negative: bool) -> str:
    """Signed delta, red when it is worse and green when better (markup for rich)."""
    if value is None:
        return "-"
    text = f"{value:+.1f}{suffix}"
    if abs(value) < 0.05:
        return text
    worse = value < 0 if worse_if_negative else value > 0
    return f"[red]{text}[/red]" if worse else f"[green]{text}[/green]"


def _fmt_accuracy(run: dict[str, Any]) -> str:
    if not _ok(run):
        return "[red]error[/red]"
    acc = _number(run, "test_accuracy")
    return "-" if acc is None else f"{acc:.1%}"


def _fmt_throughput(run: dict[str, Any]) -> str:
    ips = _number(run, "extract_images_per_second")
    if ips is None and run.get("method") == "transfer" and _ok(run):
        return "cached"  # every bottleneck came from the cache: nothing was measured
    return _fmt(ips, ".1f")


def _context_notes(baseline: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """Differences that make the deltas mean something other than 'the code changed'."""
    notes = []
    if baseline.get("schema_version") != candidate.get("schema_version"):
        notes.append(f"schema_version {baseline.get('schema_version')} vs {candidate.get('schema_version')}: "
                     "fields missing from the older document are shown as '-'")
    machine_a, machine_b = baseline.get("machine") or {}, candidate.get("machine") or {}
    for field in ("cpu", "cores", "gpu"):
        if machine_a.get(field) != machine_b.get(field):
            notes.append(f"different machines ({field}: {machine_a.get(field)} vs {machine_b.get(field)}): "
                         "time and throughput deltas compare machines, not code")
            break
    if baseline.get("seed") != candidate.get("seed"):
        notes.append(f"different seeds ({baseline.get('seed')} vs {candidate.get('seed')}): "
                     "accuracy deltas include seed noise")
    return notes


def compare_documents(baseline: dict[str, Any], candidate: dict[str, Any], *, fail_on_regression: float | None,
                      stream: TextIO) -> int:
    """Print the comparison of two results documents to ``stream``; return the exit code.

    The exit code is 1 when ``fail_on_regression`` is given and at least one regression
    (see the module docstring) exceeds it, else 0.
    """
    from rich.console import Console
    from rich.table import Table

    if fail_on_regression is not None and not fail_on_regression >= 0:
        raise UserError(f"--fail-on-regression {fail_on_regression:g}: give a threshold of 0 or more")
    base_runs, base_dups = index_runs(baseline)
    cand_runs, cand_dups = index_runs(candidate)
    matched = [(key, base_runs[key], cand_runs[key]) for key in base_runs if key in cand_runs]
    removed = [key for key in base_runs if key not in cand_runs]
    added = [key for key in cand_runs if key not in base_runs]

    console = Console(file=stream, width=max(Console(file=stream).width, 160), highlight=False)
    console.print(f"baseline:  {baseline.get('created', '?')}  {' '.join(baseline.get('command') or [])}")
    console.print(f"candidate: {candidate.get('created', '?')}  {' '.join(candidate.get('command') or [])}")
    for note in _context_notes(baseline, candidate):
        console.print(f"note: {note}")
    for name, dups in (("baseline", base_dups), ("candidate", cand_dups)):
        for key in dups:
            console.print(f"note: the {name} has {_label(key)} more than once; its last entry is compared")

    if matched:
        table = Table(title="xferbench compare: baseline -> candidate", show_lines=False)
        for column in KEY_FIELDS:
            table.add_column(column, justify="right" if column == "shots" else "left")
        for column in ("accuracy A", "accuracy B", "Δ points", "img/s A", "img/s B", "Δ img/s",
                       "train s A", "train s B", "Δ train s"):
            table.add_column(column, justify="right")
        for key, base, cand in matched:
            table.add_row(
                *key,
                _fmt_accuracy(base), _fmt_accuracy(cand),
                _fmt_delta(accuracy_delta_points(base, cand), "", worse_if_negative=True),
                _fmt_throughput(base), _fmt_throughput(cand),
                _fmt_delta(relative_delta_percent(base, cand, "extract_images_per_second"), "%",
                           worse_if_negative=True),
                _fmt(_number(base, "train_seconds"), ".2f"), _fmt(_number(cand, "train_seconds"), ".2f"),
                _fmt_delta(relative_delta_percent(base, cand, "train_seconds"), "%", worse_if_negative=False),
            )
        console.print(table)
    else:
        console.print("no runs in common (matched on backbone, dataset, method, head and shots)")
    for word, keys, doc in (("removed", removed, base_runs), ("added", added, cand_runs)):
        for key in keys:
            status = "" if _ok(doc[key]) else f" (failed: {doc[key].get('error')})"
            console.print(f"{word}: {_label(key)}{status}")

    if fail_on_regression is None:
        return 0
    regressions = find_regressions(matched, fail_on_regression)
    regressions += comparison_regressions(baseline, candidate, fail_on_regression)
    # Plain writes, not rich: one regression per line, never re-wrapped, easy to grep in CI logs.
    for regression in regressions:
        stream.write(regression.line() + "\n")
    if regressions:
        stream.write(f"{len(regressions)} regression(s) beyond {fail_on_regression:g} "
                     f"(accuracy: points; throughput and time: percent)\n")
        return 1
    stream.write(f"no regression beyond {fail_on_regression:g} in {len(matched)} matched run(s)\n")
    return 0
