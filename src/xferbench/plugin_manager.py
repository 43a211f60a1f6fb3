"""Finding plugins (entry points), blocking them, and collecting their specs."""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from xferbench import hookspecs
from xferbench.errors import PluginError, UserError, one_line
from xferbench.registry import Registry
from xferbench.specs import (
    BackboneSpec,
    CommandSpec,
    ComponentSpec,
    DatasetSpec,
    HeadSpec,
    MethodSpec,
    ReporterSpec,
    SuiteSpec,
)

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
    #: the distribution that installed it (for "report it to ..."), or None for one added in-process
    distribution: str | None = None
    #: top-level package of the plugin's module, for telling which plugin raised an exception
    package: str | None = None


KINDS = ("backbone", "dataset", "head", "method", "reporter", "command", "suite")
_REGISTER_HOOKS = {kind: f"xferbench_register_{kind}s" for kind in KINDS}


@dataclass
class Catalog:
    """Everything the loaded plugins registered, and the plugin manager that calls their hooks."""

    backbones: Registry[BackboneSpec] = field(default_factory=lambda: Registry("backbone"))
    datasets: Registry[DatasetSpec] = field(default_factory=lambda: Registry("dataset"))
    heads: Registry[HeadSpec] = field(default_factory=lambda: Registry("head"))
    methods: Registry[MethodSpec] = field(default_factory=lambda: Registry("method"))
    reporters: Registry[ReporterSpec] = field(default_factory=lambda: Registry("reporter"))
    commands: Registry[CommandSpec] = field(default_factory=lambda: Registry("command"))
    suites: Registry[SuiteSpec] = field(default_factory=lambda: Registry("suite"))
    plugins: list[PluginInfo] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    pm: XferbenchPluginManager | None = None

    def registry(self, kind: str) -> Registry[Any]:
        return getattr(self, f"{kind}s")

    def plugin(self, name: str) -> PluginInfo | None:
        return next((info for info in self.plugins if info.name == name), None)

    def call_hook(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook through pluggy; an exception in an implementation names its plugin."""
        assert self.pm is not None
        hook = getattr(self.pm.hook, hook_name)
        try:
            return hook(**kwargs)
        except UserError:
            raise
        except Exception as exc:
            culprit = _culprit(exc, hook.get_hookimpls())
            raise PluginError(f"plugin {culprit or '?'!r} failed in {hook_name}: {type(exc).__name__}: "
                              f"{one_line(exc)}; {self._report_to(culprit)}") from exc

    def blame(self, exc: BaseException, specs: Iterable[ComponentSpec]) -> str:
        """``exc`` (not a UserError) as one line that names the component and plugin that raised it.

        The innermost frame of the traceback that runs a method of a component's class tells which
        component raised it; failing that, the innermost frame in a component's package.
        """
        specs = list(specs)
        frames = _traceback_frames(exc)
        spec = _by_instance(frames, specs) or _by_package(frames, specs, self)
        what = f"{type(exc).__name__}: {one_line(exc)}"
        if spec is None:
            return f"{what} (an internal error of xferbench; please report it)"
        return f"{what} (raised by {spec.kind} {spec.name!r} of plugin {spec.plugin!r}; {self._report_to(spec.plugin)})"

    def _report_to(self, plugin: str | None) -> str:
        info = self.plugin(plugin) if plugin else None
        dist = info.distribution if info and info.distribution else None
        return f"report it to the authors of {dist}" if dist else f"report it to the authors of plugin {plugin!r}"


def _called_impl(frame: Any, impls: list[Any]) -> str | None:
    """The plugin whose hook implementation pluggy was calling in ``frame``'s call stack, or None.

    pluggy's call loop (``_multicall``) holds the implementation it calls in ``hook_impl``;
    that tells apart even two plugins whose hooks share one function's code.
    """
    while frame is not None:
        if frame.f_code.co_name == "_multicall":
            impl = frame.f_locals.get("hook_impl")
            if any(impl is candidate for candidate in impls):
                return impl.plugin_name
        frame = frame.f_back
    return None


def _culprit(exc: BaseException, impls: list[Any]) -> str | None:
    """The plugin whose hook implementation raised ``exc``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return _called_impl(tb.tb_frame, impls) if tb is not None else None


def _traceback_frames(exc: BaseException) -> list[Any]:
    """The frames of ``exc``'s traceback, innermost first."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]


def _by_instance(frames: list[Any], specs: list[ComponentSpec]) -> ComponentSpec | None:
    classes = []
    for spec in specs:
        try:
            factory = spec.load_factory()
        except UserError:
            continue
        if isinstance(factory, type):
            classes.append((spec, factory))
    for frame in frames:
        owner = frame.f_locals.get("self")
        for spec, cls in classes:
            if owner is not None and isinstance(owner, cls):
                return spec
    return None


def _by_package(frames: list[Any], specs: list[ComponentSpec], catalog: Catalog) -> ComponentSpec | None:
    by_package: dict[str, ComponentSpec] = {}
    for spec in specs:
        info = catalog.plugin(spec.plugin)
        for package in (_package_of(spec.factory), info.package if info else None):
            if package:
                by_package.setdefault(package, spec)
    for frame in frames:
        module = str(frame.f_globals.get("__name__", "")).split(".")[0]
        if module in by_package:
            return by_package[module]
    return None


def _package_of(target: Any) -> str | None:
    if isinstance(target, str):
        return target.partition(":")[0].split(".")[0] or None
    module = getattr(target, "__module__", None)
    return module.split(".")[0] if module else None


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


def _check_blocked_names(given: list[str], extra: list[str], load_entry_points: bool) -> None:
    """``--no-plugin`` with a name that no plugin has blocks nothing: say so, with the closest known name.

    ``XFERBENCH_DISABLE_PLUGINS`` is not checked: one setting may serve environments with other plugins.
    """
    known = set(extra)
    if load_entry_points:
        known.update(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    for name, source in ((n, "--no-plugin") for n in given):
        if name not in known:
            hint = difflib.get_close_matches(name, sorted(known), n=1)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            raise UserError(f"{source} {name}: no plugin has that name; {did_you_mean}"
                            f"see `xferbench plugins` (plugins: {', '.join(sorted(known)) or 'none'})")


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
    given, from_env, extra_plugins = list(blocked), blocked_from_env(), list(extra_plugins)
    _check_blocked_names(given, [name for name, _ in extra_plugins], load_entry_points)
    blocked = [*given, *from_env]
    pm = build_plugin_manager(blocked, extra_plugins, load_entry_points)
    catalog = Catalog(blocked=sorted(set(blocked)), pm=pm)
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist = dists.get(id(plugin))
        origin = getattr(plugin, "__file__", None) or repr(plugin)
        if dist is not None:
            origin = f"{dist.project_name} ({origin})"
        module = getattr(plugin, "__name__", None) or getattr(type(plugin), "__module__", None)
        catalog.plugins.append(PluginInfo(
            name=name, version=dist.version if dist is not None else "-", origin=origin,
            distribution=dist.project_name if dist is not None else None,
            package=str(module).split(".")[0] if module else None))
    for kind, hook_name in _REGISTER_HOOKS.items():
        _register_all(pm, hook_name, catalog.registry(kind))
    return catalog


def _register_all(pm: XferbenchPluginManager, hook_name: str, registry: Registry[Any]) -> None:
    """Call a registration hook through pluggy; each spec is credited to the plugin whose hook registered it.

    Specs are added in the order the plugins were loaded (built-ins first), so a clash names the
    earlier plugin first, whatever order pluggy called the hooks in.
    """
    hook = getattr(pm.hook, hook_name)
    impls = hook.get_hookimpls()
    collected: list[tuple[str, Any]] = []

    def register(spec: Any) -> None:
        collected.append((_called_impl(sys._getframe(1), impls) or "?", spec))

    try:
        hook(register=register)
    except Exception as exc:
        culprit = _culprit(exc, impls) or "?"
        if isinstance(exc, PluginError):
            raise PluginError(f"plugin {culprit!r}: {exc}") from exc
        raise PluginError(f"plugin {culprit!r} failed while registering: {type(exc).__name__}: "
                          f"{one_line(exc)}") from exc
    order = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
    for plugin, spec in sorted(collected, key=lambda item: order.get(item[0], len(order))):
        registry.add(spec, plugin)
