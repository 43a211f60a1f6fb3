"""Where xferbench keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "XFERBENCH_CACHE_DIR"


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def default_cache_dir() -> Path:
    """``$XFERBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/xferbench``, else ``~/.cache/xferbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return user_cache_root() / "xferbench"
