"""``mnist`` end to end on a mini-MNIST built from the real test set, plus broken and foreign files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from xferbench.context import RunContext
from xferbench.errors import UserError
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

try:
    from support.http_server import FixtureServer
except ImportError:  # tests/ is a package, or pytest runs in importlib mode from the repo root
    from tests.support.http_server import FixtureServer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XFERBENCH_SHARED_DATA") or REPO.parent / "shared" / "data")
T10K_IMAGES = SHARED / "mnist" / "t10k-images-idx3-ubyte.gz"
T10K_LABELS = SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not T10K_IMAGES.is_file(), reason=f"real MNIST not found at {T10K_IMAGES}"),
]


def read_source() -> tuple[np.ndarray, np.ndarray]:
    """The real test set, parsed here by hand (not by the code under test)."""
    raw = gzip.decompress(T10K_IMAGES.read_bytes())
    assert struct.unpack(">4i", raw[:16]) == (2051, 10000, 28, 28)
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(10000, 28, 28)
    raw = gzip.decompress(T10K_LABELS.read_bytes())
    assert struct.unpack(">2i", raw[:8]) == (2049, 10000)
    return images, np.frombuffer(raw, np.uint8, offset=8)


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    return struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_gz(path: Path, array: np.ndarray) -> Path:
    path.write_bytes(gzip.compress(idx_bytes(array), compresslevel=1, mtime=0))
    return path


@pytest.fixture(scope="module")
def source() -> tuple[np.ndarray, np.ndarray]:
    return read_source()


@pytest.fixture
def mini(tmp_path: Path, source: tuple[np.ndarray, np.ndarray]) -> Path:
    """First 8000 real test images as "train", the last 2000 as "test", in real IDX .gz files."""
    images, labels = source
    folder = tmp_path / "mini"
    folder.mkdir()
    write_gz(folder / "train-images-idx3-ubyte.gz", images[:8000])
    write_gz(folder / "train-labels-idx1-ubyte.gz", labels[:8000])
    write_gz(folder / "t10k-images-idx3-ubyte.gz", images[8000:])
    write_gz(folder / "t10k-labels-idx1-ubyte.gz", labels[8000:])
    return folder


def make_context(tmp_path: Path, data_dir: Path | None, seed: int = 0) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp_path / "cache", data_dir=data_dir, seed=seed,
                      progress=Progress(quiet=True))


def test_mini_mnist_end_to_end(tmp_path: Path, mini: Path, source: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = source
    ds = make_context(tmp_path, mini).load_dataset("mnist", {"val_size": "1000"})
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.split_sizes() == {"train": 7000, "val": 1000, "test": 2000}
    assert ds.skipped_files == {}
    for ex in ds.examples[::97]:
        source_index = int(ex.key[-5:]) + (8000 if ex.key.startswith("test/") else 0)
        pixels = ds.read(ex)
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
        assert np.array_equal(pixels, images[source_index])
        assert ex.label == labels[source_index]
    assert ds.examples[42].key == "train/00042" and ds.split("test")[7].key == "test/00007"
    assert {ex.key[:5] for ex in ds.split("val")} == {"train"}
    # The user's own files are used, with a clear note that they are not the canonical MNIST.
    assert len(ds.warnings) == 1 and "4 of the 4 MNIST files" in ds.warnings[0]
    assert "train-images-idx3-ubyte.gz: 8000 images, expected 60000" in ds.warnings[0]


def test_carve_out_is_stable_and_seeded_by_split_seed(tmp_path: Path, mini: Path) -> None:
    def val_keys(seed: int, opts: dict[str, str]) -> list[str]:
        ds = make_context(tmp_path, mini, seed=seed).load_dataset("mnist", {"val_size": "500", **opts})
        return [ex.key for ex in ds.split("val")]

    first = val_keys(0, {})
    assert len(first) == 500
    assert val_keys(0, {}) == first
    assert val_keys(123, {}) == first  # the run seed does not move the carve-out
    assert val_keys(0, {"split_seed": "1"}) != first


def test_class_subset_and_val_size_limits(tmp_path: Path, mini: Path) -> None:
    ctx = make_context(tmp_path, mini)
    ds = ctx.load_dataset("mnist:5-9", {"val_size": "100"})
    assert ds.class_names == ["5", "6", "7", "8", "9"]
    assert set(ex.label for ex in ds.examples) == {0, 1, 2, 3, 4}
    with pytest.raises(UserError, match="leaves no training images"):
        ctx.load_dataset("mnist", {"val_size": "8000"})


def test_real_t10k_files_are_canonical_by_content(tmp_path: Path, mini: Path) -> None:
    from xferbench_mnist.mnist import FILES, verify_file

    # The shared .gz was re-compressed: its own MD5 differs from LeCun's, the unpacked bytes match.
    t10k_images = next(s for s in FILES if s.name == "t10k-images-idx3-ubyte.gz")
    t10k_labels = next(s for s in FILES if s.name == "t10k-labels-idx1-ubyte.gz")
    assert hashlib.md5(T10K_IMAGES.read_bytes()).hexdigest() != t10k_images.gz_md5
    assert verify_file(t10k_images, T10K_IMAGES, tmp_path).data.shape == (10000, 28, 28)
    assert verify_file(t10k_labels, T10K_LABELS, tmp_path).data.shape == (10000,)
    with pytest.raises(UserError, match="not the canonical MNIST"):
        verify_file(t10k_images, mini / "t10k-images-idx3-ubyte.gz", tmp_path)

    # With the real test files in --data-dir, only the home-made train files get a warning.
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (mini / name).unlink()
        (mini / name).symlink_to(SHARED / "mnist" / name)
    ds = make_context(tmp_path, mini).load_dataset("mnist", {"val_size": "0"})
    assert ds.split_sizes() == {"train": 8000, "val": 0, "test": 10000}
    assert len(ds.warnings) == 1 and "2 of the 4 MNIST files" in ds.warnings[0]
    assert "t10k-images" not in ds.warnings[0] and "t10k-labels" not in ds.warnings[0]


@pytest.mark.parametrize("damage", ["truncated_gz", "garbage", "truncated_idx", "wrong_magic", "long_idx"])
def test_damaged_files_name_the_file(tmp_path: Path, mini: Path, damage: str) -> None:
    target = mini / "train-labels-idx1-ubyte.gz"
    content = gzip.decompress(target.read_bytes())
    if damage == "truncated_gz":
        target.write_bytes(target.read_bytes()[:-200])
    elif damage == "garbage":
        target.write_bytes(os.urandom(5000))
    elif damage == "truncated_idx":
        target.write_bytes(gzip.compress(content[:-10]))
    elif damage == "wrong_magic":
        target.write_bytes((mini / "train-images-idx3-ubyte.gz").read_bytes())
    else:
        target.write_bytes(gzip.compress(content + b"\0"))
    with pytest.raises(UserError) as info:
        make_context(tmp_path, mini).load_dataset("mnist", {"val_size": "100"})
    message = str(info.value)
    assert str(target) in message and "\n" not in message


def test_unpacked_files_and_mismatched_pairs(tmp_path: Path, mini: Path, source: tuple[np.ndarray, np.ndarray]
                                            ) -> None:
    images, labels = source
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (mini / name).write_bytes(gzip.decompress((mini / f"{name}.gz").read_bytes()))
        (mini / f"{name}.gz").unlink()
    assert make_context(tmp_path, mini).load_dataset("mnist", {"val_size": "10"}).split_sizes()["test"] == 2000
    write_gz(mini / "train-labels-idx1-ubyte.gz", labels[:7999])
    with pytest.raises(UserError, match="8000 images but .* 7999 labels"):
        make_context(tmp_path, mini).load_dataset("mnist")
    (mini / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="lacks the MNIST file"):
        make_context(tmp_path, mini).load_dataset("mnist")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        monkeypatch.setenv("XFERBENCH_MIRROR", srv.base_url + "/")
        monkeypatch.setenv("XFERBENCH_CACHE_DIR", str(tmp_path / "cache"))
        yield srv


def test_download_accepts_canonical_content_and_rejects_foreign_files(
        tmp_path: Path, server: FixtureServer, source: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = source
    # 60000 images: the right shape and count, so train-images (no published content MD5) is pinned.
    server.files["train-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(np.tile(images, (6, 1, 1))), 1)
    server.files["train-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.tile(labels, 6)), 1)
    server.files["t10k-images-idx3-ubyte.gz"] = T10K_IMAGES.read_bytes()
    server.files["t10k-labels-idx1-ubyte.gz"] = T10K_LABELS.read_bytes()
    ctx = make_context(tmp_path, None)
    with pytest.raises(UserError) as info:
        ctx.load_dataset("mnist")
    assert "train-labels-idx1-ubyte.gz" in str(info.value) and "not the canonical MNIST" in str(info.value)
    downloads = tmp_path / "cache" / "downloads"
    assert (downloads / "train-images-idx3-ubyte.gz").is_file()
    assert not (downloads / "train-labels-idx1-ubyte.gz").exists()  # deleted, never trusted
    pins = json.loads((tmp_path / "cache" / "datasets" / "mnist" / "pins.json").read_text())
    assert set(pins) == {"train-images-idx3-ubyte.gz"}

    # The real test files are accepted through the fetcher's import path (--from FILE).
    fetcher = ctx.catalog.datasets.resolve("mnist")[0].load_fetcher()
    spec_opts = ctx.catalog.datasets.resolve("mnist")[0].validate({})
    for path in (T10K_IMAGES, T10K_LABELS):
        assert fetcher(None, spec_opts, ctx, path).is_file()
    assert {p.name for p in downloads.glob("t10k-*")} == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    with pytest.raises(UserError, match="is not an MNIST file"):
        fetcher(None, spec_opts, ctx, tmp_path / "mnist.npz")
