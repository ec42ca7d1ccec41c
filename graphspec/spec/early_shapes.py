"""Shapes during block expansion, for blocks whose templates read their inputs' shapes (``channels``, ...).

The graph analysis (:mod:`graphspec.graph`) computes every shape once the whole spec is expanded; a block that
reads a shape needs it earlier, while the vertices before it are all that exists. :class:`EarlyShapes` validates
and infers those vertices incrementally with the same registry rules, and reports nothing itself: a vertex it
cannot infer simply has no shape here, and the loader and the analysis report its problems as usual.
"""
from __future__ import annotations

from ..registry import ShapeError
from .blocks import Expansion, ShapeUnknown


class EarlyShapes:
    def __init__(self, doc, src, make_vertex):
        """``make_vertex(raw, doc, src, problems)``: the loader's validation of one expanded vertex."""
        self.doc, self.src, self.make_vertex = doc, src, make_vertex
        self.shapes = {name: tuple(i.shape) for name, i in doc.inputs.items()}
        self.vertices: dict = {}  # validated so far, for the vertices that share their layers
        self.reasons: dict[str, str] = {}  # why a vertex has no shape here: its first problem
        self.done = 0  # how many of the expansion's vertices have been looked at

    def __call__(self, names: list[str], expansion: Expansion) -> list[tuple[int, ...]]:
        for raw in expansion.vertices[self.done:]:
            self.done += 1
            shape = self._shape(raw, expansion.aliases)
            if shape is not None:
                self.shapes[raw.name] = shape
        found = []
        for name in names:
            name = name if name in self.shapes else expansion.aliases.get(name, name)
            if name not in self.shapes:
                raise ShapeUnknown(name, self.reasons.get(name))
            found.append(self.shapes[name])
        return found

    def _shape(self, raw, aliases) -> tuple[int, ...] | None:
        body = raw.body
        if isinstance(body, dict) and "shares" in body:
            if "from" in body or not isinstance(body["shares"], str):
                return None  # a shared part's shape comes from the analysis
            owner = self.vertices.get(aliases.get(body["shares"], body["shares"]))
            entry, cfg, inputs = (owner.entry, owner.cfg, body.get("inputs", [])) if owner else (None, None, [])
        else:
            problems: list = []  # reported by the loader; the first one explains a missing shape
            vertex = self.make_vertex(raw, self.doc, self.src, problems)
            if vertex is None:
                self.reasons[raw.name] = problems[0].message if problems else "it is not valid"
                return None
            self.vertices[raw.name] = vertex
            entry, cfg, inputs = vertex.entry, vertex.cfg, vertex.inputs
        inputs = [inputs] if isinstance(inputs, str) else inputs
        try:
            in_shapes = [self.shapes[i if i in self.shapes else aliases.get(i, i)] for i in inputs]
            return tuple(entry.infer(cfg, in_shapes).out_shape) if entry and in_shapes else None
        except ShapeError as e:
            self.reasons[raw.name] = str(e)
        except (KeyError, TypeError):
            pass
        return None
