"""Hook specifications: how a plugin adds backbones, datasets, heads and reporters.

A plugin is a module (or object) with functions marked ``@xferbench.hookimpl`` whose
names match these. Each ``register`` callable takes one spec; call it once per
component. Plugins reach xferbench through the ``xferbench`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from xferbench.specs import BackboneSpec, DatasetSpec, HeadSpec, ReporterSpec

PROJECT = "xferbench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def xferbench_register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    """Register feature extractors, e.g. ``register(BackboneSpec("lenet5", ...))``."""


@hookspec
def xferbench_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register labelled image sets."""


@hookspec
def xferbench_register_heads(register: Callable[[HeadSpec], None]) -> None:
    """Register classifiers that are trained on bottleneck features."""


@hookspec
def xferbench_register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    """Register result sinks that render or store a finished results document."""
