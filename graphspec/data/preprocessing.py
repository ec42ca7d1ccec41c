"""The deterministic part of preparing a face image: a value a model file records.

    >>> from graphspec.data import Preprocessing
    >>> p = Preprocessing.dl4j()                      # the tutorial: whole image -> 96x96, BGR, 0..255
    >>> p == Preprocessing.model_validate_json(p.model_dump_json())
    True

The pipeline, in this order: decode (Pillow) -> convert to 3 channels -> align (when ``align`` names an aligner: the
largest subject) -> center crop -> resize -> channel order -> uint8 ``[3, H, W]`` (:meth:`Preprocessing.load`;
:meth:`Preprocessing.load_every` gives every subject); then :meth:`Preprocessing.to_tensor` turns uint8 batches
into float32 with the configured scale. Caches store the uint8 result, so scaling costs nothing to change.
"""
from __future__ import annotations

import os
from typing import Annotated, Literal, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import Location
from .errors import DataError, located
from .images import open_image

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# Pixels per side of a preprocessed image (the network input, or a recipe's augmentation.load_size): face networks
# take 96-299 and crop from at most a few hundred; 1024 keeps one cached image at 3 MB and a batch of 48 at 150 MB
# (600 MB as float32), where 20,000 made a 1.2 GB cache row and a 4 GB training step.
MAX_IMAGE_SIDE = 1024
ImageSide = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
Interpolation = Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos", "cv-linear"]


class Preprocessing(BaseModel):
    """How an image file becomes a network input (immutable, JSON-serialisable).

    ``size`` is (height, width). ``crop`` is the center-crop fraction of the decoded image (1.0 = whole image).
    ``channels`` is the order of the 3 channels. ``scale``: ``raw`` keeps 0..255, ``unit`` divides by 255,
    ``standardize`` computes ``(x / 255 - mean) / std`` with ``mean``/``std`` given per channel *in the order of
    ``channels``*. ``interpolation`` names a Pillow filter (antialiased when shrinking) or ``cv-linear``:
    OpenCV's ``INTER_LINEAR`` geometry (half-pixel centres, no antialiasing; float arithmetic, so within 1 of
    OpenCV's fixed-point result), which is what DL4J's ``NativeImageLoader`` calls.
    The defaults are the DL4J tutorial's (``Preprocessing() == Preprocessing.dl4j()``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    size: Tuple[ImageSide, ImageSide] = (96, 96)
    crop: float = Field(1.0, gt=0.0, le=1.0)
    channels: Literal["bgr", "rgb"] = "bgr"
    scale: Literal["raw", "unit", "standardize"] = "raw"
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    interpolation: Interpolation = "bilinear"
    # an aligner (graphspec.data.aligners) that cuts the subject out of the photo first, e.g. "dlib-5pt" for faces
    align: Optional[str] = Field(None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _check_stats(self) -> "Preprocessing":
        given = self.mean is not None or self.std is not None
        if self.scale == "standardize" and (self.mean is None or self.std is None):
            raise ValueError("scale 'standardize' needs both mean and std (3 values each)")
        if self.scale != "standardize" and given:
            raise ValueError(f"mean/std are only used with scale 'standardize'; received scale '{self.scale}'")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive; received {list(self.std)}")
        return self

    @classmethod
    def dl4j(cls) -> "Preprocessing":
        """The tutorial's ``LFWDataSetIterator``: whole 250x250 image resized to 96x96, BGR, values 0..255."""
        return cls()

    @classmethod
    def openface(cls) -> "Preprocessing":
        """OpenFace's network input convention: 96x96 RGB in [0, 1] (without its dlib alignment)."""
        return cls(channels="rgb", scale="unit")

    # --- pixels -------------------------------------------------------------------------------------------
    def load(self, path: "str | os.PathLike") -> np.ndarray:
        """Decode and preprocess one file into uint8 ``[3, H, W]`` (with an aligner: its largest subject);
        :class:`DataError` if it cannot be read, :class:`~graphspec.data.aligners.NoSubject` if the aligner finds
        nothing in it."""
        return self._read(path, self.apply)

    def load_every(self, path: "str | os.PathLike") -> list[np.ndarray]:
        """Every subject the aligner finds in one file, largest first, each as :meth:`load` preprocesses it (the
        file's one whole image when there is no aligner); the same errors as :meth:`load`."""
        return self._read(path, self.apply_every)

    def _read(self, path: "str | os.PathLike", preprocess):
        try:
            with open_image(path) as image:  # a regular file whose decoded size is within the limits
                image.load()
                return preprocess(image)
        except DataError as e:
            if not str(e.problem.location):  # an aligner's refusal (e.g. NoSubject): the same error, naming the file
                raise type(e)(e.problem.message, location=Location(str(path))) from e
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise located(f"unreadable image: {e}", path) from e

    def apply(self, image: Image.Image) -> np.ndarray:
        """Preprocess an already opened Pillow image into uint8 ``[3, H, W]`` (with an aligner: its largest
        subject)."""
        return self._to_array(self.subjects(image)[0])

    def apply_every(self, image: Image.Image) -> list[np.ndarray]:
        """Every subject of an already opened Pillow image, largest first, as :meth:`apply` preprocesses it."""
        return [self._to_array(subject) for subject in self.subjects(image)]

    def subjects(self, image: Image.Image) -> list[Image.Image]:
        """The RGB images the rest of the pipeline starts from: the aligner's subjects, largest first (the
        aligner runs once), or the whole image when there is no aligner."""
        image = to_rgb(image)
        if self.align is None:
            return [image]
        from .aligners import every_subject, get
        return every_subject(get(self.align), image, self.align)

    def _to_array(self, image: Image.Image) -> np.ndarray:
        """Crop, resize and order the channels of one RGB image: uint8 ``[3, H, W]``."""
        box = crop_box(image.size, self.crop)
        if box != (0, 0, *image.size):
            image = image.crop(box)
        h, w = self.size
        if self.interpolation == "cv-linear":
            hwc = cv_linear_resize(np.asarray(image), h, w)
        elif image.size == (w, h):
            hwc = np.asarray(image)
        else:
            hwc = np.asarray(image.resize((w, h), _PIL_FILTERS[self.interpolation]))
        if self.channels == "bgr":
            hwc = hwc[:, :, ::-1]
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))

    def to_tensor(self, batch: "np.ndarray | torch.Tensor") -> torch.Tensor:
        """uint8 ``[N, 3, H, W]`` (or one ``[3, H, W]``) -> float32 tensor with the configured scale.

        Computed in numpy (single-threaded): torch's thread pool costs more than it saves on a batch this size.
        """
        a = batch.numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        if a.dtype != np.uint8:
            raise DataError(f"to_tensor expects uint8 images (as load() returns); received {a.dtype}")
        if a.ndim not in (3, 4) or a.shape[-3] != 3:
            raise DataError(f"to_tensor expects [N, 3, H, W] or [3, H, W]; received {list(a.shape)}")
        x = a.astype(np.float32)
        if self.scale == "unit":
            np.divide(x, np.float32(255), out=x)
        elif self.scale == "standardize":
            mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
            std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
            np.divide(x, np.float32(255), out=x)
            np.subtract(x, mean, out=x)
            np.divide(x, std, out=x)
        return torch.from_numpy(x)

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``96x96 bgr raw, crop 1.0, bilinear``."""
        stats = f" mean={list(self.mean)} std={list(self.std)}" if self.scale == "standardize" else ""
        aligned = f"aligned by {self.align}, " if self.align else ""
        return (f"{self.size[0]}x{self.size[1]} {self.channels} {self.scale}{stats}, {aligned}crop {self.crop:g}, "
                f"{self.interpolation}")


def check_image_size(size: tuple[int, int]) -> None:
    """Refuse an image size (height, width) outside 1..MAX_IMAGE_SIDE before any image is decoded at it: the field's
    own bound is skipped by ``model_copy(update=...)``, which is how a recipe's ``augmentation.load_size`` arrives."""
    h, w = size
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise DataError(f"image size {h}x{w} is outside 1..{MAX_IMAGE_SIDE} pixels per side (MAX_IMAGE_SIDE); "
                        "lower augmentation.load_size or preprocessing.size")


def crop_box(size: tuple[int, int], fraction: float) -> tuple[int, int, int, int]:
    """The center-crop box ``(left, top, right, bottom)`` keeping ``round(fraction * side)`` pixels per side."""
    w, h = size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: gray is replicated, alpha dropped (as OpenCV does), CMYK converted,
    16/32-bit gray scaled down to 8 bits (not clipped)."""
    if image.mode == "RGB":
        return image
    # (in place where possible: the copies of a large image, not its decoding, set the peak memory)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = np.asarray(image) >> 8  # unsigned 16-bit: no clipping needed
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if image.mode == "I":
        gray = np.clip(np.asarray(image), 0, 65535)
        np.right_shift(gray, 8, out=gray)
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        gray = np.clip(np.asarray(image), 0, 255)
        np.round(gray, out=gray)
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def cv_linear_resize(hwc: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with OpenCV ``INTER_LINEAR`` sampling: source ``(d + 0.5) * in/out - 0.5`` clamped at the
    borders, no antialiasing; rounded to uint8."""
    src = hwc.astype(np.float32)
    ys, y0, y1 = _taps(hwc.shape[0], height)
    xs, x0, x1 = _taps(hwc.shape[1], width)
    rows = src[y0] * (1 - ys)[:, None, None] + src[y1] * ys[:, None, None]
    out = rows[:, x0] * (1 - xs)[None, :, None] + rows[:, x1] * xs[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return (pos - lo).astype(np.float32), lo, hi
