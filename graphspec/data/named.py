"""Datasets of arrays named after a network's inputs and outputs (``.npz`` files), for any spec.

An ``.npz`` file holds one array per network input, ``[N, *input shape]`` (uint8 for images that the
preprocessing scales, any float or integer type for values), and one per output that is trained: class indices
``[N]`` (integers; ``[N, T]`` for a per-step output) or target values ``[N, *output shape]``. ``np.load`` reads
it with ``allow_pickle=False``, so a file cannot run code.

Sequences of different lengths are padded to the longest and carry masks (DL4J's feature and label masks), 1 for
a real step and 0 for padding: ``<input>_mask`` ``[N, T]`` for a sequence input (it flows through the network as
the forward's ``<input>_mask`` argument) and ``<output>_mask`` ``[N, T]`` for a per-step output's targets (else
the per-step loss uses the mask that reaches it from the inputs).

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
from ..graph import MASK, fits
from .errors import DataError, located


@dataclass
class NamedArrays:
    """Inputs by name (in the network's input order) and training targets by output name, all with N rows."""

    inputs: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    classes: Sequence[str] = field(default_factory=list)  # class names, when one target holds class indices
    image_size: tuple[int, int] | None = None  # (height, width) of the image inputs, if any
    # masks by array name: "<input>_mask" (feature masks) and "<output>_mask" (label masks), float32 [N, T]
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def labels(self) -> np.ndarray:
        """The class indices of the first integer target (what single-head evaluation compares with)."""
        for t in self.targets.values():
            if np.issubdtype(t.dtype, np.integer):
                return t
        return np.zeros(len(self), dtype=np.int64)

    def batch(self, indices):
        """(inputs, targets) of the rows ``indices``: the inputs as a tuple in the network's order, or, when the
        data has feature masks, a dict by input name holding them too; the targets by output name, with the
        label masks."""
        idx = np.asarray(indices, dtype=np.int64)
        targets = {k: t[idx] for k, t in self.targets.items()}
        targets.update({k: m[idx] for k, m in self.masks.items() if k[:-len(MASK)] not in self.inputs})
        features = {k: m[idx] for k, m in self.masks.items() if k[:-len(MASK)] in self.inputs}
        if not features:
            return tuple(a[idx] for a in self.inputs.values()), targets
        return {**{k: a[idx] for k, a in self.inputs.items()}, **features}, targets

    def subset(self, indices) -> "NamedArrays":
        idx = np.asarray(indices, dtype=np.int64)
        return NamedArrays({k: a[idx] for k, a in self.inputs.items()}, {k: t[idx] for k, t in self.targets.items()},
                           self.classes, self.image_size, {k: m[idx] for k, m in self.masks.items()})

    def split(self, held_out: float, seed: int) -> tuple["NamedArrays", "NamedArrays | None"]:
        """(training part, held-out part of about ``held_out`` of the rows, drawn at random from ``seed``)."""
        if held_out <= 0:
            return self, None
        order = np.random.default_rng(seed).permutation(len(self))
        cut = max(1, round(len(self) * held_out))
        return self.subset(np.sort(order[cut:])), self.subset(np.sort(order[:cut]))

    @classmethod
    def from_npz(cls, path: "str | os.PathLike", inputs: dict[str, tuple[int | None, ...]],
                 outputs: "Sequence[str] | dict[str, tuple[int | None, ...]]") -> "NamedArrays":
        """Read ``path``; every network input must be there with its shape (None: a variable sequence length,
        any number of steps), every array must name an input or an output (or be the mask of a sequence input or
        of a per-step output: ``outputs`` by name with their shapes tell which), and all must have the same
        number of rows. Errors name the file and the array."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise located(f"cannot read the arrays: {e}", path) from e
        shapes = {**(outputs if isinstance(outputs, dict) else {}), **inputs}
        sequences = {n + MASK: n for n, s in shapes.items() if len(s) == 2}  # maskable: [size, T] per example
        for name in arrays:
            owner = name[:-len(MASK)] if name.endswith(MASK) else None
            if owner in shapes and name not in sequences:
                raise located(f"array '{name}' is a mask, but '{owner}' is [{', '.join(map(str, shapes[owner]))}] per "
                              f"example, not a sequence [size, T]; masks: {', '.join(sequences) or 'none'}", path)
            if name not in inputs and name not in outputs and name not in sequences:
                raise located(f"array '{name}' names no input or output of the network"
                              f"{did_you_mean(name, list(inputs) + list(outputs) + list(sequences))}; inputs: "
                              f"{', '.join(inputs)}; outputs: {', '.join(outputs)}"
                              + (f"; masks: {', '.join(sequences)}" if sequences else ""), path)
        missing = [n for n in inputs if n not in arrays]
        if missing:
            raise located(f"no array for the network input '{missing[0]}' (the file has: "
                          f"{', '.join(arrays) or 'nothing'})", path)
        n = len(arrays[next(iter(inputs))])
        for name, array in arrays.items():
            _check_rows(path, name, array, n)
        for name, shape in inputs.items():
            if not fits(arrays[name].shape[1:], shape):
                raise located(f"array '{name}' is [N, {', '.join(map(str, arrays[name].shape[1:]))}]; the network "
                              f"input '{name}' needs [N, {', '.join('T' if d is None else str(d) for d in shape)}]",
                              path)
        masks = {k: _mask(path, k, arrays[k], _steps(arrays, sequences[k], shapes)) for k in sequences if k in arrays}
        images = [tuple(arrays[k].shape[-2:]) for k in inputs if arrays[k].dtype == np.uint8 and arrays[k].ndim == 4]
        return cls({k: arrays[k] for k in inputs}, {k: arrays[k] for k in outputs if k in arrays},
                   image_size=images[0] if images else None, masks=masks)


def _steps(arrays: dict, owner: str, shapes: dict) -> int | None:
    """The number of time steps of ``owner``'s array (its last dimension), or of its shape without one."""
    return arrays[owner].shape[-1] if owner in arrays and arrays[owner].ndim >= 2 else shapes[owner][-1]


def _mask(path: Path, name: str, array: np.ndarray, steps: int | None) -> np.ndarray:
    """A mask array checked ([N, T], only 0 and 1) and as float32 (so that it is never taken for an image)."""
    if array.ndim != 2 or (steps is not None and array.shape[1] != steps):
        raise located(f"mask '{name}' is [{', '.join(['N', *map(str, array.shape[1:])])}]; expected [N, {steps or 'T'}] "
                      "(1 = a real time step, 0 = padding)", path)
    values = np.unique(array)
    if not np.isin(values, (0, 1)).all():
        bad = values[~np.isin(values, (0, 1))][:3]
        raise located(f"mask '{name}' holds {', '.join(f'{v:g}' for v in bad)}; a mask holds only 1 (a real time "
                      "step) and 0 (padding)", path)
    return array.astype(np.float32)


def _check_rows(path: Path, name: str, array: np.ndarray, n: int) -> None:
    if array.ndim == 0 or len(array) != n:
        raise located(f"array '{name}' has {len(array) if array.ndim else 0} rows; the others have {n}", path)
    if array.dtype.kind not in "biuf":
        raise located(f"array '{name}' holds {array.dtype} values; expected numbers", path)


__all__ = ["NamedArrays", "DataError"]
