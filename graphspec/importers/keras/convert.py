"""The conversion of parsed layers into graphspec vertices and weights."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..common import Imported, Names, Unsupported
from .config import ACTIVATIONS
from .files import NOTE_IMAGES, NOTE_SEQUENCES, _keras_module, _Reader
from .layers import _embedding, CONVERTERS, PERM_AWARE
from .model import _BadConfig, _Layer, _Model, _Poisoned, _Restart, _T, LAMBDA, MODEL_CLASSES, Ref


# --- conversion ------------------------------------------------------------------------------------------------------
class _Converter:
    def __init__(self, reader: _Reader, model: _Model, exact_flatten: set[str], cache: dict):
        from ...spec.loader import RESERVED
        self.r = reader
        self.model = model
        self.keras3 = not reader.keras_version.startswith(("1", "2"))
        self.exact_flatten = exact_flatten
        self.cache = cache  # layer name -> weights, kept across restarts
        self.names = Names(reserved=RESERVED)
        self.inputs: dict[str, dict] = {}
        self.index_inputs: set[str] = set()
        self.vertices: dict[str, dict] = {}
        self.params: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.noted: dict[str, list[str]] = {}
        self.unsupported = Unsupported(reader.source)
        self.tensors: dict[Ref, _T | None] = {}
        self.layers = {L.name: L for L in model.layers}
        self.first_call: dict[str, list] = {}
        self.call: tuple | None = None  # (layer, node index, emitted list)

    # -- bookkeeping
    def bad(self, L: _Layer, detail: str, op: str | None = None) -> None:
        self.unsupported.add(op or L.cls, detail, L.name)
        self.failed = True

    def note(self, key: str, layer: str) -> None:
        self.noted.setdefault(key, []).append(layer)

    def name(self, suffix: str = "") -> str:
        layer, k, _ = self.call
        raw = layer if k == 0 else f"{layer}#{k}"
        return self.names(f"{raw}/{suffix}" if suffix else raw)

    def emit(self, vertex: dict, params: dict | None = None, suffix: str = "") -> str:
        """Add a vertex for the current call (a shared layer's later calls share the first call's vertices)."""
        layer, k, emitted = self.call
        name = self.name(suffix)
        if k > 0:
            first = self.first_call.get(layer)
            i = len(emitted)
            if first is None or i >= len(first):
                raise self.r.refuse(f"layer '{layer}': its call {k} cannot be matched with its first call")
            fname, fparams = first[i]
            if params:
                if fparams is None or set(fparams) != set(params) or not all(
                        np.array_equal(fparams[p], params[p]) for p in params):
                    self.bad(self.layers[layer], "a shared layer called on inputs of different layouts",
                             op="shared layer")
                    raise _Poisoned()
                vertex = {"shares": fname, "inputs": vertex["inputs"]}
                params = None
        emitted.append((name, params))
        self.vertices[name] = vertex
        for p, a in (params or {}).items():
            self.params[f"{name}.{p}"] = np.ascontiguousarray(a, dtype=np.float32)
        return name

    def read(self, L: _Layer, parts) -> list[np.ndarray]:
        if L.name not in self.cache:
            self.cache[L.name] = self.r.weights(L, parts)
        return self.cache[L.name]

    # -- common checks
    def activation(self, L: _Layer, value: Any) -> str | None:
        name = value
        if isinstance(value, dict):  # Keras 3 may serialise the function: {"module": "keras.activations", ...}
            cfg = value.get("config")
            if _keras_module(value.get("module")) and isinstance(cfg, str):
                name = cfg
            elif value.get("class_name") in ACTIVATIONS and not value.get("config"):
                name = value.get("class_name")
            else:
                self.bad(L, "a custom activation function (Python code) is not imported", op="activation")
                return None
        if name == "hard_sigmoid":
            if not self.keras3:
                return "hardsigmoid"  # Keras 2: clip(0.2x + 0.5, 0, 1) = graphspec's (DL4J's) hardsigmoid
            self.bad(L, "Keras 3's hard_sigmoid is clip(x/6 + 1/2, 0, 1); graphspec's hardsigmoid is DL4J's "
                        "clip(0.2x + 1/2, 0, 1)", op="activation hard_sigmoid")
            return None
        if name not in ACTIVATIONS:
            detail = ("Keras's leaky_relu activation has slope 0.2; graphspec's leakyrelu 0.01 (use a LeakyReLU "
                      "layer)" if name == "leaky_relu" else "not a graphspec activation")
            self.bad(L, detail, op=f"activation {name}")
            return None
        return ACTIVATIONS[name]

    def channels_last(self, L: _Layer) -> None:
        fmt = L.config.get("data_format")
        if fmt not in (None, "channels_last"):
            self.bad(L, f"data_format '{fmt}' (only channels_last, Keras's default, is imported)")

    def training_only(self, L: _Layer) -> None:
        c = L.config
        if any(c.get(k) for k in c if k.endswith("_regularizer")):
            self.note("regularizers", L.name)
        if any(c.get(k) for k in c if k.endswith("_constraint")):
            self.note("constraints", L.name)

    def dtype(self, L: _Layer) -> None:
        d = L.config.get("dtype")
        name = d.get("config", {}).get("name") if isinstance(d, dict) else d
        if isinstance(d, dict) and d.get("class_name") not in (None, "DTypePolicy", "FloatDTypePolicy", "Policy"):
            self.bad(L, f"dtype policy {d.get('class_name')} (quantized weights)", op="dtype")
        elif name not in (None, "float32", "float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16"):
            self.bad(L, f"dtype '{name}'", op="dtype")
        if L.config.get("quantization_config") or L.config.get("lora_rank"):
            self.bad(L, "quantization or LoRA weights", op="dtype")

    # -- the whole model
    def convert(self) -> Imported:
        m = self.model
        self.failed = False
        order = self.order()
        for ref in m.inputs:
            self.input(ref)
        for layer, k in order:
            L = self.layers[layer]
            if L.cls == "InputLayer":
                continue
            self.convert_call(L, k)
        outputs = []
        for ref in m.outputs:
            t = self.tensor(ref, None)
            if t is None:
                continue
            if t.perm is not None:
                raise _Restart(t.perm.origins)
            if t.vertex in self.inputs:  # a network input returned as it is: graphspec outputs are vertices
                self.call = (f"{t.vertex}_output", 0, [])
                t = _T(self.emit({"type": "identity", "inputs": [t.vertex]}), t.shape)
            if t.vertex in outputs:
                self.unsupported.add("output", "the same tensor returned twice", t.vertex)
                continue
            outputs.append(t.vertex)
        self.unsupported.raise_if_any()
        return self.finish(outputs)

    def order(self) -> list[tuple[str, int]]:
        """Every call (layer, node) after the calls it reads, in config order where free."""
        import heapq
        m = self.model
        deps: dict[tuple, set] = {}
        for L in m.layers:
            if L.cls == "InputLayer":
                deps[(L.name, 0)] = set()
                continue
            for k, refs in enumerate(L.nodes):
                d = set()
                for (src, node, _t) in refs:
                    if src not in self.layers:
                        raise self.r.refuse(f"layer '{L.name}' reads layer '{src}', which the model does not have")
                    d.add((src, node))
                if k > 0:
                    d.add((L.name, k - 1))
                deps[(L.name, k)] = d
        for src, node, _t in m.inputs + m.outputs:
            if (src, node) not in deps:
                raise self.r.refuse(f"the model's input or output '{src}' (call {node}) is not a layer call")
        for key, d in deps.items():
            for dep in d:
                if dep not in deps:
                    raise self.r.refuse(f"layer '{key[0]}' reads call {dep[1]} of layer '{dep[0]}', which does "
                                        "not exist")
        users: dict[tuple, list] = {k: [] for k in deps}
        for key, d in deps.items():
            for dep in d:
                users[dep].append(key)
        rank = {L.name: L.index for L in m.layers}
        waiting = {k: len(d) for k, d in deps.items()}
        heap = [(rank[k[0]], k[1], k) for k, n in waiting.items() if n == 0]
        heapq.heapify(heap)
        out = []
        while heap:
            _, _, key = heapq.heappop(heap)
            out.append(key)
            for u in users[key]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(heap, (rank[u[0]], u[1], u))
        if len(out) != len(deps):
            raise self.r.refuse("the model's layers form a cycle")
        return out

    def input(self, ref: Ref) -> None:
        layer, _, _ = ref
        L = self.layers[layer]
        if L.cls != "InputLayer":
            raise self.r.refuse(f"the model input '{layer}' is a {L.cls}, not an InputLayer")
        c = L.config
        shape = c.get("batch_shape", c.get("batch_input_shape"))
        name = self.names(layer)
        if not isinstance(shape, list) or len(shape) < 2 or not all(
                s is None or (isinstance(s, int) and s > 0) for s in shape):
            self.unsupported.add("InputLayer", f"input shape {shape!r}", layer)
            self.tensors[ref] = None
            return
        shape = tuple(shape[1:])
        if c.get("sparse") or c.get("ragged"):
            self.unsupported.add("InputLayer", "sparse or ragged inputs", layer)
        dtype = c.get("dtype")
        dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        feeds_embedding = self.feeds_only(layer, {"Embedding"})
        if dtype not in (None, "float32", "float16", "float64", "bfloat16") and not feeds_embedding:
            self.unsupported.add("InputLayer", f"dtype {dtype} (graphspec inputs are float tensors; integer inputs "
                                 "only as class indices of an Embedding)", layer)
        if feeds_embedding and len(shape) == 1:
            self.inputs[name] = {"type": "recurrent", "size": 1, **({"length": shape[0]} if shape[0] else {})}
            self.tensors[ref] = _T(name, shape, indices=True)
            self.index_inputs.add(name)
            self.notes.append(f"input '{name}' holds class indices for an Embedding: graphspec reads them as a "
                              f"sequence [N, 1, T] (Keras: [N, T]; feed x[:, None, :])")
            return
        if len(shape) == 1 and shape[0] is not None:
            self.inputs[name] = {"type": "feed_forward", "size": shape[0]}
        elif len(shape) == 2 and shape[1] is not None:
            self.inputs[name] = {"type": "recurrent", "size": shape[1], **({"length": shape[0]} if shape[0] else {})}
        elif len(shape) == 3 and None not in shape:
            self.inputs[name] = {"type": "convolutional", "channels": shape[2], "height": shape[0],
                                 "width": shape[1]}
        else:
            self.unsupported.add("InputLayer", f"input shape {list(shape)} (graphspec takes vectors [F], sequences "
                                 "[T, F] and images [H, W, C] of known height and width)", layer)
            self.tensors[ref] = None
            return
        self.tensors[ref] = _T(name, shape)

    def feeds_only(self, layer: str, classes: set) -> bool:
        users = [L for L in self.model.layers for refs in L.nodes for r in refs if r[0] == layer]
        return bool(users) and all(L.cls in classes for L in users)

    def tensor(self, ref: Ref, reader: _Layer | None) -> _T | None:
        if ref not in self.tensors:
            layer, node, t = ref
            if t != 0 and (layer, node, 0) in self.tensors:
                self.unsupported.add("multiple outputs", f"reads output {t} of layer '{layer}' (only single-output "
                                     "layers are imported: no return_state)", reader.name if reader else "output")
                return None
            raise self.r.refuse(f"layer '{reader.name if reader else '?'}' reads call {node} of layer '{layer}', "
                                "which the model does not compute")
        return self.tensors[ref]

    def convert_call(self, L: _Layer, k: int) -> None:
        refs = L.nodes[k]
        ins = [self.tensor(r, L) for r in refs]
        out_ref = (L.name, k, 0)
        self.tensors[out_ref] = None
        fn = CONVERTERS.get(L.cls)
        if L.cls in LAMBDA:
            self.unsupported.add("Lambda", "runs Python code stored in the file; graphspec never decodes or runs "
                                 "it (write the operation as graphspec vertices)", L.name)
            return
        if fn is None:
            detail = ("a subclassed model (its structure is Python code)" if L.cls in MODEL_CLASSES
                      else "layer type not supported")
            self.unsupported.add(L.cls, detail, L.name)
            return
        if L.registered not in (None, L.cls) or (L.module and not _keras_module(L.module)):
            self.unsupported.add(L.cls, f"a custom layer ({L.registered or L.module}): its code is not Keras's",
                                 L.name)
            return
        for key, value in L.kwargs[k].items():
            if key == "training" and value in (None, False):
                continue
            if key == "mask" and value is None:
                continue
            self.unsupported.add("call argument", f"{key}={value!r}", L.name)
            return
        if not refs:
            raise self.r.refuse(f"layer '{L.name}' has a call without inputs")
        if k > 0 and self.first_call.get(L.name) is None:
            return  # the first call was refused (and reported): the later ones share its problem
        self.call = (L.name, k, [])
        self.failed = False
        self.dtype(L)
        self.training_only(L)
        if any(t is None for t in ins):
            # an input already refused: still check this layer's own configuration, without shapes
            try:
                fn(self, L, None)
            except _BadConfig as e:
                self.bad(L, str(e), op=f"{L.cls} configuration")
            except (_Poisoned, TypeError, KeyError, AttributeError, IndexError, ValueError):
                pass
            return
        if any(t.perm is not None for t in ins) and fn not in PERM_AWARE:
            raise _Restart(set().union(*(t.perm.origins for t in ins if t.perm is not None)))
        if any(t.indices for t in ins) and fn is not _embedding:
            self.bad(L, "reads class indices meant for an Embedding")
            return
        try:
            out = fn(self, L, ins)
        except _Poisoned:
            out = None
        except _BadConfig as e:
            self.bad(L, str(e), op=f"{L.cls} configuration")
            out = None
        except (TypeError, KeyError, AttributeError, IndexError, ValueError) as e:
            raise self.r.refuse(f"layer '{L.name}' ({L.cls}): its configuration cannot be read ({e!r})") from None
        if self.failed:
            out = None
        if k == 0:
            self.first_call[L.name] = self.call[2] if out is not None else None
        self.tensors[out_ref] = out

    def finish(self, outputs: list[str]) -> Imported:
        notes = list(self.notes)
        explain = {
            "regularizers": "regularizers are training settings and are not imported (set l1/l2 on the vertices "
                            "to train with them)",
            "constraints": "weight constraints are training settings and are not imported",
            "batchnorm": "batchnorm running_var holds Keras's moving_variance + epsilon: graphspec's inference "
                         "divides by sqrt(running_var) without eps; eps and decay (Keras's momentum) are set for "
                         "training",
            "flatten": "the rows of the Dense layer after a Flatten are permuted from Keras's (H, W, C) order to "
                       "graphspec's (C, H, W) order",
            "exact flatten": "a Flatten whose values reach a layer that cares about their order is imported as "
                             "a permute to Keras's (H, W, C) order and a reshape",
            "dropout": "Dropout is identity at inference (imported as graphspec dropout with the same rate)",
            "noise": "noise and spatial-dropout layers are identity at inference (imported as identity)",
            "no scale": "batch/layer normalisation without scale: the gamma of 1 is an ordinary (trainable) "
                        "parameter in graphspec",
            "no center": "batch normalisation without center: the beta of 0 is an ordinary (trainable) parameter "
                         "in graphspec",
            "no bias": "recurrent layers without bias: graphspec's zero bias is an ordinary (trainable) parameter",
            "recurrent dropout": "the recurrent layers' dropout and recurrent_dropout apply only in training and "
                                 "are not imported",
            "leaky": "LeakyReLU with a slope other than 0.01 is max(x, slope*x): a scale and an elementwise max",
            "last step": "a recurrent layer with return_sequences=False is imported as the recurrent layer "
                         "followed by a time_step vertex (index -1, named <layer>_last)",
        }
        for key, layers in self.noted.items():
            notes.append(f"{explain[key]} ({', '.join(dict.fromkeys(layers))})")
        notes.append("the training configuration (optimizer, loss, metrics) is not imported")
        kinds = {i["type"] for n, i in self.inputs.items() if n not in self.index_inputs}
        layout = [n for k, n in (("convolutional", NOTE_IMAGES), ("recurrent", NOTE_SEQUENCES)) if k in kinds]
        notes[:0] = layout
        description = f"Imported from the Keras model '{self.model.name}' ({self.r.path.name}, Keras " \
                      f"{self.r.keras_version})." + "".join(f" {n[0].upper()}{n[1:]}." for n in layout)
        doc = {"version": 1, "name": self.model_name(), "description": description,
               "inputs": self.inputs, "vertices": self.vertices, "outputs": outputs}
        return Imported(name="", document=doc, weights=self.params, source=self.r.source, notes=notes)

    def model_name(self) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", self.model.name).strip("_-") or "model"
        return base
