"""Batches for training and evaluation: a ``torch.utils.data.DataLoader`` over whole batches.

Each loader item is ``(x, y)``: float32 ``[B, 3, H, W]`` after augmentation and the dataset's scaling, and
int64 labels ``[B]``. A batch is fetched in one call (one fancy index into the memory-mapped cache), augmented
on uint8 and converted once, so the cached path needs no workers; ``workers`` pays off only when images are
decoded on the fly (``cache=False``).

Order: ``shuffle=False`` keeps the dataset order every epoch (DL4J's iterator: the tutorial's 120 batches are the
same each epoch); ``shuffle=True`` draws a new permutation each epoch from ``(seed, epoch)``.
"""
from __future__ import annotations

import math
import os

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import Augmentation



class EpochBatches(Sampler):
    """Yields ``(epoch, step, indices)`` for each batch; the epoch counter advances at every pass."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; received {batch_size}")
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed = n, batch_size, shuffle, drop_last, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return np.random.default_rng([self.seed, epoch]).permutation(self.n).tolist()

    def __iter__(self):
        epoch, order = self.epoch, self.order(self.epoch)
        self.epoch += 1
        for step in range(len(self)):
            yield epoch, step, order[step * self.batch_size:(step + 1) * self.batch_size]


class _Batches(Dataset):
    """Maps a sampler item to a finished batch (runs in the worker processes when there are any)."""

    def __init__(self, dataset, augmentation: Augmentation | None):
        self.dataset, self.augmentation = dataset, augmentation

    def __getitem__(self, item):
        epoch, step, indices = item
        images, labels = self.dataset.batch(indices)
        if self.augmentation is not None:
            images = self.augmentation(images, epoch=epoch, step=step)
        return self.dataset.preprocessing.to_tensor(images), labels


def make_loader(dataset, batch_size: int = 48, *, shuffle: bool | None = None,
                drop_last: bool = False, augmentation: Augmentation | None = None, seed: int = 0,
                workers: int | None = None) -> DataLoader:
    """A loader of ``(x, y)`` batches (see the module doc).

    ``shuffle`` None: False for a DL4J-mode dataset (fixed order), True otherwise. ``workers`` None: 0 for a
    cached dataset, else ``min(4, CPUs - 1)``.

    >>> loader = make_loader(ds, 48)                 # doctest: +SKIP
    >>> len(loader)                                   # doctest: +SKIP  (DL4J mode on LFW: 5749 images)
    120
    """
    if shuffle is None:
        shuffle = not dataset.dl4j
    if workers is None:
        workers = 0 if dataset.cached else max(0, min(4, (os.cpu_count() or 1) - 1))
    sampler = EpochBatches(len(dataset), batch_size, shuffle, drop_last, seed)
    return DataLoader(_Batches(dataset, augmentation), batch_size=None, sampler=sampler, num_workers=workers,
                      persistent_workers=False)
