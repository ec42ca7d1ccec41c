"""Training-time augmentation on uint8 batches: random crop and horizontal flip, seeded.

Augmentation is not part of :class:`~graphspec.data.Preprocessing` (a model file never records it): at
evaluation time images go through the preprocessing alone. Two ways to crop:

* ``padding=p``: pad the cached image by ``p`` pixels, then cut a random crop of the original size (the image
  seen at evaluation has exactly the training geometry, so the recorded preprocessing stays valid);
* ``size=(h, w)`` smaller than the cached images: cut a random ``h x w`` window (cache at e.g. 104x104 and train
  at 96x96); evaluation must then use :meth:`Augmentation.center`.

The randomness of a batch is a function of ``(seed, epoch, step)`` only, so runs repeat exactly whatever the
number of loader workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch


@dataclass(frozen=True)
class Augmentation:
    """Random crop (see module doc) and horizontal flip with probability ``flip``.

    >>> aug = Augmentation(padding=4, flip=0.5, seed=1)
    >>> aug(torch.zeros(2, 3, 96, 96, dtype=torch.uint8), epoch=0, step=0).shape
    torch.Size([2, 3, 96, 96])
    """

    size: tuple[int, int] | None = None
    padding: int = 0
    pad_mode: Literal["zeros", "reflect", "replicate"] = "reflect"
    flip: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.padding < 0 or not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"padding must be >= 0 and flip in [0, 1]; received {self.padding}, {self.flip}")

    def generator(self, epoch: int, step: int) -> torch.Generator:
        """The generator for one batch; depends only on (seed, epoch, step)."""
        state = np.random.SeedSequence([self.seed, epoch, step]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def __call__(self, batch: "torch.Tensor | np.ndarray", *, epoch: int = 0, step: int = 0,
                 generator: torch.Generator | None = None) -> "torch.Tensor | np.ndarray":
        """Augment a ``[N, C, H, W]`` batch; returns a new array of the input's kind (torch or numpy).

        Works in numpy on purpose: small torch ops pay for waking the intra-op thread pool, which on a
        busy machine costs milliseconds per call.
        """
        g = generator or self.generator(epoch, step)
        x = batch.numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        n = x.shape[0]
        h, w = self.size or x.shape[-2:]
        x = self._pad(x)
        if x.shape[-2] < h or x.shape[-1] < w:
            raise ValueError(f"crop {h}x{w} is larger than the (padded) image {x.shape[-2]}x{x.shape[-1]}")
        tops = torch.randint(0, x.shape[-2] - h + 1, (n,), generator=g).tolist()
        lefts = torch.randint(0, x.shape[-1] - w + 1, (n,), generator=g).tolist()
        flips = (torch.rand(n, generator=g) < self.flip).tolist()
        out = np.empty((n, *x.shape[1:-2], h, w), dtype=x.dtype)
        for i in range(n):
            crop = x[i, ..., tops[i]:tops[i] + h, lefts[i]:lefts[i] + w]
            out[i] = crop[..., ::-1] if flips[i] else crop
        return torch.from_numpy(out) if isinstance(batch, torch.Tensor) else out

    def center(self, batch: "torch.Tensor | np.ndarray") -> "torch.Tensor | np.ndarray":
        """The deterministic evaluation counterpart: the central ``size`` window, no flip."""
        h, w = self.size or batch.shape[-2:]
        top, left = (batch.shape[-2] - h) // 2, (batch.shape[-1] - w) // 2
        window = batch[..., top:top + h, left:left + w]
        return window.clone() if isinstance(window, torch.Tensor) else window.copy()

    def _pad(self, x: np.ndarray) -> np.ndarray:
        p = self.padding
        if p == 0:
            return x
        mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}[self.pad_mode]
        return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)], mode=mode)
