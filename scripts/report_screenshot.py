"""docs/report.png: the HTML report of the tests' sweep (tests/support/browser.py SWEEP), shot in headless Chromium.

    python scripts/report_screenshot.py [OUT.png]

Runs the sweep in a temporary folder (offline: the embedded flowers-mini and MobileNet weights), writes its
page with ``--report html`` and takes the screenshot with the code the browser tests use.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.browser import SWEEP, screenshot  # noqa: E402
from support.cli import run_cli  # noqa: E402


def main(out: Path) -> int:
    with tempfile.TemporaryDirectory() as folder:
        result = run_cli(*SWEEP, "--output", "r.json", "--report", "html", cwd=Path(folder),
                         env={"XFERBENCH_CACHE_DIR": str(Path(folder) / "cache")})
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        screenshot(Path(folder) / "r.html", out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "report.png"))
