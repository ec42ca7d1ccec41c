"""Where graphspec keeps what it derives from data: the cache folder.

The cache folder holds decoded-image caches, downloads and generated synthetic sets; it is never inside a
dataset folder (datasets may be read-only and shared).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(explicit: "str | os.PathLike | None" = None) -> Path:
    """The cache folder: ``explicit``, else ``$GRAPHSPEC_CACHE``, else ``$XDG_CACHE_HOME/graphspec`` or
    ``~/.cache/graphspec``. Not created here."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get("GRAPHSPEC_CACHE"):
        return Path(os.environ["GRAPHSPEC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graphspec"
