"""Suites: the VTAB-1k task definitions on TFDS mock data, suite files, resume, and the leaderboard."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support.cli import assert_one_line_error, run_cli, shared_data_dir
from xferbench.cli import main
from xferbench.context import RunContext
from xferbench.leaderboard import build, render
from xferbench.plugin_manager import load_catalog

#: classes of each VTAB-1k task, from the VTAB paper and task_adaptation/data/*.py
VTAB_CLASSES = {
    "caltech101": 102, "cifar100": 100, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37, "svhn": 10,
    "sun397": 397, "patch_camelyon": 2, "eurosat": 10, "resisc45": 45, "diabetic_retinopathy": 5,
    "clevr_count": 8, "clevr_distance": 6, "dmlab": 6, "dsprites_location": 16, "dsprites_orientation": 16,
    "smallnorb_azimuth": 18, "smallnorb_elevation": 9, "kitti_distance": 4,
}
VTAB_GROUPS = {"natural": 7, "specialized": 4, "structured": 8}


def _context(tmp_path: Path, data_dir: Path | None = None) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp_path / "cache", data_dir=data_dir)


def test_vtab1k_has_the_19_tasks_in_their_groups():
    suite = load_catalog().suites.resolve("vtab1k")[0]
    assert {t.name: t for t in suite.tasks}.keys() == VTAB_CLASSES.keys()
    groups: dict[str, int] = {}
    for task in suite.tasks:
        groups[task.group] = groups.get(task.group, 0) + 1
        assert task.options["train_examples"] == "800" and task.options["val_examples"] == "200"
    assert groups == VTAB_GROUPS
    assert suite.protocol.head_options == {"refit": "train+val"}


@pytest.mark.parametrize("task", sorted(VTAB_CLASSES))
def test_vtab_task_definition_on_mock_data(task, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        dataset = _context(tmp_path).load_dataset(f"suite:vtab1k/{task}", {})
        assert dataset.name == f"vtab1k/{task}"
        assert len(dataset.class_names) == VTAB_CLASSES[task]
        assert dataset.split_sizes() == {"train": 6, "val": 6, "test": 6}
        assert all(0 <= ex.label < VTAB_CLASSES[task] for ex in dataset.examples)
        assert dataset.read(dataset.split("test")[0])[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")


def test_vtab_label_transforms():
    import numpy as np

    from xferbench_tfds.transforms import BUILT_IN

    assert BUILT_IN["clevr_count"]({"objects": {"size": np.zeros(5)}}) == 2  # 5 objects: class "5"
    coords = np.array([[0.1, 0.2, 9.7], [0.3, 0.1, 8.7]])
    assert BUILT_IN["clevr_distance"]({"objects": {"pixel_coords": coords}}) == 2  # closest 8.7 in (8.5, 9]
    assert BUILT_IN["clevr_distance"]({"objects": {"pixel_coords": np.array([[0, 0, 12.0]])}}) == 5
    location, orientation = BUILT_IN["dsprites_location"], BUILT_IN["dsprites_orientation"]
    assert [location({"label_x_position": x}) for x in (0, 1, 2, 31)] == [0, 0, 1, 15]
    assert [orientation({"label_orientation": o}) for o in (0, 2, 3, 39)] == [0, 0, 1, 15]
    kitti = BUILT_IN["kitti_distance"]
    loc = np.array([[0, 0, 30.0], [0, 0, 10.0], [0, 0, 4.0]])
    assert kitti({"objects": {"type": np.array([0, 1, 3]), "location": loc}}) == 1  # the pedestrian (3) is ignored
    assert kitti({"objects": {"type": np.array([2]), "location": loc[2:]}}) == 0
    assert kitti({"objects": {"type": np.array([4]), "location": loc[:1]}}) == 3  # no vehicle


@pytest.mark.slow
def test_vtab1k_runs_end_to_end_on_mock_data(tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    output = tmp_path / "vtab.json"
    with tfds.testing.mock_data(num_examples=12):
        code = main(["run", "--suite", "vtab1k", "--backbone", "lenet5", "--backbone-opt", "pretrain_epochs=1",
                     "--head-opt", "grid=1", "--output", str(output), "--cache-dir", str(tmp_path / "cache"),
                     "--format", "markdown", "-q"])
    document = json.loads(output.read_text())
    assert document["suite"]["name"] == "vtab1k" and len(document["suite"]["tasks"]) == 19
    assert len(document["runs"]) == 19
    # TFDS's mock data draws every float in [0, 1): all CLEVR and KITTI depths fall in the first distance bin,
    # so those two tasks have one class and logreg refuses them (their bins are tested in test_vtab_label_transforms)
    failed = {run["dataset"]: run["error"] for run in document["runs"] if run["status"] != "ok"}
    assert failed.keys() == {"suite:vtab1k/clevr_distance", "suite:vtab1k/kitti_distance"}
    assert all("only one class" in error for error in failed.values())
    assert code == 1  # some runs failed
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| # | backbone"))
    assert "| natural | specialized | structured | overall |" in header
    row = next(line for line in printed.splitlines() if line.startswith("| 1 | lenet5"))
    assert row.count("[") == 4  # a mean with its CI per group and overall
    assert row.split(" | ")[-2] == "17"  # tasks


SUITE_FILE = textwrap.dedent('''
    name = "tiny"
    description = "two digit tasks"

    [protocol]
    heads = ["logreg"]
    shots = [5, "all"]
    head_options = { grid = "0.1,1,10" }

    [[tasks]]
    name = "low"
    dataset = "digits:0-4"
    group = "low digits"
    test = 60

    [[tasks]]
    name = "high"
    dataset = "digits:5-9"
    group = "high digits"
    options = { test_pct = 20 }
''')


@pytest.mark.slow
def test_suite_file_runs_resumes_and_reports_a_leaderboard_across_files(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE_FILE)
    common = ["--suite", str(suite), "--cache-dir", str(tmp_path / "cache"), "-q"]
    first = tmp_path / "lenet.json"
    result = run_cli("run", "--backbone", "lenet5", "--backbone-opt", "pretrain_epochs=2", *common,
                     "--output", str(first))
    assert result.returncode == 0, result.stderr
    assert "leaderboard" in result.stdout and "sample efficiency" in result.stdout
    document = json.loads(first.read_text())
    assert [t["name"] for t in document["suite"]["tasks"]] == ["low", "high"]
    assert {(r["dataset"], r["shots"]) for r in document["runs"]} == {
        (f"suite:{suite}#{task}", shots) for task in ("low", "high") for shots in (5, "all")}
    low = next(d for d in document["datasets"] if d["name"] == "tiny/low")
    assert low["split_sizes"]["test"] == 60
    # resuming a finished suite run keeps every run
    again = run_cli("run", "--resume", str(first), "-q")
    assert again.returncode == 0, again.stderr
    assert [r["test_accuracy"] for r in json.loads(first.read_text())["runs"]] == \
        [r["test_accuracy"] for r in document["runs"]]
    second = tmp_path / "mobilenet.json"
    result = run_cli("run", "--backbone", "keras:MobileNet", "--backbone-opt", "alpha=0.25", "--backbone-opt",
                     "input_size=128", *common, "--output", str(second))
    assert result.returncode == 0, result.stderr
    report = run_cli("report", str(first), str(second), "--format", "csv")
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == "#,backbone,method,low digits,high digits,overall,mean rank,tasks,img/s"
    assert sorted(line.split(",")[1] for line in lines[1:3]) == ["keras:MobileNet", "lenet5"]
    assert lines[4].startswith("backbone method,5 shots,all shots")


def test_suite_file_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tasks]]\nname = "a"\ndataset = "digits"\nshots = 3\n')
    assert_one_line_error(run_cli("run", "--suite", str(bad), "-q"), "task 'a' has unknown key 'shots'")
    bad.write_text('[[tasks]]\nname = "a"\ndataset = "digitz"\n')
    assert_one_line_error(run_cli("run", "--suite", str(bad), "-q"), "task 'a'", "did you mean 'digits'")
    assert_one_line_error(run_cli("run", "--suite", "vtab", "-q"), "unknown suite 'vtab'", "vtab1k")
    assert_one_line_error(run_cli("run", "--suite", "offline", "--dataset", "digits", "-q"), "exclude each other")


def _document(suite_tasks: list[tuple[str, str]], runs: list[tuple[str, str, float, int]]) -> dict:
    return {"suite": {"tasks": [{"name": n, "group": g, "token": f"suite:s/{n}"} for n, g in suite_tasks]},
            "runs": [{"backbone": b, "dataset": f"suite:s/{t}", "method": "transfer", "head": "logreg",
                      "shots": shots, "status": "ok", "test_accuracy": acc, "n_test": 1000,
                      "extracted": 100, "extract_seconds": 2.0}
                     for b, t, acc, shots in runs]}


def test_leaderboard_means_ranks_ties_and_sample_efficiency():
    tasks = [("a", "g1"), ("b", "g1"), ("c", "g2")]
    runs = [("x", "a", 0.9, "all"), ("x", "b", 0.7, "all"), ("x", "c", 0.5, "all"),
            ("y", "a", 0.8, "all"), ("y", "b", 0.8, "all"), ("y", "c", 0.41, "all"),
            ("z", "a", 0.2, "all"), ("z", "b", 0.2, "all"), ("z", "c", 0.2, "all"),
            ("x", "a", 0.5, 5), ("x", "b", 0.3, 5), ("x", "c", 0.1, 5)]
    board = build([_document(tasks, runs)])
    assert [r.backbone for r in board.rows] == ["x", "y", "z"]
    x, y, z = board.rows
    assert x.groups["g1"][0] == pytest.approx(0.8) and x.groups["overall"][0] == pytest.approx(0.7)
    assert y.groups["overall"][0] == pytest.approx(0.67)
    low, high = x.groups["overall"][1:]
    assert low < 0.7 < high and high - low < 0.06  # 3000 test images
    assert y.tied_with_previous and not z.tied_with_previous  # 70.0 vs 67.0 overlap; 20.0 does not
    assert x.mean_rank == pytest.approx((1 + 2 + 1) / 3) and z.mean_rank == 3
    assert x.images_per_second == pytest.approx(50.0)
    assert board.shot_counts == ["5", "all"]
    assert board.sample_efficiency["x transfer/logreg"] == {"5": pytest.approx(0.3), "all": pytest.approx(0.7)}
    import io

    out = io.StringIO()
    render(board, "markdown", out)
    assert "| 2 = | y | transfer/logreg | 80.0 [" in out.getvalue()


@pytest.mark.slow
@pytest.mark.realdata
def test_offline_suite_on_real_data(tmp_path):
    """digits, the real MNIST images (a train/test pair made from the shared t10k files) and flowers-mini."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import test_mnist

    if not test_mnist.T10K_IMAGES.is_file():
        pytest.skip(f"real MNIST not in {shared_data_dir()}")
    images, labels = test_mnist.read_source()
    mini = tmp_path / "mnist"
    mini.mkdir()
    for name, part in (("train", slice(0, 8000)), ("t10k", slice(8000, None))):
        test_mnist.write_gz(mini / f"{name}-images-idx3-ubyte.gz", images[part])
        test_mnist.write_gz(mini / f"{name}-labels-idx1-ubyte.gz", labels[part])
    output = tmp_path / "offline.json"
    result = run_cli("run", "--suite", "offline", "--backbone", "lenet5", "--data-dir", str(mini),
                     "--output", str(output), "--cache-dir", str(tmp_path / "cache"), "--format", "markdown", "-q")
    assert result.returncode == 0, result.stderr
    document = json.loads(output.read_text())
    sizes = {d["name"]: d["split_sizes"] for d in document["datasets"]}
    assert sizes["offline/mnist"] == {"train": 800, "val": 200, "test": 2000}
    assert sizes["offline/digits"]["train"] == 800
    assert all(run["status"] == "ok" for run in document["runs"]) and len(document["runs"]) == 3
    assert "| # | backbone | method | handwriting | photos | overall |" in result.stdout


RAY_SUITE = textwrap.dedent('''
    name = "ray_tiny"

    [protocol]
    heads = ["logreg"]
    shots = [4, "all"]
    head_options = { grid = "0.1,1" }
    backbone_options = { pretrain_epochs = 1 }

    [[tasks]]
    name = "colors"
    dataset = "tfds:tiny_colors"
    group = "tfds"

    [[tasks]]
    name = "shades"
    dataset = "folder:FOLDER"
    group = "folder"
    options = { val_pct = 20, test_pct = 25 }
''')


@pytest.mark.slow
def test_suite_file_on_a_local_ray_gives_the_leaderboard_of_the_local_executor(tmp_path):
    """Ray workers read a TFDS dataset (prepared by a real builder) and a folder from disk, like the local run."""
    pytest.importorskip("ray")
    pytest.importorskip("tensorflow_datasets")
    from PIL import Image

    from support.tiny_tfds import prepare_tiny_colors

    data_dir, _ = prepare_tiny_colors(tmp_path)
    folder = tmp_path / "shades"
    rng = np.random.default_rng(1)
    for name, low in (("dark", 0), ("light", 150)):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(low, low + 100, size=(24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    suite = tmp_path / "ray_tiny.toml"
    suite.write_text(RAY_SUITE.replace("FOLDER", str(folder)))
    documents = {}
    for executor in ("local", "ray"):
        output = tmp_path / f"{executor}.json"
        result = run_cli("run", "--suite", str(suite), "--backbone", "lenet5", "--data-dir", str(data_dir),
                         "--executor", executor, "--seed", "3", "--output", str(output),
                         "--cache-dir", str(tmp_path / f"cache-{executor}"), "-q")
        assert result.returncode == 0, result.stderr
        assert "leaderboard" in result.stdout
        documents[executor] = json.loads(output.read_text())
    local, ray = documents["local"], documents["ray"]
    assert ray["executor"]["name"] == "ray" and ray["executor"]["address"] == "local"
    assert len(ray["runs"]) == 4 and all(run["status"] == "ok" for run in ray["runs"])
    accuracies = {executor: {(r["dataset"], r["shots"]): r["test_accuracy"] for r in doc["runs"]}
                  for executor, doc in documents.items()}
    assert accuracies["ray"] == accuracies["local"]
    (local_row,), (ray_row,) = build([local]).rows, build([ray]).rows
    assert set(ray_row.groups) == {"tfds", "folder", "overall"}
    assert ray_row.groups == local_row.groups and ray_row.mean_rank == local_row.mean_rank
    assert build([ray]).sample_efficiency == build([local]).sample_efficiency
