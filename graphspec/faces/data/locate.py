"""Where LFW lives: ``$GRAPHSPEC_LFW``, then ``../shared/data/lfw`` beside a source checkout, then ``~/lfw``."""
from __future__ import annotations

import os
from pathlib import Path

#: Repository root when graphspec runs from a source checkout (``graphspec/faces/data/locate.py`` -> ``../../../..``).
_REPO = Path(__file__).resolve().parents[3]


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
