"""The framework's data layer: image preprocessing (recorded in model files), the decoded-image cache, and the
one pipeline from a dataset to batches (order, augmentation, scaling) that training, evaluation and
``make_loader`` share. Face folders, LFW and its protocols live in :mod:`graphspec.faces.data`.

    >>> from graphspec.data import Preprocessing, make_loader                      # doctest: +SKIP
    >>> for x, y in make_loader(dataset, 48): ...     # doctest: +SKIP  float32 [48, 3, 96, 96] BGR 0..255

See docs/data.md.
"""
from .augment import Augmentation, Jitter
from .batches import ArrayData, Batches, make_loader
from .cache import ImageCache, Skipped, cache_key, open_or_build
from .errors import DataError, DataWarning
from .locations import cache_dir
from .preprocessing import Preprocessing

__all__ = ["Preprocessing", "Augmentation", "Jitter", "Batches", "ArrayData", "make_loader", "ImageCache", "Skipped",
           "open_or_build", "cache_key", "cache_dir", "DataError", "DataWarning"]
