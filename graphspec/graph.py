"""The pure graph core: topology and static shapes, before any tensor exists.

``analyze(spec)`` checks every reference, the arity of every vertex, cycles and outputs, then propagates shapes
through the registry's rules in topological order. It returns an :class:`Analysis` or raises one
:class:`SpecError` listing all problems; unreachable vertices and unused inputs are warnings. ``load_spec`` keeps
the analysis of the spec it validated as ``spec.analysis``; the compiler hands it on as ``module.graphspec.analysis``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable

import networkx as nx

from .errors import Problem, SpecError, brief, did_you_mean, suggestion_budget
from .registry import Inferred, ShapeError, Shape
from .spec.model import Spec


@dataclass
class Analysis:
    order: list[str]  # vertices (not inputs) in topological order, ties broken by spec order
    shapes: dict[str, Shape]  # output shape of every input and vertex, per example
    inference: dict[str, Inferred]
    in_shapes: dict[str, list[Shape]]
    graph: nx.DiGraph = field(repr=False)
    warnings: list[Problem] = field(default_factory=list)
    # each input's and vertex's batch as a multiple of the network's (1 unless a stack/unstack vertex changed it)
    batch: dict[str, Fraction] = field(default_factory=dict)
    # Variable-length sequences: ``shapes`` are at T = EXAMPLE_LENGTH, and ``varies`` marks, per input and
    # vertex, the dimensions of its shape that follow T.
    varies: dict[str, tuple[bool, ...]] = field(default_factory=dict)

    def pattern(self, name: str) -> tuple[int | None, ...]:
        """``name``'s shape with None for each dimension that follows a variable sequence length."""
        marks = self.varies.get(name, ())
        return tuple(None if i < len(marks) and marks[i] else d for i, d in enumerate(self.shapes[name]))

    # The one implementation of the graph queries that compiling, probing, freezing and surgery need.

    def ancestors(self, names: Iterable[str], *, without: Iterable[str] = ()) -> set[str]:
        """Every vertex and input that ``names`` depend on (not ``names`` themselves); ``without``: as if those
        vertices and their connections were removed."""
        return self._reach(nx.ancestors, names, without)

    def descendants(self, names: Iterable[str], *, without: Iterable[str] = ()) -> set[str]:
        """Every vertex that depends on ``names`` (not ``names`` themselves); ``without`` as for ancestors."""
        return self._reach(nx.descendants, names, without)

    def _reach(self, step, names: Iterable[str], without: Iterable[str]) -> set[str]:
        removed = set(without)
        graph = nx.restricted_view(self.graph, removed, []) if removed else self.graph
        found: set[str] = set()
        for name in names:
            if name in graph:
                found |= step(graph, name)
        return found

    def needed_for(self, outputs: Iterable[str], *, without: Iterable[str] = ()) -> set[str]:
        """What computing ``outputs`` runs: the outputs and all their ancestors (inputs included)."""
        outputs = set(outputs)
        return outputs | self.ancestors(outputs, without=without)

    def closure(self, names: Iterable[str]) -> frozenset[str]:
        """``names`` and every vertex they depend on, network inputs excluded (DL4J's setFeatureExtractor)."""
        vertices = set(self.order)
        return frozenset(self.needed_for(names) & vertices)


# The suffix that names a sequence's mask [N, T]: the compiled forward's ``<input>_mask`` argument, and an ``.npz``
# file's ``<input>_mask`` (feature mask) and ``<output>_mask`` (label mask) arrays.
MASK = "_mask"


def fits(shape, pattern) -> bool:
    """Whether a concrete ``shape`` matches a :meth:`Analysis.pattern` (None matches any length)."""
    return len(shape) == len(pattern) and all(p is None or d == p for d, p in zip(shape, pattern))


class SpecWarning(UserWarning):
    pass


def analyze(spec: Spec, *, warn: bool = True, broken: frozenset[str] = frozenset()) -> Analysis:
    """The analysis of ``spec``, or one SpecError with every problem the valid parts allow: reference, arity and
    output problems, and the shape problems of every vertex whose inputs could be inferred. ``broken`` names
    vertices the loader already refused: references to them are not reported again."""
    with suggestion_budget():  # however many references are mistyped, did-you-mean stays linear in the spec
        return _analyze(spec, warn, broken)


def _analyze(spec: Spec, warn: bool, broken: frozenset[str]) -> Analysis:
    problems: list[Problem] = []
    g, cyclic = _graph(spec, problems, broken)
    _check_outputs(spec, problems, broken)
    result = None
    if not cyclic:  # shapes need an order; a cycle has none
        result = _shapes(spec, g, _order(spec, g), problems)
        if not problems and any(spec.is_variable(n) for n in spec.inputs):
            _vary(spec, g, result, problems)
    if problems:
        raise SpecError(problems)
    result.warnings = _reachability(spec, result)
    if warn:
        for w in result.warnings:
            warnings.warn(str(w), SpecWarning, stacklevel=2)
    return result


def _problem(spec: Spec, msg: str, vertex: str | None, path: tuple) -> Problem:
    v = spec.vertices.get(vertex) if vertex else None
    suffix = f" ({v.origin})" if v is not None and v.origin else ""
    return Problem(msg + suffix, spec.loc(path), vertex, path)


def _graph(spec: Spec, problems: list[Problem], broken: frozenset[str] = frozenset()) -> tuple[nx.DiGraph, bool]:
    g = nx.DiGraph()
    for name in spec.inputs:
        g.add_node(name, index=len(g))
    for name in spec.vertices:
        g.add_node(name, index=len(g))
    known = list(spec.inputs) + list(spec.vertices)
    for name, v in spec.vertices.items():
        lo, hi = v.entry.arity
        if len(v.inputs) < lo or (hi is not None and len(v.inputs) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            problems.append(_problem(spec, f"'{v.type}' takes {want} input(s); received {len(v.inputs)}",
                                     name, v.path + ("inputs",)))
        for i, src in enumerate(v.inputs):
            if src in broken:
                continue  # refused already; its consumers are checked as far as they can be
            if src not in g:
                problems.append(_problem(
                    spec, f"input '{brief(src)}' does not exist{did_you_mean(src, known)}; inputs must name a network "
                          "input or another vertex", name, v.path + ("inputs", i)))
            elif src == name:
                problems.append(_problem(spec, "a vertex cannot be its own input", name, v.path + ("inputs", i)))
            else:
                g.add_edge(src, name)
    cycle = None
    if not nx.is_directed_acyclic_graph(g):  # ten times faster than find_cycle's search on the usual, acyclic graph
        cycle = nx.find_cycle(g)
    if cycle:
        names = [a for a, _ in cycle] + [cycle[0][0]]
        first = cycle[0][1]
        problems.append(_problem(spec, "the graph has a cycle: " + " -> ".join(names), first,
                                 spec.vertices[first].path + ("inputs",)))
    return g, bool(cycle)


def _check_outputs(spec: Spec, problems: list[Problem], broken: frozenset[str] = frozenset()) -> None:
    seen = set()
    for i, out in enumerate(spec.outputs):
        if out not in spec.vertices and out not in broken:
            extra = " (outputs must be vertices, not network inputs)" if out in spec.inputs else ""
            problems.append(Problem(f"output '{brief(out)}' is not a vertex{did_you_mean(out, spec.vertices)}{extra}",
                                    spec.loc(("outputs", i)), None, ("outputs", i)))
        if out in seen:
            problems.append(Problem(f"output '{brief(out)}' is listed twice", spec.loc(("outputs", i)), None, ("outputs", i)))
        seen.add(out)


def _order(spec: Spec, g: nx.DiGraph) -> list[str]:
    index = nx.get_node_attributes(g, "index")
    order = nx.lexicographical_topological_sort(g, key=lambda n: index[n])
    return [n for n in order if n in spec.vertices]


# No dimension, output (per example) or parameter tensor may hold more than MAX_VALUES values: 2**48 float32
# values are 1 PiB, more than any machine holds (so no network that could run is refused), and with every shape
# below it the products the shape rules, the memory estimate and torch form (a batch, a kernel, bytes per value)
# stay far from the 2**63 where torch's int64 sizes overflow. Checked after every vertex, so no rule ever sees a
# larger input than this.
MAX_VALUES = 2 ** 48


def _shapes(spec: Spec, g: nx.DiGraph, order: list[str], problems: list[Problem],
            length: int | None = None) -> Analysis:
    shapes: dict[str, Shape] = {}
    for n in spec.inputs:
        shape = tuple(spec.input_shape(n, length))
        if not _over_limit(spec, lambda: f"its shape {_fmt_shape(shape)} (per example)", shape, n, ("inputs", n), problems):
            shapes[n] = shape
    batch = {n: Fraction(1) for n in spec.inputs}
    inference, in_shapes = {}, {}
    for name in order:
        v = spec.vertices[name]
        lo, hi = v.entry.arity
        if any(i not in shapes for i in v.inputs) or len(v.inputs) < lo or (hi is not None and len(v.inputs) > hi):
            continue  # an upstream vertex or its arity already failed; don't report consequences
        ins = [shapes[i] for i in v.inputs]
        try:
            inf = v.entry.infer(v.cfg, ins)
            batch[name] = v.entry.batch(v.cfg, [batch[i] for i in v.inputs])
        except ShapeError as e:
            where = v.path + ((e.key,) if e.key else ())
            problems.append(_problem(spec, f"{e}; input shapes: {_fmt_inputs(v.inputs, ins)}", name, where))
            continue
        if _too_large(spec, v, inf, batch[name], problems):
            continue
        inference[name], in_shapes[name], shapes[name] = inf, ins, tuple(inf.out_shape)
    _check_shared(spec, inference, in_shapes, problems)
    return Analysis(order, shapes, inference, in_shapes, g, batch=batch)


def _too_large(spec: Spec, v, inf: Inferred, batch: Fraction, problems: list[Problem]) -> bool:
    """Whether ``v``'s output (with its batch multiple: stack vertices multiply it) or one of its parameters is
    over MAX_VALUES (reported; its consumers are skipped)."""
    out = tuple(inf.out_shape)
    rows = math.ceil(batch)
    per = "per example" if rows == 1 else f"per example, at {rows:,}× the network's batch"
    if _over_limit(spec, lambda: f"its output shape {_fmt_shape(out)} ({per})", out + (rows,), v.name, v.path,
                   problems):
        return True
    return any(_over_limit(spec, lambda: f"its parameter '{p.name}' {_fmt_shape(p.shape)}", tuple(p.shape), v.name,
                           v.path, problems) for p in v.entry.param_shapes(v.cfg, inf))


def _over_limit(spec: Spec, what, shape: Shape, name: str, path: tuple, problems: list[Problem]) -> bool:
    """Whether ``shape`` holds more than MAX_VALUES values (reported, described by calling ``what``: only then)."""
    values = math.prod(shape)
    if values <= MAX_VALUES and all(d <= MAX_VALUES for d in shape):
        return False
    problems.append(_problem(spec, f"{what()} holds {values:,} values, more than the limit of 2**48 "
                                   f"({MAX_VALUES:,}) for one tensor: no machine could hold it, and its sizes "
                                   "would overflow torch's 64-bit integers", name, path))
    return True


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _vary(spec: Spec, g: nx.DiGraph, analysis: Analysis, problems: list[Problem]) -> None:
    """Analyse again with variable-length inputs of other lengths: a layer whose parameters or configuration
    differ at T + 1 (e.g. padding that depends on T mod the stride) cannot take sequences of any length (refused);
    the dimensions that differ at 2T (a stride halves T + 1 and T alike) are marked in ``varies``."""
    from .spec.model import EXAMPLE_LENGTH as t
    next_, double = (_shapes(spec, g, analysis.order, problems, length=n) for n in (t + 1, 2 * t))
    for p in problems:
        p.message = f"{p.message} (with other sequence lengths than {t}: the input has no fixed 'length')"
    for name, shape in analysis.shapes.items():
        analysis.varies[name] = tuple(a != b for a, b in zip(shape, double.shapes.get(name, shape)))
        if name in spec.vertices and name in next_.inference:
            _check_length_free(spec, analysis, spec.vertices[name], analysis.inference[name], next_.inference[name],
                               problems)


def _check_length_free(spec: Spec, analysis: Analysis, v, mine, theirs, problems: list[Problem]) -> None:
    """Refuse vertex ``v`` if its parameters or module configuration at T (``mine``) and T + 1 differ."""
    own = {p.name: p.shape for p in v.entry.param_shapes(v.cfg, mine)}
    own_next = {p.name: p.shape for p in v.entry.param_shapes(v.cfg, theirs)}
    if own == own_next and (mine.n_in, mine.n_out, _config(v, mine)) == (theirs.n_in, theirs.n_out,
                                                                        _config(v, theirs)):
        return
    from .spec.model import EXAMPLE_LENGTH as t
    what = (f"parameters {_fmt_params(own)} at T = {t}, {_fmt_params(own_next)} at T = {t + 1}"
            if own != own_next else "a configuration that depends on T (e.g. padding for stride > 1)")
    inputs = [n for n in spec.inputs if spec.is_variable(n) and n in analysis.ancestors([v.name])]
    problems.append(_problem(spec, f"needs its input's length: it would have {what}; give the input "
                                   f"'{inputs[0] if inputs else '?'}' a fixed 'length'", v.name, v.path))


def _config(v, inf) -> dict:
    """What of ``inf.info`` configures ``v``'s module (not the work counts that follow the sequence length)."""
    return {k: x for k, x in inf.info.items() if k not in v.entry.counts}


def _check_shared(spec: Spec, inference: dict, in_shapes: dict, problems: list[Problem]) -> None:
    """Every use of a shared layer must be the same layer: the same parameter shapes and the same configuration
    derived from its inputs (e.g. `same` padding), since one module computes them all."""
    for name, v in spec.vertices.items():
        if not v.shares or name not in inference or v.shares not in inference:
            continue
        mine, theirs = inference[name], inference[v.shares]
        entry = v.entry
        own = {p.name: p.shape for p in entry.param_shapes(v.cfg, mine)}
        owner = {p.name: p.shape for p in entry.param_shapes(v.cfg, theirs)}
        if own != owner or (mine.n_in, mine.n_out, mine.info) != (theirs.n_in, theirs.n_out, theirs.info):
            what = (f"parameters {_fmt_params(own)} where '{v.shares}' has {_fmt_params(owner)}" if own != owner
                    else f"another configuration ({_fmt_inputs(v.inputs, in_shapes[name])} vs "
                         f"{_fmt_inputs(spec.vertices[v.shares].inputs, in_shapes[v.shares])})")
            problems.append(_problem(spec, f"shares '{v.shares}', but its inputs would give the layer {what}; "
                                           "every use of a shared layer needs inputs it fits the same way",
                                     name, v.path + ("inputs",)))


def _fmt_params(shapes: dict) -> str:
    return ", ".join(f"{k} [{', '.join(map(str, s))}]" for k, s in shapes.items()) or "none"


def _fmt_inputs(names, shapes) -> str:
    return ", ".join(f"{n} [{', '.join(map(str, s))}]" for n, s in zip(names, shapes))


def _reachability(spec: Spec, analysis: Analysis) -> list[Problem]:
    useful = analysis.needed_for(spec.outputs)
    out = []
    for name, v in spec.vertices.items():
        if name not in useful:
            out.append(Problem("reaches no output; it will be computed but never used", spec.loc(v.path), name,
                               v.path, "warning"))
    for name in spec.inputs:
        if name not in useful:
            out.append(Problem("network input is not used by any output", spec.loc(("inputs", name)), name,
                               ("inputs", name), "warning"))
    return out
