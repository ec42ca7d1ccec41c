"""The data pipeline: a dataset -> ``(x, y)`` batches, the same for training, evaluation and ``make_loader``.

A batch is a function of ``(seed, epoch, step)`` only: the order of an epoch comes from ``(seed, epoch)``, the
augmentation of a batch from ``(seed, epoch, step)`` (drawn for the whole global batch, then a distributed rank
takes its share), so a run resumed at any step, or split over any number of processes or loader workers, sees
exactly the same batches. Each item is float32 ``[B, C, H, W]`` after augmentation (on uint8) and the
preprocessing's scaling, and int64 labels ``[B]``. A batch is fetched in one call (one fancy index into a
memory-mapped cache), so the cached path needs no workers.

Order: ``shuffle=False`` keeps the dataset order every epoch (DL4J's iterator: the tutorial's 120 batches are the
same each epoch); ``shuffle=True`` draws a new permutation each epoch.

A dataset is anything with ``len()``, ``labels``, ``classes`` and ``batch(indices) -> (uint8 images, labels)``:
:class:`ArrayData` for arrays in memory, the face application's LFW-layout datasets for image folders.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import Augmentation
from .preprocessing import Preprocessing

ORDER_STREAM = 0xDA7A  # keeps the epoch order's random stream apart from the augmentation's


@dataclass
class ArrayData:
    """Images as uint8 ``[N, C, H, W]`` (numpy, memmap allowed) and integer labels ``[N]``."""

    images: Any
    labels: np.ndarray
    classes: Sequence[str]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # memmap reads are faster in ascending order
        images = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        images[order] = self.images[idx[order]]
        return torch.from_numpy(images), torch.from_numpy(np.asarray(self.labels)[idx].astype(np.int64))


def image_size(dataset) -> tuple[int, int] | None:
    """(height, width) of a dataset's images: its own statement, its arrays', or what its preprocessing decodes to
    (None: it has no images)."""
    if hasattr(dataset, "image_size"):
        return dataset.image_size
    images = getattr(dataset, "images", None)
    return tuple(images.shape[-2:]) if images is not None else tuple(dataset.preprocessing.size)


class Batches:
    """Batches of ``dataset`` for ``(epoch, step)``: the one pipeline (see the module doc).

    ``preprocessing`` (default: the dataset's, else DL4J's raw 0..255 floats) scales uint8 images to the
    network's input; ``augmentation``
    (default: none) crops, flips and jitters training batches and gives :meth:`evaluation` its centre window.
    ``shuffle`` None: False for a DL4J-mode dataset (fixed order), True otherwise. ``per_class`` k: each epoch
    visits every class with at least 2 examples once, in random order, with k of its examples in a row, so a batch
    holds batch_size/k classes of k examples (what triplet mining needs; FaceNet's "P·K" batches).
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool | None = None, drop_last: bool = False,
                 augmentation: Augmentation | None = None, preprocessing=None, seed: int = 0,
                 per_class: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; received {batch_size}")
        self.dataset, self.batch_size, self.drop_last, self.seed = dataset, batch_size, drop_last, seed
        self.per_class = per_class
        if per_class is not None:
            self._groups = _class_groups(dataset, batch_size, per_class)
        self.shuffle = not getattr(dataset, "dl4j", False) if shuffle is None else shuffle
        self.augmentation = augmentation
        self.preprocessing = preprocessing or getattr(dataset, "preprocessing", None) or Preprocessing.dl4j()
        size = image_size(dataset) if augmentation is not None and len(dataset) else None
        if size is not None:
            augmentation.crop_size(size)  # refuse a crop larger than the images before any work

    def __len__(self) -> int:
        n = len(self._groups) * self.per_class if self.per_class else len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        rng = np.random.default_rng([self.seed, epoch, ORDER_STREAM])
        if self.per_class:
            return _class_order(self._groups, self.per_class, rng)
        if not self.shuffle:
            return np.arange(n)
        return rng.permutation(n)

    def indices(self, epoch: int, step: int, *, order: np.ndarray | None = None) -> np.ndarray:
        """The dataset indices of the global batch ``step`` of ``epoch``."""
        order = self.order(epoch) if order is None else order
        return order[step * self.batch_size:(step + 1) * self.batch_size]

    def batch(self, epoch: int, step: int, part: slice = slice(None), *, order: np.ndarray | None = None):
        """Training batch ``step`` of ``epoch`` (``part``: this rank's share of the global batch). Pass the
        epoch's ``order`` when asking for many steps of one epoch, to compute it once."""
        idx = self.indices(epoch, step, order=order)
        inputs, targets = self.dataset.batch(idx[part])
        generator = self.augmentation.generator(epoch, step) if self.augmentation is not None else None
        return self._inputs(inputs, lambda: self.augmentation.draw(len(idx), image_size(self.dataset),
                                                                   generator)[part]), as_targets(targets)

    def evaluation(self) -> Iterator[tuple[Any, Any]]:
        """Every example once, in dataset order, un-augmented (the augmentation's centre window)."""
        for start in range(0, len(self.dataset), self.batch_size):
            inputs, targets = self.dataset.batch(np.arange(start, min(start + self.batch_size, len(self.dataset))))
            yield self._inputs(inputs, None), as_targets(targets)

    def _inputs(self, inputs, draw):
        """Network-ready tensors: uint8 arrays are images (augmented with a fresh ``draw()`` each, or centred
        when ``draw`` is None, then scaled by the preprocessing); other arrays are values, as float32. Several
        inputs (a tuple, in the spec's input order) stay a tuple; inputs by name (with their masks) a dict."""
        if isinstance(inputs, dict):
            return dict(zip(inputs, self._inputs(tuple(inputs.values()), draw)))
        several = isinstance(inputs, (tuple, list))
        out = []
        for array in (inputs if several else (inputs,)):
            array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
            if array.dtype != np.uint8:
                out.append(torch.as_tensor(array, dtype=torch.float32))
                continue
            if self.augmentation is not None:
                array = self.augmentation.center(array) if draw is None else self.augmentation.apply(array, draw())
            out.append(self.preprocessing.to_tensor(array))
        return tuple(out) if several else out[0]


def _class_groups(dataset, batch_size: int, per_class: int) -> list[np.ndarray]:
    """The examples of each class that has at least 2 (a class seen once gives no positive pair)."""
    if per_class < 2 or batch_size % per_class:
        raise ValueError(f"per_class must be at least 2 and divide the batch size {batch_size}; received {per_class}")
    labels = np.asarray(dataset.labels)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        raise ValueError("per_class batches need at least 2 classes with at least 2 examples each; the data has "
                         f"{len(groups)}")
    return groups


def _class_order(groups: list[np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """Classes in a random order, ``k`` examples of each in a row (drawn without replacement while a class has
    enough, else with): a batch of B examples holds B/k classes with k examples each (for triplet mining)."""
    parts = []
    for c in rng.permutation(len(groups)):
        g = groups[c]
        parts.append(rng.choice(g, size=k, replace=len(g) < k))
    return np.concatenate(parts)


def as_targets(targets):
    """Class indices as int64, values as float32; a dict of them (by output name) stays a dict."""
    if isinstance(targets, dict):
        return {name: as_targets(t) for name, t in targets.items()}
    array = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    integer = np.issubdtype(array.dtype, np.integer) or array.dtype == bool
    return torch.as_tensor(array, dtype=torch.int64 if integer else torch.float32)


class EpochBatches(Sampler):
    """Yields ``(epoch, step)`` for each batch of a :class:`Batches`; the epoch advances at every pass."""

    def __init__(self, batches: Batches):
        self.batches, self.epoch = batches, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        for step in range(len(self)):
            yield epoch, step


class _Items(Dataset):
    """Maps a sampler item to a finished batch (runs in the worker processes when there are any)."""

    def __init__(self, batches: Batches):
        self.batches = batches

    def __getitem__(self, item):
        return self.batches.batch(*item)


def make_loader(dataset, batch_size: int = 48, *, shuffle: bool | None = None, drop_last: bool = False,
                augmentation: Augmentation | None = None, preprocessing=None, seed: int = 0,
                workers: int | None = None) -> DataLoader:
    """A ``torch.utils.data.DataLoader`` of the pipeline's ``(x, y)`` batches (see :class:`Batches`).

    ``workers`` None: 0 for a cached dataset (or arrays), else ``min(4, CPUs - 1)``.

    >>> loader = make_loader(ds, 48)                 # doctest: +SKIP
    >>> len(loader)                                   # doctest: +SKIP  (DL4J mode on LFW: 5749 images)
    120
    """
    if workers is None:
        workers = 0 if getattr(dataset, "cached", True) else max(0, min(4, (os.cpu_count() or 1) - 1))
    batches = Batches(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, augmentation=augmentation,
                      preprocessing=preprocessing, seed=seed)
    return DataLoader(_Items(batches), batch_size=None, sampler=EpochBatches(batches), num_workers=workers,
                      persistent_workers=False)
