"""xferbench: what do you gain by reusing a pretrained network instead of training a whole one?

The public plugin API lives here: ``hookimpl`` and the spec classes.
"""

from xferbench.hookspecs import hookimpl
from xferbench.options import Option
from xferbench.specs import BackboneSpec, DatasetSpec, HeadSpec, ReporterSpec

__version__ = "0.1.0"

__all__ = ["BackboneSpec", "DatasetSpec", "HeadSpec", "Option", "ReporterSpec", "__version__", "hookimpl"]
