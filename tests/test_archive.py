"""Tests for xferbench.archive.safe_extract."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from xferbench import archive as archive_module
from xferbench.archive import COMPLETE_MARKER, UnsafeArchive, safe_extract
from xferbench.errors import UserError

# --------------------------------------------------------------------------- builders
# Members are (name, kind, payload): kind "file" (payload = bytes), "dir", "symlink"/"hardlink"
# (payload = target), "chr" (a character device).


def _tar(path: Path, members: list[tuple[str, str, bytes | str]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                data = io.BytesIO(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(payload)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = str(payload)
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info, data)
    return path


def _zip(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, payload in members:
            info = zipfile.ZipInfo(name.rstrip("/") + "/" if kind == "dir" else name)
            info.create_system = 3
            if kind == "file":
                info.external_attr = (stat.S_IFREG | 0o644) << 16
            elif kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
            elif kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            elif kind == "chr":
                info.external_attr = (stat.S_IFCHR | 0o644) << 16
            zf.writestr(info, payload)
    return path


GOOD = [
    ("top", "dir", b""),
    ("top/a.txt", "file", b"alpha"),
    ("top/sub/b.bin", "file", bytes(range(256))),
    ("top/link-to-a", "symlink", "a.txt"),
]


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------- good archives


@pytest.mark.parametrize("suffix", [".tgz", ".tar.gz", ".tar"])
def test_good_tar_extracts(tmp_path: Path, suffix: str) -> None:
    archive = _tar(tmp_path / f"good{suffix}", GOOD, mode="w" if suffix == ".tar" else "w:gz")
    dest = tmp_path / "out" / "dest"

    paths = safe_extract(archive, dest)
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert (dest / "top" / "link-to-a").is_symlink()
    assert (dest / "top" / "link-to-a").read_bytes() == b"alpha"
    assert (dest / COMPLETE_MARKER).is_file()
    assert paths == sorted(dest / p for p in ["top", "top/a.txt", "top/sub", "top/sub/b.bin", "top/link-to-a"])
    # Nothing left over next to dest.
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["dest"]


def test_good_zip_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "good.zip", [m for m in GOOD if m[1] != "symlink"])
    dest = tmp_path / "dest"
    paths = safe_extract(archive, dest)
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert paths == sorted(dest / p for p in ["top", "top/a.txt", "top/sub", "top/sub/b.bin"])


def test_tar_hardlink_inside_is_allowed(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "hl.tgz", [("a.txt", "file", b"alpha"), ("b.txt", "hardlink", "a.txt")])
    dest = tmp_path / "dest"
    safe_extract(archive, dest)
    assert (dest / "b.txt").read_bytes() == b"alpha"


def test_completed_dest_returns_without_reading_the_archive(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "good.tgz", GOOD)
    dest = tmp_path / "dest"
    first = safe_extract(archive, dest)
    archive.unlink()
    assert safe_extract(archive, dest) == first


def test_empty_dest_dir_is_filled(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    safe_extract(_zip(tmp_path / "good.zip", [("a.txt", "file", b"alpha")]), dest)
    assert (dest / "a.txt").read_bytes() == b"alpha"


def test_incomplete_dest_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "leftover").write_text("mine")
    with pytest.raises(UserError, match=COMPLETE_MARKER):
        safe_extract(_zip(tmp_path / "good.zip", [("a.txt", "file", b"alpha")]), dest)
    assert _all_files(dest) == {"leftover"}


def test_corrupt_archive_is_user_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(UserError, match="cannot read archive"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_missing_archive_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        safe_extract(tmp_path / "nope.tgz", tmp_path / "dest")


# --------------------------------------------------------------------------- hostile archives


def _hostile_cases(tmp_path: Path) -> dict[str, tuple[list[tuple[str, str, bytes | str]], str]]:
    outside = tmp_path / "abs-target"
    return {
        "dotdot": ([("ok.txt", "file", b"fine"), ("../evil", "file", b"pwned")], "../evil"),
        "nested-dotdot": ([("a/../../evil", "file", b"pwned")], "a/../../evil"),
        "absolute": ([("ok.txt", "file", b"fine"), (str(outside), "file", b"pwned")], str(outside)),
        "symlink-etc": ([("etc", "symlink", "/etc")], "etc"),
        "symlink-up": ([("d", "dir", b""), ("d/up", "symlink", "../../..")], "d/up"),
        "device": ([("null", "chr", b"")], "null"),
        # Each link is inside when defined; p/B then redirects p/A to dest/.. .
        "symlink-redirected": (
            [("p", "dir", b""), ("p/A", "symlink", "B/.."), ("p/B", "symlink", ".."), ("x", "file", b"")],
            "p/A",
        ),
    }


@pytest.fixture
def forbid_extraction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if extraction even starts: a hostile archive must be rejected up front."""

    def forbidden(*args: object) -> None:
        raise AssertionError("extraction started before the archive was rejected")

    monkeypatch.setattr(archive_module, "_extract", forbidden)


def _assert_nothing_written(tmp_path: Path, archive: Path) -> None:
    # Only the archive itself and the (empty) parent of dest may exist.
    assert _all_files(tmp_path) == {archive.name, "out"}
    assert not (tmp_path / "abs-target").exists()


HOSTILE = ["dotdot", "nested-dotdot", "absolute", "symlink-etc", "symlink-up", "device", "symlink-redirected"]


@pytest.mark.usefixtures("forbid_extraction")
@pytest.mark.parametrize("case", HOSTILE)
@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_hostile_archive_is_refused_and_writes_nothing(tmp_path: Path, case: str, fmt: str) -> None:
    members, bad_name = _hostile_cases(tmp_path)[case]
    archive = _tar(tmp_path / "evil.tgz", members) if fmt == "tgz" else _zip(tmp_path / "evil.zip", members)
    (tmp_path / "out").mkdir()

    with pytest.raises(UnsafeArchive) as info:
        safe_extract(archive, tmp_path / "out" / "dest")
    message = str(info.value)
    assert repr(bad_name) in message
    assert "\n" not in message
    _assert_nothing_written(tmp_path, archive)


@pytest.mark.usefixtures("forbid_extraction")
def test_tar_hardlink_outside_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "evil.tgz", [("passwd", "hardlink", "../../etc/passwd")])
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchive, match="'passwd'"):
        safe_extract(archive, tmp_path / "out" / "dest")
    _assert_nothing_written(tmp_path, archive)


@pytest.mark.usefixtures("forbid_extraction")
def test_tar_write_through_inside_symlink_chain_is_refused(tmp_path: Path) -> None:
    # Each link alone stays inside; together, p/A -> p/B/.. -> (root)/.. leaves the destination.
    members: list[tuple[str, str, bytes | str]] = [
        ("p", "dir", b""),
        ("p/A", "symlink", "B/.."),
        ("p/B", "symlink", ".."),
        ("p/A/evil", "file", b"pwned"),
    ]
    archive = _tar(tmp_path / "evil.tgz", members)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchive, match="p/A"):
        safe_extract(archive, tmp_path / "out" / "dest")
    _assert_nothing_written(tmp_path, archive)


@pytest.mark.usefixtures("forbid_extraction")
def test_tar_file_written_through_symlink_to_outside_is_refused(tmp_path: Path) -> None:
    # A link to a sibling of dest, then a file through it: the classic two-step escape.
    members: list[tuple[str, str, bytes | str]] = [("sib", "symlink", "../sibling"), ("sib/evil", "file", b"x")]
    archive = _tar(tmp_path / "evil.tgz", members)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchive, match="'sib'"):
        safe_extract(archive, tmp_path / "out" / "dest")
    _assert_nothing_written(tmp_path, archive)


@pytest.mark.parametrize("case", ["dotdot", "symlink-etc", "symlink-up", "device", "chain"])
def test_tar_data_filter_backs_up_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    # With the up-front checks switched off, tarfile's "data" filter must still stop the escape.
    monkeypatch.setattr(archive_module, "_validate", lambda members: None)
    if case == "chain":
        members: list[tuple[str, str, bytes | str]] = [
            ("p", "dir", b""),
            ("p/A", "symlink", "B/.."),
            ("p/B", "symlink", ".."),
            ("p/A/evil", "file", b"pwned"),
        ]
    else:
        members = _hostile_cases(tmp_path)[case][0]
    archive = _tar(tmp_path / "evil.tgz", members)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchive):
        safe_extract(archive, tmp_path / "out" / "dest")
    _assert_nothing_written(tmp_path, archive)


@pytest.mark.usefixtures("forbid_extraction")
def test_tar_write_through_link_that_is_later_made_safe_is_refused(tmp_path: Path) -> None:
    # When p/L is written, p/L -> p/B/../evil with p/B -> .. lands in dest/../evil; redefining p/B
    # afterwards makes the final set of links look harmless, so each write must be checked in order.
    members: list[tuple[str, str, bytes | str]] = [
        ("p", "dir", b""),
        ("p/L", "symlink", "B/../evil"),
        ("p/B", "symlink", ".."),
        ("p/L", "file", b"pwned"),
        ("p/B", "symlink", "."),
    ]
    archive = _tar(tmp_path / "evil.tgz", members)
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchive, match="'p/L' would be written outside"):
        safe_extract(archive, tmp_path / "out" / "dest")
    _assert_nothing_written(tmp_path, archive)
