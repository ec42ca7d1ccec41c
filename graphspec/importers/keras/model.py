"""The parsed configuration: layers, models, tensors in Keras's layout, and the shape helpers."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# --- the parsed configuration ------------------------------------------------------------------------------------
Ref = tuple  # (layer name, node index, tensor index): a Keras tensor


@dataclass
class _Layer:
    cls: str
    name: str
    config: dict
    nodes: list = field(default_factory=list)  # per call: the list of input Refs
    kwargs: list = field(default_factory=list)  # per call: the call's keyword arguments (non-tensor)
    module: str | None = None
    registered: str | None = None
    index: tuple = (0,)  # position in the config (nested models: the position of each enclosing model first)
    keras_path: str = ""  # .keras: where model.weights.h5 keeps its weights ('layers/functional/layers/conv2d')
    h5_group: str = ""  # .h5: its group under model_weights (a nested model's layers: the nested model's group)
    h5_filter: str | None = None  # .h5, in a nested model's group: the weight names of this layer
    original: str = ""  # the name Keras gave it (a nested model's layer may be renamed to stay unique)
    inner: "_Model | None" = None  # a nested model


@dataclass
class _Model:
    name: str
    layers: list[_Layer]
    inputs: list[Ref]
    outputs: list[Ref]
    weight_layers: list[_Layer]  # Keras's model.layers order (what a .keras file's weight paths count)


@dataclass(frozen=True)
class _Perm:
    """A vector whose graphspec feature j is Keras feature ``index[j]`` (after a Flatten of an image/sequence)."""

    index: np.ndarray
    origins: frozenset  # the Flatten layers it comes from

    def __eq__(self, other):
        return isinstance(other, _Perm) and np.array_equal(self.index, other.index)

    __hash__ = None


@dataclass
class _T:
    """A Keras tensor in the spec: the vertex that computes it and its Keras shape per example."""

    vertex: str
    shape: tuple  # Keras layout, without the batch (None: unknown length)
    perm: _Perm | None = None
    nonneg: bool = False  # known to be >= 0 (decides whether 0-padding of a max pooling is exact)
    indices: bool = False  # class indices for an Embedding, graphspec [1, T]


class _Restart(Exception):
    """A Flatten's permuted vector reached a layer that cannot take it: convert again with exact Flatten vertices."""

    def __init__(self, origins):
        self.origins = set(origins)


class _Poisoned(Exception):
    pass


def _graphspec_shape(shape: tuple) -> tuple:
    """Keras per-example shape (channels/features last) -> graphspec's (channels/features first)."""
    return tuple(shape) if len(shape) <= 1 else (shape[-1], *shape[:-1])


def _to_graphspec_axes(rank: int) -> list[int]:
    """graphspec axis i is Keras axis result[i] (per example, 0-based)."""
    return list(range(rank)) if rank <= 1 else [rank - 1, *range(rank - 1)]


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def _keeps_order(shape: tuple, axes: list[int]) -> bool:
    """Whether transposing ``shape`` by ``axes`` leaves the values in the same flat order (only size-1 axes move)."""
    moved = [a for a in axes if shape[a] != 1]
    return moved == sorted(moved)


def _pair(v, what="value") -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return (int(v[0]), int(v[1]))
    raise _BadConfig(f"{what} must be an integer or two integers, not {v!r}")


def _single(v, what="value") -> int:
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = v[0]
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise _BadConfig(f"{what} must be an integer, not {v!r}")


class _BadConfig(Exception):
    pass


LAMBDA = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
MODEL_CLASSES = ("Sequential", "Functional", "Model")
