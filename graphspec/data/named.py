"""Datasets of arrays named after a network's inputs and outputs (``.npz`` files), for any spec.

An ``.npz`` file holds one array per network input, ``[N, *input shape]`` (uint8 for images that the
preprocessing scales, any float or integer type for values), and one per output that is trained: class indices
``[N]`` (integers) or target values ``[N, *output shape]``. ``np.load`` reads it with ``allow_pickle=False``, so
a file cannot run code.

    >>> data = NamedArrays.from_npz("train.npz", inputs={"x": (16,)}, outputs=["cls", "reg"])   # doctest: +SKIP
    >>> inputs, targets = data.batch([0, 1, 2])         # doctest: +SKIP  (x,), {"cls": [3], "reg": [3, 2]}
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import did_you_mean
from .errors import DataError, located


@dataclass
class NamedArrays:
    """Inputs by name (in the network's input order) and training targets by output name, all with N rows."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    classes: Sequence[str] = field(default_factory=list)  # class names, when one target holds class indices
    image_size: tuple[int, int] | None = None  # (height, width) of the image inputs, if any

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def labels(self) -> np.ndarray:
        """The class indices of the first integer target (what single-head evaluation compares with)."""
        for t in self.targets.values():
            if np.issubdtype(t.dtype, np.integer):
                return t
        return np.zeros(len(self), dtype=np.int64)

    def batch(self, indices) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        idx = np.asarray(indices, dtype=np.int64)
        return tuple(a[idx] for a in self.inputs.values()), {k: t[idx] for k, t in self.targets.items()}

    def subset(self, indices) -> "NamedArrays":
        idx = np.asarray(indices, dtype=np.int64)
        return NamedArrays({k: a[idx] for k, a in self.inputs.items()}, {k: t[idx] for k, t in self.targets.items()},
                           self.classes, self.image_size)

    def split(self, held_out: float, seed: int) -> tuple["NamedArrays", "NamedArrays | None"]:
        """(training part, held-out part of about ``held_out`` of the rows, drawn at random from ``seed``)."""
        if held_out <= 0:
            return self, None
        order = np.random.default_rng(seed).permutation(len(self))
        cut = max(1, round(len(self) * held_out))
        return self.subset(np.sort(order[cut:])), self.subset(np.sort(order[:cut]))

    @classmethod
    def from_npz(cls, path: "str | os.PathLike", inputs: dict[str, tuple[int, ...]],
                 outputs: Sequence[str]) -> "NamedArrays":
        """Read ``path``; every network input must be there with its shape, every array must name an input or an
        output, and all must have the same number of rows. Errors name the file and the array."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise located(f"cannot read the arrays: {e}", path) from e
        for name in arrays:
            if name not in inputs and name not in outputs:
                raise located(f"array '{name}' names no input or output of the network"
                              f"{did_you_mean(name, list(inputs) + list(outputs))}; inputs: {', '.join(inputs)}; "
                              f"outputs: {', '.join(outputs)}", path)
        missing = [n for n in inputs if n not in arrays]
        if missing:
            raise located(f"no array for the network input '{missing[0]}' (the file has: "
                          f"{', '.join(arrays) or 'nothing'})", path)
        n = len(arrays[next(iter(inputs))])
        for name, array in arrays.items():
            _check_rows(path, name, array, n)
        for name, shape in inputs.items():
            if tuple(arrays[name].shape[1:]) != tuple(shape):
                raise located(f"array '{name}' is [N, {', '.join(map(str, arrays[name].shape[1:]))}]; the network "
                              f"input '{name}' needs [N, {', '.join(map(str, shape))}]", path)
        images = [tuple(arrays[k].shape[-2:]) for k in inputs if arrays[k].dtype == np.uint8 and arrays[k].ndim == 4]
        return cls({k: arrays[k] for k in inputs}, {k: arrays[k] for k in outputs if k in arrays},
                   image_size=images[0] if images else None)


def _check_rows(path: Path, name: str, array: np.ndarray, n: int) -> None:
    if array.ndim == 0 or len(array) != n:
        raise located(f"array '{name}' has {len(array) if array.ndim else 0} rows; the others have {n}", path)
    if array.dtype.kind not in "biuf":
        raise located(f"array '{name}' holds {array.dtype} values; expected numbers", path)


__all__ = ["NamedArrays", "DataError"]
