"""Where ferry keeps its own files: installed connectors, the default store, caches."""

from __future__ import annotations

import os
from pathlib import Path


def ferry_home() -> Path:
    """$FERRY_HOME, or ~/.ferry."""
    home = os.environ.get("FERRY_HOME") or "~/.ferry"
    return Path(home).expanduser().absolute()
