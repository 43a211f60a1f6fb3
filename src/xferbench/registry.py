"""Name -> spec tables with clear errors for clashes and typos."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import replace
from typing import Generic, TypeVar

from xferbench.errors import PluginError, UnknownNameError
from xferbench.specs import ComponentSpec

S = TypeVar("S", bound=ComponentSpec)


class Registry(Generic[S]):
    """The components of one kind (backbones, datasets, heads or reporters)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}

    def add(self, spec: S, plugin: str) -> None:
        """Add ``spec`` as contributed by ``plugin``; a taken name names both plugins."""
        if spec.kind != self.kind:
            raise PluginError(f"plugin {plugin!r} registered a {spec.kind} spec as a {self.kind}")
        if spec.name in self._specs:
            first = self._specs[spec.name].plugin
            raise PluginError(
                f"{self.kind} {spec.name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}; "
                f"block one with --no-plugin NAME"
            )
        self._specs[spec.name] = replace(spec, plugin=plugin)

    def __iter__(self) -> Iterator[S]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def resolve(self, token: str) -> tuple[S, str | None]:
        """Split ``name[:arg]`` and find its spec; unknown names get "did you mean"."""
        name, sep, arg = token.partition(":")
        name = name.strip()
        spec = self._specs.get(name)
        if spec is None:
            known = sorted(s.label for s in self._specs.values())
            hint = difflib.get_close_matches(name, sorted(self._specs), n=1, cutoff=0.6)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; {did_you_mean}known {self.kind}s: {', '.join(known) or 'none'}"
            )
        if spec.parametric and not (sep and arg):
            raise UnknownNameError(f"{self.kind} {name!r} needs an argument: write {name}:<arg>")
        return spec, (arg if sep else None)
