"""Training-time augmentation on uint8 batches: random crop, horizontal flip and jitter, seeded.

Augmentation is not part of :class:`~graphspec.data.Preprocessing` (a model file never records it): at
evaluation time images go through the preprocessing alone. Two ways to crop:

* ``padding=p``: pad the cached image by ``p`` pixels, then cut a random crop of the original size (the image
  seen at evaluation has exactly the training geometry, so the recorded preprocessing stays valid);
* ``size=(h, w)`` smaller than the cached images: cut a random ``h x w`` window (cache at e.g. 104x104 and train
  at 96x96); evaluation then uses :meth:`Augmentation.center`.

Then a horizontal flip with probability ``flip`` and a :class:`Jitter` (rotation, zoom, brightness, contrast).
The randomness of a batch is a function of ``(seed, epoch, step)`` only, drawn for the whole (global) batch, so
runs repeat exactly whatever the number of loader workers or of distributed processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


class CropError(ValueError):
    """Images smaller than the crop an augmentation needs."""


@dataclass(frozen=True)
class Draws:
    """The random choices for the images of one batch (see :meth:`Augmentation.draw`)."""

    tops: np.ndarray
    lefts: np.ndarray
    flips: np.ndarray
    jitter: np.ndarray | None = None

    def __getitem__(self, part: slice) -> "Draws":
        """The draws of a slice of the batch (a distributed rank's share)."""
        return Draws(self.tops[part], self.lefts[part], self.flips[part],
                     None if self.jitter is None else self.jitter[part])


@dataclass(frozen=True)
class Augmentation:
    """Random crop (see module doc), horizontal flip with probability ``flip``, then ``jitter``.

    >>> aug = Augmentation(padding=4, flip=0.5, seed=1)
    >>> aug(torch.zeros(2, 3, 96, 96, dtype=torch.uint8), epoch=0, step=0).shape
    torch.Size([2, 3, 96, 96])
    """

    size: tuple[int, int] | None = None
    padding: int = 0
    pad_mode: Literal["zeros", "reflect", "replicate"] = "reflect"
    flip: float = 0.5
    seed: int = 0
    jitter: "Jitter" = field(default_factory=lambda: Jitter())

    def __post_init__(self):
        if self.padding < 0 or not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"padding must be >= 0 and flip in [0, 1]; received {self.padding}, {self.flip}")

    def generator(self, epoch: int, step: int) -> torch.Generator:
        """The generator for one batch; depends only on (seed, epoch, step)."""
        state = np.random.SeedSequence([self.seed, epoch, step]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def crop_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The (height, width) of the augmented images, for images of ``image_size``."""
        h, w = self.size or image_size
        if image_size[0] + 2 * self.padding < h or image_size[1] + 2 * self.padding < w:
            raise CropError(f"images are {image_size[0]}x{image_size[1]} but the crop needs {h}x{w}")
        return h, w

    def draw(self, n: int, image_size: tuple[int, int], generator: torch.Generator) -> Draws:
        """Crop offsets, flips and jitter for ``n`` images of ``image_size``, in a fixed order of draws."""
        h, w = self.crop_size(image_size)
        ph, pw = image_size[0] + 2 * self.padding, image_size[1] + 2 * self.padding
        tops = torch.randint(0, ph - h + 1, (n,), generator=generator).numpy()
        lefts = torch.randint(0, pw - w + 1, (n,), generator=generator).numpy()
        flips = (torch.rand(n, generator=generator) < self.flip).numpy()
        jitter = self.jitter.draw(n, generator) if self.jitter.active else None
        return Draws(tops, lefts, flips, jitter)

    def apply(self, batch: np.ndarray, draws: Draws) -> np.ndarray:
        """Augment a uint8 ``[N, C, H, W]`` batch with ``draws``; a new array.

        Works in numpy on purpose: small torch ops pay for waking the intra-op thread pool, which on a
        busy machine costs milliseconds per call.
        """
        h, w = self.crop_size(batch.shape[-2:])
        x = self._pad(np.asarray(batch))
        out = np.empty((x.shape[0], *x.shape[1:-2], h, w), dtype=x.dtype)
        for i in range(x.shape[0]):
            crop = x[i, ..., draws.tops[i]:draws.tops[i] + h, draws.lefts[i]:draws.lefts[i] + w]
            out[i] = crop[..., ::-1] if draws.flips[i] else crop
        return out if draws.jitter is None else self.jitter.apply(out, draws.jitter)

    def __call__(self, batch: "torch.Tensor | np.ndarray", *, epoch: int = 0, step: int = 0,
                 generator: torch.Generator | None = None) -> "torch.Tensor | np.ndarray":
        """Augment a ``[N, C, H, W]`` batch; returns a new array of the input's kind (torch or numpy)."""
        x = batch.numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        draws = self.draw(x.shape[0], x.shape[-2:], generator or self.generator(epoch, step))
        out = self.apply(x, draws)
        return torch.from_numpy(out) if isinstance(batch, torch.Tensor) else out

    def center(self, batch: "torch.Tensor | np.ndarray") -> "torch.Tensor | np.ndarray":
        """The deterministic evaluation counterpart: the central ``size`` window, no flip, no jitter."""
        h, w = self.size or batch.shape[-2:]
        if batch.shape[-2] < h or batch.shape[-1] < w:
            raise CropError(f"images are {batch.shape[-2]}x{batch.shape[-1]} but the crop needs {h}x{w}")
        top, left = (batch.shape[-2] - h) // 2, (batch.shape[-1] - w) // 2
        window = batch[..., top:top + h, left:left + w]
        return window.clone() if isinstance(window, torch.Tensor) else window.copy()

    def _pad(self, x: np.ndarray) -> np.ndarray:
        p = self.padding
        if p == 0:
            return x
        mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}[self.pad_mode]
        return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)], mode=mode)


# --- geometric and photometric jitter (recipes: augmentation.rotate / zoom / brightness / contrast) ------------

@dataclass(frozen=True)
class Jitter:
    """Per-image random rotation, zoom, brightness and contrast for a uint8 ``[N, C, H, W]`` batch.

    Rotation (uniform in ``±rotate`` degrees) and zoom (factor uniform in ``zoom``, > 1 magnifies) share one
    bilinear resampling about the image centre, with reflected borders so no black corners teach the network
    about rotations. Brightness multiplies by ``1 + U(-b, b)``; contrast moves each image away from (or towards)
    its mean grey by ``1 + U(-c, c)``. The result is rounded back to uint8, so the recorded preprocessing (and
    its scaling) applies unchanged afterwards.

    >>> j = Jitter(rotate=10, zoom=(0.9, 1.1), brightness=0.2, contrast=0.2)
    >>> p = j.draw(4, torch.Generator().manual_seed(0))
    >>> j.apply(np.zeros((4, 3, 8, 8), np.uint8), p).shape
    (4, 3, 8, 8)
    """

    rotate: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0
    contrast: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.rotate or self.zoom != (1.0, 1.0) or self.brightness or self.contrast)

    def draw(self, n: int, g: torch.Generator) -> np.ndarray:
        """Parameters for ``n`` images, ``[n, 4]``: angle (radians), zoom, brightness and contrast factors.

        Always four draws per image in a fixed order, so a batch's randomness does not depend on which
        jitters are switched on elsewhere in the batch (or on how a distributed run splits it)."""
        u = torch.rand(n, 4, generator=g, dtype=torch.float64).numpy() * 2 - 1  # U(-1, 1)
        lo, hi = self.zoom
        return np.stack([np.deg2rad(self.rotate) * u[:, 0], lo + (hi - lo) * (u[:, 1] + 1) / 2,
                         1 + self.brightness * u[:, 2], 1 + self.contrast * u[:, 3]], axis=1)

    def apply(self, batch: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Jitter ``batch`` (uint8) with ``params`` from :meth:`draw`; returns a new uint8 array."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).float()
        p = torch.from_numpy(params).float()
        if self.rotate or self.zoom != (1.0, 1.0):
            cos, sin, z = torch.cos(p[:, 0]), torch.sin(p[:, 0]), p[:, 1]
            # affine_grid maps output to input coordinates: rotate by the angle and shrink by the zoom factor
            theta = torch.stack([torch.stack([cos / z, -sin / z, torch.zeros_like(z)], 1),
                                 torch.stack([sin / z, cos / z, torch.zeros_like(z)], 1)], 1)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.contrast:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = mean + (x - mean) * p[:, 3].view(-1, 1, 1, 1)
        if self.brightness:
            x = x * p[:, 2].view(-1, 1, 1, 1)
        return x.round_().clamp_(0, 255).to(torch.uint8).numpy()
