"""Shared fixtures: where the real data lives and how to call the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("XFERBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"real test data not found at {path}; set XFERBENCH_SHARED_DATA")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``xferbench ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "xferbench.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``cli(*args)`` with a private cache dir."""
    cache = tmp_path / "cache"

    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
        return run_cli(*args, env={"XFERBENCH_CACHE_DIR": str(cache), **(env or {})}, timeout=timeout,
                       cwd=tmp_path)

    return call
