"""The rich summary: one row per method, then the dataset and machine panels."""

from __future__ import annotations

from typing import Any, TextIO

from xferbench.reporter import Reporter
from xferbench_reporters.summary import COLUMNS, HEAD_ONLY, SPEEDUP, short_name, summary_rows, verdicts


class TableReporter(Reporter):
    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        with self.output(stream) as out:
            self._print(document, out)

    def _print(self, document: dict[str, Any], stream: TextIO) -> None:
        from rich.columns import Columns
        from rich.console import Console
        from rich.panel import Panel
        from rich.table import Table

        probe = Console(file=stream)
        # Piped output has no width; a wide table beats one folded into unreadable slivers.
        width = self.options.get("width") or (probe.width if probe.is_terminal else 200)
        console = Console(file=stream, width=width)
        table = Table(title="xferbench: transfer learning against full retraining", show_lines=False)
        for column in COLUMNS:
            justify = "right" if column in ("shots", "img/s", "net img/s", "MFU", "extract s", "train s", SPEEDUP,
                                            HEAD_ONLY) else "left"
            table.add_column(column, justify=justify, overflow="fold", no_wrap=column != "status")
        for row in summary_rows(document):
            style = None if row["status"] == "ok" or row["status"].startswith("skipped") else "red"
            table.add_row(*[row[c] for c in COLUMNS], style=style)
        console.print(table)
        for line in verdicts(document):
            console.print(line, markup=False, highlight=False)

        panels = []
        for ds in document.get("datasets", []):
            sizes = ds.get("split_sizes", {})
            skipped = ds.get("skipped_files") or {}
            undecodable = "".join(f"; undecodable: {n} (backbone {b})" for b, n in _undecodable(document, ds).items())
            lines = [f"classes: {ds.get('classes')} ({', '.join(map(str, ds.get('class_names', [])[:10]))})",
                     "split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
                     "skipped: " + (", ".join(f"{k} {v}" for k, v in skipped.items()) or "none") + undecodable]
            lines += [f"warning: {w}" for w in ds.get("warnings", [])[:5]]
            panels.append(Panel("\n".join(lines), title=f"dataset {short_name(str(ds.get('name')))}", expand=False))
        m = document.get("machine", {})
        v = document.get("versions", {})
        precisions = sorted({r.get("precision") for r in document.get("runs", []) if r.get("precision")})
        panels.append(Panel("\n".join([
            f"cpu: {m.get('cpu')} ({m.get('cores')} cores, bf16: {'yes' if m.get('cpu_bf16') else 'no'})",
            f"gpu: {', '.join(m.get('gpu') or []) or 'none'}",
            f"tensorflow {v.get('tensorflow')}, python {v.get('python')}, xferbench {v.get('xferbench')}",
            f"precision: {', '.join(precisions) or 'float32'}",
        ]), title="machine", expand=False))
        console.print(Columns(panels))


def _undecodable(document: dict[str, Any], dataset: dict[str, Any]) -> dict[str, int]:
    """Images of ``dataset`` that a backbone could not decode, by backbone (runs count them, the dataset cannot)."""
    token = dataset.get("token", dataset.get("name"))
    out: dict[str, int] = {}
    for run in document.get("runs", []):
        count = (run.get("skipped_files") or {}).get("decode_error")
        if run.get("dataset") == token and count:
            out[run["backbone"]] = max(out.get(run["backbone"], 0), count)
    return out
