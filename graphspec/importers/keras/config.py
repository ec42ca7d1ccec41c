"""The Keras configuration (Keras 2 and 3 formats, Sequential, functional and nested models) as layers."""
from __future__ import annotations

import re
from typing import Any

from ..common import ImportRefused
from .files import _Reader
from .model import MODEL_CLASSES, Ref, _Layer, _Model


# --- the configuration ---------------------------------------------------------------------------------------------
def _snake(name: str) -> str:  # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Parser:
    def __init__(self, reader: _Reader):
        self.r = reader

    def bad(self, msg: str) -> ImportRefused:
        return self.r.refuse(f"the model configuration is not one Keras writes: {msg}")

    def model(self, top: Any) -> _Model:
        if not isinstance(top, dict) or "class_name" not in top:
            raise self.bad("no 'class_name' at the top")
        cls, cfg = top.get("class_name"), top.get("config")
        if cls not in MODEL_CLASSES:
            raise self.r.refuse(f"model class '{cls}' is not a Sequential or Functional model: a subclassed "
                                "model's structure is Python code, not configuration, and is not imported")
        m = self.parse(cls, cfg, 0)
        self.place(m, "", None)
        return self.flatten(m)

    def parse(self, cls: str, cfg: Any, depth: int) -> _Model:
        if depth > 16:
            raise self.r.refuse("models nested more than 16 deep")
        if cls == "Sequential":
            m = self.sequential(cfg)
        else:
            if not isinstance(cfg, dict) or "layers" not in cfg:
                raise self.bad(f"a {cls} model without 'layers'")
            m = self.functional(cfg)
        for L in m.layers:
            if L.cls in MODEL_CLASSES and L.registered in (None, L.cls) and (
                    isinstance(L.config.get("layers"), list)):
                L.inner = self.parse(L.cls, L.config, depth + 1)
        return m

    def place(self, m: _Model, prefix: str, h5_group: str | None) -> None:
        """Where each layer's weights are: a .keras file's paths count ``snake_case(class)`` names in
        model.layers order, not layer names (keras/src/saving/saving_lib.py, _save_container_state); an .h5
        file's groups are layer names, and a nested model's group holds all its layers' weights."""
        used: dict[str, int] = {}
        for L in m.weight_layers:
            base = _snake(L.cls)
            if base in used:
                used[base] += 1
                base = f"{base}_{used[base]}"
            else:
                used[base] = 0
            L.keras_path = f"{prefix}layers/{base}"
            L.h5_group, L.h5_filter = (h5_group, L.name) if h5_group else (L.name, None)
            if L.inner is not None:
                self.place(L.inner, f"{L.keras_path}/", h5_group or L.name)

    def flatten(self, m: _Model) -> _Model:
        """A nested model's layers become layers of the enclosing model, called once per call of the nested
        model (a nested model called twice: its layers are shared)."""
        if not any(L.inner for L in m.layers):
            return m
        taken = {L.name for L in m.layers}
        layers, alias = [], {}
        for N in m.layers:
            if N.inner is None:
                layers.append(N)
                continue
            inner = self.flatten(N.inner)
            entry = {r[0] for r in inner.inputs}
            flat, counts = {}, {}
            for X in inner.layers:
                if X.cls == "InputLayer":
                    continue
                name = X.name if X.name not in taken else f"{N.name}/{X.name}"
                while name in taken:
                    name += "_"
                taken.add(name)
                counts[X.name] = len(X.nodes)
                flat[X.name] = _Layer(cls=X.cls, name=name, config=X.config, module=X.module,
                                      registered=X.registered, index=N.index + X.index, keras_path=X.keras_path,
                                      h5_group=X.h5_group, h5_filter=X.h5_filter, original=X.original or X.name)
            for k, (args, kwargs) in enumerate(zip(N.nodes, N.kwargs)):
                if len(args) != len(inner.inputs):
                    raise self.bad(f"nested model '{N.name}' is called with {len(args)} inputs; it takes "
                                   f"{len(inner.inputs)}")
                given = dict(zip(inner.inputs, args))

                def mapped(r, k=k, given=given):
                    if r[0] in entry:
                        if r not in given:
                            raise self.bad(f"nested model '{N.name}' reads its input '{r[0]}' oddly")
                        return given[r]
                    if r[0] not in flat:
                        raise self.bad(f"nested model '{N.name}' has no layer '{r[0]}'")
                    return (flat[r[0]].name, k * counts[r[0]] + r[1], r[2])

                for X in inner.layers:
                    if X.cls != "InputLayer":
                        for refs, kw in zip(X.nodes, X.kwargs):
                            flat[X.name].nodes.append([mapped(r) for r in refs])
                            flat[X.name].kwargs.append({**kwargs, **kw})
                for t, r in enumerate(inner.outputs):
                    alias[(N.name, k, t)] = mapped(r)
            layers.extend(flat.values())

        def resolve(r):
            for _ in range(len(alias) + 1):
                if r not in alias:
                    return r
                r = alias[r]
            raise self.bad("nested models refer to each other in a circle")

        for L in layers:
            L.nodes = [[resolve(r) for r in refs] for refs in L.nodes]
        m.layers, m.outputs = layers, [resolve(r) for r in m.outputs]
        return m

    def entry(self, e: Any, i: int) -> _Layer:
        if not isinstance(e, dict) or not isinstance(e.get("class_name"), str):
            raise self.bad(f"layer entry {i} has no class_name")
        cfg = e.get("config")
        if not isinstance(cfg, dict):
            cfg = {}
        name = e.get("name", cfg.get("name"))
        if not isinstance(name, str) or not name:
            raise self.bad(f"layer entry {i} ({e['class_name']}) has no name")
        return _Layer(cls=e["class_name"], name=name, config=cfg, module=e.get("module"),
                      registered=e.get("registered_name"), index=(i,))

    def sequential(self, cfg: Any) -> _Model:
        if isinstance(cfg, list):  # Keras 2.0-2.2: the config is the list of layers
            cfg = {"layers": cfg}
        if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
            raise self.bad("a Sequential model without 'layers'")
        entries = [self.entry(e, i) for i, e in enumerate(cfg["layers"])]
        if entries and entries[0].cls == "InputLayer":
            first, rest = entries[0], entries[1:]
        else:
            rest = entries
            shape = None
            if rest:
                c = rest[0].config
                shape = c.get("batch_shape") or c.get("batch_input_shape")
            shape = shape or cfg.get("build_input_shape")
            if shape is None:
                raise self.r.refuse("the Sequential model has no input shape (it was never built); build it "
                                    "with an Input before saving")
            first = _Layer(cls="InputLayer", name="input", config={"batch_shape": shape}, index=(-1,))
        if not rest:
            raise self.r.refuse("the Sequential model has no layers")
        names = {first.name}
        prev = first.name
        for L in rest:
            if L.name in names:
                raise self.bad(f"two layers are named '{L.name}'")
            names.add(L.name)
            L.nodes, L.kwargs = [[(prev, 0, 0)]], [{}]
            prev = L.name
        return _Model(name=str(cfg.get("name") or "model"), layers=[first, *rest], inputs=[(first.name, 0, 0)],
                      outputs=[(prev, 0, 0)], weight_layers=rest)

    def functional(self, cfg: dict) -> _Model:
        if not isinstance(cfg["layers"], list):
            raise self.bad("'layers' is not a list")
        layers = [self.entry(e, i) for i, e in enumerate(cfg["layers"])]
        by_name = {}
        for L, e in zip(layers, cfg["layers"]):
            if L.name in by_name:
                raise self.bad(f"two layers are named '{L.name}'")
            by_name[L.name] = L
            nodes = e.get("inbound_nodes", [])
            if not isinstance(nodes, list):
                raise self.bad(f"layer '{L.name}': inbound_nodes is not a list")
            for node in nodes:
                refs, kwargs = self.node(L, node)
                L.nodes.append(refs)
                L.kwargs.append(kwargs)
        inputs, outputs = self.refs(cfg.get("input_layers")), self.refs(cfg.get("output_layers"))
        if not inputs or not outputs:
            raise self.bad("the model has no input_layers or output_layers")
        return _Model(name=str(cfg.get("name") or "model"), layers=layers, inputs=inputs, outputs=outputs,
                      weight_layers=layers)

    def refs(self, x) -> list[Ref]:
        if isinstance(x, list) and len(x) >= 3 and isinstance(x[0], str) and all(
                isinstance(v, int) for v in x[1:3]):
            return [(x[0], int(x[1]), int(x[2]))]
        if isinstance(x, list):
            return [r for v in x for r in self.refs(v)]
        if isinstance(x, dict):
            return [r for v in x.values() for r in self.refs(v)]
        raise self.bad(f"cannot read {x!r} as a layer reference")

    def node(self, L: _Layer, node: Any) -> tuple[list[Ref], dict]:
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            refs: list[Ref] = []
            args = node.get("args", [])
            if not isinstance(args, list):
                raise self.bad(f"layer '{L.name}': a call's args are not a list")
            for a in args:
                self.tensors(L, a, refs)
            kwargs = node.get("kwargs", {})
            if not isinstance(kwargs, dict):
                raise self.bad(f"layer '{L.name}': a call's kwargs are not a mapping")
            for k, v in kwargs.items():
                found: list = []
                self.tensors(L, v, found, constants=True)
                if found:
                    kwargs = {**kwargs, k: "<tensor>"}
            return refs, kwargs
        if isinstance(node, list):  # Keras 1/2: [[layer, node, tensor, kwargs], ...]
            refs, kwargs = [], {}
            for item in node:
                if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)
                        and isinstance(item[1], int) and isinstance(item[2], int)):
                    raise self.bad(f"layer '{L.name}': cannot read inbound node {item!r}")
                refs.append((item[0], item[1], item[2]))
                if len(item) > 3 and isinstance(item[3], dict):
                    kwargs.update(item[3])
            return refs, kwargs
        raise self.bad(f"layer '{L.name}': cannot read inbound node {node!r}")

    def tensors(self, L, x, out: list, constants: bool = False) -> None:
        if isinstance(x, dict) and x.get("class_name") == "__keras_tensor__":
            h = (x.get("config") or {}).get("keras_history")
            if not (isinstance(h, list) and len(h) == 3 and isinstance(h[0], str)
                    and isinstance(h[1], int) and isinstance(h[2], int)):
                raise self.bad(f"layer '{L.name}': a tensor without a readable keras_history")
            out.append((h[0], h[1], h[2]))
        elif isinstance(x, (list, tuple)):
            for v in x:
                self.tensors(L, v, out, constants)
        elif x is None or isinstance(x, (bool, int, float, str)) or isinstance(x, dict):
            if not constants:
                raise self.bad(f"layer '{L.name}': called with a constant argument {x!r}")


# --- activations -------------------------------------------------------------------------------------------------
ACTIVATIONS = {  # Keras name -> graphspec name (docs/spec.md; formulas checked in tests/test_import_keras.py)
    "linear": "identity", None: "identity", "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
    "softmax": "softmax", "elu": "elu", "selu": "selu", "gelu": "gelu", "swish": "swish", "silu": "swish",
    "softplus": "softplus", "softsign": "softsign", "mish": "mish", "hard_swish": "hardswish",
    "hard_silu": "hardswish",
}
NONNEG = {"relu", "relu6", "sigmoid", "softmax", "softplus", "hardsigmoid"}
