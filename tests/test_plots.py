"""`xferbench report --plot`: which charts are drawn from which data, and what they show."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from support.cli import run_cli
from test_compare import make_document, make_run
from xferbench.errors import UserError
from xferbench.plots import (
    plot_accuracy_vs_shots,
    plot_accuracy_vs_time,
    plot_throughput,
    shots_per_class,
    write_plots,
)

CLASSES = 5


def curve(final: float, seconds: float, points: int = 6) -> list[dict]:
    return [{"step": i, "seconds": seconds * i / points, "val_accuracy": final * i / points}
            for i in range(1, points + 1)]


def sweep_document(shots=(1, 5, "all")) -> dict:
    """transfer (softmax, logreg), full and finetune at each shots value, with curves, as a run writes them."""
    runs = []
    for s in shots:
        n_train = CLASSES * (140 if s == "all" else s)
        for method, head, acc in (("transfer", "softmax", 0.7), ("transfer", "logreg", 0.72),
                                  ("full", "-", 0.5), ("finetune", "-", 0.6)):
            run = make_run(method, head, s, acc=acc + (0.2 if s == "all" else 0.0), ips=300.0,
                           train=2.0 if method == "transfer" else 40.0)
            run.update(n_train=n_train, per_class_accuracy={str(c): acc for c in range(CLASSES)},
                       curve=curve(acc, run["train_seconds"]))
            if method == "transfer":
                run["extract_forward_images_per_second"] = 900.0
            runs.append(run)
    return make_document(*runs)


def test_shots_all_is_placed_at_the_training_images_per_class():
    doc = sweep_document()
    all_run = next(r for r in doc["runs"] if r["shots"] == "all")
    assert shots_per_class(all_run, doc) == 140.0
    assert shots_per_class(next(r for r in doc["runs"] if r["shots"] == 5), doc) == 5.0
    # Without per-class figures the class count comes from the document's dataset entry.
    bare = {**all_run, "per_class_accuracy": None}
    doc["datasets"] = [{"name": "digits", "token": "digits:5-9", "classes": 7}]
    assert shots_per_class(bare, doc) == CLASSES * 140 / 7


def test_accuracy_vs_shots_has_a_line_per_method_and_head_with_ci_error_bars():
    figure = plot_accuracy_vs_shots(sweep_document())
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"
    assert "per class" in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
    assert ax.get_title() == "lenet5 on digits:5-9" and figure.get_suptitle()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["transfer (logreg)", "transfer (softmax)", "finetune", "full"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "all\n(140)"]
    np.testing.assert_allclose(ax.get_xticks(), [1, 5, 140])
    # One error-bar series per legend entry: points at shots 1, 5 and 140 (nudged by a few percent at
    # most so the bars do not overlap), at the accuracy, with bars spanning the bootstrap interval.
    series = {c.get_label(): c for c in ax.containers}
    assert sorted(series) == sorted(legend)
    for container in series.values():
        np.testing.assert_allclose(np.asarray(container.lines[0].get_xdata(), float), [1, 5, 140], rtol=0.05)
    softmax = series["transfer (softmax)"]
    np.testing.assert_allclose(np.asarray(softmax.lines[0].get_ydata(), float), [70, 70, 90])
    (bars,) = softmax.lines[2]
    spans = [(seg[0][1], seg[1][1]) for seg in bars.get_segments()]
    np.testing.assert_allclose(spans, [(65, 75), (65, 75), (85, 95)])  # make_run: accuracy +- 5 points


def test_accuracy_vs_time_uses_each_run_curve_at_the_largest_shots():
    figure = plot_accuracy_vs_time(sweep_document())
    (ax,) = figure.axes
    assert ax.get_title() == "lenet5 on digits:5-9, shots=all"
    assert "time" in ax.get_xlabel() and "validation accuracy" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:4] == ["transfer (logreg)", "transfer (softmax)", "finetune", "full"]
    # The comparison's target: the lower of transfer's (first head) and full's final validation accuracy.
    assert legend[4:] == ["target 50.0%"]
    full = ax.get_lines()[legend.index("full")]
    np.testing.assert_allclose(np.asarray(full.get_xdata(), float), [40 * i / 6 for i in range(1, 7)])
    np.testing.assert_allclose(np.asarray(full.get_ydata(), float), [50 * i / 6 for i in range(1, 7)])
    # Transfer's clock starts after its extraction.
    logreg = ax.get_lines()[0]
    transfer = next(r for r in sweep_document()["runs"] if r["method"] == "transfer" and r["head"] == "logreg"
                    and r["shots"] == "all")
    first = transfer["curve"][0]["seconds"] + (transfer.get("extract_seconds") or 0.0)
    assert float(np.asarray(logreg.get_xdata(), float)[0]) == pytest.approx(first)


def test_throughput_bars_per_backbone_and_dataset():
    doc = sweep_document(shots=("all",))
    other = make_run(backbone="keras:MobileNet", dataset="flowers", ips=40.0)
    doc["runs"].append(other)
    figure = plot_throughput(doc)
    (ax,) = figure.axes
    heights = sorted(round(p.get_height()) for p in ax.patches)
    assert heights == [0, 40, 300, 900]  # MobileNet recorded no forward-only figure
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["keras:MobileNet\nflowers", "lenet5\ndigits:5-9"]
    assert "images / s" in ax.get_ylabel() and ax.get_title().startswith("Extraction throughput")


def test_write_plots_writes_real_pngs(tmp_path):
    log: list[str] = []
    paths = write_plots(sweep_document(), tmp_path / "plots", log=log.append)
    assert [p.name for p in paths] == ["accuracy_vs_shots.png", "accuracy_vs_time.png", "throughput.png"]
    assert log == []
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 300
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 10, f"{path.name} looks blank"


def test_charts_without_data_are_skipped_with_a_reason(tmp_path):
    doc = sweep_document(shots=("all",))
    for run in doc["runs"]:
        run["extract_images_per_second"] = None  # a warm rerun: every bottleneck from the cache
    log: list[str] = []
    paths = write_plots(doc, tmp_path, log=log.append)
    assert [p.name for p in paths] == ["accuracy_vs_time.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy_vs_time.png"]
    assert log == [
        "plot skipped: accuracy against shots: needs at least two shots values per method (the document has: all)",
        "plot skipped: throughput per backbone: no extraction throughput (no transfer run, or every bottleneck "
        "came from the cache)",
    ]


def test_failed_runs_draw_nothing(tmp_path):
    doc = make_document(make_run(status="error"), make_run("full", status="error"))
    log: list[str] = []
    assert write_plots(doc, tmp_path, log=log.append) == []
    assert len(log) == 3 and all(line.startswith("plot skipped:") for line in log)


def test_missing_matplotlib_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(UserError, match=r"install xferbench\[plot\]"):
        write_plots(sweep_document(), tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


def test_report_cli_writes_plots(tmp_path):
    result_file = tmp_path / "r.json"
    result_file.write_text(json.dumps(sweep_document(shots=("all",))))
    result = run_cli("report", str(result_file), "--plot", str(tmp_path / "out"), "--format", "csv", "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"plot: {tmp_path / 'out' / 'throughput.png'}" in result.stdout
    assert "plot skipped: accuracy against shots" in result.stderr
    assert (tmp_path / "out" / "accuracy_vs_time.png").is_file()
