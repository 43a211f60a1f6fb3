"""Tests for xferbench.download and xferbench.atomic against a real local HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xferbench.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from xferbench.download import (
    MIRROR_ENV,
    Artifact,
    ChecksumMismatch,
    DownloadError,
    Manifest,
    fetch,
    import_file,
    mirror_urls,
    sha256_file,
)
from xferbench.errors import UserError

try:
    from support.http_server import FixtureServer
except ImportError:  # tests/ is a package, or pytest runs in importlib mode from the repo root
    from tests.support.http_server import FixtureServer

NAME = "model.bin"
PAYLOAD = os.urandom(300 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer(files={NAME: PAYLOAD, "m2/" + NAME: PAYLOAD}) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{NAME}"


def _downloads(cache: Path) -> Path:
    return cache / "downloads"


def test_good_download_pins_and_second_fetch_stays_offline(server: FixtureServer, tmp_path: Path) -> None:
    art = Artifact(NAME, (server.url(NAME),))
    path = fetch(art, tmp_path, progress=False)

    assert path == tmp_path / "downloads" / NAME
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "downloads" / (NAME + ".part")).exists()
    entry = json.loads((tmp_path / "manifest.json").read_text())["artifacts"][NAME]
    assert entry["sha256"] == DIGEST
    assert entry["size"] == len(PAYLOAD)
    assert entry["source"] == server.url(NAME)
    assert entry["pinned"]
    assert len(server.hits) == 1

    assert fetch(art, tmp_path, progress=False) == path
    assert len(server.hits) == 1


def test_progress_bar_goes_to_stderr(server: FixtureServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fetch(Artifact(NAME, (server.url(NAME),)), tmp_path, progress=True)
    out, _err = capsys.readouterr()
    assert out == ""


def test_truncated_download_keeps_part_and_resumes(server: FixtureServer, tmp_path: Path) -> None:
    art = Artifact(NAME, (server.url(NAME),), sha256=DIGEST)
    part = _downloads(tmp_path) / (NAME + ".part")
    server.truncate_after = 100_000

    with pytest.raises(DownloadError) as info:
        fetch(art, tmp_path, progress=False)
    message = str(info.value)
    assert "interrupted" in message
    assert "resume" in message
    assert "\n" not in message
    assert part.stat().st_size == 100_000
    assert not (_downloads(tmp_path) / NAME).exists()

    server.truncate_after = None
    path = fetch(art, tmp_path, progress=False)
    assert server.hits[-1].range == "bytes=100000-"
    assert server.hits[-1].status == 206
    assert sha256_file(path) == DIGEST
    assert not part.exists()
    assert Manifest(tmp_path).sha256(NAME) == DIGEST


def test_wrong_size_from_server_is_rejected(server: FixtureServer, tmp_path: Path) -> None:
    # The server says the whole file is 5000 bytes; that is a different file, not an interruption.
    server.files["short/" + NAME] = PAYLOAD[:5000]
    art = Artifact(NAME, (server.url("short/" + NAME),), size=len(PAYLOAD))
    with pytest.raises(DownloadError, match=f"5000 bytes but {NAME} should be {len(PAYLOAD)}"):
        fetch(art, tmp_path, progress=False)
    assert sorted(p.name for p in _downloads(tmp_path).iterdir()) == [f".{NAME}.lock"]


def test_server_ignoring_range_restarts_from_scratch(server: FixtureServer, tmp_path: Path) -> None:
    part = _downloads(tmp_path) / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not the start of the file" * 10)
    server.ignore_range = True

    path = fetch(Artifact(NAME, (server.url(NAME),), sha256=DIGEST), tmp_path, progress=False)
    assert server.hits[-1].range is not None
    assert server.hits[-1].status == 200
    assert path.read_bytes() == PAYLOAD


def test_complete_part_is_finished_after_416(server: FixtureServer, tmp_path: Path) -> None:
    part = _downloads(tmp_path) / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)

    path = fetch(Artifact(NAME, (server.url(NAME),), sha256=DIGEST), tmp_path, progress=False)
    assert [h.status for h in server.hits] == [416]
    assert path.read_bytes() == PAYLOAD


def test_oversized_part_is_discarded_after_416(server: FixtureServer, tmp_path: Path) -> None:
    part = _downloads(tmp_path) / (NAME + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD + b"extra")

    path = fetch(Artifact(NAME, (server.url(NAME),)), tmp_path, progress=False)
    assert [h.status for h in server.hits] == [416, 200]
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_download(server: FixtureServer, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as info:
        fetch(Artifact(NAME, (server.url(NAME),), sha256=wrong), tmp_path, progress=False)
    message = str(info.value)
    assert NAME in message and wrong in message and DIGEST in message
    assert "\n" not in message
    assert list(_downloads(tmp_path).iterdir()) == [_downloads(tmp_path) / f".{NAME}.lock"]
    assert Manifest(tmp_path).get(NAME) is None


def test_expected_sha256_overrides_builtin(server: FixtureServer, tmp_path: Path) -> None:
    art = Artifact(NAME, (server.url(NAME),), sha256=DIGEST)
    with pytest.raises(ChecksumMismatch):
        fetch(art, tmp_path, expected_sha256="f" * 64, progress=False)
    assert fetch(art, tmp_path, expected_sha256=DIGEST.upper(), progress=False).read_bytes() == PAYLOAD


def test_mirror_urls_order(monkeypatch: pytest.MonkeyPatch) -> None:
    art = Artifact("x.zip", ("https://canonical/x.zip", "https://builtin-mirror/x.zip"))
    assert mirror_urls(art) == ["https://canonical/x.zip", "https://builtin-mirror/x.zip"]
    monkeypatch.setenv(MIRROR_ENV, " http://a/, http://b/sub//\nhttp://c ")
    assert mirror_urls(art) == [
        "http://a/x.zip",
        "http://b/sub/x.zip",
        "http://c/x.zip",
        "https://canonical/x.zip",
        "https://builtin-mirror/x.zip",
    ]


def test_env_mirrors_come_first_and_a_404_falls_back(
    server: FixtureServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["m1/" + NAME] = PAYLOAD
    server.not_found.add("m1/" + NAME)
    monkeypatch.setenv(MIRROR_ENV, f"{server.url('m1')},{server.url('m2')}")
    art = Artifact(NAME, (server.url(NAME),))

    fetch(art, tmp_path, progress=False)
    assert server.paths() == ["m1/" + NAME, "m2/" + NAME]
    assert Manifest(tmp_path).get(NAME)["source"] == server.url("m2/" + NAME)


def test_all_urls_failing_gives_actionable_message(server: FixtureServer, tmp_path: Path) -> None:
    art = Artifact(NAME, (server.url("missing/" + NAME), _closed_port_url()))
    with pytest.raises(DownloadError) as info:
        fetch(art, tmp_path, progress=False, timeout=5)
    message = str(info.value)
    assert "2 URL" in message
    assert f"xferbench fetch <backbone or dataset> --from {NAME}" in message
    assert MIRROR_ENV in message
    assert "refused" in message.lower()  # the last error, from the closed port
    assert "\n" not in message
    assert not isinstance(info.value, ChecksumMismatch)


def test_the_hint_names_the_component_to_fetch(server: FixtureServer, tmp_path: Path) -> None:
    art = Artifact(NAME, (server.url("missing/" + NAME),), component="flowers")
    with pytest.raises(DownloadError, match=f"`xferbench fetch flowers --from {NAME}`"):
        fetch(art, tmp_path, progress=False, timeout=5)


def test_verify_rejecting_deletes_and_does_not_pin(server: FixtureServer, tmp_path: Path) -> None:
    seen: list[Path] = []

    def verify(path: Path) -> None:
        seen.append(path)
        assert path.read_bytes() == PAYLOAD
        raise UserError("not a real model file")

    with pytest.raises(UserError, match="not a real model file"):
        fetch(Artifact(NAME, (server.url(NAME),)), tmp_path, verify=verify, progress=False)
    assert seen == [_downloads(tmp_path) / NAME]
    assert not (_downloads(tmp_path) / NAME).exists()
    assert not (_downloads(tmp_path) / (NAME + ".part")).exists()
    assert Manifest(tmp_path).get(NAME) is None


def test_tampered_cached_file_is_reported_without_network(server: FixtureServer, tmp_path: Path) -> None:
    art = Artifact(NAME, (server.url(NAME),))
    path = fetch(art, tmp_path, progress=False)
    path.write_bytes(b"tampered" + PAYLOAD[8:])
    hits = len(server.hits)

    with pytest.raises(ChecksumMismatch) as info:
        fetch(art, tmp_path, progress=False)
    message = str(info.value)
    assert DIGEST in message and sha256_file(path) in message
    assert "delete" in message and str(path) in message
    assert len(server.hits) == hits


def test_unpinned_cached_file_is_verified_and_pinned(server: FixtureServer, tmp_path: Path) -> None:
    # What a crash between moving the file into place and pinning it leaves behind.
    target = _downloads(tmp_path) / NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    calls: list[Path] = []

    assert fetch(Artifact(NAME, (server.url(NAME),)), tmp_path, verify=calls.append, progress=False) == target
    assert calls == [target]
    assert server.hits == []
    assert Manifest(tmp_path).sha256(NAME) == DIGEST


def test_cached_file_matching_builtin_digest_gets_pinned(server: FixtureServer, tmp_path: Path) -> None:
    target = _downloads(tmp_path) / NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    assert fetch(Artifact(NAME, (server.url(NAME),), sha256=DIGEST), tmp_path, progress=False) == target
    assert server.hits == []
    assert Manifest(tmp_path).sha256(NAME) == DIGEST


def test_import_file(tmp_path: Path) -> None:
    src = tmp_path / "my-copy.bin"
    src.write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    art = Artifact(NAME, ("http://127.0.0.1:9/never-used",))

    path = import_file(art, src, cache)
    assert path == _downloads(cache) / NAME
    assert path.read_bytes() == PAYLOAD
    entry = Manifest(cache).get(NAME)
    assert entry["sha256"] == DIGEST and entry["source"] == str(src.resolve())
    # Now pinned: fetch uses it without a network.
    assert fetch(art, cache, progress=False) == path


def test_import_missing_source_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        import_file(Artifact(NAME, ()), tmp_path / "nope.bin", tmp_path / "cache")


def test_import_rejects_wrong_file_and_keeps_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    good = tmp_path / "good.bin"
    good.write_bytes(PAYLOAD)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"something else")
    art = Artifact(NAME, ())
    path = import_file(art, good, cache)

    with pytest.raises(ChecksumMismatch) as info:
        import_file(art, bad, cache)
    assert "pinned" in str(info.value) and str(bad) in str(info.value)

    def reject(p: Path) -> None:
        assert p.name.endswith(NAME)  # the temp copy keeps the artifact's suffix
        raise UserError("rejected")

    with pytest.raises(UserError, match="rejected"):
        import_file(art, bad, cache, expected_sha256=hashlib.sha256(b"something else").hexdigest(), verify=reject)

    assert path.read_bytes() == PAYLOAD
    assert Manifest(cache).sha256(NAME) == DIGEST
    assert sorted(p.name for p in _downloads(cache).iterdir()) == sorted([NAME, f".{NAME}.lock"])


def test_manifest_missing_and_corrupt(tmp_path: Path) -> None:
    assert Manifest(tmp_path).artifacts == {}
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        Manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"artifacts": []}')
    with pytest.raises(UserError, match="corrupt"):
        Manifest(tmp_path)


def test_concurrent_manifest_writers_keep_every_entry(tmp_path: Path) -> None:
    writers, per_writer = 8, 15
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                Manifest(tmp_path).pin(f"w{w}-{i}", sha256=f"{w:032x}{i:032x}", size=i, source="test")
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = set(Manifest(tmp_path).artifacts)
    assert names == {f"w{w}-{i}" for w in range(writers) for i in range(per_writer)}


def test_manifest_save_merges_a_stale_instance(tmp_path: Path) -> None:
    first = Manifest(tmp_path)
    second = Manifest(tmp_path)
    first.pin("a", sha256="a" * 64, size=1, source="x")
    second.pin("b", sha256="b" * 64, size=2, source="y")
    assert set(Manifest(tmp_path).artifacts) == {"a", "b"}
    second.forget("a")
    second.save()
    assert set(Manifest(tmp_path).artifacts) == {"b"}


def test_artifact_name_must_be_a_plain_file_name() -> None:
    for bad in ("", "..", "a/b", "../x"):
        with pytest.raises(ValueError):
            Artifact(bad, ())


def test_atomic_helpers(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
