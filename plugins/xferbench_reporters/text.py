"""Plain-text reporters: JSON, Markdown and CSV."""

from __future__ import annotations

import csv
from typing import Any, TextIO

from xferbench.reporter import Reporter
from xferbench.results import to_json
from xferbench_reporters.summary import COLUMNS, summary_rows, verdicts


class JsonReporter(Reporter):
    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        with self.output(stream) as out:
            out.write(to_json(document))


class MarkdownReporter(Reporter):
    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        with self.output(stream) as out:
            out.write("| " + " | ".join(COLUMNS) + " |\n")
            out.write("|" + "---|" * len(COLUMNS) + "\n")
            for row in summary_rows(document):
                cells = [row[c].replace("|", "\\|") for c in COLUMNS]
                out.write("| " + " | ".join(cells) + " |\n")
            said = verdicts(document)
            if said:
                out.write("\n" + "\n\n".join(said) + "\n")


class CsvReporter(Reporter):
    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        delimiter = {"tab": "\t"}.get(self.options.get("delimiter") or ",", self.options.get("delimiter") or ",")
        with self.output(stream) as out:
            writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n", delimiter=delimiter)
            writer.writeheader()
            writer.writerows(summary_rows(document))
