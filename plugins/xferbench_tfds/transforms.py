"""Labels derived from a TFDS example's features, as the VTAB tasks define them.

A :class:`LabelTransform` names the features it reads (only those are parsed from the records)
and maps one example, as numpy values, to a class index. The built-in ones follow the VTAB code
(google-research/task_adaptation, ``task_adaptation/data/{clevr,dsprites,kitti}.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xferbench.errors import UserError


@dataclass(frozen=True)
class LabelTransform:
    """``fn(features) -> class index`` over the features named in ``reads`` (nested like the dataset's)."""

    name: str
    class_names: tuple[str, ...]
    reads: Mapping[str, Any]
    fn: Callable[[Mapping[str, Any]], int]

    def __call__(self, features: Mapping[str, Any]) -> int:
        return int(self.fn(features))


def _bin(value: float, thresholds: np.ndarray) -> int:
    """The last bin whose lower threshold is below ``value`` (VTAB's ``max(where(thrs - v < 0))``); 0 below all."""
    below = np.flatnonzero(thresholds < value)
    return int(below[-1]) if below.size else 0


def _clevr_count(features: Mapping[str, Any]) -> int:
    # 3 to 10 objects in every real CLEVR image -> classes 0-7; clipped so that random mock data stays in range
    return int(np.clip(len(features["objects"]["size"]) - 3, 0, 7))


_CLEVR_DISTANCE_THRESHOLDS = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def _clevr_distance(features: Mapping[str, Any]) -> int:
    depth = np.asarray(features["objects"]["pixel_coords"], dtype=np.float64).reshape(-1, 3)[:, 2]
    return min(_bin(float(depth.min()), _CLEVR_DISTANCE_THRESHOLDS), 5) if depth.size else 0


def _binned(key: str, original: int, classes: int) -> Callable[[Mapping[str, Any]], int]:
    """dSprites: neighbouring values of a ``original``-valued label grouped into ``classes`` bins."""
    factor = original / classes

    def fn(features: Mapping[str, Any]) -> int:
        return int(np.floor(float(features[key]) / factor))
    return fn


_KITTI_THRESHOLDS = np.array([-100.0, 8.0, 20.0, 999.0])


def _kitti_distance(features: Mapping[str, Any]) -> int:
    objects = features["objects"]
    kinds = np.asarray(objects["type"]).reshape(-1)
    depth = np.asarray(objects["location"], dtype=np.float64).reshape(-1, 3)[:, 2]
    count = min(len(kinds), len(depth))  # equal in real KITTI; TFDS's mock data draws each length on its own
    vehicles = depth[:count][kinds[:count] < 3]  # Car, Van, Truck
    closest = float(min(vehicles.min(), 1000.0)) if vehicles.size else 1000.0
    return _bin(closest, _KITTI_THRESHOLDS)  # 1000 m (no vehicle) is class 3


BUILT_IN: dict[str, LabelTransform] = {t.name: t for t in (
    LabelTransform("clevr_count", tuple(str(n) for n in range(3, 11)), {"objects": {"size": True}}, _clevr_count),
    LabelTransform("clevr_distance", ("<8", "8-8.5", "8.5-9", "9-9.5", "9.5-10", ">=10"),
                   {"objects": {"pixel_coords": True}}, _clevr_distance),
    LabelTransform("dsprites_location", tuple(f"x{i}" for i in range(16)), {"label_x_position": True},
                   _binned("label_x_position", 32, 16)),
    LabelTransform("dsprites_orientation", tuple(f"o{i}" for i in range(16)), {"label_orientation": True},
                   _binned("label_orientation", 40, 16)),
    LabelTransform("kitti_distance", ("<8m", "8-20m", ">=20m", "no vehicle"),
                   {"objects": {"type": True, "location": True}}, _kitti_distance),
)}


def resolve(name: str) -> LabelTransform:
    """A built-in transform by name, or ``module:attr`` naming a LabelTransform."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" not in name:
        raise UserError(f"dataset 'tfds': label_transform {name!r} is neither built in "
                        f"({', '.join(sorted(BUILT_IN))}) nor module:attr")
    import importlib

    module_name, _, attr = name.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"dataset 'tfds': cannot load label_transform {name!r}: {exc}") from None
    if not isinstance(obj, LabelTransform):
        raise UserError(f"dataset 'tfds': label_transform {name!r} is a {type(obj).__name__}, not a "
                        f"xferbench_tfds.transforms.LabelTransform")
    return obj
