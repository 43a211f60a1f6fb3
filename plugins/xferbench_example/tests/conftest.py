"""Fixtures: the example plugin registered through xferbench's public plugin API."""

from __future__ import annotations

from pathlib import Path

import pytest

import xferbench_example
from xferbench.context import RunContext
from xferbench.plugin_manager import Catalog, load_catalog
from xferbench.progress import Progress


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    # Only this plugin, registered as installed plugins are (same name as its entry point);
    # the built-in plugins are left out so these tests do not depend on them.
    return load_catalog(extra_plugins=[("example", xferbench_example)], load_entry_points=False)


@pytest.fixture
def context(catalog: Catalog, tmp_path: Path) -> RunContext:
    return RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
