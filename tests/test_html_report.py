"""The HTML report of a real sweep, opened in headless Chromium: charts drawn, no console errors, sorting,
the numbers of the results JSON, the comparison page, and its size."""

from __future__ import annotations

import copy
import json

import pytest

pytest.importorskip("plotly")
pytest.importorskip("playwright")

from support.browser import SWEEP, BrowserUnavailable, chromium, distinct_colours, open_report  # noqa: E402
from support.cli import assert_one_line_error, run_cli  # noqa: E402
from xferbench.compare import find_regressions, index_runs, run_key  # noqa: E402
from xferbench_html.render import embedded_specs, render  # noqa: E402
from xferbench_reporters.summary import fmt_accuracy  # noqa: E402

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """keras:MobileNet and lenet5, logreg and softmax heads, shots 5 and all, against full retraining."""
    folder = tmp_path_factory.mktemp("sweep")
    result = run_cli(*SWEEP, "--output", "r.json", "--report", "table,html", cwd=folder,
                     env={"XFERBENCH_CACHE_DIR": str(folder / "cache")})
    assert result.returncode == 0, result.stderr
    document = json.loads((folder / "r.json").read_text())
    return folder, document


@pytest.fixture(scope="module")
def browser():
    try:
        with chromium() as browser:
            yield browser
    except BrowserUnavailable as exc:
        pytest.fail(f"the HTML report is tested in a real browser: {exc}", pytrace=False)


def test_the_report_loads_with_every_chart_drawn_and_no_console_error(sweep, browser):
    folder, document = sweep
    page_path = folder / "r.html"  # --report html writes beside the results file
    specs = list(embedded_specs(page_path.read_text()))
    ok_runs = [r for r in document["runs"] if r["status"] == "ok"]
    assert len(ok_runs) == 12
    # accuracy vs shots, time to accuracy, throughput, MFU; per-class and confusion per run
    assert len(specs) == 4 + 2 * len(ok_runs)
    with open_report(browser, page_path) as (page, problems):
        assert problems == []
        charts = page.locator("div.chart")
        assert charts.count() == len(specs)
        for index in range(charts.count()):
            chart = charts.nth(index)
            assert chart.locator(".main-svg").count() >= 1
            assert chart.locator("g.trace, g.hm, image").count() >= 1, chart.get_attribute("data-title")
            chart.scroll_into_view_if_needed()
            assert distinct_colours(chart.screenshot()) > 20, chart.get_attribute("data-title")
        # misclassified thumbnails: capped at 8 per run, with the note that says so
        thumbs = page.locator(".thumbs figure img")
        assert 0 < thumbs.count() <= 8 * len(ok_runs)
        assert page.locator(".thumbs .note", has_text="showing 8").count() >= 1


def test_the_numbers_shown_are_the_results_json(sweep, browser):
    folder, document = sweep
    runs = {"|".join(run_key(r)): r for r in document["runs"]}
    with open_report(browser, folder / "r.html") as (page, _):
        rows = page.locator("#summary tbody tr")
        assert rows.count() == len(document["runs"])
        for index in range(rows.count()):
            row = rows.nth(index)
            run = runs[row.get_attribute("data-key")]
            accuracy = row.locator("td[data-field='test accuracy']")
            assert accuracy.inner_text() == fmt_accuracy(run)
            assert float(accuracy.get_attribute("data-value")) == run["test_accuracy"]
            if run["method"] == "transfer":
                assert row.locator("td[data-field='MFU']").inner_text() == f"{run['mfu']:.1%}"
                assert float(row.locator("td[data-field='net img/s']").get_attribute("data-value")) == \
                    run["extract_forward_images_per_second"]
        # the accuracy chart plots exactly the recorded accuracies, per series
        plotted = page.evaluate("""() => document.getElementById('chart-1').data
            .filter(t => t.meta === 'accuracy').map(t => [t.name, t.x, t.y])""")
        for name, shots, accuracies in plotted:
            method, *rest = name.split(" ")
            backbone, head = rest[-1], rest[0] if len(rest) == 2 else "-"
            for shot, accuracy in zip(shots, accuracies, strict=True):
                key = "|".join((backbone, "flowers-mini", method, head, shot))
                assert accuracy == runs[key]["test_accuracy"]
        assert len(plotted) == len({(r["backbone"], r["method"], r["head"]) for r in document["runs"]})
        header = page.locator("dl.header").inner_text()
        assert document["machine"]["cpu"] in header and " ".join(document["command"]) in header


def test_the_summary_table_sorts_and_filters(sweep, browser):
    folder, document = sweep
    with open_report(browser, folder / "r.html") as (page, _):
        def column(field):
            return page.eval_on_selector_all(f"#summary tbody tr td[data-field='{field}']",
                                             "cells => cells.map(c => c.dataset.value ?? null)")

        page.click("#summary th:has-text('test accuracy')")
        ascending = [float(v) for v in column("test accuracy")]
        assert ascending == sorted(r["test_accuracy"] for r in document["runs"])
        page.click("#summary th:has-text('test accuracy')")
        assert [float(v) for v in column("test accuracy")] == ascending[::-1]
        page.click("#summary th:has-text('MFU')")
        mfu = column("MFU")
        measured = [float(v) for v in mfu if v is not None]
        assert measured == sorted(measured) and len(measured) == sum(r["mfu"] is not None for r in document["runs"])
        assert all(v is None for v in mfu[len(measured):])  # runs without MFU (full) come last
        page.fill("#filter", "lenet5")
        visible = page.eval_on_selector_all("#summary tbody tr", "rows => rows.filter(r => r.offsetParent)"
                                            ".map(r => r.dataset.key)")
        assert visible and all(key.startswith("lenet5|") for key in visible)
        assert len(visible) == sum(r["backbone"] == "lenet5" for r in document["runs"])


def test_the_comparison_page_highlights_what_compare_calls_a_regression(sweep, browser, tmp_path):
    folder, document = sweep
    candidate = copy.deepcopy(document)
    worse = next(r for r in candidate["runs"] if r["method"] == "transfer" and r["head"] == "logreg")
    worse["test_accuracy"] -= 0.10
    removed = candidate["runs"].pop()
    (tmp_path / "b.json").write_text(json.dumps(candidate))
    result = run_cli("report", str(folder / "r.json"), str(tmp_path / "b.json"), "--html", str(tmp_path / "c.html"))
    assert result.returncode == 0, result.stderr
    base, _ = index_runs(document)
    cand, _ = index_runs(candidate)
    expected = find_regressions([(k, base[k], cand[k]) for k in base if k in cand], 5.0)
    assert [r.metric for r in expected] == ["test_accuracy"]
    with open_report(browser, tmp_path / "c.html") as (page, problems):
        assert problems == []
        highlighted = page.eval_on_selector_all("#comparison tr.regression", "rows => rows.map(r => r.dataset.key)")
        assert highlighted == ["|".join(expected[0].key)]
        assert page.locator("ul.regressions li").all_inner_texts() == [expected[0].line()]
        assert page.locator("li", has_text="removed: " + " ".join(run_key(removed))).count() == 1


def test_two_files_without_html_give_a_leaderboard_and_with_html_a_comparison_page(sweep, tmp_path):
    folder, _ = sweep
    result = run_cli("report", str(folder / "r.json"), str(folder / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "leaderboard" in result.stdout.lower()
    page = tmp_path / "compare.html"
    compared = run_cli("report", str(folder / "r.json"), str(folder / "r.json"), "--html", str(page))
    assert compared.returncode == 0, compared.stderr
    assert page.stat().st_size > 100_000


def test_a_page_of_fifty_runs_stays_under_5_mb(sweep):
    """Fifty runs of the real sweep (renamed so they do not collide), each with misclassified images."""
    _, document = sweep
    big = copy.deepcopy(document)
    ok = [r for r in document["runs"] if r["status"] == "ok"]
    big["runs"] = []
    for index in range(50):
        run = copy.deepcopy(ok[index % len(ok)])
        run["backbone"] = f"{run['backbone']}#{index // len(ok)}"
        big["runs"].append(run)
    assert sum(len(r["misclassified"] or []) for r in big["runs"]) > 400
    page = render([big], ["fifty.json"])
    size = len(page.encode("utf-8"))
    assert size < 5_000_000, size
    print(f"50-run page: {size / 1e6:.2f} MB")


def test_the_html_reporter_without_a_destination_says_what_to_do(sweep):
    folder, _ = sweep
    result = run_cli("report", str(folder / "r.json"), "--report", "html")
    assert_one_line_error(result, "html.output=FILE.html")



def test_the_readme_screenshot_is_made_by_this_code(sweep, browser, tmp_path):
    """scripts/report_screenshot.py writes docs/report.png with this same helper."""
    from support.browser import screenshot

    folder, _ = sweep
    png = screenshot(folder / "r.html", tmp_path / "report.png", browser)
    assert distinct_colours(png.read_bytes()) > 100
