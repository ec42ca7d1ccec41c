"""Face datasets in LFW layout: selection, labels, splits, and images served from the uint8 cache.

    >>> from graphspec.data import lfw_dataset
    >>> ds = lfw_dataset("lfw", dl4j=True)            # doctest: +SKIP  (the tutorial's iterator: 5,749 images)
    >>> x, y = ds[0]; x.shape, ds.classes[y]           # doctest: +SKIP
    (torch.Size([3, 96, 96]), 'Ziwang_Xu')

Labels index ``classes``, the sorted names of the people in the selection (before any train/test split, so
both parts share one label space; with ``split_by="person"`` each part has its own people).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ...data.locations import cache_dir as default_cache_dir
from .locate import locate_lfw
from ...data.cache import ImageCache, decode_into, open_or_build
from ...data.errors import DataError, DataWarning, located
from .folder import FolderScan, Skipped, scan_folder
from ...data.preprocessing import Preprocessing, check_image_size
from .protocol import read_people
from .select import balanced_select, contiguous_split, random_subset, split_indices

#: Files listed in one warning before "... and N more".
WARN_LIST = 20


class LFWDataset(torch.utils.data.Dataset):
    """Images of people with integer labels; ``ds[i]`` is ``(float32 [3, H, W], label)``.

    ``paths``, ``labels`` (numpy int64) and ``classes`` describe the items; ``preprocessing`` is what
    :meth:`Preprocessing.to_tensor` applies; ``skipped`` lists the files left out and why. Built by
    :func:`lfw_dataset`.
    """

    def __init__(self, scan: FolderScan, files: Sequence[Path], persons: Sequence[str], index: Sequence[int],
                 classes: Sequence[str], preprocessing: Preprocessing, *, dl4j: bool = False,
                 cache_dir: "str | os.PathLike | None" = None):
        self.scan = scan
        self.preprocessing = preprocessing
        self.dl4j = dl4j
        self.classes = list(classes)
        self._files = list(files)  # the cache domain: the selection before the split
        self._persons = list(persons)
        self._index = list(index)
        self._cache_dir = cache_dir
        self._cache: ImageCache | None = None
        self._warned: set[int] = set()
        self._class_of = {name: i for i, name in enumerate(self.classes)}

    # --- what the dataset holds ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    @property
    def root(self) -> Path:
        return self.scan.root

    @property
    def paths(self) -> list[Path]:
        return [self._files[i] for i in self._index]

    @property
    def labels(self) -> np.ndarray:
        return np.array([self._class_of[self._persons[i]] for i in self._index], dtype=np.int64)

    @property
    def skipped(self) -> list[Skipped]:
        """Files left out: the folder scan's, then those that failed to decode when the cache was built."""
        return list(self.scan.skipped) + (list(self._cache.failures) if self._cache else [])

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def counts(self) -> dict[str, int]:
        """Images per person in this dataset, by name."""
        names, n = np.unique([self._persons[i] for i in self._index], return_counts=True)
        return {str(a): int(b) for a, b in zip(names, n)}

    # --- images -------------------------------------------------------------------------------------------
    def prepare(self, *, workers: int | None = None, progress=None, warn: bool = True) -> "LFWDataset":
        """Build (or open) the uint8 cache of the selection, drop files that fail to decode, and warn once
        listing every skipped file. Returns ``self``."""
        if self._cache is None:
            _check_cache_outside(self._cache_dir, self.root)
            names = [os.path.relpath(f, self.root) for f in self._files]
            self._cache = open_or_build(self._files, self.preprocessing, cache_dir=self._cache_dir,
                                        workers=workers, progress=progress, names=names)
            self._index = [i for i in self._index if self._cache.ok[i]]
        if warn:
            warn_skipped(self.skipped, self.root)
        return self

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[B, 3, H, W]`` and int64 labels ``[B]`` for dataset positions ``indices``. Without a cache,
        images are decoded now and any that fail are dropped from the batch (each warned about once)."""
        rows = [self._index[i] for i in indices]
        labels = torch.tensor([self._class_of[self._persons[r]] for r in rows], dtype=torch.int64)
        if self._cache is not None:
            return torch.from_numpy(self._cache.array[np.asarray(rows, dtype=np.int64)]), labels
        images, keep = self._decode(rows)
        return images, labels[keep]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        images, labels = self.batch([i % len(self)])
        if len(labels) == 0:
            raise DataError(f"image {self.paths[i]} cannot be decoded (see the warning)")
        return self.preprocessing.to_tensor(images[0]), int(labels[0])

    def _decode(self, rows: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        h, w = self.preprocessing.size
        out, keep = [], []
        for k, r in enumerate(rows):
            try:
                out.append(self.preprocessing.load(self._files[r]))
                keep.append(k)
            except DataError as e:
                if r not in self._warned:
                    self._warned.add(r)
                    warnings.warn(DataWarning(f"skipped {e}"), stacklevel=3)
        array = np.stack(out) if out else np.zeros((0, 3, h, w), dtype=np.uint8)
        return torch.from_numpy(array), keep

    def __repr__(self) -> str:
        mode = ", dl4j" if self.dl4j else ""
        return (f"LFWDataset({len(self)} images of {len(self.counts())} people, {len(self.classes)} classes, "
                f"{self.preprocessing.describe()}{mode}, root={str(self.root)!r})")


def lfw_dataset(root: "str | os.PathLike | None" = None, *, people: "str | os.PathLike | Iterable[str] | None" = None,
                min_images: int = 1, limit: int | None = None, split: str | None = None,
                train_fraction: float = 0.8, split_by: str = "image", seed: int = 123, dl4j: bool = False,
                batch_size: int = 48, preprocessing: Preprocessing | None = None, cache: bool = True,
                cache_dir: "str | os.PathLike | None" = None, workers: int | None = None, progress=None,
                warn: bool = True) -> LFWDataset:
    """A dataset over a folder in LFW layout (``root`` None: :func:`locate_lfw`).

    Selection, in order: ``people`` (a people file or names) -> at least ``min_images`` images per person ->
    ``dl4j``: DataVec's balanced filter (shuffle with ``seed``, at most ``limit`` paths, at most ``batch_size``
    per person and as many for every person as the rarest has: one per person on LFW), else a seeded random
    ``limit`` images -> labels -> ``split`` ("train"/"test" with ``train_fraction``; ``dl4j`` keeps the order
    and cuts contiguously like DL4J, else :func:`select.split_indices` by image or person).
    ``cache`` builds the uint8 cache now (decoding everything once); ``cache=False`` decodes on access.
    """
    if preprocessing is not None:
        check_image_size(preprocessing.size)  # before the folder is scanned
    scan = scan_folder(_root(root))
    files, persons = select_people(scan, people, min_images, warn)
    if not files:
        raise located(f"no images selected: {len(scan.people)} people with images in the folder, none left after "
                      f"the people file and min_images={min_images}", scan.root)
    chosen = _choose(persons, limit, seed, dl4j, batch_size)
    files, persons = [files[i] for i in chosen], [persons[i] for i in chosen]
    index = _split(persons, split, train_fraction, split_by, seed, dl4j)
    classes = sorted(set(persons[i] for i in index) if split_by == "person" else set(persons))
    ds = LFWDataset(scan, files, persons, index, classes, preprocessing or Preprocessing(), dl4j=dl4j,
                    cache_dir=cache_dir)
    if cache:
        ds.prepare(workers=workers, progress=progress, warn=warn)
    elif warn:
        warn_skipped(ds.skipped, ds.root)
    return ds


def _root(root) -> Path:
    if root is not None:
        return Path(root)
    found = locate_lfw()
    if found is None:
        raise DataError("no LFW folder found: pass one, set GRAPHSPEC_LFW, run `graphspec dataset DIR --download`"
                        ", or use graphspec.data.synthetic_faces()")
    return found


def select_people(scan: FolderScan, people, min_images: int, warn: bool) -> tuple[list[Path], list[str]]:
    """(files, their people) of the people listed in ``people`` (a people file or names; None: all) with at least
    ``min_images`` images, in the scan's order."""
    names = scan.people
    if people is not None:
        wanted = _people_names(people)
        missing = sorted(wanted - set(names))
        if missing and warn:
            warnings.warn(DataWarning(f"{len(missing)} listed people have no images in {scan.root}: "
                                      f"{_short(missing)}"), stacklevel=3)
        names = [n for n in names if n in wanted]
    files, persons = [], []
    for name in names:
        if len(scan.images[name]) >= min_images:
            files += [scan.path(name, f) for f in scan.images[name]]
            persons += [name] * len(scan.images[name])
    return files, persons


def _people_names(people) -> set[str]:
    if isinstance(people, (str, os.PathLike)):
        return {p.name for p in read_people(people)}
    return set(people)


def _choose(persons: list[str], limit: int | None, seed: int, dl4j: bool, batch_size: int) -> list[int]:
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0; received {limit}")
    if dl4j:
        return balanced_select(persons, persons, seed, max_paths=limit or 0, max_per_label=batch_size)
    return random_subset(len(persons), limit, seed) if limit is not None else list(range(len(persons)))


def _split(persons, split, fraction, by, seed, dl4j) -> list[int]:
    if split is None:
        return list(range(len(persons)))
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train', 'test' or None; received '{split}'")
    try:
        parts = contiguous_split(len(persons), fraction) if dl4j else split_indices(persons, fraction, seed, by)
    except ValueError as e:
        raise DataError(str(e)) from e
    return parts[0] if split == "train" else parts[1]


def _check_cache_outside(cache_dir, root: Path) -> None:
    folder = default_cache_dir(cache_dir).resolve()
    if folder == root.resolve() or root.resolve() in folder.parents:
        raise located("the cache folder is inside the dataset folder; datasets stay untouched: set "
                      "GRAPHSPEC_CACHE or pass cache_dir elsewhere", folder)


def warn_skipped(skipped: Sequence[Skipped], root: Path) -> None:
    """One :class:`DataWarning` listing the skipped files (the first ``WARN_LIST``), if any."""
    if skipped:
        warnings.warn(DataWarning(f"skipped {len(skipped)} file(s) under {root}: {_short(skipped)}"),
                      stacklevel=3)


def _short(items: Sequence) -> str:
    shown = "; ".join(str(x) for x in items[:WARN_LIST])
    more = len(items) - WARN_LIST
    return shown + (f"; ... and {more} more (`graphspec dataset` lists all)" if more > 0 else "")


def load_images(paths: Sequence["str | os.PathLike"], preprocessing: Preprocessing | None = None, *,
                cache: bool = True, cache_dir: "str | os.PathLike | None" = None,
                workers: int | None = None) -> tuple[np.ndarray, list[Skipped]]:
    """uint8 ``[N, 3, H, W]`` for any list of image files (e.g. the files of verification pairs), through the
    cache unless ``cache=False``; rows that fail to decode are zero and listed in the returned failures."""
    prep = preprocessing or Preprocessing()
    if cache:
        built = open_or_build(paths, prep, cache_dir=cache_dir, workers=workers)
        return built.array, built.failures
    array = np.zeros((len(paths), 3, *prep.size), dtype=np.uint8)
    failures = decode_into(paths, prep, array, workers=workers)
    return array, [Skipped(str(paths[i]), reason) for i, reason in sorted(failures.items())]
