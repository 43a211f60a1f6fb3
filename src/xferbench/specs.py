"""What plugins register: a name, a one-line description, an option schema and a factory.

Factories may be given as ``"package.module:attr"`` strings. They are imported only
when the component is used, which keeps ``xferbench list`` free of TensorFlow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from xferbench.errors import PluginError
from xferbench.options import Option, validate_options

Factory = Callable[..., Any] | str


def resolve_target(target: Factory, owner: str) -> Callable[..., Any]:
    """Import a lazy ``module:attr`` target, or return a callable as it is."""
    if callable(target):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep:
        raise PluginError(f"{owner}: factory {target!r} is not of the form 'module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{owner}: cannot load factory {target!r}: {exc}") from exc
    if not callable(obj):
        raise PluginError(f"{owner}: factory {target!r} is not callable")
    return obj


@dataclass(frozen=True)
class ComponentSpec:
    """Common part of every registered component.

    ``parametric`` components take an argument after a colon, as in
    ``keras:MobileNet`` or ``folder:/data/photos``.
    """

    kind: ClassVar[str] = "component"

    name: str
    description: str
    factory: Factory
    options: tuple[Option, ...] = ()
    parametric: bool = False
    #: optional ``(arg, options, context, source: Path | None) -> Path``: download or import
    #: the component's files into the cache (``xferbench fetch NAME [--from FILE]``)
    fetcher: Factory | None = None
    #: optional ``() -> list[tuple[str, str]]``: every argument a parametric component knows, with a
    #: description (``xferbench list KIND --all``); may import heavy packages, as it runs only then
    variants: Factory | None = None
    plugin: str = field(default="?", compare=False)

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name or "," in self.name:
            raise PluginError(f"{self.kind} name {self.name!r} must be non-empty without ':' or ','")
        if "\n" in self.description:
            raise PluginError(f"{self.kind} {self.name!r}: description must be one line")
        names = [opt.name for opt in self.options]
        if len(set(names)) != len(names):
            raise PluginError(f"{self.kind} {self.name!r} declares an option twice")

    @property
    def label(self) -> str:
        """How the user writes it: ``keras:<arg>`` for parametric specs."""
        return f"{self.name}:<arg>" if self.parametric else self.name

    def validate(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Options with defaults filled in; one-line OptionError on a bad key or value."""
        return validate_options(self.options, given, f"{self.kind} {self.name!r}")

    def load_factory(self) -> Callable[..., Any]:
        return resolve_target(self.factory, f"{self.kind} {self.name!r} (plugin {self.plugin})")

    def load_fetcher(self) -> Callable[..., Any] | None:
        if self.fetcher is None:
            return None
        return resolve_target(self.fetcher, f"{self.kind} {self.name!r} (plugin {self.plugin})")

    def list_variants(self) -> list[tuple[str, str]]:
        """``variants()``'s ``(argument, description)`` pairs; empty without ``variants``."""
        if self.variants is None:
            return []
        return list(resolve_target(self.variants, f"{self.kind} {self.name!r} (plugin {self.plugin})")())


@dataclass(frozen=True)
class BackboneSpec(ComponentSpec):
    """A feature extractor. Factory: ``(arg, options, context) -> Backbone``."""

    kind: ClassVar[str] = "backbone"


@dataclass(frozen=True)
class DatasetSpec(ComponentSpec):
    """A labelled image set. Factory: ``(arg, options, context) -> ImageDataset``.

    For non-parametric datasets the part after the colon is a class subset
    (``digits:5-9``), handled by the harness.
    """

    kind: ClassVar[str] = "dataset"


@dataclass(frozen=True)
class HeadSpec(ComponentSpec):
    """A classifier trained on bottleneck features. Factory: ``(options) -> Head``."""

    kind: ClassVar[str] = "head"


@dataclass(frozen=True)
class MethodSpec(ComponentSpec):
    """A way to train a classifier for a cell (``transfer``, ``full``, ``finetune``, ...).

    Factory: ``(options) -> Method`` (see :class:`xferbench.method.Method`).
    """

    kind: ClassVar[str] = "method"


@dataclass(frozen=True)
class ReporterSpec(ComponentSpec):
    """A result sink. Factory: ``(options) -> Reporter`` (see :class:`xferbench.reporter.Reporter`)."""

    kind: ClassVar[str] = "reporter"


@dataclass(frozen=True)
class CommandSpec(ComponentSpec):
    """A subcommand ``xferbench NAME``.

    ``factory`` is ``(args: argparse.Namespace, context: RunContext) -> int`` (the exit code);
    ``arguments``, if given, is ``(parser: argparse.ArgumentParser) -> None`` and adds the
    command's arguments. Both may be lazy ``"module:attr"`` strings.
    """

    kind: ClassVar[str] = "command"

    arguments: Factory | None = None

    def load_arguments(self) -> Callable[..., Any] | None:
        if self.arguments is None:
            return None
        return resolve_target(self.arguments, f"command {self.name!r} (plugin {self.plugin})")


@dataclass(frozen=True)
class SuiteSpec(ComponentSpec):
    """A benchmark suite: named tasks (a dataset, its split rules, a group) and a protocol.

    ``tasks`` holds :class:`xferbench.suites.Task` and ``protocol`` a :class:`xferbench.suites.Protocol`;
    ``xferbench run --suite NAME`` runs every task. There is no factory to call.
    """

    kind: ClassVar[str] = "suite"

    factory: Factory = ""
    tasks: tuple[Any, ...] = ()
    protocol: Any = None
