"""The embedded default: the photos and weights shipped in the package, and `xferbench run` with no arguments."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import xferbench_embedded
import xferbench_folder
from support.cli import REPO, shared_data_dir
from xferbench.cli import DEFAULT_RUN
from xferbench.context import RunContext
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

PHOTO_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
WEIGHTS = "weights/mobilenet_2_5_224_tf_no_top.h5"
#: the sha256 ../shared/data/README.md gives for the original weights file
WEIGHTS_SHA256 = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"
#: environment under which any download fails at once: no Keras cache, proxies that refuse
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


def _manifest(text: str) -> dict[str, str]:
    return {path: digest for digest, _, path in (line.partition("  ") for line in text.splitlines())}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_installed_package_holds_every_embedded_file_with_its_sha256():
    data = importlib.resources.files("xferbench_embedded") / "data"
    manifest = _manifest((data / "SHA256SUMS").read_text(encoding="utf-8"))
    for path, digest in manifest.items():
        assert _sha256((data / path).read_bytes()) == digest, path
    photos = [path for path in manifest if path.endswith(".jpg")]
    assert len(photos) == 500
    assert {path.split("/")[1] for path in photos} == set(PHOTO_CLASSES)
    assert manifest[WEIGHTS] == WEIGHTS_SHA256
    assert f"sha256: {WEIGHTS_SHA256}" in (data / "weights" / "ORIGIN.txt").read_text()
    # CC-BY 2.0: a credit line for exactly the shipped photos.
    license_text = (data / "flower_photos_mini" / "LICENSE.txt").read_text(encoding="utf-8")
    credited = {line.split(" ", 1)[0] for line in license_text.splitlines() if line.startswith(PHOTO_CLASSES)}
    assert credited == {path.removeprefix("flower_photos_mini/") for path in photos}


def test_the_manifest_lists_every_file_in_the_data_folder():
    data = Path(str(importlib.resources.files("xferbench_embedded") / "data"))
    on_disk = {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    manifest = _manifest((data / "SHA256SUMS").read_text(encoding="utf-8"))
    assert on_disk - set(manifest) == {"SHA256SUMS", "README.md"}
    assert set(manifest) <= on_disk


@pytest.mark.slow
def test_the_wheel_ships_the_embedded_files(tmp_path):
    source = tmp_path / "source"
    for folder in ("src", "plugins"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-input",
                           "--disable-pip-version-check", "-w", str(tmp_path / "wheels"), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("xferbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        manifest = _manifest(archive.read("xferbench_embedded/data/SHA256SUMS").decode())
        for path, digest in manifest.items():
            assert _sha256(archive.read(f"xferbench_embedded/data/{path}")) == digest, path
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "embedded = xferbench_embedded" in entry_points


@pytest.mark.realdata
def test_flowers_mini_splits_like_the_original_photos(tmp_path):
    """Same file names as ../shared/data/flower_photos_mini, so retrain.py's rule puts each photo in the same split."""
    catalog = load_catalog(extra_plugins=[("folder", xferbench_folder), ("embedded", xferbench_embedded)],
                           load_entry_points=False)
    context = RunContext(catalog=catalog, cache_dir=tmp_path, progress=Progress(quiet=True))
    shipped = context.load_dataset("flowers-mini")
    original = context.load_dataset(f"folder:{shared_data_dir() / 'flower_photos_mini'}")
    assert shipped.class_names == original.class_names == list(PHOTO_CLASSES)
    splits = {ex.key: (ex.label, ex.split) for ex in shipped.examples}
    assert splits == {ex.key: (ex.label, ex.split) for ex in original.examples}
    assert len(splits) == 500 and {split for _, split in splits.values()} == {"train", "val", "test"}


@pytest.mark.slow
def test_keras_mobilenet_alpha_025_finds_the_shipped_weights_offline(cli, tmp_path):
    env = {**OFFLINE, "KERAS_HOME": str(tmp_path / "keras-home")}
    fetched = cli("fetch", "keras:MobileNet", "--opt", "alpha=0.25", "--quiet", env=env)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    data = importlib.resources.files("xferbench_embedded") / "data"
    assert str(Path(str(data / WEIGHTS)).resolve()) in fetched.stdout
    assert not list((tmp_path / "keras-home").rglob("*.h5"))  # nothing downloaded into Keras's cache


@pytest.mark.slow
@pytest.mark.realdata
def test_weights_given_with_the_option_win_over_the_shipped_ones(cli, tmp_path):
    given = tmp_path / "given.h5"
    shutil.copy2(shared_data_dir() / WEIGHTS, given)
    result = cli("run", "--backbone", "keras:MobileNet", "--backbone-opt", "alpha=0.25", "--backbone-opt",
                 "input_size=128", "--dataset", "flowers-mini:daisy,roses", "--head", "logreg", "--compare",
                 "transfer", "--weights", str(given), "--output", "r.json", "--quiet", env=OFFLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert run["backbone_info"]["weights"] == str(given.resolve())


@pytest.mark.slow
def test_run_without_arguments_is_the_embedded_default_offline(cli, tmp_path):
    """`xferbench run`: ImageNet MobileNet on the shipped photos, no network, transfer beats full at every shot."""
    keras_home = tmp_path / "keras-home"
    result = cli("run", "--quiet", "--format", "json", env={**OFFLINE, "KERAS_HOME": str(keras_home)})
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["command"] == ["xferbench", "run", "--quiet", "--format", "json", *DEFAULT_RUN]
    assert not list(keras_home.rglob("*.h5"))
    runs = document["runs"]
    assert {run["status"] for run in runs} == {"ok"}
    assert {(run["backbone"], run["dataset"]) for run in runs} == {("keras:MobileNet", "flowers-mini")}
    data = importlib.resources.files("xferbench_embedded") / "data"
    transfer = {run["shots"]: run for run in runs if run["method"] == "transfer"}
    full = {run["shots"]: run for run in runs if run["method"] == "full"}
    assert list(transfer) == list(full) == [5, 20, "all"]
    for shots, run in transfer.items():
        assert run["head"] == "logreg"
        assert run["backbone_info"]["weights"] == str(Path(str(data / WEIGHTS)).resolve())
        assert run["backbone_info"]["alpha"] == 0.25 and run["backbone_info"]["input_size"] == 128
        assert run["test_accuracy"] > full[shots]["test_accuracy"], shots
    assert transfer["all"]["test_accuracy"] > 0.6  # 5 classes: chance is 0.2
