"""The static memory check: a model's memory, estimated from its spec, against a budget, before any tensor exists.

The estimate is the summary's (:func:`graphspec.summary.summarize`: the shapes and parameter counts of the one graph
analysis), in float32: parameters, plus every vertex's output at the batch size for a forward pass, plus what
training keeps (gradients, optimizer state, activations for the backward pass). ``graphspec.build`` checks the
parameters; ``forward`` and ``train`` check their batch first. A model over the budget is refused with a
:class:`MemoryBudgetError` naming the estimate, the budget, how to raise it and the largest vertices.

>>> from graphspec import budget
>>> budget.parse_size("512M")
536870912
>>> with budget.memory_limit("64G"):  # doctest: +SKIP
...     net = graphspec.open("big.yaml")  # built under a 64 GiB budget instead of the default
"""
from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator

from .errors import GraphspecError

# The default budget is half of physical memory: the estimate counts parameters and activations only, while the
# real peak also holds the copies made on the way (initialisation draws values into a tensor of a parameter's
# size, saving serialises a copy, a forward pass allocates workspace) and what the system and other processes
# use; so up to about twice the estimate is needed. Half refuses what cannot fit and lets through what can.
MEMORY_FRACTION = 0.5

# Training holds, per trainable parameter, the weight, its gradient and Adam's two moments (4 copies; Adam is the
# largest of the updaters graphspec offers, SGD with momentum keeps 3, plain SGD 2), and, per activation, the
# forward's output kept for the backward pass and its gradient while the backward pass runs (2 copies).
TRAINING_PARAMETER_COPIES = 4
TRAINING_ACTIVATION_COPIES = 2

LARGEST_SHOWN = 3  # how many of the largest vertices an error names

DEFAULT = "default"  # memory_limit=DEFAULT: the limit of the enclosing memory_limit(...), else MEMORY_FRACTION
NO_LIMIT = "none"  # memory_limit="none" (or None): no check

_UNITS = {"": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40, "p": 2 ** 50}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)

_chosen: ContextVar = ContextVar("graphspec_memory_limit", default=DEFAULT)


class MemoryBudgetError(GraphspecError):
    """A model whose estimated memory exceeds the budget (raised before anything is allocated), or that ran out of
    memory anyway (the estimate is an estimate, and other processes use memory too)."""


def parse_size(text: "str | int | None") -> int | None:
    """Bytes from ``8G``, ``512M``, ``1.5GiB``, ``100000`` (binary units: G = 2**30), or None for ``none``.

    Raises :class:`GraphspecError` for anything else (zero and negative sizes included)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == NO_LIMIT):
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 1:
            raise GraphspecError(f"a memory limit must be positive; received {text}")
        return text
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    size = math.floor(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else 0
    if size < 1:
        raise GraphspecError(f"expected a memory size such as 8G, 512M, 1.5GiB or a number of bytes, or 'none' "
                             f"for no limit; received {text!r}")
    return size


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say (then there is no default limit)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


@contextmanager
def memory_limit(size: "str | int | None") -> Iterator[None]:
    """Every build and check inside uses ``size`` as its budget (as ``--memory-limit SIZE`` does for a command)."""
    token = _chosen.set(DEFAULT if size == DEFAULT else parse_size(size))
    try:
        yield
    finally:
        _chosen.reset(token)


@dataclass
class Budget:
    bytes: int | None  # None: no limit
    source: str  # how it was chosen, for the error


def budget(limit: "str | int | None" = DEFAULT) -> Budget:
    """The budget ``limit`` means: a size, ``none``, or DEFAULT (the enclosing memory_limit's, else the fraction
    of physical memory)."""
    if limit == DEFAULT:
        limit = _chosen.get()
    if limit != DEFAULT:
        size = parse_size(limit)
        return Budget(size, "no limit" if size is None else "set with --memory-limit or memory_limit=")
    machine = physical_memory()
    if machine is None:
        return Budget(None, "no limit (this system does not report its memory)")
    return Budget(int(machine * MEMORY_FRACTION),
                  f"the default of {MEMORY_FRACTION:.0%} of this machine's {_bytes(machine)}")


@dataclass
class Item:
    """One input or vertex and the bytes the estimate gives it."""

    name: str
    path: tuple  # its key path in the spec, for the error's location
    description: str  # type and shapes
    bytes: int  # all it is given: parameters and activations
    parameter_bytes: int = 0


@dataclass
class Estimate:
    what: str  # "building the model", "a forward pass at batch 2", "training at batch 32"
    parameter_bytes: int
    activation_bytes: int
    parts: str  # how the total is made up, in words
    items: list[Item] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes

    def largest(self, n: int = LARGEST_SHOWN) -> list[Item]:
        return sorted((i for i in self.items if i.bytes), key=lambda i: -i.bytes)[:n]


def estimate(spec, *, batch_size: int | None = None, training: bool = False, frozen=()) -> Estimate:
    """The memory ``spec`` (a loaded Spec) needs: its parameters alone (``batch_size`` None: building it), with
    the activations of a forward pass at ``batch_size``, or what training at ``batch_size`` keeps."""
    from .summary import BYTES_PER_VALUE, summarize
    s = summarize(spec, batch_size=batch_size or 1, frozen=set(frozen))
    param_copies = TRAINING_PARAMETER_COPIES if training else 1
    act_copies = (TRAINING_ACTIVATION_COPIES if training else 1) if batch_size else 0
    items = [Item(name, ("inputs", name), f"input {_shape(shape)}",
                  _numel(shape) * (batch_size or 0) * act_copies * BYTES_PER_VALUE)
             for name, shape in s.inputs.items()]
    for r in s.rows:
        trained = 0 if r.frozen else r.trainable
        params = (r.params + trained * (param_copies - 1)) * BYTES_PER_VALUE
        acts = math.ceil(_numel(r.out_shape) * r.batch * (batch_size or 0)) * act_copies * BYTES_PER_VALUE
        items.append(Item(r.name, spec.vertices[r.name].path, _describe(r), params + acts, params))
    parameter_bytes = sum(i.parameter_bytes for i in items)
    activation_bytes = sum(i.bytes for i in items) - parameter_bytes
    return Estimate(_what(batch_size, training), parameter_bytes, activation_bytes,
                    _parts(parameter_bytes, activation_bytes, batch_size, training), items)


def check(spec, *, batch_size: int | None = None, training: bool = False, frozen=(),
          limit: "str | int | None" = DEFAULT) -> None:
    """Raise :class:`MemoryBudgetError` when the :func:`estimate` exceeds the budget ``limit`` means."""
    chosen = budget(limit)
    if chosen.bytes is None:
        return
    if batch_size is None and not training and _parameter_bound(spec) <= chosen.bytes:
        return  # building: its parameters fit even counted generously; no summary needed (every build runs this)
    est = estimate(spec, batch_size=batch_size, training=training, frozen=frozen)
    if est.total > chosen.bytes:
        raise _refusal(spec, est, chosen)


def _parameter_bound(spec) -> int:
    """Bytes of every vertex's parameters, a layer shared by several vertices counted for each: at least what
    :func:`estimate` counts for building, from the shapes alone."""
    from .summary import BYTES_PER_VALUE
    inference = spec.analysis.inference
    return BYTES_PER_VALUE * sum(math.prod(p.shape) for name, v in spec.vertices.items()
                                 for p in v.entry.param_shapes(v.cfg, inference[name]))


def allocating(spec, vertex: str):
    """Allocating ``vertex``'s tensors: running out of memory anyway (the budget is an estimate, or was turned off,
    and other processes use memory too) is a MemoryBudgetError naming the vertex, not an internal error."""
    path = spec.vertices[vertex].path
    return _out_of_memory_as(lambda said: MemoryBudgetError(
        f"out of memory while allocating its parameters: {said}; free memory, or use a smaller model",
        location=spec.loc(path), vertex=vertex, path=path))


def running(what: str):
    """Running ``what`` (e.g. 'the forward pass of a batch of 64'): out of memory is a MemoryBudgetError saying
    so, not an internal error."""
    return _out_of_memory_as(lambda said: MemoryBudgetError(
        f"out of memory during {what}: {said}; use a smaller batch, free memory, or use a smaller model"))


@contextmanager
def _out_of_memory_as(error) -> Iterator[None]:
    """Running out of memory inside becomes ``error(what the allocator said)``; anything else passes through."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        raise error(_said(e)) from e


def _out_of_memory(e: BaseException) -> bool:
    import torch
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(e)


def _said(e: BaseException) -> str:
    """'RuntimeError: <its first line>', or the type alone when it says nothing (a bare MemoryError)."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _refusal(spec, est: Estimate, chosen: Budget) -> MemoryBudgetError:
    top = est.largest()
    listed = "; ".join(f"'{i.name}' ({i.description}): {_bytes(i.bytes)}" for i in top)
    message = (f"{est.what} needs about {_bytes(est.total)} ({est.parts}), more than the budget of "
               f"{_bytes(chosen.bytes)} ({chosen.source}); raise it with --memory-limit SIZE (e.g. "
               f"--memory-limit 64G, or 'none' for no check), in Python with memory_limit= (graphspec.build) or "
               f"graphspec.budget.memory_limit(SIZE). "
               f"Largest vertices: {listed}")
    where = top[0] if top else None
    location = spec.loc(where.path) if where is not None else spec.loc(())
    return MemoryBudgetError(message, location=location, path=where.path if where else ())


def _what(batch_size: int | None, training: bool) -> str:
    if training:
        return f"training at batch {batch_size}"
    return "building the model" if batch_size is None else f"a forward pass at batch {batch_size}"


def _parts(params: int, acts: int, batch_size: int | None, training: bool) -> str:
    if training:
        return (f"parameters with gradients and Adam state {_bytes(params)} + activations and their gradients "
                f"{_bytes(acts)}, float32")
    if batch_size is None:
        return "parameters, float32"
    return f"parameters {_bytes(params)} + activations {_bytes(acts)}, float32"


def _describe(row) -> str:
    params = ", ".join(f"{p.name} {_shape(p.shape)}" for p in row.param_shapes)
    return f"{row.type}, output {_shape(row.out_shape)}" + (f", parameters {params}" if params else "")


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _numel(shape) -> int:
    return math.prod(shape)


def _bytes(n: int) -> str:
    from .summary import _bytes as formatted
    return formatted(n)
