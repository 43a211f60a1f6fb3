"""``tfds:`` datasets: TFDS's mock_data, and a dataset prepared by a real TFDS builder read back as a user would."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support.cli import assert_one_line_error, run_cli
from support.tiny_tfds import CLASSES, prepare_tiny_colors
from xferbench.context import RunContext
from xferbench.plugin_manager import load_catalog

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A dataset ``tiny_colors`` prepared by TFDS into a data dir; returns (data dir, builder module)."""
    return prepare_tiny_colors(tmp_path_factory.mktemp("tfds"))


def _context(tmp_path: Path, data_dir: Path | None = None) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp_path / "cache", data_dir=data_dir)


def test_prepared_dataset_is_read_with_its_classes_splits_and_pixels(prepared, tmp_path):
    from PIL import Image

    data_dir, module = prepared
    dataset = _context(tmp_path, data_dir).load_dataset("tfds:tiny_colors", {})
    assert dataset.class_names == list(CLASSES)
    # no validation split: 10% of each class of train (12 -> 1) carved out, and the dataset says so
    assert dataset.split_sizes() == {"train": 33, "val": 3, "test": 15}
    assert any("no validation split" in w and "split_seed=0" in w for w in dataset.warnings)
    assert sorted(ex.label for ex in dataset.split("val")) == [0, 1, 2]
    # the image of each example is the one the builder wrote for it (PNG is lossless)
    expected = {module.image(label, i).tobytes(): label for label in range(3) for i in (*range(12), *range(100, 105))}
    for example in dataset.examples:
        pixels = np.asarray(Image.open(io.BytesIO(dataset.read(example))))
        assert expected[pixels.tobytes()] == example.label
    keys = [ex.key for ex in dataset.examples]
    assert len(set(keys)) == len(keys)
    again = _context(tmp_path, data_dir).load_dataset("tfds:tiny_colors", {})
    assert [(e.key, e.split) for e in again.examples] == [(e.key, e.split) for e in dataset.examples]


def test_split_strings_limits_and_class_subset(prepared, tmp_path):
    data_dir, _ = prepared
    context = _context(tmp_path, data_dir)
    options = {"split_train": "train[:24]", "split_val": "train[24:]", "split_test": "test", "train_examples": 20}
    whole = context.load_dataset("tfds:tiny_colors", options)
    assert whole.split_sizes() == {"train": 20, "val": 12, "test": 15}
    assert whole.warnings == []
    subset = context.load_dataset("tfds:tiny_colors:red,blue", options)
    assert subset.class_names == ["red", "blue"]
    kept = {ex.key: ex.split for ex in whole.examples if ex.label in (0, 2)}
    assert {ex.key: ex.split for ex in subset.examples} == kept


def test_bad_split_is_one_line_with_the_splits_it_has(prepared, tmp_path):
    data_dir, _ = prepared
    result = run_cli("run", "--backbone", "lenet5", "--dataset", "tfds:tiny_colors", "--data-dir", str(data_dir),
                     "--dataset-opt", "split_test=testing", "--output", str(tmp_path / "r.json"),
                     "--cache-dir", str(tmp_path / "cache"), "-q")
    assert_one_line_error(result, "split_test='testing'", "train (36)", "test (15)")


def test_unprepared_dataset_says_to_fetch(tmp_path):
    result = run_cli("run", "--backbone", "lenet5", "--dataset", "tfds:mnist", "--data-dir", str(tmp_path),
                     "--output", str(tmp_path / "r.json"), "--cache-dir", str(tmp_path / "cache"), "-q")
    assert_one_line_error(result, "tfds:mnist", "xferbench fetch tfds:mnist")


@pytest.mark.slow
def test_prepared_dataset_runs_through_tfds_like_a_folder(prepared, tmp_path):
    """The builder is not installed in the xferbench process: the dataset is read from its files alone."""
    data_dir, _ = prepared
    output = tmp_path / "results.json"
    result = run_cli("run", "--backbone", "lenet5", "--backbone-opt", "pretrain_epochs=2", "--dataset",
                     "tfds:tiny_colors", "--data-dir", str(data_dir), "--head", "logreg", "--compare", "transfer",
                     "--output", str(output), "--cache-dir", str(tmp_path / "cache"), "-q")
    assert result.returncode == 0, result.stderr
    document = json.loads(output.read_text())
    (entry,) = document["datasets"]
    assert entry["class_names"] == list(CLASSES) and entry["split_sizes"] == {"train": 33, "val": 3, "test": 15}
    assert any("no validation split" in w for w in entry["warnings"])
    (run,) = document["runs"]
    assert run["status"] == "ok" and run["n_test"] == 15 and run["test_accuracy"] > 1 / 3


def test_mock_data_reads_images_and_carves_validation(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        dataset = _context(tmp_path).load_dataset("tfds:mnist", {})
        assert dataset.class_names == [str(d) for d in range(10)]
        assert dataset.split_sizes()["test"] == 40 and dataset.split_sizes()["val"] > 0
        assert dataset.read(dataset.examples[-1])[:4] == b"\x89PNG"


def test_reading_is_chunked_not_whole_dataset(tmp_path, monkeypatch):
    """Reading one image loads one chunk of records, never the whole split."""
    import xferbench_tfds.reader as reader

    monkeypatch.setattr(reader, "CHUNK", 8)
    with tfds.testing.mock_data(num_examples=40):
        dataset = _context(tmp_path).load_dataset("tfds:mnist", {"split_val": "train[:5]",
                                                                 "split_train": "train[5:]"})
        loads = []
        original = reader._ChunkReader._load

        def counting(self, base, start):
            chunk = original(self, base, start)
            loads.append(len(chunk))
            return chunk
        monkeypatch.setattr(reader._ChunkReader, "_load", counting)
        tests = dataset.split("test")
        for example in tests[:8]:
            dataset.read(example)
        assert loads == [8]
        dataset.read(tests[20])
        assert loads == [8, 8]


# `xferbench fetch tfds:NAME`: builders that are not in TFDS's catalog, in a module the `xferbench` subprocess
# imports (--opt module=...; its folder on PYTHONPATH). tiny_fetch downloads a zip of PNGs over HTTP,
# tiny_manual reads files the user put in the manual dir.
FETCH_BUILDERS = textwrap.dedent('''
    import os

    import tensorflow_datasets as tfds

    def features():
        return tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 3)),
                                           "label": tfds.features.ClassLabel(names=["dark", "bright"])})

    def examples(folder):
        for path in sorted(folder.glob("*/*.png")):
            yield f"{folder.name}/{path.parent.name}/{path.name}", {"image": path, "label": path.parent.name}

    class TinyFetch(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features())

        def _split_generators(self, dl_manager):
            root = dl_manager.download_and_extract(os.environ["TINY_FETCH_URL"])
            return {"train": examples(root / "train"), "test": examples(root / "test")}

        def _generate_examples(self, folder):
            yield from examples(folder)

    class TinyManual(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack tiny_images.zip (folders train/ and test/) into the manual dir."

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features())

        def _split_generators(self, dl_manager):
            root = dl_manager.manual_dir
            return {"train": examples(root / "train"), "test": examples(root / "test")}

        def _generate_examples(self, folder):
            yield from examples(folder)
''')
#: images per class in each split of the fetched datasets
FETCH_SIZES = {"train": 8, "test": 3}


def _write_images(root: Path) -> None:
    """``root/{train,test}/{dark,bright}/*.png``: 28x28 PNGs, dark ones below 80, bright ones above 170."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in FETCH_SIZES.items():
        for name, low in (("dark", 0), ("bright", 170)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(low, low + 80, size=(28, 28, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture
def fetch_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an `xferbench fetch` subprocess that can import the builders module."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny_builders.py").write_text(FETCH_BUILDERS)
    return {"PYTHONPATH": str(site), "XFERBENCH_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture
def image_server(tmp_path: Path):
    """A local HTTP server (a thread) serving ``images.zip``; yields (its URL, the paths it was asked for)."""
    import functools
    import http.server
    import threading
    import zipfile

    source = tmp_path / "images"
    _write_images(source)
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "images.zip", "w") as archive:
        for path in sorted(source.rglob("*.png")):
            archive.write(path, path.relative_to(source).as_posix())
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/images.zip", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_fetch_downloads_prepares_with_progress_and_run_reads_it(image_server, fetch_env, tmp_path):
    url, requested = image_server
    data_dir = tmp_path / "data"
    fetched = run_cli("fetch", "tfds:tiny_fetch", "--opt", "module=tiny_builders", "--data-dir", str(data_dir),
                      env={**fetch_env, "TINY_FETCH_URL": url})
    assert fetched.returncode == 0, fetched.stderr
    assert requested == ["/images.zip"]
    assert "Dl Completed" in fetched.stdout  # TFDS's own progress bars
    assert f"tfds: ready at {data_dir / 'tiny_fetch' / '1.0.0'}" in fetched.stdout
    # `run` reads it from its files alone (the builders module is not importable there)
    output = tmp_path / "results.json"
    result = run_cli("run", "--backbone", "lenet5", "--backbone-opt", "pretrain_epochs=1", "--dataset",
                     "tfds:tiny_fetch", "--data-dir", str(data_dir), "--head", "logreg", "--compare", "transfer",
                     "--output", str(output), "--cache-dir", str(tmp_path / "cache"), "-q")
    assert result.returncode == 0, result.stderr
    document = json.loads(output.read_text())
    (entry,) = document["datasets"]
    assert entry["class_names"] == ["dark", "bright"]
    assert entry["split_sizes"] == {"train": 14, "val": 2, "test": 6}  # 8 per class, 1 of them carved out
    (run,) = document["runs"]
    assert run["status"] == "ok" and run["n_test"] == 6


def test_fetch_offline_is_one_line_naming_the_manual_dir(fetch_env, tmp_path):
    import socket

    refusing = socket.socket()  # bound, never listening: a connection to it is refused at once
    refusing.bind(("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{refusing.getsockname()[1]}/images.zip"
        data_dir = tmp_path / "data"
        result = run_cli("fetch", "tfds:tiny_fetch", "--opt", "module=tiny_builders", "--data-dir", str(data_dir),
                         env={**fetch_env, "TINY_FETCH_URL": url})
    finally:
        refusing.close()
    manual = data_dir / "downloads" / "manual"
    assert_one_line_error(result, f"cannot download {url}", f"put them in {manual}",
                          f"--opt manual_dir={manual}")


def test_fetch_of_a_manual_download_dataset_says_where_the_files_go_and_then_works(fetch_env, tmp_path):
    data_dir = tmp_path / "data"
    command = ("fetch", "tfds:tiny_manual", "--opt", "module=tiny_builders", "--data-dir", str(data_dir), "-q")
    manual = data_dir / "downloads" / "manual"
    assert_one_line_error(run_cli(*command, env=fetch_env), "needs files downloaded by hand",
                          f"put them in {manual}", "Unpack tiny_images.zip")
    _write_images(manual)  # doing what the line says
    result = run_cli(*command, env=fetch_env)
    assert result.returncode == 0, result.stderr
    assert (data_dir / "tiny_manual" / "1.0.0" / "dataset_info.json").is_file()
    assert result.stderr == ""


def test_label_index_is_cached_until_the_prepared_files_change(prepared, tmp_path, monkeypatch):
    import os

    import xferbench_tfds.reader as reader

    data_dir, _ = prepared
    scans = []
    original = reader._scan_labels

    def counting(builder, part, *args):
        scans.append(part.index_spec())
        return original(builder, part, *args)
    monkeypatch.setattr(reader, "_scan_labels", counting)
    first = _context(tmp_path, data_dir).load_dataset("tfds:tiny_colors", {})
    assert scans == ["train[0:36]", "test[0:15]"]
    again = _context(tmp_path, data_dir).load_dataset("tfds:tiny_colors", {})
    assert len(scans) == 2  # both parts came from the cache
    assert [(e.key, e.label, e.split, e.ref) for e in again.examples] == \
        [(e.key, e.label, e.split, e.ref) for e in first.examples]
    assert again.read(again.examples[-1]) == first.read(first.examples[-1])
    _context(tmp_path, data_dir).load_dataset("tfds:tiny_colors", {"split_train": "train[:24]"})
    assert scans[2:] == ["train[0:24]"]  # another split is another index; test is still cached
    # prepared again (a record file rewritten): scanned again
    record = next((data_dir / "tiny_colors" / "1.0.0").glob("tiny_colors-test.tfrecord*"))
    stat = record.stat()
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    _context(tmp_path, data_dir).load_dataset("tfds:tiny_colors", {})
    assert scans[3:] == ["train[0:36]", "test[0:15]"]
