"""Finding plugins (entry points), blocking them, and collecting their specs."""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from xferbench import hookspecs
from xferbench.errors import PluginError, one_line
from xferbench.registry import Registry
from xferbench.specs import BackboneSpec, DatasetSpec, HeadSpec, ReporterSpec

ENTRY_POINT_GROUP = "xferbench"
DISABLE_ENV = "XFERBENCH_DISABLE_PLUGINS"


class XferbenchPluginManager(pluggy.PluginManager):
    """A PluginManager that treats every ``xferbench_*`` function as a hook.

    pluggy alone skips unmarked functions, so a misspelled, unmarked
    ``xferbench_register_backbone`` would vanish silently; here it fails
    validation instead.
    """

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(f"{hookspecs.PROJECT}_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts


@dataclass
class PluginInfo:
    name: str
    version: str
    origin: str


@dataclass
class Catalog:
    """Everything the loaded plugins registered."""

    backbones: Registry[BackboneSpec] = field(default_factory=lambda: Registry("backbone"))
    datasets: Registry[DatasetSpec] = field(default_factory=lambda: Registry("dataset"))
    heads: Registry[HeadSpec] = field(default_factory=lambda: Registry("head"))
    reporters: Registry[ReporterSpec] = field(default_factory=lambda: Registry("reporter"))
    plugins: list[PluginInfo] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def registry(self, kind: str) -> Registry[Any]:
        return {"backbone": self.backbones, "dataset": self.datasets, "head": self.heads,
                "reporter": self.reporters}[kind]


def blocked_from_env() -> list[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return [name for name in raw.replace(",", " ").split() if name]


def build_plugin_manager(blocked: Iterable[str] = (), extra_plugins: Iterable[tuple[str, Any]] = (),
                         load_entry_points: bool = True) -> XferbenchPluginManager:
    """Load entry-point plugins (unless blocked) and any ``(name, plugin)`` extras."""
    pm = XferbenchPluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    try:
        if load_entry_points:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for name, plugin in extra_plugins:
            if not pm.is_blocked(name):
                pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(_invalid_plugin_message(pm, exc)) from exc
    except PluginError:
        raise
    except Exception as exc:  # a third-party plugin failing to import must not produce a traceback
        raise PluginError(f"a plugin failed to load: {type(exc).__name__}: {one_line(exc)}; "
                          f"block it with --no-plugin NAME or {DISABLE_ENV}") from exc
    return pm


def _invalid_plugin_message(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    name = pm.get_name(exc.plugin) or getattr(exc.plugin, "__name__", "?")
    known = sorted(n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_"))
    bad = [attr for attr in dir(exc.plugin) if attr.startswith(f"{hookspecs.PROJECT}_") and attr not in known]
    if bad:
        hint = difflib.get_close_matches(bad[0], known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"plugin {name!r} implements unknown hook {bad[0]!r}{suggestion} (hooks: {', '.join(known)})"
    return f"plugin {name!r} is invalid: {one_line(exc)}"


def load_catalog(blocked: Iterable[str] = (), extra_plugins: Iterable[tuple[str, Any]] = (),
                 load_entry_points: bool = True) -> Catalog:
    """Build the catalog of all specs from the plugins that are not blocked."""
    blocked = [*blocked, *blocked_from_env()]
    pm = build_plugin_manager(blocked, extra_plugins, load_entry_points)
    catalog = Catalog(blocked=sorted(set(blocked)))
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    hooks = {
        "xferbench_register_backbones": catalog.backbones,
        "xferbench_register_datasets": catalog.datasets,
        "xferbench_register_heads": catalog.heads,
        "xferbench_register_reporters": catalog.reporters,
    }
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        version = dist.version if dist is not None else "-"
        origin = getattr(plugin, "__file__", None) or repr(plugin)
        if dist is not None:
            origin = f"{dist.project_name} ({origin})"
        catalog.plugins.append(PluginInfo(name=name, version=version, origin=origin))
        for hook_name, registry in hooks.items():
            impl = getattr(pm.hook, hook_name)
            for hookimpl in impl.get_hookimpls():
                if hookimpl.plugin is plugin:
                    _call_register(hookimpl.function, registry, name)
    return catalog


def _call_register(function: Any, registry: Registry[Any], plugin_name: str) -> None:
    def register(spec: Any) -> None:
        registry.add(spec, plugin_name)

    try:
        function(register=register)
    except PluginError as exc:
        if f"{plugin_name!r}" in str(exc):
            raise
        raise PluginError(f"plugin {plugin_name!r}: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"plugin {plugin_name!r} failed while registering: {type(exc).__name__}: "
                          f"{one_line(exc)}") from exc
