"""Option schemas that plugins declare, and validation of ``K=V`` strings."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xferbench.errors import OptionError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One option a backbone, dataset or head accepts.

    ``min`` and ``max`` are inclusive bounds (``>=``, ``<=``); ``gt`` and ``lt`` are exclusive
    ones (``>``, ``<``), e.g. ``gt=0`` for a learning rate that must be positive.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        bounded = [b for b in (self.min, self.max, self.gt, self.lt) if b is not None]
        if bounded and self.type not in (int, float):
            raise TypeError(f"option {self.name!r}: bounds need type int or float, not {self.type.__name__}")
        if (self.min is not None and self.gt is not None) or (self.max is not None and self.lt is not None):
            raise TypeError(f"option {self.name!r}: give min or gt (max or lt), not both")

    def bounds(self) -> list[str]:
        """The bounds as ``[">= 1", "< 0.5"]``, lower first."""
        out = []
        for symbol, bound in ((">=", self.min), (">", self.gt), ("<=", self.max), ("<", self.lt)):
            if bound is not None:
                out.append(f"{symbol} {bound}")
        return out

    def parse(self, raw: Any, owner: str) -> Any:
        """Convert ``raw`` (usually a CLI string) and check it, or raise OptionError."""
        value = self._convert(raw, owner)
        if value is None and self.default is None:
            # "not set", as validate fills it in: run records hold it, and export validates them again
            return None
        if value is None:
            raise OptionError(f"{owner}: option {self.name}=None must be set (default {self.default!r})")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise OptionError(f"{owner}: option {self.name}={raw!r} must be one of: {allowed}")
        # Written as "not >=" so that NaN fails every bound instead of passing them all.
        if self.min is not None and not value >= self.min:
            raise OptionError(f"{owner}: option {self.name}={raw!r} must be >= {self.min}")
        if self.max is not None and not value <= self.max:
            raise OptionError(f"{owner}: option {self.name}={raw!r} must be <= {self.max}")
        if self.gt is not None and not value > self.gt:
            raise OptionError(f"{owner}: option {self.name}={raw!r} must be > {self.gt}")
        if self.lt is not None and not value < self.lt:
            raise OptionError(f"{owner}: option {self.name}={raw!r} must be < {self.lt}")
        if isinstance(value, float) and not math.isfinite(value):  # "inf", "1e400", or "nan" with no bound
            raise OptionError(f"{owner}: option {self.name}={raw!r} is not a finite number")
        return value

    def _convert(self, raw: Any, owner: str) -> Any:
        if not isinstance(raw, str):
            if self.type is float and isinstance(raw, int) and not isinstance(raw, bool):
                return float(raw)
            if isinstance(raw, self.type) or raw is None:
                return raw
            raw = str(raw)
        try:
            if self.type is bool:
                low = raw.strip().lower()
                if low in _TRUE:
                    return True
                if low in _FALSE:
                    return False
                raise ValueError(raw)
            return self.type(raw)
        except ValueError:
            kind = {bool: "true/false", int: "an integer", float: "a number"}.get(self.type, self.type.__name__)
            raise OptionError(f"{owner}: option {self.name}={raw!r} is not {kind}") from None

    def describe(self) -> str:
        """One line for ``xferbench list``: ``name=default (type, bounds) help``, e.g. ``lr=0.01 (float, > 0) ...``."""
        kind = self.type.__name__
        if self.choices:
            kind = "|".join(map(str, self.choices))
        kind = ", ".join([kind, *self.bounds()])
        return f"{self.name}={self.default} ({kind}) {self.help}".rstrip()


def parse_assignments(items: Iterable[str] | None, flag: str) -> dict[str, str]:
    """Turn ``["k=v", ...]`` from a repeated CLI flag into a dict."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def validate_options(schema: Sequence[Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Return all options of ``schema`` with defaults filled in and ``given`` parsed.

    An unknown key is an error that suggests the closest known key.
    """
    by_name = {opt.name: opt for opt in schema}
    for key in given:
        if key not in by_name:
            known = sorted(by_name)
            hint = difflib.get_close_matches(key, known, n=1)
            did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
            listing = ", ".join(known) if known else "none"
            raise OptionError(f"{owner}: unknown option {key!r}{did_you_mean} (known options: {listing})")
    return {
        opt.name: opt.parse(given[opt.name], owner) if opt.name in given else opt.default for opt in schema
    }
