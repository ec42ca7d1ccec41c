"""Transfer learning as graph surgery: ``GraphBuilder`` mirrors DL4J's ``TransferLearning.GraphBuilder``.

Every edit is a change to a plain spec document (spec -> spec); nothing touches a live module. ``build()``
validates the edited spec whole (so a dangling reference is a clear error naming the vertex), compiles it, copies
the weights of every unedited vertex by (name, shape), freezes DL4J's frozen set (the named vertices plus all
their ancestors) and reports what was kept, dropped and re-initialised.

>>> import graphspec
>>> net = graphspec.build("specs/nn4small2.yaml")                      # doctest: +SKIP
>>> snipped = (graphspec.GraphBuilder(net).set_feature_extractor("embeddings")
...            .remove_vertex_and_connections("lossLayer").set_outputs("embeddings").build())  # doctest: +SKIP
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import GraphspecError, did_you_mean
from .registry import lookup
from .spec.model import TRAIN_KEYS
from .spec.yaml_source import Source
from .compiler import build


class SurgeryError(GraphspecError):
    """An edit that cannot be applied; the message names the operation and the vertex."""


@dataclass
class SurgeryReport:
    kept: list[str] = field(default_factory=list)  # weights copied from the original
    reinitialised: list[str] = field(default_factory=list)  # new or edited vertices with fresh parameters
    dropped: list[str] = field(default_factory=list)  # vertices of the original that are gone
    frozen: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def show(names):
            return ", ".join(names) if len(names) <= 8 else ", ".join(names[:8]) + f", ... ({len(names)} in all)"
        return [f"kept ({len(self.kept)}): {show(self.kept)}",
                f"re-initialised ({len(self.reinitialised)}): {show(self.reinitialised)}",
                f"dropped ({len(self.dropped)}): {show(self.dropped)}",
                f"frozen ({len(self.frozen)}): {show(self.frozen)}"]


class GraphBuilder:
    """Edit a built model (or a spec, for fresh weights) like DL4J's TransferLearning.GraphBuilder."""

    def __init__(self, model_or_spec: Any):
        from .spec.loader import load_spec
        if isinstance(model_or_spec, torch.nn.Module):
            info = getattr(model_or_spec, "graphspec", None)
            if info is None:
                raise SurgeryError("GraphBuilder needs a module built by graphspec (or a spec)")
            self._model, spec, self._analysis = model_or_spec, info.spec, info.analysis
            self._frozen_before = set(info.frozen)
            self._preprocessing = info.preprocessing
        else:
            self._model, spec = None, load_spec(model_or_spec)
            self._analysis = spec.analysis
            self._frozen_before, self._preprocessing = set(), None
        self._doc = copy.deepcopy(spec.to_dict())
        self._feature_extractor: list[str] = []
        self._edited: set[str] = set()
        self._moved: dict[str, str] = {}  # new owner of a shared layer -> the removed owner whose weights it keeps
        self._seed: int | None = None

    # --- helpers -------------------------------------------------------------------------------------------

    @property
    def _vertices(self) -> dict[str, dict]:
        return self._doc["vertices"]

    def _require(self, op: str, name: str) -> dict:
        if name not in self._vertices:
            known = list(self._vertices) + list(self._doc["inputs"])
            raise SurgeryError(f"{op}: no vertex named '{name}'{did_you_mean(name, known)}", vertex=name)
        return self._vertices[name]

    def _consumers(self, name: str) -> list[str]:
        return [n for n, v in self._vertices.items() if name in v.get("inputs", [])]

    def _owner(self, name: str) -> str:
        """The vertex that owns ``name``'s layer (itself unless it shares another's)."""
        return self._vertices[name].get("shares", name)

    def _users(self, owner: str) -> list[str]:
        return [n for n, v in self._vertices.items() if v.get("shares") == owner]

    def _type(self, name: str) -> str:
        return self._vertices[self._owner(name)]["type"]

    def _check_new(self, op: str, name: str, body: Any, kind: str, inputs) -> dict:
        if isinstance(body, str):
            import yaml
            body = yaml.safe_load(body)
        if not isinstance(body, dict) or ("type" not in body and "shares" not in body):
            raise SurgeryError(f"{op}: '{name}' needs a mapping with a 'type', e.g. {{'type': 'dense', 'out': 10}}, "
                               "or with 'shares', e.g. {'shares': 'tower'}", vertex=name)
        if "shares" in body:
            self._require(op, str(body["shares"]))
            type_name = self._type(str(body["shares"]))
        else:
            type_name = body["type"]
        try:
            entry = lookup(type_name)
        except KeyError as e:
            raise SurgeryError(f"{op}: {e.args[0]}", vertex=name) from None
        if entry.kind != kind:
            other = "add_vertex" if kind == "layer" else "add_layer"
            raise SurgeryError(f"{op}: '{type_name}' is a {entry.kind}, not a {kind}; use {other}", vertex=name)
        if not inputs:
            raise SurgeryError(f"{op}: '{name}' needs at least one input", vertex=name)
        if "shares" in body:
            return {**body, "inputs": list(inputs)}
        return {**body, "type": entry.name, "inputs": list(inputs)}

    # --- edits (each returns self, like DL4J's builder) -------------------------------------------------------

    def set_feature_extractor(self, *names: str) -> "GraphBuilder":
        """Freeze these vertices and all their ancestors (DL4J semantics) in the built model."""
        for name in names:
            self._require("set_feature_extractor", name)
        self._feature_extractor = list(names)
        return self

    def remove_vertex_and_connections(self, name: str) -> "GraphBuilder":
        """Remove a vertex, its use as an input of other vertices and as an output."""
        self._require("remove_vertex_and_connections", name)
        self._hand_over(name)
        del self._vertices[name]
        for v in self._vertices.values():
            v["inputs"] = [i for i in v.get("inputs", []) if i != name]
        self._doc["outputs"] = [o for o in self._doc["outputs"] if o != name]
        self._feature_extractor = [n for n in self._feature_extractor if n != name]
        return self

    def _hand_over(self, name: str) -> None:
        """Before ``name`` goes: if others share its layer, the first of them becomes the layer's owner (with its
        configuration and, in build(), its weights) and the others share that one instead."""
        users = self._users(name)
        if not users:
            return
        heir, body = users[0], self._vertices[name]
        kept = {k: v for k, v in self._vertices[heir].items() if k in ("inputs", "group")}
        self._vertices[heir] = {**{k: v for k, v in body.items() if k not in ("inputs", "group")}, **kept}
        for other in users[1:]:
            self._vertices[other]["shares"] = heir
        self._moved[heir] = self._moved.get(name, name)
        if name in self._edited:
            self._edited.add(heir)

    def remove_vertex_keep_connections(self, name: str) -> "GraphBuilder":
        """Remove a vertex but keep references to it; add a vertex of the same name before build()."""
        self._require("remove_vertex_keep_connections", name)
        del self._vertices[name]
        self._edited.add(name)
        return self

    def add_layer(self, name: str, layer: Any, *inputs: str) -> "GraphBuilder":
        return self._add("add_layer", name, layer, "layer", inputs)

    def add_vertex(self, name: str, vertex: Any, *inputs: str) -> "GraphBuilder":
        return self._add("add_vertex", name, vertex, "vertex", inputs)

    def _add(self, op, name, body, kind, inputs) -> "GraphBuilder":
        if name in self._vertices or name in self._doc["inputs"]:
            raise SurgeryError(f"{op}: '{name}' already exists; remove it first (DL4J would silently overwrite)",
                               vertex=name)
        self._vertices[name] = self._check_new(op, name, body, kind, inputs)
        self._edited.add(name)
        return self

    def n_out_replace(self, name: str, n_out: int, weight_init: str | None = None,
                      weight_init_next: str | None = None) -> "GraphBuilder":
        """Change a layer's ``out``; the change flows through shape-preserving vertices (pooling, BN, activation,
        merge, ...) to the next layers with parameters, which get the new ``in``. All of them are re-initialised.
        The edit is all or nothing: if it cannot be applied, the builder is unchanged."""
        self._require("n_out_replace", name)
        name = self._owner(name)  # a shared layer changes at every use
        v = self._vertices[name]
        if not lookup(v["type"]).weight_params:
            raise SurgeryError(f"n_out_replace: '{name}' is a {v['type']}, which has no 'out'; it applies to conv, "
                               "dense, output and center_loss_output layers", vertex=name)
        if not isinstance(n_out, int) or isinstance(n_out, bool) or n_out < 1:
            raise SurgeryError(f"n_out_replace: n_out must be a positive integer; received {n_out!r}", vertex=name)
        doc, edited = copy.deepcopy(self._doc), set(self._edited)
        try:
            v = self._vertices[name]
            v["out"] = n_out
            if weight_init:
                v["weight_init"] = weight_init
            self._edited.add(name)
            self._propagate_width(name, weight_init_next)
        except SurgeryError:
            self._doc, self._edited = doc, edited
            raise
        return self

    def _propagate_width(self, start: str, weight_init_next: str | None) -> None:
        todo, seen = [c for use in [start, *self._users(start)] for c in self._consumers(use)], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            owner = self._vertices[self._owner(name)]  # where a shared layer's configuration lives
            owner.pop("in", None)  # re-inferred from the new width
            self._edited.update({name, self._owner(name)})
            entry = lookup(self._type(name))
            if entry.weight_params:
                if weight_init_next:
                    owner["weight_init"] = weight_init_next
                continue  # the next layer with parameters absorbs the change
            if not entry.width_follows_input:
                raise SurgeryError(f"n_out_replace: the new width of '{start}' cannot flow through '{name}' "
                                   f"(a {entry.name}); replace it with remove_vertex_keep_connections + add_vertex",
                                   vertex=name)
            owner.pop("out", None)
            todo.extend(self._consumers(name))

    def set_outputs(self, *names: str) -> "GraphBuilder":
        """Replace the outputs (DL4J's setOutputs replaces, despite its javadoc)."""
        if not names:
            raise SurgeryError("set_outputs: give at least one output")
        for name in names:
            if name not in self._vertices:
                raise SurgeryError(f"set_outputs: no vertex named '{name}'{did_you_mean(name, self._vertices)}",
                                   vertex=name)
        self._doc["outputs"] = list(names)
        return self

    def add_inputs(self, **types: dict) -> "GraphBuilder":
        """Add network inputs: ``add_inputs(mask={"type": "feed_forward", "size": 10})``."""
        for name, t in types.items():
            if name in self._doc["inputs"] or name in self._vertices:
                raise SurgeryError(f"add_inputs: '{name}' already exists", vertex=name)
            self._doc["inputs"][name] = dict(t)
        return self

    def fine_tune(self, *, seed: int | None = None, **settings: Any) -> "GraphBuilder":
        """Training settings for the new model (updater, l2, ...): set as defaults and applied to every vertex,
        replacing per-vertex values of the same keys (DL4J's FineTuneConfiguration)."""
        unknown = [k for k in settings if k not in TRAIN_KEYS]
        if unknown:
            raise SurgeryError(f"fine_tune: unknown setting '{unknown[0]}'{did_you_mean(unknown[0], TRAIN_KEYS)}; "
                               f"settings: {', '.join(TRAIN_KEYS)}")
        defaults = self._doc.setdefault("defaults", {})
        for key, value in settings.items():
            defaults[key] = value
            for v in self._vertices.values():
                v.pop(key, None)
        if seed is not None:
            self._seed = seed
            self._doc["seed"] = seed
        return self

    # --- build ---------------------------------------------------------------------------------------------

    def spec(self):
        """The edited spec, validated whole."""
        from .spec.loader import load_spec
        for name, v in self._vertices.items():
            if not v.get("inputs"):
                raise SurgeryError(f"vertex '{name}' has no inputs left after the edits; give it inputs or "
                                   "remove it", vertex=name)
        return load_spec(Source(copy.deepcopy(self._doc), "<graph surgery>"))

    def build(self) -> torch.nn.Module:
        spec = self.spec()
        frozen = spec.analysis.closure(self._feature_extractor)
        frozen |= {n for n in self._frozen_before if n in spec.vertices and n not in self._edited}
        new = build(spec, seed=self._seed, frozen=frozen, preprocessing=self._preprocessing)  # shared: every use
        report = self._copy_weights(new, spec)
        report.frozen = [n for n in spec.analysis.order if n in new.graphspec.frozen]
        new.graphspec.surgery = report
        return new

    def _copy_weights(self, new: torch.nn.Module, spec) -> SurgeryReport:
        report = SurgeryReport()
        old_names = set(self._model.graphspec.spec.vertices) if self._model is not None else set()
        old_state = self._model.state_dict() if self._model is not None else {}
        new_state = new.state_dict()
        with torch.no_grad():
            for name in spec.analysis.order:
                keys = [k for k in new_state if k.split(".", 1)[0] == name]
                if not keys:
                    continue  # nothing stored (or a shared layer, stored at its owner): neither kept nor re-initialised
                source = self._moved.get(name, name)  # a shared layer's new owner keeps its old owner's weights
                old_keys = {k: source + k[len(name):] for k in keys}
                fits = source in old_names and name not in self._edited and all(
                    old_keys[k] in old_state and old_state[old_keys[k]].shape == new_state[k].shape for k in keys)
                if fits:
                    for k in keys:
                        new_state[k].copy_(old_state[old_keys[k]])
                    report.kept.append(name)
                else:
                    report.reinitialised.append(name)
        report.dropped = sorted(old_names - set(spec.vertices))
        return report


def snip(model: Any, outputs: list[str], *, remove: list[str] = (), freeze: list[str] | None = None):
    """The tutorial's cut, generalised: freeze up to ``freeze`` (default: the outputs), remove the named vertices
    and everything that no longer leads to an output, and make ``outputs`` the outputs."""
    builder = GraphBuilder(model)
    for name in outputs:
        builder._require("snip", name)
    for name in remove:
        builder.remove_vertex_and_connections(name)
    keep = builder._analysis.needed_for(outputs, without=remove)
    for name in [n for n in builder._vertices if n not in keep]:
        builder.remove_vertex_and_connections(name)
    builder.set_outputs(*outputs)
    builder.set_feature_extractor(*(outputs if freeze is None else freeze))
    return builder.build()
