"""A real third-party plugin, installed with pip, found through its entry point by the real CLI.

The ``xferbench-example`` distribution (plugins/xferbench_example) is pip-installed into a
temporary folder that only the child processes see (PYTHONPATH), so these tests exercise
the path a user's plugin takes: package metadata -> ``xferbench`` entry point -> hooks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = REPO / "plugins" / "xferbench_example"
PLUGIN_META = tomllib.loads((PLUGIN_SOURCE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PLUGIN_NAME = "example"  # the entry-point key in its pyproject.toml
COMPONENTS = {"backbones": "pixels", "datasets": "bars", "heads": "centroid"}


@dataclass(frozen=True)
class Installed:
    site: Path  # the --target folder: the distribution's package and its .dist-info
    source: Path  # the copy pip built from


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("third_party")
    # Build from a copy: an in-tree setuptools build leaves build/ and *.egg-info behind,
    # which must not appear in (or race on) the shared working tree.
    source = root / "xferbench_example"
    shutil.copytree(PLUGIN_SOURCE, source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-input",
         "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        # Without build isolation the environment's own setuptools builds the wheel; before
        # setuptools 70.1 that needs the separate `wheel` package (fresh Python 3.11 venvs lack it).
        hint = ("\nhint: install `wheel` or setuptools>=70.1 into this environment"
                if "bdist_wheel" in done.stdout + done.stderr else "")
        pytest.fail(f"pip could not install {PLUGIN_SOURCE}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}{hint}")
    return Installed(site=site, source=source)


def run_cli(args: Sequence[str], site: Path | None, *, extra_env: dict[str, str] | None = None,
            timeout: float = 120, command: Sequence[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process that sees the plugin only if ``site`` is given."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XFERBENCH_DISABLE_PLUGINS")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    # Wide, plain, UTF-8 output so rich neither wraps nor truncates table cells.
    env.update(COLUMNS="400", PYTHONIOENCODING="utf-8", NO_COLOR="1", TF_CPP_MIN_LOG_LEVEL="3")
    env.update(extra_env or {})
    base = list(command) if command is not None else [sys.executable, "-m", "xferbench.cli"]
    return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=timeout)


def table_rows(output: str) -> list[list[str]]:
    """The body rows of rich tables as lists of cell texts (continuation rows have an empty first cell)."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in re.split(r"[│|]", line)[1:-1]])
    return rows


def listed(output: str) -> dict[str, str]:
    """name -> plugin, from the output of ``xferbench list``."""
    return {row[0]: row[1] for row in table_rows(output) if row and row[0]}


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_install_puts_the_entry_point_in_the_distribution_metadata(installed: Installed) -> None:
    (dist_info,) = installed.site.glob("xferbench_example-*.dist-info")
    assert dist_info.name == f"xferbench_example-{PLUGIN_META['version']}.dist-info"
    entry_points = (dist_info / "entry_points.txt").read_text(encoding="utf-8")
    assert re.search(rf"^\[xferbench\]\s*^{PLUGIN_NAME} = xferbench_example$", entry_points, re.M), entry_points
    done = run_cli([], installed.site, command=[sys.executable, "-c",
                                                "import xferbench_example; print(xferbench_example.__file__)"])
    assert Path(done.stdout.strip()).is_relative_to(installed.site), done.stdout + done.stderr


def test_list_shows_the_components_under_the_plugin_name(installed: Installed) -> None:
    done = run_cli(["list"], installed.site)
    assert done.returncode == 0, done.stderr
    names = listed(done.stdout)
    for name in COMPONENTS.values():
        assert names.get(name) == PLUGIN_NAME, f"{name!r} not listed as from {PLUGIN_NAME!r}:\n{done.stdout}"
    assert names.get("lenet5") == "lenet5"  # the built-ins are still there


@pytest.mark.parametrize(("kind", "name"), COMPONENTS.items())
def test_the_console_script_lists_each_kind(installed: Installed, kind: str, name: str) -> None:
    script = Path(sysconfig.get_path("scripts")) / "xferbench"
    assert script.exists(), f"the xferbench console script is missing from {script.parent}"
    done = run_cli(["list", kind], installed.site, command=[str(script)])
    assert done.returncode == 0, done.stderr
    names = listed(done.stdout)
    assert names.get(name) == PLUGIN_NAME, done.stdout
    # only this kind: the other example components belong to other tables
    assert not {n for k, n in COMPONENTS.items() if k != kind} & set(names)


def test_without_the_install_the_components_are_not_there() -> None:
    done = run_cli(["list"], None)
    assert done.returncode == 0, done.stderr
    assert not set(COMPONENTS.values()) & set(listed(done.stdout))


def test_plugins_shows_version_and_origin(installed: Installed) -> None:
    done = run_cli(["plugins"], installed.site)
    assert done.returncode == 0, done.stderr
    rows = {row[0]: row for row in table_rows(done.stdout) if row and row[0]}
    assert PLUGIN_NAME in rows, done.stdout
    _, version, origin = rows[PLUGIN_NAME]
    assert version == PLUGIN_META["version"]
    init = installed.site / "xferbench_example" / "__init__.py"
    assert origin == f"{PLUGIN_META['name']} ({init})"


@pytest.mark.slow
def test_run_with_all_three_example_components(installed: Installed, tmp_path: Path) -> None:
    output = tmp_path / "r.json"
    done = run_cli(["run", "--backbone", "pixels", "--dataset", "bars", "--head", "centroid", "--compare",
                    "transfer", "--output", str(output), "--quiet", "--cache-dir", str(tmp_path / "cache")],
                   installed.site, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text(encoding="utf-8"))
    (run,) = document["runs"]
    assert (run["backbone"], run["dataset"], run["head"], run["method"]) == ("pixels", "bars", "centroid", "transfer")
    assert run["status"] == "ok", run["error"]
    assert run["n_test"] >= 15 and run["n_train"] >= 100
    # Three balanced classes: chance is 1/3.
    assert run["test_accuracy"] > 0.7, run
    assert run["backbone_info"]["size"] == 16
    assert run["head_info"]["metric"] == "cosine"
    (dataset,) = document["datasets"]
    assert dataset["class_names"] == ["horizontal", "vertical", "diagonal"]


@pytest.mark.parametrize("how", ["--no-plugin", "XFERBENCH_DISABLE_PLUGINS"])
def test_blocking_the_plugin_makes_its_backbone_unknown(installed: Installed, tmp_path: Path, how: str) -> None:
    def blocked(args: list[str]) -> subprocess.CompletedProcess[str]:
        if how == "--no-plugin":
            return run_cli([*args, "--no-plugin", PLUGIN_NAME], installed.site)
        return run_cli(args, installed.site, extra_env={"XFERBENCH_DISABLE_PLUGINS": f"other,{PLUGIN_NAME}"})

    # Control: installed and not blocked, the name is known.
    assert listed(run_cli(["list", "backbones"], installed.site).stdout).get("pixels") == PLUGIN_NAME
    listing = blocked(["list", "backbones"])
    assert listing.returncode == 0, listing.stderr
    assert "pixels" not in listed(listing.stdout)
    done = blocked(["run", "--backbone", "pixels", "--dataset", "digits", "--head", "softmax", "--compare",
                    "transfer", "--output", str(tmp_path / "r.json"), "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert done.returncode == 2, done.stderr
    message = one_line_error(done)
    assert "unknown backbone 'pixels'" in message
    assert "did you mean" in message or "known backbones: " in message
    assert "lenet5" in message  # it names what is available
    assert not (tmp_path / "r.json").exists()


def test_blocked_plugin_is_reported_by_plugins(installed: Installed) -> None:
    done = run_cli(["plugins", "--no-plugin", PLUGIN_NAME], installed.site)
    assert done.returncode == 0, done.stderr
    assert PLUGIN_NAME not in {row[0] for row in table_rows(done.stdout)}
    assert f"blocked: {PLUGIN_NAME}" in done.stdout


def test_a_misspelled_name_suggests_the_plugin_component(installed: Installed, tmp_path: Path) -> None:
    done = run_cli(["run", "--backbone", "pixel", "--dataset", "bars", "--head", "centroid", "--compare", "transfer",
                    "--output", str(tmp_path / "r.json"), "--quiet"], installed.site)
    assert done.returncode == 2
    assert "did you mean 'pixels'?" in one_line_error(done)


def test_the_plugin_own_tests_pass_against_the_installed_package(installed: Installed, tmp_path: Path) -> None:
    # A copy of the tests outside the plugin folder, so its pytest settings (which put src/ on
    # sys.path) do not apply and the tests import the pip-installed package.
    tests = tmp_path / "plugin_tests"
    shutil.copytree(installed.source / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    done = run_cli(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tests)],
                   installed.site, command=[sys.executable], timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout


@pytest.mark.slow
def test_v2_method_logger_reporter_and_command_next_to_the_builtins(installed: Installed, tmp_path: Path) -> None:
    """Plugin API v2 from outside: the example's k-NN method, its lifecycle logger, its reporter with
    options and its subcommand, in one run with the built-in transfer method and table reporter."""
    bars = tmp_path / "bars"
    made = run_cli(["bars-folder", "--out", str(bars), "--n-per-class", "40"], installed.site)
    assert made.returncode == 0, made.stderr
    assert len(list(bars.glob("*/*.png"))) == 120
    events, runs, output = tmp_path / "events.jsonl", tmp_path / "runs.jsonl", tmp_path / "r.json"
    done = run_cli(["run", "--backbone", "pixels", "--dataset", f"folder:{bars}", "--head", "centroid,logreg",
                    "--compare", "transfer,knn", "--method-opt", "k=3", "--report", "table,jsonl",
                    "--reporter-opt", f"jsonl.path={runs}", "--reporter-opt", "jsonl.fields=method,head,status,test_accuracy",
                    "--output", str(output), "--quiet", "--cache-dir", str(tmp_path / "cache")],
                   installed.site, extra_env={"XFERBENCH_EXAMPLE_EVENTS": str(events)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(output.read_text(encoding="utf-8"))
    assert [(r["method"], r["head"], r["status"]) for r in document["runs"]] == [
        ("transfer", "centroid", "ok"), ("transfer", "logreg", "ok"), ("knn", "-", "ok")]
    knn = document["runs"][2]
    assert knn["method_info"] == {"k": 3, "metric": "cosine", "chosen_on_validation": False}
    assert knn["test_accuracy"] > 0.6 and knn["extracted"] == document["runs"][0]["extracted"] == 120  # one extraction
    # The table shows the plugin's method beside the built-in one.
    assert [row[2] for row in table_rows(done.stdout) if len(row) > 5 and row[0]] == ["transfer", "transfer", "knn"]
    written = [json.loads(line) for line in runs.read_text().splitlines()]
    assert written == [{"method": r["method"], "head": r["head"], "status": "ok", "test_accuracy": r["test_accuracy"]}
                       for r in document["runs"]]
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in logged] == ["sweep_started"] + ["run_started", "run_finished"] * 3 + ["sweep_finished"]
    assert [e["finished_so_far"] for e in logged if e["event"] == "run_finished"] == [1, 2, 3]
    bad = run_cli(["run", "--report", "jsonl", "--reporter-opt", "jsonl.fields=accuracy"], installed.site)
    assert "reporter 'jsonl': fields='accuracy' names no run field 'accuracy'" in one_line_error(bad)
