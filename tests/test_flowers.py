"""``flowers``: --data-dir, the cache, and downloads from a local HTTP server (resume, bad checksum, bad tar)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import assert_one_line_error
from xferbench.context import RunContext
from xferbench.download import DownloadError
from xferbench.errors import UserError
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

try:
    from support.http_server import FixtureServer
except ImportError:  # tests/ is a package, or pytest runs in importlib mode from the repo root
    from tests.support.http_server import FixtureServer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XFERBENCH_SHARED_DATA") or REPO.parent / "shared" / "data")
MINI = SHARED / "flower_photos_mini"
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
PER_CLASS = 6

pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not MINI.is_dir(), reason=f"real data not found at {MINI}")]


def tf_split(name: str) -> str:
    """retrain.py's rule with 10% val / 10% test, written out independently of xferbench.splits."""
    max_num = 2**27 - 1
    hashed = hashlib.sha1(re.sub(r"_nohash_.*$", "", name).encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (max_num + 1)) * (100.0 / max_num)
    return "val" if percentage < 10 else "test" if percentage < 20 else "train"


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tgz(classes: list[str] = CLASSES, license_file: bool = True, extra: tuple[str, bytes] | None = None) -> bytes:
    """A small flower_photos.tgz laid out like the real one, with real photos from the mini set."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for cls in classes:
            for photo in sorted((MINI / cls).iterdir())[:PER_CLASS]:
                add_bytes(tar, f"flower_photos/{cls}/{photo.name}", photo.read_bytes())
        if license_file:
            add_bytes(tar, "flower_photos/LICENSE.txt", (MINI / "LICENSE.txt").read_bytes())
        if extra is not None:
            add_bytes(tar, *extra)
    return out.getvalue()


GOOD_TGZ = make_tgz() if MINI.is_dir() else b""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FixtureServer]:
    with FixtureServer(files={"flower_photos.tgz": GOOD_TGZ}) as srv:
        monkeypatch.setenv("XFERBENCH_MIRROR", srv.base_url + "/")
        monkeypatch.setenv("XFERBENCH_CACHE_DIR", str(tmp_path / "cache"))
        yield srv


def make_context(tmp_path: Path, data_dir: Path | None = None) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp_path / "cache", data_dir=data_dir,
                      progress=Progress(quiet=True))


def fetcher(ctx: RunContext):  # noqa: ANN201 - the plugin's fetch callable
    spec, _ = ctx.catalog.datasets.resolve("flowers")
    return spec.load_fetcher(), spec.validate({})


def test_download_extract_load_then_offline(tmp_path: Path, server: FixtureServer) -> None:
    ctx = make_context(tmp_path)
    ds = ctx.load_dataset("flowers")
    assert ds.class_names == CLASSES
    assert len(ds.examples) == PER_CLASS * len(CLASSES)
    for ex in ds.examples:
        assert ex.split == tf_split(ex.key.rsplit("/", 1)[1])
    root = tmp_path / "cache" / "datasets" / "flower_photos" / "flower_photos"
    assert ds.root == root
    assert (root / "LICENSE.txt").read_bytes() == (MINI / "LICENSE.txt").read_bytes()
    assert any("not the complete flower_photos set" in w for w in ds.warnings)
    assert not any("LICENSE" in w for w in ds.warnings)

    server.files.clear()  # everything now comes from the cache
    hits = len(server.hits)
    again = make_context(tmp_path).load_dataset("flowers:daisy,roses")
    assert again.class_names == ["daisy", "roses"] and len(again.examples) == 2 * PER_CLASS
    assert len(server.hits) == hits


def test_interrupted_download_resumes(tmp_path: Path, server: FixtureServer) -> None:
    ctx = make_context(tmp_path)
    server.truncate_after = len(GOOD_TGZ) // 3
    with pytest.raises(DownloadError, match="interrupted") as info:
        ctx.load_dataset("flowers")
    assert "\n" not in str(info.value)
    part = tmp_path / "cache" / "downloads" / "flower_photos.tgz.part"
    assert part.stat().st_size == len(GOOD_TGZ) // 3
    server.truncate_after = None
    ds = ctx.load_dataset("flowers")
    assert len(ds.examples) == PER_CLASS * len(CLASSES)
    assert server.hits[-1].range == f"bytes={len(GOOD_TGZ) // 3}-" and server.hits[-1].status == 206


def test_changed_upstream_file_is_a_checksum_mismatch(tmp_path: Path, server: FixtureServer) -> None:
    import shutil

    ctx = make_context(tmp_path)
    fetch, opts = fetcher(ctx)
    root = fetch(None, opts, ctx, None)
    assert sorted(p.name for p in root.iterdir()) == ["LICENSE.txt", *CLASSES]
    # The user clears the cache; upstream now serves different bytes than the pinned ones.
    shutil.rmtree(tmp_path / "cache" / "datasets")
    (tmp_path / "cache" / "downloads" / "flower_photos.tgz").unlink()
    server.files["flower_photos.tgz"] = make_tgz(classes=CLASSES, extra=("flower_photos/extra.txt", b"x"))
    with pytest.raises(UserError, match="sha256") as info:
        ctx.load_dataset("flowers")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "cache" / "downloads" / "flower_photos.tgz").exists()
    assert not (tmp_path / "cache" / "downloads" / "flower_photos.tgz.part").exists()


@pytest.mark.parametrize("member", ["../escaped.txt", "flower_photos/../../escaped.txt", "/tmp/escaped.txt"])
def test_path_traversal_archive_is_refused(tmp_path: Path, server: FixtureServer, member: str) -> None:
    server.files["flower_photos.tgz"] = make_tgz(extra=(member, b"owned"))
    before = set(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="not a plain file or folder under flower_photos") as info:
        make_context(tmp_path).load_dataset("flowers")
    assert member in str(info.value)
    created = {p for p in set(tmp_path.rglob("*")) - before if p.is_file()}
    assert not any("escaped" in p.name for p in created)
    assert not Path("/tmp/escaped.txt").exists()
    assert not (tmp_path / "cache" / "downloads" / "flower_photos.tgz").exists()
    assert not (tmp_path / "cache" / "datasets" / "flower_photos").exists()


def test_archive_without_a_class_or_license_is_refused(tmp_path: Path, server: FixtureServer) -> None:
    server.files["flower_photos.tgz"] = make_tgz(classes=CLASSES[:4])
    with pytest.raises(UserError, match="lacks flower_photos/tulips"):
        make_context(tmp_path).load_dataset("flowers")
    server.files["flower_photos.tgz"] = make_tgz(license_file=False)
    with pytest.raises(UserError, match="lacks flower_photos/LICENSE.txt"):
        make_context(tmp_path).load_dataset("flowers")


def test_import_from_a_local_archive(tmp_path: Path) -> None:
    source = tmp_path / "flower_photos.tgz"
    source.write_bytes(GOOD_TGZ)
    ctx = make_context(tmp_path)
    fetch, opts = fetcher(ctx)
    root = fetch(None, opts, ctx, source)
    assert root == tmp_path / "cache" / "datasets" / "flower_photos" / "flower_photos"
    assert len(ctx.load_dataset("flowers").examples) == PER_CLASS * len(CLASSES)

    bad = tmp_path / "other.tgz"
    bad.write_bytes(make_tgz(extra=("../x", b"x")))
    with pytest.raises(UserError, match="not a plain file"):
        fetch(None, opts, make_context(tmp_path / "second"), bad)


def test_import_of_an_archive_without_license_names_the_users_file(tmp_path: Path, cli) -> None:
    source = tmp_path / "my_flowers.tgz"
    source.write_bytes(make_tgz(license_file=False))
    done = cli("fetch", "flowers", "--from", str(source))
    line = assert_one_line_error(done, "lacks flower_photos/LICENSE.txt")
    assert str(source) in line and ".tmp-" not in line and "downloads" not in line, line


def test_data_dir_forms(tmp_path: Path) -> None:
    ds = make_context(tmp_path, data_dir=MINI).load_dataset("flowers")
    assert ds.class_names == CLASSES and len(ds.examples) == 500
    parent = tmp_path / "downloads"
    parent.mkdir()
    (parent / "flower_photos").symlink_to(MINI)
    same = make_context(tmp_path, data_dir=parent).load_dataset("flowers")
    assert [(e.key, e.split) for e in same.examples] == [(e.key, e.split) for e in ds.examples]
    with pytest.raises(UserError, match="holds neither the flower class folders"):
        make_context(tmp_path, data_dir=tmp_path / "cache").load_dataset("flowers")
