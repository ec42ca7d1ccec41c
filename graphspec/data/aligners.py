"""Aligners: named steps that find the subject of a photo and cut it out, before a model's preprocessing crops and
resizes (``Preprocessing.align``). A face model records e.g. ``align: dlib-5pt`` so that every photo is aligned
exactly as the model was trained.

Applications contribute aligners through the ``graphspec.aligners`` entry-point group (the face application's
``dlib-5pt`` and ``openface``), or in Python with :func:`register`. An aligner takes an RGB Pillow image and returns
**every** subject it finds, aligned, as a list of RGB images, the largest subject first, so that detection runs once
per photo: ``Preprocessing.load`` uses the first, ``Preprocessing.load_every`` (``--every-face``) all of them. It
raises :class:`NoSubject` when the photo holds nothing to align to (the photo is then reported and skipped, never
silently used whole). :func:`every_subject` calls an aligner and checks its answer.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from PIL import Image

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


def every_subject(aligner: Callable, image: Image.Image, name: str | None = None) -> list[Image.Image]:
    """The subjects ``aligner`` finds in ``image``, largest first: a non-empty list of Pillow images.

    An empty list is :class:`NoSubject`; a lone image (what aligners returned before they returned every subject)
    is one subject. ``name`` names the aligner in the error for an answer that is neither.
    """
    found = aligner(image)
    if isinstance(found, Image.Image):
        return [found]
    found = list(found) if isinstance(found, (list, tuple)) else [found]
    if not found:
        raise NoSubject("no subject found")
    wrong = next((s for s in found if not isinstance(s, Image.Image)), None)
    if wrong is not None:
        raise DataError(f"aligner '{name or getattr(aligner, '__name__', aligner)}' returned "
                        f"{type(wrong).__name__}; expected a list of Pillow images, the largest subject first")
    return found
