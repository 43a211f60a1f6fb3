"""The plugin as xferbench sees it: its specs, their options, and lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xferbench_example
from xferbench import BackboneSpec, DatasetSpec, HeadSpec
from xferbench.errors import OptionError
from xferbench.plugin_manager import Catalog, load_catalog


def test_registers_one_component_of_each_kind_under_the_plugin_name(catalog: Catalog) -> None:
    assert [(s.name, s.plugin) for s in catalog.backbones] == [("pixels", "example")]
    assert [(s.name, s.plugin) for s in catalog.datasets] == [("bars", "example")]
    assert [(s.name, s.plugin) for s in catalog.heads] == [("centroid", "example")]
    assert [(s.name, s.plugin) for s in catalog.methods] == [("knn", "example")]
    assert [(s.name, s.plugin) for s in catalog.reporters] == [("jsonl", "example")]
    assert [(s.name, s.plugin) for s in catalog.commands] == [("bars-folder", "example")]
    assert isinstance(next(iter(catalog.backbones)), BackboneSpec)
    assert isinstance(next(iter(catalog.datasets)), DatasetSpec)
    assert isinstance(next(iter(catalog.heads)), HeadSpec)


def test_defaults_of_the_documented_options(catalog: Catalog) -> None:
    assert catalog.backbones.resolve("pixels")[0].validate({}) == {"size": 16}
    assert catalog.datasets.resolve("bars")[0].validate({}) == {
        "n_per_class": 60, "noise": 0.15, "split_seed": 0, "test_pct": 10.0, "val_pct": 10.0}
    assert catalog.heads.resolve("centroid")[0].validate({}) == {
        "metric": "cosine", "center": True, "temperature": 0.1}


def test_options_given_as_cli_strings_are_parsed(catalog: Catalog) -> None:
    bars = catalog.datasets.resolve("bars")[0]
    assert bars.validate({"n_per_class": "7", "noise": "0"})["n_per_class"] == 7
    centroid = catalog.heads.resolve("centroid")[0]
    assert centroid.validate({"metric": "euclidean", "center": "no"})["center"] is False


@pytest.mark.parametrize(("kind", "name", "given", "fragment"), [
    ("backbones", "pixels", {"size": "0"}, "must be >= 1"),
    ("backbones", "pixels", {"sise": "8"}, "did you mean 'size'"),
    ("datasets", "bars", {"noise": "loud"}, "is not a number"),
    ("heads", "centroid", {"metric": "manhattan"}, "must be one of: cosine, euclidean"),
])
def test_bad_options_are_one_line_errors(catalog: Catalog, kind: str, name: str, given: dict[str, str],
                                         fragment: str) -> None:
    spec = getattr(catalog, kind).resolve(name)[0]
    with pytest.raises(OptionError, match=fragment) as info:
        spec.validate(given)
    assert "\n" not in str(info.value)


def test_every_factory_resolves_to_a_callable(catalog: Catalog) -> None:
    for registry in (catalog.backbones, catalog.datasets, catalog.heads):
        for spec in registry:
            assert callable(spec.load_factory())


def test_name_clash_with_another_plugin_names_both() -> None:
    from xferbench.errors import PluginError

    with pytest.raises(PluginError, match="registered twice: by plugin 'example' and by plugin 'copy'"):
        load_catalog(extra_plugins=[("example", xferbench_example), ("copy", _CopyOfExample())],
                     load_entry_points=False)


class _CopyOfExample:
    """Another plugin object that registers the same backbone name."""

    xferbench_register_backbones = staticmethod(xferbench_example.xferbench_register_backbones)


def test_listing_the_plugin_imports_no_component_module_and_no_heavy_library() -> None:
    # A fresh interpreter: what `xferbench list` pays for this plugin.
    script = (
        "import json, sys, xferbench_example\n"
        "from xferbench.plugin_manager import load_catalog\n"
        "catalog = load_catalog(extra_plugins=[('example', xferbench_example)], load_entry_points=False)\n"
        "assert [s.name for s in catalog.backbones] == ['pixels']\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    src = str(Path(xferbench_example.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout))
    for heavy in ("tensorflow", "keras", "sklearn", "PIL", "xferbench_example.pixels", "xferbench_example.bars",
                  "xferbench_example.centroid"):
        assert heavy not in modules, f"{heavy} was imported just to list the plugin"
