"""What a component may ask of the harness while it runs."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xferbench.data import ImageDataset, check_examples, select_classes
from xferbench.errors import UserError
from xferbench.plugin_manager import Catalog
from xferbench.progress import Progress


@dataclass
class RunContext:
    """Shared settings of one ``xferbench`` invocation."""

    catalog: Catalog
    cache_dir: Path
    seed: int = 0
    weights: Path | None = None
    data_dir: Path | None = None
    progress: Progress = field(default_factory=Progress)

    def load_dataset(self, token: str, options: Mapping[str, Any] | None = None) -> ImageDataset:
        """Resolve ``name[:arg]``, validate options and load it (examples checked, class subset applied)."""
        spec, arg = self.catalog.datasets.resolve(token)
        opts = spec.validate(options or {})
        factory = spec.load_factory()
        subset = None if spec.parametric else arg
        dataset = factory(arg if spec.parametric else None, opts, self)
        if not isinstance(dataset, ImageDataset):
            raise UserError(f"dataset {spec.name!r} (plugin {spec.plugin}) returned {type(dataset).__name__}, "
                            f"not an ImageDataset")
        check_examples(dataset, f"dataset {spec.name!r} (plugin {spec.plugin})")
        if subset:
            dataset = select_classes(dataset, subset)
        if not dataset.examples:
            raise UserError(f"dataset {token!r} has no usable images")
        return dataset

    def subdir(self, *parts: str) -> Path:
        """A folder under the cache dir, created on demand."""
        path = self.cache_dir.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from xferbench.atomic import free_space

            full = f" ({free_space(path)} free)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise UserError(f"cannot create cache folder {path}: {exc.strerror or exc}{full}; point --cache-dir "
                            f"(or XFERBENCH_CACHE_DIR) at a folder you can write") from None
        return path
