"""Where reslab keeps datasets and decoded-image caches (never inside your data folder)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Folder for downloaded built-in datasets: ``$RESLAB_DATA_DIR`` or ``~/.cache/reslab``."""
    env = os.environ.get("RESLAB_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reslab"


def cache_dir() -> Path:
    """Folder for decoded uint8 image caches: ``$RESLAB_CACHE_DIR`` or ``~/.cache/reslab``."""
    env = os.environ.get("RESLAB_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reslab"
