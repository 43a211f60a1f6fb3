"""Built-in xferbench plugin: the suites ``vtab1k`` and ``offline``, the ``suite:`` task dataset and the
``leaderboard`` reporter.

Nothing heavy is imported here, so ``xferbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import DatasetSpec, Option, ReporterSpec, SuiteSpec, hookimpl
from xferbench_suites.builtin import OFFLINE, VTAB1K


@hookimpl
def xferbench_register_suites(register: Callable[[SuiteSpec], None]) -> None:
    register(VTAB1K)
    register(OFFLINE)


@hookimpl
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec("suite", "one task of a suite (suite:SUITE/TASK or suite:FILE.toml#TASK); "
                                  "xferbench run --suite runs them all", factory="xferbench.suites:load_task",
                         parametric=True))


@hookimpl
def xferbench_register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    register(ReporterSpec(
        "leaderboard", "one row per backbone (and method/head): accuracy per group and overall with bootstrap "
                       "CIs, mean rank, throughput; and accuracy per shot count",
        factory="xferbench.leaderboard:LeaderboardReporter",
        options=(Option("output", str, "", "write to this file (atomically) instead of standard output"),
                 Option("format", str, "table", "table (rich), markdown or csv",
                        choices=("table", "markdown", "csv")),
                 Option("resamples", int, 2000, "bootstrap resamples of the confidence intervals", min=100))))
