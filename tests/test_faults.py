"""Faults that real machines throw, sent for real: a full disk, a read-only cache, a results file that cannot be written.

The small full filesystem and the read-only cache are real mounts made inside a private mount
namespace (``unshare``), so nothing leaks into the machine's mounts even if the test is killed.
Each fault runs the real CLI on real photos with a real ImageNet backbone.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import REPO, assert_one_line_error, shared_data_dir

LAUNCHER = REPO / "tests" / "support" / "fault_launcher.py"
WEIGHTS = shared_data_dir() / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
CLASSES = ("daisy", "roses", "tulips")
PER_CLASS = 40


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 3"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _can_unshare(), reason="no private mount namespace here (unshare -rm)")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """120 real flower photos in 3 classes (a copy in the test's temp dir: small and quick)."""
    root = tmp_path_factory.mktemp("flowers")
    source = shared_data_dir() / "flower_photos_mini"
    for name in CLASSES:
        (root / name).mkdir()
        for photo in sorted((source / name).glob("*.jpg"))[:PER_CLASS]:
            shutil.copyfile(photo, root / name / photo.name)
    return root


def _run_args(photos: Path, output: Path, cache: Path) -> list[str]:
    return ["run", "--backbone", "keras:MobileNet", "--weights", str(WEIGHTS), "--backbone-opt", "alpha=0.25",
            "--backbone-opt", "input_size=128", "--dataset", f"folder:{photos}", "--compare", "transfer",
            "--head", "softmax", "--head-opt", "steps=300", "--shots", "5,all", "--output", str(output),
            "--cache-dir", str(cache)]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO / "tests")}


def _in_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` (bash) in a private mount namespace; its mounts vanish with it."""
    return subprocess.run(["unshare", "-rm", "bash", "-euc", script], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=900)


def _cli(*args: object) -> str:
    return shlex.join([sys.executable, "-m", "xferbench.cli", *map(str, args)])


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["runs"]


def _keep_every_other_entry(cache: Path) -> list[bytes]:
    """Rewrite the cache's one namespace to hold every other entry; all the entries' keys, in order."""
    from xferbench.pack_store import PackStore, list_packs, pack_entries

    (folder,) = (cache / "bottlenecks").iterdir()
    packs = list_packs(folder)
    keys = [bytes(k) for pack in packs for k in pack_entries(pack)["key"].tolist()]
    reader = PackStore(folder)
    kept = [(key, reader.get(key, int(pack_entries(packs[0])["dim"][0]))[0]) for key in keys[1::2]]
    reader.close()
    shutil.rmtree(folder)
    writer = PackStore(folder)
    for key, vector in kept:
        writer.append(key, vector)
    writer.close()
    return keys


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


@needs_mounts
@pytest.mark.slow
@pytest.mark.realdata
def test_full_disk_cache_run_goes_on_warns_once_and_keeps_entries_valid(tmp_path, photos):
    cache = tmp_path / "cache"
    cache.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    first, second = out / "first.json", out / "second.json"
    # 96 KiB: the 120 bottlenecks (256 floats each) take about 130 KiB in a pack, so it fills mid-extraction.
    script = f"""
mount -t tmpfs -o size=96k tmpfs {cache}
set +e
{_cli(*_run_args(photos, first, cache))} 2> {out}/first.err; echo $? > {out}/first.rc
find {cache} -name '.tmp-*' > {out}/temps
{_cli("cache", "verify", "--cache-dir", cache)} > {out}/verify; echo $? > {out}/verify.rc
{_cli(*_run_args(photos, second, cache))} 2> {out}/second.err; echo $? > {out}/second.rc
python -c 'from xferbench.atomic import atomic_write_bytes; atomic_write_bytes("{cache}/weights/big.h5", bytes(1 << 20))' \
  2> {out}/weights.err; echo $? > {out}/weights.rc
find {cache} -name '.tmp-*' >> {out}/temps
"""
    done = _in_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (out / "first.rc").read_text().strip() == "0", (out / "first.err").read_text()
    warning = _warnings((out / "first.err").read_text())
    assert len(warning) == 1, warning  # once, though both --shots runs share the extraction
    print("user sees:", warning[0])
    assert warning[0].startswith(f"warning: the bottleneck cache {cache}/bottlenecks is full (No space left on device;")
    assert "free)" in warning[0] and "--cache-dir" in warning[0]
    rows = _rows(first)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    stored = rows[0]["extracted"] - rows[0]["cache_write_errors"]
    assert rows[0]["cache_write_errors"] > 0 and stored > 0
    assert (out / "temps").read_text() == ""
    verified = (out / "verify").read_text()
    assert (out / "verify.rc").read_text().strip() == "0", verified
    assert f"{stored} entries checked in 1 namespaces, {stored} ok, 0 corrupt, 0 temp files" in verified
    # The entries that made it are used; the rest is computed again; same results.
    again = _rows(second)
    assert again[0]["cache_hits"] == stored
    assert again[0]["cache_write_errors"] == again[0]["extracted"]
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    # Any other cache write on a full disk: one line naming the folder and what to do.
    assert (out / "weights.rc").read_text().strip() == "1"
    message = (out / "weights.err").read_text().strip().splitlines()[-1]
    print("user sees:", message)
    assert f"cannot write {cache}/weights/big.h5: No space left on device (" in message
    assert f"free in {cache}/weights); free some space there or write elsewhere (the cache: --cache-dir DIR" in message


@needs_mounts
@pytest.mark.slow
@pytest.mark.realdata
def test_read_only_cache_uses_entries_computes_the_rest_and_succeeds(tmp_path, photos):
    cache = tmp_path / "cache"
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    done = subprocess.run([sys.executable, "-m", "xferbench.cli", *_run_args(photos, first, cache)],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    entries = _keep_every_other_entry(cache)  # a shared cache that holds only some of the images
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    script = f"""
mount --bind {cache} {cache} && mount -o remount,bind,ro {cache}
mount --bind {empty} {empty} && mount -o remount,bind,ro {empty}
touch {cache}/probe 2>/dev/null && exit 5
set +e
{_cli(*_run_args(photos, second, cache))} 2> {tmp_path}/second.err; echo $? > {tmp_path}/second.rc
{_cli("run", "--backbone", "lenet5", "--dataset", "digits:5-9", "--quiet", "--cache-dir", empty, "--output", tmp_path / "lenet.json", "--quiet")} 2> {tmp_path}/lenet.err
echo $? > {tmp_path}/lenet.rc
"""
    done = _in_namespace(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "second.rc").read_text().strip() == "0", (tmp_path / "second.err").read_text()
    warning = _warnings((tmp_path / "second.err").read_text())
    assert len(warning) == 1, warning
    print("user sees:", warning[0])
    assert warning[0] == (f"warning: the bottleneck cache {cache}/bottlenecks is read-only (Read-only file system): "
                          f"cached vectors are used, new ones are computed but not stored; point --cache-dir (or "
                          f"XFERBENCH_CACHE_DIR) at a folder with room to keep them")
    rows, again = _rows(first), _rows(second)
    kept = len(entries) - len(entries[::2])
    assert again[0]["cache_hits"] == kept
    assert again[0]["extracted"] == again[0]["cache_write_errors"] == len(entries[::2])
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before
    # A backbone that must store its weights in a read-only cache: one line, the folder, what to do.
    lenet = subprocess.CompletedProcess([], int((tmp_path / "lenet.rc").read_text()), "",
                                        (tmp_path / "lenet.err").read_text())
    line = assert_one_line_error(lenet, f"cannot create cache folder {empty}/weights/lenet5: Read-only file system; "
                                        f"point --cache-dir (or XFERBENCH_CACHE_DIR) at a folder you can write")
    print("user sees:", line)


@pytest.mark.slow
@pytest.mark.realdata
def test_enospc_injected_at_the_cache_write_leaves_no_temp_file(tmp_path, photos):
    """The same fault without mounts (any machine): ENOSPC half way through an entry's temp file."""
    cache, output = tmp_path / "cache", tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(LAUNCHER), "--cache-enospc-after", "7", "--",
                           *_run_args(photos, output, cache)], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    lines = _warnings(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"warning: the bottleneck cache {cache}/bottlenecks is full"), lines
    row = _rows(output)[0]
    assert row["cache_write_errors"] == row["extracted"] - 7
    assert sorted(p.name for p in cache.rglob(".tmp-*")) == []
    verified = subprocess.run([sys.executable, "-m", "xferbench.cli", "cache", "verify", "--cache-dir", str(cache)],
                              capture_output=True, text=True, env=_env(), timeout=300)
    assert verified.returncode == 0, verified.stdout
    assert "7 entries checked in 1 namespaces, 7 ok, 0 corrupt, 0 temp files, 0 torn pack tails" in verified.stdout


@pytest.mark.slow
@pytest.mark.realdata
def test_results_write_error_keeps_the_old_file_and_saves_a_rescue_copy(tmp_path, photos):
    cache, output = tmp_path / "cache", tmp_path / "results" / "out.json"
    # Write 1: the empty document; 2: after the 5-shot run; 3 (fails): after the all-shots run.
    done = subprocess.run([sys.executable, str(LAUNCHER), "--results-enospc-at", "3", "--",
                           *_run_args(photos, output, cache), "--quiet"], capture_output=True, text=True, env=_env(),
                          cwd=tmp_path, timeout=900)
    rescue = sorted((cache / "rescue").glob("*.json"))
    assert len(rescue) == 1, done.stderr
    line = assert_one_line_error(
        done, f"cannot write results to {output}: No space left on device; it keeps its last complete version; "
              f"the finished runs are saved in {rescue[0]}; go on with: xferbench run --resume {rescue[0]}")
    print("user sees:", line)
    assert [r["shots"] for r in _rows(output)] == [5]
    assert [(r["shots"], r["status"]) for r in _rows(rescue[0])] == [(5, "ok"), ("all", "ok")]
    assert list(output.parent.glob(".tmp-*")) == []
    # The rescue file is a whole results file: --resume takes it and keeps both finished runs.
    resumed = subprocess.run([sys.executable, "-m", "xferbench.cli", "run", "--resume", str(rescue[0]), "--quiet"],
                             capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(rescue[0].read_text())["resumed"]["kept_runs"] == 2


def test_cache_verify_stats_and_prune_of_old_per_entry_files(tmp_path, capsys):
    """``xferbench cache`` on a cache of the old layout (one file per entry), in-process (no TensorFlow)."""
    import numpy as np

    from xferbench.bottleneck_cache import encode_legacy_entry
    from xferbench.cli import main

    folder = tmp_path / "bottlenecks" / "0123456789abcdef01234567"
    for i in range(5):
        path = folder / f"{i:064x}"[:2] / f"{i:064x}.bn"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_legacy_entry(np.arange(4, dtype=np.float32) + i))
    entries = sorted((tmp_path / "bottlenecks").rglob("*.bn"))
    entries[1].write_bytes(entries[1].read_bytes()[:-1] + b"\0")  # a flipped digest byte
    (entries[2].parent / ".tmp-abc.bn").write_bytes(b"torn")  # what a SIGKILL mid-write leaves
    old = entries[3].stat().st_mtime - 40 * 86400
    os.utime(entries[3], (old, old))

    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "5 entries checked in 1 namespaces, 4 ok, 1 corrupt, 1 temp files" in out
    assert f"corrupt: {entries[1]}" in out
    assert main(["cache", "verify", "--fix", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 1 files" in capsys.readouterr().out  # the temp file is young: it may be a live write
    assert main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 0
    assert f"{tmp_path / 'bottlenecks'}: 4 entries in 1 namespaces" in capsys.readouterr().out
    assert main(["cache", "prune", "--older-than", "30d", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 1 entries not used for 30 days" in capsys.readouterr().out
    assert not entries[3].exists() and entries[4].exists()
    assert main(["cache", "prune", "--older-than", "soon", "--cache-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("xferbench: error: --older-than 'soon': write an age like 30d, "
                                               "12h or 90m")


def test_cache_write_errors_are_counted_and_leave_nothing_behind(tmp_path, monkeypatch):
    """A disk that fills up half way through a record: put() says so, counts, stops trying; the pack
    is cut back to its last whole record, so reads still work and nothing torn is left."""
    import errno

    import numpy as np

    from xferbench import pack_store
    from xferbench.bottleneck_cache import BottleneckCache
    from xferbench.cli import main

    cache = BottleneckCache(tmp_path / "bottlenecks", "ns", 2)
    assert cache.put("a" * 64, np.ones(2, dtype=np.float32))

    real_write = os.write

    def full_disk_write(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pack_store.os, "write", full_disk_write)
    assert not cache.put("b" * 64, np.ones(2, dtype=np.float32))
    assert not cache.put("c" * 64, np.ones(2, dtype=np.float32))
    monkeypatch.undo()
    assert cache.write_errors == 2 and cache.write_error.errno == errno.ENOSPC
    assert cache.get("a" * 64) is not None
    cache.close()
    assert not list(tmp_path.rglob(".tmp-*"))
    again = BottleneckCache(tmp_path / "bottlenecks", "ns", 2)
    assert again.get("a" * 64) is not None and again.get("b" * 64) is None and again.corrupt_entries == 0
    assert main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0
