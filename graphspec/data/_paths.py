"""Where data lives: the LFW folder and the cache folder.

The cache folder holds decoded-image caches, downloads and generated synthetic sets; it is never inside a
dataset folder (datasets may be read-only and shared).
"""
from __future__ import annotations

import os
from pathlib import Path

#: Repository root when graphspec runs from a source checkout (``graphspec/data/_paths.py`` -> ``../../..``).
_REPO = Path(__file__).resolve().parents[2]


def cache_dir(explicit: "str | os.PathLike | None" = None) -> Path:
    """The cache folder: ``explicit``, else ``$GRAPHSPEC_CACHE``, else ``$XDG_CACHE_HOME/graphspec`` or
    ``~/.cache/graphspec``. Not created here."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get("GRAPHSPEC_CACHE"):
        return Path(os.environ["GRAPHSPEC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graphspec"


def lfw_candidates() -> list[Path]:
    """Where :func:`locate_lfw` looks, in order: ``$GRAPHSPEC_LFW``; ``../shared/data/lfw`` next to a source
    checkout (this project's machines); ``~/lfw`` (DL4J's ``LFWLoader`` default)."""
    found = []
    if os.environ.get("GRAPHSPEC_LFW"):
        found.append(Path(os.environ["GRAPHSPEC_LFW"]).expanduser())
    found.append(_REPO.parent / "shared" / "data" / "lfw")
    found.append(Path.home() / "lfw")
    return found


def locate_lfw() -> Path | None:
    """The first existing folder of :func:`lfw_candidates`, or None (then use :func:`synthetic_faces`).

    ``$GRAPHSPEC_LFW`` set to a missing folder means "no LFW here" (tests use that to force the skip path).
    """
    env = os.environ.get("GRAPHSPEC_LFW")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for path in lfw_candidates():
        if path.is_dir():
            return path
    return None
