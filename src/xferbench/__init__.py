"""xferbench: what do you gain by reusing a pretrained network instead of training a whole one?

The public plugin API lives here (see docs/plugins.md): the hook marker, the spec classes
that the ``xferbench_register_*`` hooks take, and the contracts a component implements.
The contracts are imported on first use, so ``import xferbench`` (which every plugin's
registration module does) stays as light as ``xferbench list`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xferbench.errors import OptionError, PluginError, UserError
from xferbench.hookspecs import PLUGIN_API_VERSION, hookimpl
from xferbench.options import Option
from xferbench.specs import BackboneSpec, CommandSpec, DatasetSpec, HeadSpec, MethodSpec, ReporterSpec, SuiteSpec

if TYPE_CHECKING:
    from xferbench.backbone import Backbone, NetworkBackbone
    from xferbench.context import RunContext
    from xferbench.data import Example, ImageDataset
    from xferbench.decoding import JpegDecoding, Preprocessing
    from xferbench.head import Head
    from xferbench.method import Method, MethodContext, SplitData, TrainingBudget
    from xferbench.record import RunRecord
    from xferbench.reporter import Reporter
    from xferbench.sweep import Sweep

__version__ = "0.2.0"

_LAZY = {
    "Backbone": "xferbench.backbone", "NetworkBackbone": "xferbench.backbone", "Preprocessing": "xferbench.decoding",
    "JpegDecoding": "xferbench.decoding", "RunContext": "xferbench.context", "Example": "xferbench.data",
    "ImageDataset": "xferbench.data", "Head": "xferbench.head", "Method": "xferbench.method",
    "MethodContext": "xferbench.method", "SplitData": "xferbench.method", "TrainingBudget": "xferbench.method",
    "RunRecord": "xferbench.record", "Reporter": "xferbench.reporter", "Sweep": "xferbench.sweep",
}

__all__ = [
    "PLUGIN_API_VERSION", "Backbone", "BackboneSpec", "CommandSpec", "DatasetSpec", "Example", "Head", "HeadSpec",
    "ImageDataset", "JpegDecoding", "Method", "MethodContext", "MethodSpec", "NetworkBackbone", "Option",
    "OptionError", "PluginError", "Preprocessing", "Reporter", "ReporterSpec", "RunContext", "RunRecord", "SplitData",
    "SuiteSpec", "Sweep", "TrainingBudget", "UserError", "__version__", "hookimpl",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xferbench' has no attribute {name!r}")
