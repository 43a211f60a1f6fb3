"""``folder:<path>`` through the public RunContext.load_dataset, on real photos and on broken files."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xferbench.context import RunContext
from xferbench.errors import OptionError, UserError
from xferbench.imagefiles import check_image
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XFERBENCH_SHARED_DATA") or REPO.parent / "shared" / "data")
MINI = SHARED / "flower_photos_mini"
FLOWER_CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]

needs_mini = pytest.mark.skipif(not MINI.is_dir(), reason=f"real data not found at {MINI}")


def tf_split(name: str, test_pct: float = 10, val_pct: float = 10) -> str:
    """TensorFlow retrain.py's rule, written out here independently of xferbench.splits."""
    max_num = 2**27 - 1
    hashed = hashlib.sha1(re.sub(r"_nohash_.*$", "", name).encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (max_num + 1)) * (100.0 / max_num)
    return "val" if percentage < val_pct else "test" if percentage < test_pct + val_pct else "train"


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp_path / "cache", progress=Progress(quiet=True))


def jpeg_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A noisy JPEG, so its entropy-coded data is long enough to damage in the middle."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def name_in_split(prefix: str, split: str) -> str:
    return next(f"{prefix}{i}.jpg" for i in range(10_000) if tf_split(f"{prefix}{i}.jpg") == split)


# ----------------------------------------------------------------------------- real photos


@needs_mini
@pytest.mark.realdata
def test_real_flowers_classes_counts_and_split_rule(context: RunContext) -> None:
    ds = context.load_dataset(f"folder:{MINI}")
    assert ds.class_names == FLOWER_CLASSES
    assert len(ds.examples) == 500
    for label, cls in enumerate(FLOWER_CLASSES):
        mine = [ex for ex in ds.examples if ex.label == label]
        assert len(mine) == 100
        assert all(ex.key.startswith(cls + "/") for ex in mine)
    for ex in ds.examples:
        assert ex.split == tf_split(ex.key.rsplit("/", 1)[1]), ex.key
    assert set(ds.split_sizes().values()) != {0} and all(ds.split_sizes().values())
    assert ds.skipped_files == {}
    first = ds.examples[0]
    assert ds.read(first) == (MINI / first.key).read_bytes()
    assert ds.root == MINI.resolve() or ds.root == Path(os.path.abspath(MINI))

    again = context.load_dataset(f"folder:{MINI}")  # now from the check cache
    assert [(e.key, e.label, e.split) for e in again.examples] == [(e.key, e.label, e.split) for e in ds.examples]


@needs_mini
@pytest.mark.realdata
def test_real_duplicate_across_splits_is_reported(context: RunContext) -> None:
    # flower_photos really holds this byte-identical pair; the hash rule puts them in different splits.
    a, b = "sunflowers/14889392928_9742aed45b_m.jpg", "sunflowers/15066430311_fb57fa92b0_m.jpg"
    assert (MINI / a).read_bytes() == (MINI / b).read_bytes()
    ds = context.load_dataset(f"folder:{MINI}")
    leaks = [w for w in ds.warnings if "different splits" in w]
    assert len(leaks) == 1 and a in leaks[0] and b in leaks[0]


@needs_mini
@pytest.mark.realdata
def test_adding_and_breaking_files_moves_no_other_image(context: RunContext, tmp_path: Path) -> None:
    copy = tmp_path / "flowers"
    for cls in ("daisy", "roses"):
        (copy / cls).mkdir(parents=True)
        for src in sorted((MINI / cls).iterdir())[:30]:
            (copy / cls / src.name).symlink_to(src)
    before = {e.key: e.split for e in context.load_dataset(f"folder:{copy}").examples}

    extra = sorted((MINI / "tulips").iterdir())[0]
    shutil.copy(extra, copy / "daisy" / "new_photo.jpg")
    (copy / "roses" / "broken.jpg").write_bytes(extra.read_bytes()[:500])
    after = context.load_dataset(f"folder:{copy}")
    splits = {e.key: e.split for e in after.examples}
    assert {k: splits[k] for k in before} == before
    assert set(splits) - set(before) == {"daisy/new_photo.jpg"}
    assert after.skipped_files == {"corrupt": ["roses/broken.jpg"]}


# ----------------------------------------------------------------------------- broken input


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    good, bad, empty = root / "good", root / "bad", root / "empty"
    for d in (good, bad, empty):
        d.mkdir(parents=True)
    for i in range(12):
        (good / f"g{i:02d}.jpg").write_bytes(jpeg_bytes(i))
    (good / "upper.JPEG").write_bytes(jpeg_bytes(100))
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, "PNG")
    (good / "small.Png").write_bytes(png.getvalue())
    # Bytes after a complete JPEG are ignored by every decoder, so this one is usable.
    (good / "tail.jpg").write_bytes(jpeg_bytes(101) + b"garbage" * 50)
    nested = good / "more"
    nested.mkdir()
    (nested / "deep.jpg").write_bytes(jpeg_bytes(102))

    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.png").write_text("this is not a picture\n")
    (bad / "tiff.jpg").write_bytes(b"II*\0" + b"\0" * 100)  # a format no backbone decodes
    whole = jpeg_bytes(200)
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    middle = len(whole) // 2
    (bad / "garbled.jpg").write_bytes(whole[:middle] + b"\xff" * 400 + whole[middle + 400:])
    (bad / "headless.jpg").write_bytes(b"\xff\xd8\xff" + bytes(300))  # JPEG magic, nothing valid after
    (bad / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    # Running as root, chmod 000 does not stop reads; a FIFO and a dangling link are real
    # entries that cannot be read as files, whoever runs the tests.
    os.mkfifo(bad / "fifo.jpg")
    (bad / "dangling.jpg").symlink_to(bad / "no-such-file.jpg")
    (bad / "loop.jpg").symlink_to(bad / "loop.jpg")
    (bad / "up").symlink_to(root)  # a folder link back up the tree
    (bad / ".hidden.jpg").write_text("hidden files are not looked at")
    (bad / ".hidden_dir").mkdir()
    (bad / ".hidden_dir" / "x.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image extension")
    (root / "LICENSE.txt").write_text("files beside the class folders are ignored")
    (root / "__MACOSX" / "good").mkdir(parents=True)  # macOS zip residue is not a class
    (root / "__MACOSX" / "good" / "g00.jpg").write_bytes(b"")
    return root


EXPECTED_SKIPS = {
    "corrupt": ["bad/garbled.jpg", "bad/headless.jpg", "bad/truncated.jpg"],
    "not_an_image": ["bad/text.png", "bad/tiff.jpg"],
    "symlink_loop": ["bad/loop.jpg", "bad/up"],
    "too_large": ["bad/bomb.png"],
    "unreadable": ["bad/dangling.jpg", "bad/fifo.jpg"],
    "zero_byte": ["bad/zero.jpg"],
}


def test_bad_files_are_skipped_and_counted(context: RunContext, bad_folder: Path) -> None:
    ds = context.load_dataset(f"folder:{bad_folder}")
    assert ds.skipped_files == EXPECTED_SKIPS
    assert ds.skipped_counts() == {k: len(v) for k, v in EXPECTED_SKIPS.items()}
    assert ds.class_names == ["good"]  # "bad" has no usable image, "empty" none at all
    keys = sorted(e.key for e in ds.examples)
    assert keys == sorted([f"good/g{i:02d}.jpg" for i in range(12)]
                          + ["good/upper.JPEG", "good/small.Png", "good/tail.jpg", "good/more/deep.jpg"])
    text = "\n".join(ds.warnings)
    assert "'bad' is left out: all 11 image file(s) in it were skipped" in text
    assert "'empty' is left out: it holds no image files" in text
    assert "only one class" in text
    assert "__MACOSX" not in text
    assert "ignored 1 file(s) without an image extension" in text and "bad/notes.txt" in text
    for ex in ds.examples:
        assert ex.split == tf_split(ex.key.rsplit("/", 1)[1])


def test_check_image_reasons_directly(bad_folder: Path) -> None:
    bad = bad_folder / "bad"
    assert check_image(bad / "zero.jpg") == "zero_byte"
    assert check_image(bad / "loop.jpg") == "symlink_loop"
    assert check_image(bad / "fifo.jpg") == "unreadable"
    assert check_image(bad / "garbled.jpg") == "corrupt"
    assert check_image(bad_folder / "good" / "g00.jpg") is None
    # The limit is an option: a 64x48 photo is "too large" under a 1000-pixel cap.
    assert check_image(bad_folder / "good" / "g00.jpg", max_pixels=1000) == "too_large"
    # Above Pillow's warning threshold but below its hard limit: our cap decides.
    (bad / "big.png").write_bytes(png_header_only(10_000, 10_000))
    with pytest.warns(Image.DecompressionBombWarning):
        assert check_image(bad / "big.png") == "too_large"


def test_permission_error_on_read_is_unreadable(bad_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What chmod 000 does for a normal user (root is never refused, hence the stand-in).
    locked = bad_folder / "good" / "g01.jpg"
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert check_image(locked) == "unreadable"
    assert check_image(bad_folder / "good" / "g02.jpg") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_without_permission(context: RunContext, tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.jpg").write_bytes(jpeg_bytes(1))
    locked = root / "a" / "locked.jpg"
    locked.write_bytes(jpeg_bytes(2))
    locked.chmod(0)
    ds = context.load_dataset(f"folder:{root}")
    assert ds.skipped_files == {"unreadable": ["a/locked.jpg"]}


def test_max_pixels_option(context: RunContext, bad_folder: Path) -> None:
    ds = context.load_dataset(f"folder:{bad_folder}", {"max_pixels": "1000"})
    assert "good/small.Png" in {e.key for e in ds.examples}  # 64 pixels
    assert "good/g00.jpg" in ds.skipped_files["too_large"]


def test_duplicates_across_splits_and_classes_warn(context: RunContext, tmp_path: Path) -> None:
    root = tmp_path / "dups"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    photo = jpeg_bytes(7)
    train_name, test_name = name_in_split("c", "train"), name_in_split("c", "test")
    (root / "cats" / train_name).write_bytes(photo)
    (root / "cats" / test_name).write_bytes(photo)
    other = jpeg_bytes(8)
    (root / "cats" / "x_nohash_1.jpg").write_bytes(other)
    (root / "dogs" / "x_nohash_2.jpg").write_bytes(other)  # same split by _nohash_, different class
    for i in range(30):
        (root / "dogs" / f"d{i}.jpg").write_bytes(jpeg_bytes(1000 + i))
    ds = context.load_dataset(f"folder:{root}")
    leak = [w for w in ds.warnings if "different splits" in w]
    assert len(leak) == 1 and f"cats/{train_name}" in leak[0] and f"cats/{test_name}" in leak[0]
    clash = [w for w in ds.warnings if "different labels" in w]
    assert len(clash) == 1 and "cats/x_nohash_1.jpg" in clash[0] and "dogs/x_nohash_2.jpg" in clash[0]


def test_class_too_small_for_a_split_warns(context: RunContext, tmp_path: Path) -> None:
    root = tmp_path / "small"
    (root / "big").mkdir(parents=True)
    (root / "tiny").mkdir()
    for i in range(40):
        (root / "big" / f"b{i}.jpg").write_bytes(jpeg_bytes(i))
    (root / "tiny" / name_in_split("t", "train")).write_bytes(jpeg_bytes(99))
    ds = context.load_dataset(f"folder:{root}")
    assert ds.class_names == ["big", "tiny"]
    assert any("'tiny' has 1 image(s) but none in the test split" in w for w in ds.warnings)
    assert not any("'big'" in w for w in ds.warnings)


def test_check_cache_skips_decoding_and_notices_changes(context: RunContext, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "c"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(5):
        (root / "a" / f"a{i}.jpg").write_bytes(jpeg_bytes(i))
        (root / "b" / f"b{i}.jpg").write_bytes(jpeg_bytes(10 + i))
    first = context.load_dataset(f"folder:{root}")
    assert first.skipped_files == {}

    import xferbench.imagefiles as imagefiles

    decoded: list[int] = []
    real = imagefiles._decode_check
    monkeypatch.setattr(imagefiles, "_decode_check", lambda data, mp: decoded.append(1) or real(data, mp))
    second = context.load_dataset(f"folder:{root}")
    assert decoded == [] and len(second.examples) == 10

    target = root / "a" / "a3.jpg"
    target.write_bytes(target.read_bytes()[:300])  # new size and mtime: checked again
    third = context.load_dataset(f"folder:{root}")
    assert decoded == [1]
    assert third.skipped_files == {"corrupt": ["a/a3.jpg"]}


def test_missing_or_wrong_paths_are_one_line_user_errors(context: RunContext, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist") as info:
        context.load_dataset(f"folder:{tmp_path / 'nowhere'}")
    assert "\n" not in str(info.value)
    a_file = tmp_path / "photos.tgz"
    a_file.write_bytes(b"x")
    with pytest.raises(UserError, match="is not a folder"):
        context.load_dataset(f"folder:{a_file}")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(jpeg_bytes(0))
    with pytest.raises(UserError, match="no class subfolders"):
        context.load_dataset(f"folder:{tmp_path / 'flat'}")
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no usable images"):
        context.load_dataset(f"folder:{tmp_path / 'hollow'}")
    with pytest.raises(UserError, match="needs an argument"):
        context.load_dataset("folder")


def test_split_options(context: RunContext, tmp_path: Path) -> None:
    root = tmp_path / "s"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(25):
            (root / cls / f"{cls}{i}.jpg").write_bytes(jpeg_bytes(i + (0 if cls == "a" else 50)))
    ds = context.load_dataset(f"folder:{root}", {"test_pct": "30", "val_pct": "0"})
    for ex in ds.examples:
        assert ex.split == tf_split(ex.key.rsplit("/", 1)[1], 30, 0)
    assert ds.split_sizes()["val"] == 0
    with pytest.raises(OptionError):
        context.load_dataset(f"folder:{root}", {"test_pct": "60", "val_pct": "40"})
