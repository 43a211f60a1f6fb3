"""The plugin core through its public API: load_catalog, hookimpl and the spec classes."""

from __future__ import annotations

import types

import pytest

import xferbench
from xferbench import BackboneSpec, HeadSpec, Option, hookimpl
from xferbench.errors import OptionError, PluginError, UnknownNameError
from xferbench.plugin_manager import load_catalog

BUILTIN_BACKBONES = {"lenet5", "inception_2015", "keras", "hub"}
BUILTIN_DATASETS = {"digits", "folder", "flowers", "mnist"}
BUILTIN_HEADS = {"softmax", "logreg", "mlp"}


def make_plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**hooks)


def backbone_plugin(name: str) -> types.SimpleNamespace:
    @hookimpl
    def xferbench_register_backbones(register):
        register(BackboneSpec(name, "a test backbone", factory="builtins:object",
                              options=(Option("width", int, 8, "units", min=1),)))

    return make_plugin(xferbench_register_backbones=xferbench_register_backbones)


def test_builtins_arrive_through_entry_points():
    catalog = load_catalog()
    assert BUILTIN_BACKBONES <= {s.name for s in catalog.backbones}
    assert BUILTIN_DATASETS <= {s.name for s in catalog.datasets}
    assert BUILTIN_HEADS <= {s.name for s in catalog.heads}
    assert {"table", "json", "markdown", "csv"} <= {s.name for s in catalog.reporters}
    plugins = {p.name: p for p in catalog.plugins}
    assert {"lenet5", "digits", "heads", "reporters"} <= set(plugins)
    assert plugins["lenet5"].version == xferbench.__version__
    assert "xferbench" in plugins["lenet5"].origin
    assert catalog.backbones.resolve("lenet5")[0].plugin == "lenet5"


def test_duplicate_name_is_an_error_naming_both_plugins():
    with pytest.raises(PluginError) as err:
        load_catalog(extra_plugins=[("first", backbone_plugin("twin")), ("second", backbone_plugin("twin"))])
    message = str(err.value)
    assert "'twin'" in message and "'first'" in message and "'second'" in message


def test_duplicate_of_a_builtin_names_the_builtin_plugin():
    with pytest.raises(PluginError, match=r"'lenet5'.*'lenet5'.*'mine'"):
        load_catalog(extra_plugins=[("mine", backbone_plugin("lenet5"))])


def test_blocking_by_argument_and_environment(monkeypatch):
    assert "lenet5" not in load_catalog(blocked=["lenet5"]).backbones
    monkeypatch.setenv("XFERBENCH_DISABLE_PLUGINS", "lenet5, heads")
    catalog = load_catalog()
    assert "lenet5" not in catalog.backbones
    assert "softmax" not in catalog.heads
    assert "digits" in catalog.datasets
    assert {"lenet5", "heads"} <= set(catalog.blocked)


def test_blocking_an_extra_plugin_by_name():
    catalog = load_catalog(blocked=["mine"], extra_plugins=[("mine", backbone_plugin("extra"))])
    assert "extra" not in catalog.backbones


@pytest.mark.parametrize("marked", [True, False])
def test_misspelled_hook_is_an_error(marked):
    def xferbench_register_backbone(register):  # missing the final "s"
        raise AssertionError("must never be called")

    impl = hookimpl(xferbench_register_backbone) if marked else xferbench_register_backbone
    with pytest.raises(PluginError, match="xferbench_register_backbone"):
        load_catalog(extra_plugins=[("typo", make_plugin(xferbench_register_backbone=impl))])


def test_unknown_name_suggests_and_lists():
    catalog = load_catalog()
    with pytest.raises(UnknownNameError) as err:
        catalog.backbones.resolve("lenet")
    assert "did you mean 'lenet5'?" in str(err.value)
    assert "keras:<arg>" in str(err.value) and "inception_2015" in str(err.value)


def test_parametric_name_needs_its_argument():
    with pytest.raises(UnknownNameError, match="keras:<arg>"):
        load_catalog().backbones.resolve("keras")


def test_options_are_validated_by_their_spec():
    spec = load_catalog(extra_plugins=[("mine", backbone_plugin("extra"))]).backbones.resolve("extra")[0]
    assert spec.validate({}) == {"width": 8}
    assert spec.validate({"width": "3"}) == {"width": 3}
    with pytest.raises(OptionError, match="did you mean 'width'"):
        spec.validate({"widht": "3"})
    with pytest.raises(OptionError, match="not an integer"):
        spec.validate({"width": "wide"})
    with pytest.raises(OptionError, match=">= 1"):
        spec.validate({"width": "0"})


def test_a_plugin_that_crashes_while_registering_is_reported():
    @hookimpl
    def xferbench_register_heads(register):
        register(HeadSpec("bad name:colon", "x", factory="builtins:object"))

    with pytest.raises(PluginError, match="broken"):
        load_catalog(extra_plugins=[("broken", make_plugin(xferbench_register_heads=xferbench_register_heads))])


def test_lazy_factory_errors_name_the_target():
    spec = load_catalog(extra_plugins=[("mine", make_plugin(xferbench_register_heads=hookimpl(
        lambda register: register(HeadSpec("ghost", "x", factory="no_such_module_xyz:Head")))))]).heads.resolve("ghost")[0]
    with pytest.raises(PluginError, match="no_such_module_xyz:Head"):
        spec.load_factory()
