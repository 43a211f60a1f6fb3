"""The HTML report in a real browser: the distribution's Chromium (Debian package ``chromium``) driven by Playwright."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("XFERBENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

#: the sweep of the report tests and of docs/report.png: two backbones, two heads, shots 5 and all, offline
SWEEP = ["run", "--backbone", "keras:MobileNet,lenet5", "--backbone-opt", "alpha=0.25", "--backbone-opt",
         "input_size=128", "--dataset", "flowers-mini", "--head", "logreg,softmax", "--shots", "5,all",
         "--compare", "transfer,full", "--full-epochs", "2", "--show-misclassified", "--quiet"]


class BrowserUnavailable(RuntimeError):
    """Chromium is missing or does not start: the report cannot be tested."""


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser; BrowserUnavailable with what to do when there is none."""
    if not CHROMIUM.is_file():
        raise BrowserUnavailable(f"no Chromium at {CHROMIUM}: install the distribution's package "
                                 f"(apt-get install -y chromium; .ci/run does) or set XFERBENCH_CHROMIUM")
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as exc:
            raise BrowserUnavailable(f"{CHROMIUM} does not start: {str(exc).splitlines()[0]}") from exc
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_report(browser: Any, page_path: Path, width: int = 1400, height: int = 1000) -> Iterator[tuple[Any, list]]:
    """The page loaded with every chart drawn, and the console errors and page errors it produced."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    try:
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_selector("body[data-charts=drawn]", timeout=180_000)
        yield page, problems
    finally:
        page.close()


def distinct_colours(png: bytes) -> int:
    """How many colours a screenshot has: a blank (or single-colour) area has one or two."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def screenshot(page_path: Path, png: Path, browser: Any = None, width: int = 1400, height: int = 1500) -> Path:
    """A screenshot of the top of a report (header, table, the first charts), as the README shows it.

    ``browser``: one already started (Playwright runs one per thread); else Chromium is started for it.
    """
    if browser is None:
        with chromium() as started:
            return screenshot(page_path, png, started, width, height)
    with open_report(browser, page_path, width, height) as (page, problems):
        if problems:
            raise AssertionError("; ".join(problems))
        png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png), full_page=False)
    return png
