"""Plain-text reporters: JSON, Markdown and CSV."""

from __future__ import annotations

import csv
from typing import Any, TextIO

from xferbench.results import to_json
from xferbench_reporters.summary import COLUMNS, summary_rows


class JsonReporter:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        stream.write(to_json(document))


class MarkdownReporter:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        stream.write("| " + " | ".join(COLUMNS) + " |\n")
        stream.write("|" + "---|" * len(COLUMNS) + "\n")
        for row in summary_rows(document):
            cells = [row[c].replace("|", "\\|") for c in COLUMNS]
            stream.write("| " + " | ".join(cells) + " |\n")


class CsvReporter:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        writer = csv.DictWriter(stream, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary_rows(document))
