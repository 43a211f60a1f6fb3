"""Fixtures: the example plugin registered through xferbench's public plugin API."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from xferbench.context import RunContext
from xferbench.plugin_manager import Catalog, load_catalog
from xferbench.progress import Progress

try:
    import xferbench_example
except ImportError:
    # Not installed: test the source tree beside these tests (xferbench's own test run
    # collects them without installing this distribution). Tests import it after this.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import xferbench_example


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    # Only this plugin, registered as installed plugins are (same name as its entry point);
    # the built-in plugins are left out so these tests do not depend on them.
    return load_catalog(extra_plugins=[("example", xferbench_example)], load_entry_points=False)


@pytest.fixture
def context(catalog: Catalog, tmp_path: Path) -> RunContext:
    return RunContext(catalog=catalog, cache_dir=tmp_path / "cache", progress=Progress(quiet=True))
