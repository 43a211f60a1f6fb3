"""Shared fixtures: the real data and a CLI runner with a private cache."""

from __future__ import annotations

import pytest

from support.cli import run_cli, shared_data_dir


@pytest.fixture(scope="session")
def shared_data():
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"real test data not found at {path}; set XFERBENCH_SHARED_DATA")
    return path


@pytest.fixture
def cli(tmp_path):
    """``cli(*args)`` runs xferbench in ``tmp_path`` with a private cache dir."""
    cache = tmp_path / "cache"

    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
        return run_cli(*args, env={"XFERBENCH_CACHE_DIR": str(cache), **(env or {})}, timeout=timeout,
                       cwd=tmp_path)

    return call


@pytest.fixture(scope="session", autouse=True)
def shared_peak_dir(tmp_path_factory):
    """One measured peak matmul GFLOP/s per test session (runs record MFU), not one per private cache."""
    import os

    from xferbench.peak import PEAK_DIR_ENV

    if os.environ.get(PEAK_DIR_ENV):
        yield
        return
    os.environ[PEAK_DIR_ENV] = str(tmp_path_factory.mktemp("peak"))
    try:
        yield
    finally:
        os.environ.pop(PEAK_DIR_ENV, None)
