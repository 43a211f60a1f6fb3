"""The ``html`` reporter: writes the page at the end of ``xferbench run`` and for ``xferbench report --html``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from xferbench.errors import UserError
from xferbench.reporter import Reporter

if TYPE_CHECKING:
    from xferbench.sweep import Sweep


class HtmlReporter(Reporter):
    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._results: Path | None = None

    def sweep_started(self, sweep: Sweep) -> None:
        self._results = Path(sweep.output)

    def _target(self) -> Path:
        if self.options.get("output"):
            return Path(self.options["output"])
        if self._results is not None:
            return self._results.with_suffix(".html")
        raise UserError("reporter html: say where to write the page: --reporter-opt html.output=FILE.html "
                        "(or xferbench report RESULTS.json --html FILE.html)")

    def report(self, document: dict[str, Any], stream: TextIO) -> None:
        source = str(self._results) if self._results else ""
        self.report_documents([document], [source])

    def report_documents(self, documents: Sequence[dict[str, Any]], sources: Sequence[str]) -> Path:
        """One document: its report; two: the comparison of the second (candidate) against the first."""
        from xferbench_html.render import write_report

        if not 1 <= len(documents) <= 2:
            raise UserError(f"an HTML page shows one results file or compares two, got {len(documents)}")
        path = write_report(documents, sources, self._target(), thumbnails=self.options.get("thumbnails", 8),
                            max_thumbnails=self.options.get("max_thumbnails", 200),
                            images=self.options.get("images") or "",
                            regression_pct=self.options.get("regression_pct", 5.0))
        print(f"html report: {path} ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
        return path
