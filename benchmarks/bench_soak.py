"""Soak: 20 runs in a row share one bottleneck cache, each killed with SIGKILL at a seeded random point.

Each run is the real CLI (keras:MobileNet alpha 0.25 at 128 px, the shared ImageNet weights, on the
500 flower photos) started through tests/support/fault_launcher.py, which SIGKILLs the process right
after its N-th new cache entry or, half of the time,
half way through writing that entry's record, leaving a torn pack tail (N drawn from ``SEED``).
The launcher logs the key of every entry a run stored. Afterwards:

* ``xferbench cache verify`` checks the cache entry by entry: no corrupt entry;
* every logged entry is still there and valid: entries lost must be 0;
* one clean run on the soaked cache gives the same results as a run on a fresh cache, never killed.

Run it with ``python benchmarks/run_bench.py -k soak`` or ``python -m pytest benchmarks/bench_soak.py -s``
(about 5 minutes on 2 cores). The counts are printed and kept in ``soak-report.json`` under the test's
temp folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import MOBILENET_OPTIONS, MOBILENET_WEIGHTS, REPO

SEED = 20
RUNS = 20
#: new entries a run stores before it is killed: at most this many, so 20 runs do not fill the 500
MAX_ENTRIES_PER_RUN = 35
LAUNCHER = REPO / "tests" / "support" / "fault_launcher.py"


def _run_args(shared_data: Path, cache: Path, output: Path) -> list[str]:
    options = [f"--backbone-opt={k}={v}" for k, v in MOBILENET_OPTIONS.items()]
    return ["run", "--backbone", "keras:MobileNet", "--weights", str(shared_data / MOBILENET_WEIGHTS), *options,
            "--dataset", f"folder:{shared_data / 'flower_photos_mini'}", "--compare", "transfer", "--head", "softmax",
            "--head-opt", "steps=500", "--cache-dir", str(cache), "--output", str(output), "--quiet"]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _valid_entries(cache: Path) -> set[str]:
    """Keys (hex) of every record of every pack whose checksum holds."""
    from xferbench.pack_store import list_packs, scan_pack

    root = cache / "bottlenecks"
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return {bytes(key).hex() for folder in folders for pack in list_packs(folder)
            for key in scan_pack(pack, check=True).entries["key"].tolist()}


def _results(path: Path) -> list[tuple]:
    return [(r["shots"], r["status"], r["test_accuracy"], r["confusion_matrix"], r["n_train"], r["n_test"])
            for r in json.loads(path.read_text())["runs"]]


def test_soak_sigkill_during_extraction(shared_data: Path, tmp_path: Path):
    cache, log = tmp_path / "cache", tmp_path / "entries.log"
    rng = random.Random(SEED)
    images = len(list((shared_data / "flower_photos_mini").rglob("*.jpg")))
    kills = inside = 0
    for run in range(RUNS):
        missing = images - len(_valid_entries(cache)) - 1  # one photo is a byte-for-byte duplicate
        assert missing >= 2, "the runs filled the cache: lower MAX_ENTRIES_PER_RUN"
        at = rng.randint(1, min(MAX_ENTRIES_PER_RUN, missing - 1))
        kill_inside = rng.random() < 0.5
        child = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--sigkill-at-entry", str(at), "--entry-log", str(log),
             *(["--sigkill-inside"] if kill_inside else []), "--", *_run_args(shared_data, cache,
                                                                              tmp_path / f"killed-{run}.json")],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = child.communicate(timeout=600)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL, f"run {run} was not killed (exit {child.returncode}): {err}"
        kills += 1
        inside += kill_inside

    logged = set(log.read_text().splitlines())
    valid = _valid_entries(cache)
    lost = sorted(logged - valid)
    verify = subprocess.run([sys.executable, "-m", "xferbench.cli", "cache", "verify", "--cache-dir", str(cache)],
                            capture_output=True, text=True, env=_env(), timeout=600)
    match = re.search(r"(\d+) entries checked in (\d+) namespaces, (\d+) ok, (\d+) corrupt, (\d+) temp files",
                      verify.stdout)
    assert match, verify.stdout + verify.stderr
    checked, _, ok, corrupt, temp_files = map(int, match.groups())

    soaked, fresh = tmp_path / "soaked.json", tmp_path / "fresh.json"
    for output, folder in ((soaked, cache), (fresh, tmp_path / "fresh-cache")):
        done = subprocess.run([sys.executable, "-m", "xferbench.cli", *_run_args(shared_data, folder, output)],
                              capture_output=True, text=True, env=_env(), timeout=900)
        assert done.returncode == 0, done.stderr
    soaked_row = json.loads(soaked.read_text())["runs"][0]
    report = {"kills_survived": kills, "killed_inside_a_write": inside, "entries_stored_before_kills": len(logged),
              "entries_checked": checked, "entries_ok": ok, "entries_corrupt": corrupt, "entries_lost": len(lost),
              "temp_files_left_by_sigkill": temp_files, "clean_run_cache_hits": soaked_row["cache_hits"],
              "same_results_as_never_killed": _results(soaked) == _results(fresh)}
    (tmp_path / "soak-report.json").write_text(json.dumps(report, indent=2) + "\n")
    print("soak:", json.dumps(report))
    assert verify.returncode == 0 and corrupt == 0, verify.stdout
    assert lost == [], lost
    assert checked == ok == len(valid)
    assert len(valid) >= len(logged) > 0
    assert soaked_row["cache_hits"] >= len(logged)
    assert _results(soaked) == _results(fresh)
