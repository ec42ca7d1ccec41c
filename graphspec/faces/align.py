"""Face alignment for any photo: dlib's HOG face detector and its 5-point landmarks, then one of two templates.

* ``dlib-5pt``: dlib's 150×150 face chip (padding 0.25), what dlib's ``compute_face_descriptor(img, shape)`` feeds
  its network (DLIB-FACE-MODEL.md §5).
* ``openface``: OpenFace's 96×96 alignment for nn4.small2 (``AlignDlib.align(96, ..., OUTER_EYES_AND_NOSE)``): the
  affine map that puts the outer eye corners and the bottom of the nose on OpenFace's mean-face template.

Both are registered aligners (``graphspec.aligners`` entry points): a model whose preprocessing says ``align:
dlib-5pt`` or ``align: openface`` gets every photo aligned this way by ``embed``, ``verify``, ``identify``,
``cluster`` and training. Each returns the chips of every face in the photo, largest first (the largest is what a
model sees; ``--every-face`` and ``graphspec dataset --align --every-face`` use them all).

Needs the ``faces`` extra: dlib (the ``dlib-bin`` wheel) and the landmark model of ``face_recognition_models``
(public domain / CC0), both installed by the user, never shipped with graphspec.
"""
from __future__ import annotations

import importlib.util
import threading
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


_per_thread = threading.local()


def _dlib():
    """(detector, landmark predictor) of this thread: dlib's detector keeps scratch state between calls, and one
    shared by two threads misses or misplaces one face in seven (the image cache decodes in threads)."""
    if not hasattr(_per_thread, "models"):
        _per_thread.models = _load()
    return _per_thread.models


def _load():
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


def landmarks(image: Image.Image):
    """dlib's 5-point shape of the largest face; :class:`NoSubject` when the photo holds no face."""
    return every_landmarks(image)[0]


def every_landmarks(image: Image.Image) -> list:
    """dlib's 5-point shapes of every face (detected once), largest first; :class:`NoSubject` when the photo holds
    no face."""
    found = faces(image)
    if not found:
        raise NoSubject("no face found")
    _, predictor = _dlib()
    pixels = np.asarray(image)
    return [predictor(pixels, rect) for rect in found]


def dlib_5pt(image: Image.Image) -> list[Image.Image]:
    """dlib's aligned 150×150 chip of every face, largest first."""
    import dlib
    pixels = np.asarray(image)
    return [Image.fromarray(dlib.get_face_chip(pixels, shape, size=CHIP_SIZE, padding=PADDING))
            for shape in every_landmarks(image)]


# OpenFace's mean face (openface/align_dlib.py, Apache 2.0): the 68-point TEMPLATE's outer eye corners (36, 45) and
# nose bottom (33), and the template's bounding box, from which MINMAX_TEMPLATE = (TEMPLATE - min) / (max - min).
_OPENFACE_POINTS = np.array([(0.252418718401, 0.331052263829), (0.782865376271, 0.321305281656),
                             (0.520712933176, 0.634268222208)])
_OPENFACE_MIN = np.array([0.0792396913815, 0.182360984545])
_OPENFACE_MAX = np.array([0.971193274221, 1.06080371126])
OPENFACE_SIZE = 96  # nn4.small2's input
# dlib's 5-point parts that are 68-point landmarks 36, 45 and 33 (DLIB-FACE-MODEL.md §5: parts 2 and 0 are the outer
# eye corners, part 4 the bottom of the nose)
_DLIB_PARTS = (2, 0, 4)


def openface_template(size: int = OPENFACE_SIZE) -> np.ndarray:
    """Where OpenFace puts the outer eye corners and the nose bottom in a ``size``-pixel chip, [3, (x, y)]."""
    return size * (_OPENFACE_POINTS - _OPENFACE_MIN) / (_OPENFACE_MAX - _OPENFACE_MIN)


def openface(image: Image.Image) -> list[Image.Image]:
    """OpenFace's 96×96 chip of every face, largest first."""
    return [openface_chip(image, shape) for shape in every_landmarks(image)]


def openface_chip(image: Image.Image, shape) -> Image.Image:
    """OpenFace's 96×96 chip of the face with dlib 5-point ``shape``: ``cv2.warpAffine(img,
    getAffineTransform(points, template), (96, 96))`` with bilinear sampling (pixel centres at integers, as OpenCV;
    outside the photo is black)."""
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in _DLIB_PARTS], dtype=np.float64)
    inverse = _affine(openface_template(), points)  # chip pixel -> photo pixel, what Pillow samples with
    a, b, c, d, e, f = inverse.ravel()
    # Pillow's pixel centres are at +0.5: shift OpenCV's integer-centred map into Pillow's coordinates
    coefficients = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    return image.transform((OPENFACE_SIZE, OPENFACE_SIZE), Image.Transform.AFFINE, coefficients,
                           Image.Resampling.BILINEAR)


def _affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 affine map taking three ``source`` points exactly onto ``target`` (OpenCV's getAffineTransform)."""
    design = np.hstack([source, np.ones((3, 1))])
    return np.linalg.solve(design, target).T
