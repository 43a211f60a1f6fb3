"""The CLI contract, end to end through subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import xferbench
from support.cli import REPO, assert_one_line_error, run_cli
from xferbench.results import validate_document


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["list", "heads"], ["plugins"], ["run", "--help"]])
def test_light_commands_do_not_import_tensorflow(argv):
    code = (f"import sys\nfrom xferbench.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print('TF-LOADED' if 'tensorflow' in sys.modules else 'TF-ABSENT', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "TF-ABSENT" in result.stderr, result.stderr


def test_list_shows_every_builtin_with_its_plugin():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in ("lenet5", "inception_2015", "keras:<arg>", "hub:<arg>", "digits", "folder:<arg>", "flowers",
                 "mnist", "softmax", "logreg", "mlp", "table"):
        assert name in result.stdout, name


def test_plugins_lists_versions_and_origins():
    result = run_cli("plugins")
    assert result.returncode == 0
    assert "lenet5" in result.stdout and xferbench.__version__ in result.stdout


def test_unknown_backbone_is_one_line_with_suggestion(cli):
    line = assert_one_line_error(cli("run", "--backbone", "lenet", "--compare", "transfer"), "unknown backbone")
    assert "did you mean 'lenet5'?" in line


def test_unknown_head_and_dataset(cli):
    assert_one_line_error(cli("run", "--head", "sofmax"), "did you mean 'softmax'?")
    assert_one_line_error(cli("run", "--dataset", "digit"), "did you mean 'digits'?")


def test_bad_options_are_rejected_by_the_plugin(cli):
    assert_one_line_error(cli("run", "--backbone-opt", "pretrain_epoch=3"), "unknown option", "pretrain_epochs")
    assert_one_line_error(cli("run", "--head-opt", "steps=many"), "steps", "not an integer")
    assert_one_line_error(cli("run", "--head-opt", "nokey"), "KEY=VALUE")


def test_missing_data_dir_and_weights(cli, tmp_path):
    assert_one_line_error(cli("run", "--data-dir", str(tmp_path / "nope")), "--data-dir", "no such directory")
    assert_one_line_error(cli("run", "--weights", str(tmp_path / "nope.h5")), "--weights", "no such file")


def test_unwritable_output(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(cli("run", "--output", str(blocker / "r.json")), "cannot write results")
    assert_one_line_error(cli("run", "--output", str(tmp_path / "r.txt")), ".json")


def test_bad_class_subset(cli):
    assert_one_line_error(cli("run", "--dataset", "digits:7-12", "--compare", "transfer", "--output", "r.json",
                              "--quiet"), "outside 0-9")


def test_a_dataset_failing_inside_the_run_is_said_once(cli, tmp_path):
    # Both planned runs (transfer and full) fail with the same error: one line, not one per run.
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("run", "--dataset", "folder:empty", "--compare", "transfer,full"),
                          "has no class subfolders", "(results: ")


def test_bad_shots_compare_and_budget(cli):
    assert_one_line_error(cli("run", "--shots", "0"), "--shots")
    assert_one_line_error(cli("run", "--compare", "transfer,partial"), "unknown method 'partial'")
    assert_one_line_error(cli("run", "--full-budget", "soon"), "--full-budget")


def test_blocked_plugin_makes_its_names_unknown(cli):
    assert_one_line_error(cli("run", "--no-plugin", "lenet5", "--backbone", "lenet5"), "unknown backbone 'lenet5'")
    assert_one_line_error(cli("run", "--no-plugin", "keras"), "unknown backbone 'keras'")
    assert_one_line_error(cli("run", env={"XFERBENCH_DISABLE_PLUGINS": "heads"}), "unknown head 'logreg'")


def test_usage_errors_are_one_line_too(cli):
    assert_one_line_error(cli("run", "--seed", "abc"), "--seed")
    assert_one_line_error(cli("frobnicate"), "invalid choice")


def test_fetch_unknown_and_nothing_to_fetch(cli):
    assert_one_line_error(cli("fetch", "inceptoin_2015"), "did you mean 'inception_2015'?")
    assert_one_line_error(cli("fetch", "digits"), "nothing to download")


#: the README's fastest smoke test: pretrain lenet5 on digits 0-4, transfer to 5-9, against full retraining
DIGITS_EXAMPLE = ["--backbone", "lenet5", "--dataset", "digits:5-9", "--head", "softmax",
                  "--compare", "transfer,full", "--backbone-opt", "pretrain_on=digits:0-4"]


@pytest.mark.slow
def test_digits_example_end_to_end(cli, tmp_path):
    """The digits example: pretrain lenet5 on digits 0-4, transfer to 5-9, against full."""
    result = cli("run", *DIGITS_EXAMPLE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "transfer" in result.stdout and "full" in result.stdout and "vs full, whole cost" in result.stdout
    outputs = list((tmp_path / "xferbench-results").glob("*.json"))
    assert len(outputs) == 1
    document = json.loads(outputs[0].read_text())
    validate_document(document)
    assert document["schema_version"] == 2
    assert document["seed"] == 0 and document["versions"]["tensorflow"] and document["machine"]["cores"] >= 1
    runs = {run["method"]: run for run in document["runs"]}
    assert set(runs) == {"transfer", "full"}
    for run in runs.values():
        for field in ("backbone", "dataset", "head", "method", "shots", "n_train", "n_val", "n_test",
                      "skipped_files", "test_accuracy", "train_seconds", "cache_hits"):
            assert field in run, field
        assert run["status"] == "ok" and run["dataset"] == "digits:5-9" and run["backbone"] == "lenet5"
        assert run["n_test"] > 50
    transfer = runs["transfer"]
    assert transfer["head"] == "softmax" and transfer["shots"] == "all"
    assert transfer["test_accuracy"] > 0.6, transfer["test_accuracy"]  # chance is 0.2
    assert transfer["extract_images_per_second"] > 0 and transfer["cache_hits"] == 0
    assert document["runs"][0]["backbone_info"]["pretrained_on"] == "digits:0-4"

    # A second run reuses the pretrained weights and every bottleneck: zero forward passes.
    again = cli("run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--compare", "transfer",
                "--output", "again.json", "--show-misclassified")
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "again.json").read_text())["runs"][0]
    wrong = rerun["misclassified"]
    assert len(wrong) == round((1 - rerun["test_accuracy"]) * rerun["n_test"])
    assert f"{len(wrong)} of {rerun['n_test']}" in again.stdout
    for item in wrong:
        assert f"{item['key']}  true {item['true']}  predicted {item['predicted']}" in again.stdout
        assert item["true"] != item["predicted"]
    assert rerun["extracted"] == 0 and rerun["cache_hits"] == transfer["n_train"] + transfer["n_val"] + transfer[
        "n_test"]
    assert rerun["backbone_info"]["pretrain_cache_hit"] is True
    assert rerun["test_accuracy"] == transfer["test_accuracy"]

    # Progress is shown as plain lines when stderr is no terminal, and --quiet silences it.
    assert "\x1b[" not in result.stderr
    for step in ("pretraining lenet5 on digits:0-4", "bottlenecks lenet5 on digits:5-9", "head softmax",
                 "full training lenet5"):
        assert step in result.stderr, step

    # `xferbench extract` writes the cached bottlenecks with their paths, labels and splits.
    extracted = cli("extract", "--backbone", "lenet5", "--dataset", "digits:5-9", "--out", "features.npz",
                    "--quiet")
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    assert extracted.stderr == ""
    n = transfer["n_train"] + transfer["n_val"] + transfer["n_test"]
    assert f"{n} images x 84 features ({n} from cache, 0 computed, 0 failed)" in extracted.stdout
    with np.load(tmp_path / "features.npz", allow_pickle=False) as npz:
        assert npz["features"].shape == (n, 84) and npz["features"].dtype == np.float32
        assert npz["labels"].shape == (n,) and set(npz["labels"].tolist()) == set(range(5))
        assert list(npz["class_names"]) == ["5", "6", "7", "8", "9"]
        assert sorted(set(npz["split"].tolist())) == ["test", "train", "val"]
        assert (npz["split"] == "test").sum() == transfer["n_test"]
        assert all(path.endswith(".png") for path in npz["paths"].tolist())


def test_readme_documents_the_default_and_the_digits_example_as_one_command_line():
    from xferbench.cli import DEFAULT_RUN

    readme = (REPO / "README.md").read_text()
    assert "xferbench run " + " ".join(DEFAULT_RUN) in readme
    assert "xferbench run " + " ".join(DIGITS_EXAMPLE) in readme


def test_run_with_no_option_that_chooses_the_work_is_the_default_command_line():
    from xferbench.cli import DEFAULT_RUN, with_default_run

    assert with_default_run(["run"]) == ["run", *DEFAULT_RUN]
    assert with_default_run(["run", "--quiet", "--output", "r.json", "--seed", "3"]) == [
        "run", "--quiet", "--output", "r.json", "--seed", "3", *DEFAULT_RUN]
    for chosen in (["--backbone", "lenet5"], ["--shots", "all"], ["--dataset-opt", "test_pct=20"],
                   ["--full-epochs=3"], ["--resume", "r.json"]):
        assert with_default_run(["run", *chosen]) == ["run", *chosen]
    assert with_default_run(["list"]) == ["list"]


def test_comma_lists_of_class_names_stay_with_their_dataset(cli):
    # "nosuch" is no dataset, so it continues the subset of digits (and is then a bad class name).
    assert_one_line_error(cli("run", "--dataset", "digits:5,6,nosuch", "--compare", "transfer", "--quiet",
                              "--output", "r.json"), "class 'nosuch' is neither an index nor a class name")
    assert_one_line_error(cli("run", "--dataset", "digits:5,nosuch:1", "--output", "r.json"),
                          "unknown dataset 'nosuch'")


def test_sweep_options_go_to_the_components_that_declare_them(cli):
    line = assert_one_line_error(cli("run", "--backbone", "lenet5,keras:MobileNet", "--backbone-opt",
                                     "pretrain_epochs=2", "--backbone-opt", "alpah=0.25"), "unknown option 'alpah'")
    assert "did you mean 'alpha'?" in line and "lenet5, keras:MobileNet" in line
