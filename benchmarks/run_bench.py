"""Run the benchmarks and gate on a performance regression: what ``tox -e bench`` runs.

    python benchmarks/run_bench.py [--rebaseline] [--storage DIR] [PYTEST ARGS...]

Every run is saved with pytest-benchmark (``--benchmark-autosave``). When this machine has a
saved run, the new one is compared with the latest of them and fails if any benchmark's mean
is more than 10% slower (``--benchmark-compare-fail=mean:10%``). A failing run is moved aside,
not kept as the next baseline, so a regression cannot become the new normal by running twice.
The ratio floors asserted inside the benchmarks apply whether or not a baseline exists.

"This machine": pytest-benchmark files runs under a machine id made only of the OS, the Python
implementation and version and the word size, the same on every Linux box. So the storage is
one level deeper, per CPU model and usable core count: ``.benchmarks/<cpu>-<N>cores/``.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: fail when a benchmark's mean is this much slower than in the baseline (override: --compare-fail)
COMPARE_FAIL = "mean:10%"


def machine_fingerprint() -> str:
    """``<cpu model>-<usable cores>cores`` as a folder name: a changed CPU or core count is another machine."""
    from xferbench.machine import cpu_name, usable_cores

    cpu = re.sub(r"[^A-Za-z0-9]+", "-", cpu_name()).strip("-").lower() or "unknown-cpu"
    return f"{cpu}-{usable_cores()}cores"


def saved_runs(storage: Path) -> list[Path]:
    """The runs pytest-benchmark would compare against, oldest first."""
    from pytest_benchmark.utils import get_machine_id

    return sorted((storage / get_machine_id()).glob("*.json"))


def pytest_command(storage: Path, compare_fail: str | None, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-p", "no:cacheprovider",
               "-n", "0",  # pytest-benchmark times nothing under xdist, and benchmarks must not share the CPU
               "-o", "python_files=bench_*.py", "--benchmark-autosave", f"--benchmark-storage=file://{storage}",
               "--benchmark-columns=min,mean,max,stddev,rounds", "--benchmark-sort=name"]
    if compare_fail is not None:
        # --benchmark-compare takes an optional value: keep an option (not a path) right after it.
        command += ["--benchmark-compare", f"--benchmark-compare-fail={compare_fail}"]
    return command + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebaseline", action="store_true",
                        help="do not compare; save this run as the new baseline (after an intended slowdown)")
    parser.add_argument("--storage", type=Path, default=None,
                        help="benchmark storage folder (default: .benchmarks/<cpu>-<N>cores in the repository)")
    parser.add_argument("--compare-fail", default=COMPARE_FAIL, metavar="FIELD:PCT%",
                        help=f"pytest-benchmark's regression rule (default {COMPARE_FAIL.replace('%', '%%')}; e.g. min:20%% on a busy "
                             "machine)")
    args, pytest_args = parser.parse_known_args(argv)
    storage = (args.storage or REPO / ".benchmarks" / machine_fingerprint()).resolve()
    before = saved_runs(storage)
    compare = bool(before) and not args.rebaseline
    if compare:
        print(f"run_bench: comparing with the baseline {before[-1].relative_to(storage)} in {storage}; "
              f"failing if any benchmark's {args.compare_fail.replace(':', ' is more than ')} slower")
    elif args.rebaseline:
        print(f"run_bench: --rebaseline: no comparison; this run is saved as the new baseline in {storage}")
    else:
        print(f"run_bench: no baseline for this machine yet ({storage}): this run is being saved as the "
              "baseline; run tox -e bench again to compare")
    sys.stdout.flush()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    command = pytest_command(storage, args.compare_fail if compare else None, pytest_args)
    code, regressions = _run_teed(command, env)
    new = [path for path in saved_runs(storage) if path not in before]
    if code != 0 and new:
        rejected = storage / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        for path in new:
            shutil.move(path, rejected / path.name)
        print(f"run_bench: this run failed (exit {code}); its results were moved to {rejected} and are not a "
              "baseline")
    elif new:
        print(f"run_bench: saved {new[-1].relative_to(storage)} as the baseline for the next run")
    for line in regressions:
        print(f"run_bench: REGRESSION: {line}")
    return code


def _run_teed(command: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run pytest, echoing its output, and collect pytest-benchmark's regression lines.

    pytest-benchmark reports a regression in the middle of a long traceback; the lines are
    repeated at the very end so they are the last thing a person or a CI log shows.
    """
    regressions: list[str] = []
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            if "has failed" in line and "RegressionCheck" in line:
                regressions.append(line.strip())
    return process.returncode, regressions


if __name__ == "__main__":
    raise SystemExit(main())
