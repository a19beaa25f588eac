"""Where Pensieve keeps files it derives and can rebuild: converted weights, compiled CPU kernels."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$PENSIEVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/pensieve``, else ``~/.cache/pensieve``."""
    explicit = os.environ.get("PENSIEVE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pensieve"
