"""Spec language versions: the current one, and the chain of upgrades from older ones.

``UPGRADES[v]`` turns a version-``v`` document (plain dicts, before validation) into a version ``v + 1``
document. Loading an older spec runs the chain and warns once per step (``DeprecationWarning``) with what changed,
so users can rewrite their files; a newer version than this graphspec knows is refused.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable

CURRENT = 1

# version -> (function upgrading a document of that version by one, what it changes)
UPGRADES: dict[int, tuple[Callable[[dict], dict], str]] = {}


class SpecDeprecationWarning(DeprecationWarning):
    pass


def register(version: int, description: str):
    """Decorator: ``@register(1, "'nIn' is now 'in'")`` on a function upgrading version 1 documents to 2."""
    def wrap(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        UPGRADES[version] = (fn, description)
        return fn
    return wrap


def upgrade(doc: dict, label: str = "<spec>") -> dict:
    """Bring an older document to the current version (a copy; the input is not changed)."""
    version = doc.get("version")
    if not isinstance(version, int) or version >= CURRENT:
        return doc
    doc = copy.deepcopy(doc)
    while doc["version"] < CURRENT:
        v = doc["version"]
        if v not in UPGRADES:
            from ..errors import GraphspecError, Location
            raise GraphspecError(f"spec version {v} can no longer be read (no upgrade from it); this graphspec "
                                 f"reads versions {min(UPGRADES, default=CURRENT)} to {CURRENT}",
                                 location=Location(label))
        fn, description = UPGRADES[v]
        doc = fn(doc)
        doc["version"] = v + 1
        warnings.warn(f"{label}: spec version {v} is deprecated and was upgraded to {v + 1}: {description}; "
                      f"update the file (`graphspec upgrade` prints the upgraded spec)",
                      SpecDeprecationWarning, stacklevel=3)
    return doc
