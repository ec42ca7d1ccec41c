"""Targets by image file: rows of another model's output (a teacher's embeddings, as ``graphspec embed`` writes
them) become the training targets of one output of the network being trained — knowledge distillation.

    >>> data = RowTargets.read(dataset, "teacher.npy", output="embeddings")      # doctest: +SKIP
    >>> images, targets = data.batch([0, 1]); targets["embeddings"].shape       # doctest: +SKIP
    (2, 128)

The file is ``NAME.npy`` (float rows [N, D]) with ``NAME.paths.txt`` beside it, one image path per row, matched
with the dataset's images by their resolved paths. Images without a row (the teacher found no face in them) are
left out of training and reported.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import LISTING_BYTES, read_text
from .errors import DataError, located

PATHS_SUFFIX = ".paths.txt"


def read_rows(path: "str | os.PathLike") -> tuple[np.ndarray, list[str]]:
    """(float32 rows [N, D], the N image paths) of an embedding file and its ``.paths.txt``."""
    path = Path(path)
    listing = path.with_suffix(PATHS_SUFFIX)
    if path.suffix != ".npy":
        raise located("targets must be an .npy file of rows written by `graphspec embed` (with its .paths.txt)", path)
    for f in (path, listing):
        if not f.is_file():
            raise located("file not found (targets are an .npy of rows and a .paths.txt of their images)", f)
    try:
        rows = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise located(f"unreadable .npy file: {e}", path) from e
    paths = read_text(listing, "paths listing", LISTING_BYTES, error=DataError).splitlines()
    if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.floating):
        raise located(f"expected float rows [N, D]; received {rows.dtype} {list(rows.shape)}", path)
    if len(paths) != len(rows):
        raise located(f"{len(paths)} paths for {len(rows)} rows in {path.name}", listing)
    rows = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise located("rows hold NaN or infinity", path)
    return rows, paths


class RowTargets:
    """``dataset`` with, as the target of ``output``, each image's row of a targets file (``normalize``: scaled to
    unit length); the dataset's labels stay available (``labels``, ``classes``) for class-balanced batches.

    A dataset here is one the data pipeline serves (``batch(indices) -> (uint8 images, labels)``) that also
    lists its images (``paths``)."""

    def __init__(self, dataset, rows: np.ndarray, output: str, *, normalize: bool = False,
                 missing: Sequence[Path] = ()):
        self.dataset, self.output, self.missing = dataset, output, list(missing)
        self.rows = rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-12) if normalize else rows
        self._positions = None  # dataset positions that have a row (None: all of them, in order)

    @classmethod
    def read(cls, dataset, path: "str | os.PathLike", output: str, *, normalize: bool = False) -> "RowTargets":
        """Match ``dataset``'s images with the rows of ``path`` (see the module doc)."""
        rows, paths = read_rows(path)
        row_of = {os.path.realpath(p): i for i, p in enumerate(paths)}
        found = [row_of.get(os.path.realpath(p)) for p in dataset.paths]
        kept = [i for i, r in enumerate(found) if r is not None]
        if not kept:
            raise located(f"none of the {len(found):,} training images has a row in this file (rows are matched by "
                          "image path: embed the training images themselves)", path)
        data = cls(dataset, rows[[found[i] for i in kept]], output, normalize=normalize,
                   missing=[p for p, r in zip(dataset.paths, found) if r is None])
        data._positions = np.asarray(kept, dtype=np.int64)
        return data

    # --- what the data pipeline reads ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.dataset.labels)[self._dataset_positions(np.arange(len(self)))]

    @property
    def classes(self):
        return self.dataset.classes

    @property
    def preprocessing(self):
        return self.dataset.preprocessing

    @property
    def dl4j(self) -> bool:
        return getattr(self.dataset, "dl4j", False)

    @property
    def targets(self) -> dict[str, np.ndarray]:
        return {self.output: self.rows}

    def batch(self, indices):
        """uint8 images and ``{output: rows}`` for positions ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        images, labels = self.dataset.batch(self._dataset_positions(idx))
        if len(labels) != len(idx):  # an undecodable image dropped from the batch: its row cannot be matched
            raise DataError("an image could not be decoded during training; prepare (cache) the dataset first")
        return images, {self.output: self.rows[idx]}

    def _dataset_positions(self, idx: np.ndarray) -> np.ndarray:
        return idx if self._positions is None else self._positions[idx]
