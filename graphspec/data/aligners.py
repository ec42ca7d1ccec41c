"""Aligners: named steps that find the subject of a photo and cut it out, before a model's preprocessing crops and
resizes (``Preprocessing.align``). A face model records e.g. ``align: dlib-5pt`` so that every photo is aligned
exactly as the model was trained.

Applications contribute aligners through the ``graphspec.aligners`` entry-point group (the face application's
``dlib-5pt``), or in Python with :func:`register`. An aligner takes an RGB Pillow image and returns the aligned RGB
image, or raises :class:`NoSubject` when the photo holds nothing to align to (the photo is then reported and
skipped, never silently used whole).
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from .errors import DataError

GROUP = "graphspec.aligners"
_registered: dict[str, Callable] = {}


class NoSubject(DataError):
    """The aligner found nothing to align to (e.g. no face in the photo)."""


def register(name: str, aligner: Callable) -> None:
    _registered[name] = aligner


def names() -> list[str]:
    return sorted(set(_registered) | {ep.name for ep in entry_points(group=GROUP)})


def get(name: str) -> Callable:
    """The aligner called ``name``: registered in Python, else from an installed application's entry point."""
    if name not in _registered:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            from ..errors import did_you_mean
            known = names()
            raise DataError(f"no aligner named '{name}'{did_you_mean(name, known)} (installed: "
                            f"{', '.join(known) or 'none'})")
        _registered[name] = found[0].load()
    return _registered[name]
