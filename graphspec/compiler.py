"""Spec -> ``torch.fx.GraphModule``.

Every vertex becomes a submodule registered under its own name, so ``state_dict()`` keys are
``<vertex>.<param>`` and the generated ``forward`` reads like the spec. The fx graph is built once in
topological order; at run time there is no interpretation. Works with ``torch.compile``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import fx, nn

from .budget import DEFAULT as DEFAULT_MEMORY_LIMIT, allocating, check as check_memory
from .freeze import freeze_module
from .graph import MASK, Analysis
from .spec.loader import load_spec
from .spec.model import Spec


@dataclass
class GraphInfo:
    """What a built module knows about itself (``module.graphspec``)."""

    spec: Spec
    analysis: Analysis
    frozen: frozenset = frozenset()  # vertices that always run in inference mode and get no gradient
    preprocessing: Any = None  # how inputs must be prepared (graphspec.data.Preprocessing), if recorded
    weights: Any = None  # the WeightReport of the last load, if any
    surgery: Any = None  # the SurgeryReport when the module came from graph surgery


def build(spec_or_path: "Spec | str | os.PathLike | dict", *, seed: int | None = None,
          frozen: Iterable[str] = (), preprocessing: Any = None,
          memory_limit: "int | str | None" = DEFAULT_MEMORY_LIMIT) -> fx.GraphModule:
    """Compile a spec into a module whose submodules carry the vertex names.

    >>> import graphspec, torch
    >>> net = graphspec.build("specs/nn4small2.yaml")  # doctest: +SKIP
    >>> net(torch.zeros(2, 3, 96, 96)).shape  # doctest: +SKIP
    torch.Size([2, 5749])

    Parameters are initialised with the spec's weight/bias init schemes from a generator seeded with
    ``seed`` (else the spec's ``seed``; else torch's global RNG), so a seeded build is reproducible.
    The forward returns the output tensor, or a dict by output name when the spec has several outputs.
    ``frozen`` names vertices that always run in inference mode and receive no gradient (not closed over
    ancestors here; :meth:`GraphBuilder.set_feature_extractor` does DL4J's closure).

    Before anything is allocated, the parameters' memory is checked against ``memory_limit`` (bytes, a size such
    as ``"8G"``, or ``None`` for no check; by default the enclosing :func:`graphspec.budget.memory_limit`'s, else
    half of physical memory): a larger model raises :class:`graphspec.budget.MemoryBudgetError`.
    """
    spec = load_spec(spec_or_path)
    check_memory(spec, limit=memory_limit)
    analysis = spec.analysis
    root = nn.Module()
    generator = _generator(seed if seed is not None else spec.seed)
    for name in analysis.order:
        v = spec.vertices[name]
        if v.shares:
            continue  # computed by the module of the vertex it shares
        inf = analysis.inference[name]
        with allocating(spec, name):
            module = v.entry.build(v.cfg, inf)
            v.entry.init(module, v.cfg, inf, generator)
        root.add_module(name, module)
    _inplace_activations(spec, analysis, root)
    graph = _fx_graph(spec, analysis, root)
    gm = fx.GraphModule(root, graph, class_name=_class_name(spec.name))
    frozen = frozenset(frozen)
    unknown = sorted(frozen - set(spec.vertices))
    if unknown:
        from .errors import GraphspecError, did_you_mean
        raise GraphspecError(f"cannot freeze unknown vertex '{unknown[0]}'{did_you_mean(unknown[0], spec.vertices)}")
    frozen = frozenset(use for name in frozen for use in spec.uses(name))  # one module: every use is frozen
    for name in frozen:
        freeze_module(gm.get_submodule(spec.vertices[name].module))
    gm.graphspec = GraphInfo(spec, analysis, frozen, preprocessing)
    return gm


def _inplace_activations(spec: Spec, analysis: Analysis, root: nn.Module) -> None:
    """Let a vertex that can compute in place (an activation) overwrite its input when the registry says that
    input's producer does not need its own output for the backward pass (a conv or dense layer without
    activation, batch norm), it is the only reader, and the input is not a network output. This saves one
    activation-sized tensor per such vertex (what hand-written modules get from ``relu_``)."""
    readers: dict[str, int] = {}
    shared = {v.shares for v in spec.vertices.values() if v.shares}
    for v in spec.vertices.values():
        for i in v.inputs:
            readers[i] = readers.get(i, 0) + 1
    for name, v in spec.vertices.items():
        if not v.entry.computes_in_place or len(v.inputs) != 1 or v.inputs[0] not in spec.vertices:
            continue
        if v.shares or name in shared:
            continue  # one module at several places: whether to overwrite is a per-place decision
        src = spec.vertices[v.inputs[0]]
        if src.entry.output_overwritable(src.cfg) and readers.get(src.name) == 1 and src.name not in spec.outputs:
            root.get_submodule(name).set_inplace(root.get_submodule(src.name))


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed))


def _fx_graph(spec: Spec, analysis: Analysis, root: nn.Module, outputs: list[str] | None = None,
              needed_inputs_only: bool = False, with_masks: bool = False) -> fx.Graph:
    """The forward graph computing ``outputs`` from the inputs, in topological order. With the spec's outputs
    (the default) it returns a tensor for one output and a dict for several; with explicit ``outputs``, a dict.
    ``needed_inputs_only``: the forward takes only the inputs the outputs depend on (in the spec's order).
    ``with_masks``: it returns ``(activations, masks)``, two dicts by output name (a mask is None where none
    reaches the output), for the per-step losses that read the mask of their input."""
    as_dict = outputs is not None or len(spec.outputs) > 1
    outputs = list(spec.outputs if outputs is None else outputs)
    graph = fx.Graph()
    needed = analysis.needed_for(outputs)
    taken = [name for name in spec.inputs if not needed_inputs_only or name in needed]
    nodes: dict[str, fx.Node] = {name: graph.placeholder(_ident(name)) for name in taken}
    masks = _mask_placeholders(graph, spec, taken)
    for name in analysis.order:
        if name not in needed:
            continue  # reaches no output (analyze warned); its module still exists for its weights
        v = spec.vertices[name]
        mask = _input_mask(graph, v, masks)
        module = root.get_submodule(v.module)
        reads = mask is not None and _reads_mask(module)
        nodes[name] = graph.create_node("call_module", v.module, tuple(nodes[i] for i in v.inputs),
                                        {"mask": mask} if reads else {}, name=_ident(name))
        masks[name] = _mask_after(graph, v, module, analysis, mask)
    result = {o: nodes[o] for o in outputs} if as_dict else nodes[outputs[0]]
    graph.output((result, {o: masks.get(o) for o in outputs}) if with_masks else result)
    graph.lint()
    return graph


# Masks (DL4J's feature masks): a sequence input ``x`` [size, T] gives the forward an optional ``x_mask`` [N, T]
# (1 = a real step, 0 = padding). Each vertex passes on the mask of its first input that carries one (a merging
# vertex: the OR of its inputs' masks, none if one has none): a module
# whose forward takes ``mask=`` receives it, and the mask after the vertex is what its module's ``output_mask``
# says, else the same mask while the output is a sequence of the same length, else none (DL4J's rules,
# SEMANTICS-SEQUENCES.md §2). Without masks given, every mask is None at run time and nothing changes.


def _mask_placeholders(graph: fx.Graph, spec: Spec, inputs: list[str]) -> dict[str, fx.Node | None]:
    return {name: graph.placeholder(mask_argument(name), default_value=None) if
            len(spec.input_shape(name)) == 2 else None for name in inputs}


def _input_mask(graph: fx.Graph, v, masks: dict):
    given = [masks.get(i) for i in v.inputs]
    if v.entry.merges_masks and len(given) > 1:
        return None if any(m is None for m in given) else graph.call_function(_any_mask, tuple(given))
    return next((m for m in given if m is not None), None)


def _any_mask(*masks):
    """DL4J's merged mask: a step is real where any input's is; none unless every input has one (at run time)."""
    if any(m is None for m in masks):
        return None
    out = masks[0]
    for m in masks[1:]:
        out = torch.maximum(out, m)
    return out


def _reads_mask(module: nn.Module) -> bool:
    import inspect
    return "mask" in inspect.signature(module.forward).parameters


def _mask_after(graph: fx.Graph, v, module: nn.Module, analysis: Analysis, mask):
    if mask is None:
        return None
    if hasattr(module, "output_mask"):
        return graph.call_function(_output_mask, (graph.get_attr(v.module), mask))
    out, first = analysis.shapes[v.name], analysis.shapes[v.inputs[0]]
    return mask if len(out) == 2 and len(first) == 2 and out[1] == first[1] else None


def _output_mask(module: nn.Module, mask):
    return None if mask is None else module.output_mask(mask)


def subgraph(model: fx.GraphModule, outputs: list[str], *, needed_inputs_only: bool = False,
             with_masks: bool = False) -> fx.GraphModule:
    """A module sharing ``model``'s submodules that returns ``{name: activation}`` for ``outputs`` (with
    ``with_masks``: and ``{name: mask or None}``, the sequence mask each output carries).

    Training uses it to run the network up to the inputs of its output layers; ``embed`` with
    ``needed_inputs_only`` to run one tower of a Siamese network on one input.
    """
    info = model.graphspec
    graph = _fx_graph(info.spec, info.analysis, model, outputs, needed_inputs_only, with_masks)
    return fx.GraphModule(model, graph, class_name=_class_name(info.spec.name) + "Trunk")


def call(module: fx.GraphModule, spec: Spec, x):
    """``module`` (compiled from ``spec``) on ``x``: a tensor, a tuple of tensors in the spec's input order, or a
    dict by input name that may hold the mask of a sequence input under ``<input>_mask`` (the names of an ``.npz``
    file's arrays)."""
    if isinstance(x, dict):
        return module(**{(_ident(k) if k in spec.inputs else mask_argument(k[:-len(MASK)])): v
                         for k, v in x.items()})
    return module(*(x if isinstance(x, tuple) else (x,)))


def mask_argument(input_name: str) -> str:
    """The forward's keyword argument that takes the mask [N, T] of the sequence input ``input_name``."""
    return _ident(input_name) + MASK


def _ident(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if ident[:1].isalpha() or ident[:1] == "_" else "_" + ident


def _class_name(name: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", name)
    ident = "".join(p[:1].upper() + p[1:] for p in parts if p) or "Graph"
    return ident if ident[0].isalpha() else "G" + ident
