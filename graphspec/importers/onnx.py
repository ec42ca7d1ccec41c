"""ONNX -> a graphspec spec and its weights (docs/import.md).

The file is read without running anything: protobuf only, external data only from files inside the model's folder
and within their size. Old opsets are converted to opset 13 by ONNX's own version converter. Constant subgraphs
(weights computed by Constant/ConstantOfShape/Cast/... nodes, shapes of static tensors) are folded with ONNX's
reference evaluator, within a size limit. Every remaining node becomes a vertex named after it, through the
translations in ``TRANSLATIONS`` (one function per operator type); anything not expressible exactly is collected
and refused, one line per (operator, detail), before anything is written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import Location
from .common import Imported, ImportRefused, Names, Unsupported

OPSET = 13  # older files are converted to this opset before translation
MAX_OPSET = 25  # the newest the installed onnx package defines here (1.23)
MAX_ELEMENTS = 1 << 30  # any one tensor (declared or folded): 4 GiB of float32
MAX_DIMS = 8


# --- reading ------------------------------------------------------------------------------------------------


def read(path: Path):
    """The ModelProto of ``path``: parsed, its external data loaded from inside its folder, every tensor's
    declared size checked against its bytes, converted to ``OPSET`` when older."""
    import onnx
    where = Location(str(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not a model file
        raise ImportRefused(f"cannot read {path.name} as ONNX: {type(e).__name__}: {e}", location=where) from e
    if not model.HasField("graph") or not model.graph.node:
        raise ImportRefused(f"{path.name} holds no ONNX graph (an empty or foreign file)", location=where)
    _load_external(model, path)
    for t in _all_tensors(model.graph):
        _check_tensor(t, path)
    version = _opset(model, path)
    if version < OPSET:
        from onnx import version_converter
        try:
            model = version_converter.convert_version(model, OPSET)
        except Exception as e:
            raise ImportRefused(f"cannot convert {path.name} from opset {version} to {OPSET}: {e}",
                                location=where) from e
    return model


def _opset(model, path: Path) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    others = sorted({o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")})
    if not versions:
        raise ImportRefused(f"{path.name} declares no ONNX opset", location=Location(str(path)))
    if versions[0] > MAX_OPSET:
        raise ImportRefused(f"{path.name} uses opset {versions[0]}; graphspec reads opsets 7..{MAX_OPSET}",
                            location=Location(str(path)))
    used = {n.domain for n in model.graph.node} - {"", "ai.onnx"}
    if used:
        raise ImportRefused(f"{path.name} uses operators of other domains ({', '.join(sorted(used or others))}); "
                            "graphspec reads the standard ONNX operators only", location=Location(str(path)))
    return versions[0]


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors


def _load_external(model, path: Path) -> None:
    """External data only from regular files inside the model's folder, each read within its declared range."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    folder = path.resolve().parent
    for t in _all_tensors(model.graph):
        if not uses_external_data(t):
            continue
        info = ExternalDataInfo(t)
        target = (folder / info.location).resolve()
        if os.path.isabs(info.location) or folder not in target.parents or not target.is_file():
            raise ImportRefused(f"tensor '{t.name}' points to external data '{info.location}', outside the model's "
                                f"folder {folder} (or not a file); refused", location=Location(str(path)))
        size = target.stat().st_size
        offset, length = int(info.offset or 0), info.length
        length = size - offset if length is None else int(length)
        if offset < 0 or length < 0 or offset + length > size:
            raise ImportRefused(f"tensor '{t.name}': external data range {offset}+{length} exceeds "
                                f"{info.location} ({size} bytes)", location=Location(str(path)))
        with open(target, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        del t.external_data[:]
        t.data_location = 0  # onnx.TensorProto.DEFAULT


def _check_tensor(t, path: Path) -> None:
    """Dimensions that are sane, and bytes enough for the declared size (a hostile file may claim more)."""
    from onnx import helper
    where = Location(str(path))
    dims = list(t.dims)
    if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        raise ImportRefused(f"tensor '{t.name}' declares dimensions {dims}", location=where)
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if count > MAX_ELEMENTS:
        raise ImportRefused(f"tensor '{t.name}' declares {count:,} values ({dims}); more than graphspec reads "
                            f"({MAX_ELEMENTS:,})", location=where)
    if t.raw_data:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if len(t.raw_data) != count * itemsize:
            raise ImportRefused(f"tensor '{t.name}' declares {dims} ({count * itemsize} bytes) but holds "
                                f"{len(t.raw_data)} bytes", location=where)


# --- the graph as the translation sees it -------------------------------------------------------------------


class Graph:
    """Constants by tensor name, static shapes (with the batch) by tensor name, the vertices made so far."""

    def __init__(self, model, path: Path):
        import onnx
        from onnx import numpy_helper, shape_inference
        self.path, self.model = path, model
        self.const: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # a model shape inference cannot read still translates where shapes are not needed
            inferred = model
        self.shapes: dict[str, tuple] = {}
        for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
            dims = v.type.tensor_type.shape.dim
            self.shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        self.onnx = onnx
        self.vertices: dict[str, dict] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.producer: dict[str, str] = {}  # tensor name -> the vertex (or input) that computes it
        self.nonneg: set[str] = set()  # vertices whose output is never negative (zero padding equals -inf there)
        self.ops: dict[str, str] = {}  # vertex -> the ONNX op type it came from
        self.unsupported = Unsupported(str(path))
        self.names = Names()
        # graph outputs keep their names: reserved before any vertex is named
        self.output_names = {o.name: self.names(o.name, "output") for o in model.graph.output}
        self.notes: list[str] = []
        self.consumers: dict[str, list] = {}
        for node in model.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)

    def per_example(self, tensor: str) -> tuple | None:
        shape = self.shapes.get(tensor)
        return None if shape is None else shape[1:]

    def add(self, node, type_: str, inputs: list[str], params: dict | None = None,
            weights: dict[str, np.ndarray] | None = None, output: int = 0) -> str:
        """A vertex for ``node``'s output ``output`` reading the vertices of the ONNX tensors ``inputs`` (parameters
        at their defaults are left out, so that the spec reads as one written by hand)."""
        tensor = node.output[output]
        name = self.output_names.pop(tensor, None) or self.names(_vertex_name(node), node.op_type.lower())
        params = {k: v for k, v in (params or {}).items() if DEFAULTS.get(type_, {}).get(k, object()) != v}
        self.vertices[name] = {"type": type_, "inputs": [self.producer[i] for i in inputs], **params}
        self.weights.update({f"{name}.{k}": np.asarray(v, dtype=np.float32) for k, v in (weights or {}).items()})
        self.producer[node.output[output]] = name
        self.ops[name] = node.op_type
        if _never_negative(type_, params, [i in self.nonneg for i in self.vertices[name]["inputs"]]):
            self.nonneg.add(name)
        return name

    def pad_before(self, node, pads: list[int]) -> str:
        """A zero_padding vertex [top, bottom, left, right] in front of ``node``'s first input; the tensor name that
        stands for its output (asymmetric padding, which graphspec's windows do not take)."""
        tensor = node.output[0] + "#padded"
        name = self.names(_vertex_name(node) + "-pad", "pad")
        source = self.producer[node.input[0]]
        self.vertices[name] = {"type": "zero_padding", "inputs": [source], "padding": pads}
        self.producer[tensor] = name
        self.ops[name] = "Pad"
        if source in self.nonneg:
            self.nonneg.add(name)
        return tensor

    def alias(self, node, tensor: str) -> None:
        """``node``'s output is ``tensor`` unchanged (Identity, Dropout at inference)."""
        self.producer[node.output[0]] = self.producer[tensor]

    def refuse(self, node, detail: str) -> None:
        self.unsupported.add(node.op_type, detail, node.name or node.output[0])
        for out in node.output:  # what follows is still translated, so that one refusal lists every problem
            self.producer.setdefault(out, "(refused)")


# parameters at graphspec's defaults, left out of the spec (pooling's stride is always written: DL4J's default is 2)
DEFAULTS = {"conv": {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "bias": True},
            "deconv": {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "bias": True},
            "subsampling": {"padding": [0, 0]}, "dense": {"bias": True}}


POSITIVE_ACTIVATIONS = {"relu", "relu6", "sigmoid", "softmax", "abs", "softplus", "hardsigmoid"}
SIGN_KEEPING = {"subsampling", "zero_padding", "global_pool", "lrn", "reshape", "merge", "upsampling", "identity"}


def _never_negative(type_: str, params: dict, inputs_nonneg: list[bool]) -> bool:
    if type_ == "activation":
        return params.get("activation") in POSITIVE_ACTIVATIONS
    if type_ in SIGN_KEEPING or (type_ == "elementwise" and params.get("op") in ("add", "product", "max", "min",
                                                                                  "average")):
        return bool(inputs_nonneg) and all(inputs_nonneg)
    return False


def _vertex_name(node) -> str:
    """A vertex is named after its node (else its output tensor), without the operator-type suffix torch's
    exporter appends ("/layer1/layer1.0/conv1/Conv" -> layer1_layer1_0_conv1)."""
    if not node.name:
        return node.output[0]
    parts = node.name.strip("/").split("/")
    if len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:
        parts = parts[:-1]
    return "/".join(parts)


def attrs(node) -> dict[str, Any]:
    """A node's attributes; floats as the shortest decimal of their float32 (1e-05, not 9.999999747378752e-06)."""
    from onnx import helper
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: float(str(np.float32(v))) if isinstance(v, float) else v for k, v in values.items()}


# --- constant folding ---------------------------------------------------------------------------------------


# The batch size in a folded shape: ``Shape`` of a tensor whose only unknown dimension is the batch gives it at index
# 0; shape-moving operators carry it along, anything else that reads it is not folded (refused later).
BATCH = np.int64(-(2 ** 62))
MOVES_SHAPES = {"Squeeze", "Unsqueeze", "Reshape", "Concat", "Gather", "Slice", "Identity", "Cast", "CastLike"}


def fold(g: Graph) -> list:
    """Evaluate every node whose inputs are all constants (and ``Shape`` of a tensor whose dimensions are static
    but for the batch) with ONNX's reference evaluator; ``CastLike`` of a constant takes the type of the other
    input, whatever its values. Return the nodes left to translate."""
    batch_derived: set[str] = set()
    left = []
    for node in g.model.graph.node:
        if node.op_type == "Shape" and _static((g.shapes.get(node.input[0]) or (None,))[1:]):
            shape = g.shapes[node.input[0]]
            part = slice(attrs(node).get("start", 0), attrs(node).get("end"))
            g.const[node.output[0]] = np.array([BATCH if shape[0] is None else shape[0], *shape[1:]], np.int64)[part]
            if shape[0] is None and BATCH in g.const[node.output[0]]:
                batch_derived.add(node.output[0])
            continue
        if node.op_type == "CastLike" and node.input[0] in g.const and node.input[1] not in g.const:
            g.const[node.output[0]] = g.const[node.input[0]].astype(_dtype(g, node.input[1]))
            continue
        constant = node.op_type == "Constant" or (node.input and all(i == "" or i in g.const for i in node.input))
        tainted = any(i in batch_derived for i in node.input)
        if constant and (not tainted or node.op_type in MOVES_SHAPES):
            for out, value in zip(node.output, _evaluate(g, node)):
                g.const[out] = value
                if tainted:
                    batch_derived.add(out)
            continue
        left.append(node)
    return left


def _dtype(g: Graph, tensor: str):
    """The element type of a graph input or inferred value (float32 when unknown: graphspec computes in float)."""
    from onnx import helper
    for v in (*g.model.graph.input, *g.model.graph.value_info):
        if v.name == tensor and v.type.tensor_type.elem_type:
            return helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
    return np.float32


def _evaluate(g: Graph, node) -> list[np.ndarray]:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator
    for out in node.output:
        shape = g.shapes.get(out)
        if shape and _static(shape) and int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
            raise ImportRefused(f"node '{node.name or out}' ({node.op_type}) would make a constant of "
                                f"{shape}; more than graphspec computes", location=Location(str(g.path)))
    graph = helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None) for o in node.output])
    try:
        outs = ReferenceEvaluator(helper.make_model(graph, opset_imports=g.model.opset_import)).run(
            None, {i: g.const[i] for i in node.input if i})
    except Exception as e:
        raise ImportRefused(f"cannot fold the constant node '{node.name or node.output[0]}' ({node.op_type}): {e}",
                            location=Location(str(g.path))) from e
    for out, value in zip(node.output, outs):
        if np.asarray(value).size > MAX_ELEMENTS:
            raise ImportRefused(f"node '{node.name or out}' makes a constant of {np.shape(value)}",
                                location=Location(str(g.path)))
    return [np.asarray(v) for v in outs]


def _static(shape) -> bool:
    return shape is not None and all(d is not None for d in shape)


# --- translations (one per operator type) -------------------------------------------------------------------

Translation = Callable[[Graph, Any], None]
TRANSLATIONS: dict[str, Translation] = {}


def translates(*ops: str):
    def register(fn: Translation) -> Translation:
        for op in ops:
            TRANSLATIONS[op] = fn
        return fn
    return register


def _const(g: Graph, node, index: int, what: str) -> np.ndarray | None:
    name = node.input[index] if len(node.input) > index else ""
    if name == "":
        return None
    if name not in g.const:
        g.refuse(node, f"{what} computed at run time (graphspec needs it as a constant)")
        return None
    return g.const[name]


def _pairs(node, a: dict, g: Graph) -> tuple[dict | None, list[int] | None]:
    """(kernel/stride/dilation/padding of a 2-D window, padding [top, bottom, left, right] to apply before it when
    the file's is asymmetric, else None): explicit pads, VALID, or SAME_UPPER (graphspec's same mode)."""
    kernel = list(a.get("kernel_shape") or [])
    if len(kernel) != 2:
        g.refuse(node, f"{len(kernel)}-D windows (graphspec imports 2-D ones)")
        return None, None
    pads = [int(p) for p in (a.get("pads") or [0, 0, 0, 0])]
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    out = {"kernel": kernel, "stride": list(a.get("strides") or [1, 1])}
    if auto == "SAME_UPPER":
        out["convolution_mode"] = "same"  # TF's SAME: the extra pad at the end, DL4J's same mode
        return out, None
    if auto not in ("NOTSET", "VALID"):
        g.refuse(node, f"auto_pad {auto}")
        return None, None
    if auto == "VALID" or pads[:2] == pads[2:]:
        out["padding"] = [0, 0] if auto == "VALID" else pads[:2]
        return out, None
    out["padding"] = [0, 0]
    return out, [pads[0], pads[2], pads[1], pads[3]]  # ONNX [t, l, b, r] -> graphspec [t, b, l, r]


def _window_input(g: Graph, node, before: list[int] | None) -> str:
    """The tensor a window layer reads: its input, or a zero-padded copy of it."""
    return node.input[0] if before is None else g.pad_before(node, before)


@translates("Conv")
def _conv(g: Graph, node) -> None:
    a = attrs(node)
    w, b = _const(g, node, 1, "the weight"), _const(g, node, 2, "the bias")
    window, before = _pairs(node, {**a, "kernel_shape": a.get("kernel_shape") or (
        list(w.shape[2:]) if w is not None else [])}, g)
    if w is None or window is None:
        return
    params = {**window, "out": int(w.shape[0]), "dilation": list(a.get("dilations") or [1, 1]), "bias": b is not None}
    if a.get("group", 1) != 1:
        params["groups"] = int(a["group"])
    g.add(node, "conv", [_window_input(g, node, before)], params,
          {"weight": w, **({"bias": b} if b is not None else {})})


@translates("ConvTranspose")
def _deconv(g: Graph, node) -> None:
    a = attrs(node)
    w, b = _const(g, node, 1, "the weight"), _const(g, node, 2, "the bias")
    if w is None:
        return
    problems = [f"{k} {list(a[k])}" for k in ("output_padding", "output_shape") if any(a.get(k) or [])]
    problems += [f"group {a['group']}"] if a.get("group", 1) != 1 else []
    auto = a.get("auto_pad", b"NOTSET")
    problems += [f"auto_pad {auto.decode()}"] if auto not in (b"NOTSET", b"VALID") else []
    if problems:
        g.refuse(node, ", ".join(problems))
        return
    window, before = _pairs(node, {**a, "kernel_shape": a.get("kernel_shape") or list(w.shape[2:])}, g)
    if window is not None and (before is not None or window.get("convolution_mode")):
        g.refuse(node, f"pads {list(a.get('pads') or [])} {a.get('auto_pad', b'').decode()} (symmetric pads only)")
        return
    if window is None:
        return
    # ONNX: s·(n−1) + k_e − pads_begin − pads_end: graphspec's truncate mode (DL4J's) with symmetric padding
    params = {**window, "out": int(w.shape[1]), "dilation": list(a.get("dilations") or [1, 1]), "bias": b is not None}
    g.add(node, "deconv", [node.input[0]], params, {"weight": w, **({"bias": b} if b is not None else {})})


@translates("Gemm")
def _gemm(g: Graph, node) -> None:
    a = attrs(node)
    w, c = _const(g, node, 1, "B (the weight)"), _const(g, node, 2, "C (the bias)")
    if a.get("transA", 0):
        g.refuse(node, "transA=1")
    if w is None or a.get("transA", 0):
        return
    w = w if a.get("transB", 0) else w.T
    w = w * np.float32(a.get("alpha", 1.0))
    weights = {"weight": w}
    if c is not None:
        if c.size not in (1, w.shape[0]) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
            g.refuse(node, f"a bias C of shape {list(c.shape)} (one value per output, or a scalar)")
            return
        c = np.broadcast_to(c.reshape(-1) * np.float32(a.get("beta", 1.0)), (w.shape[0],))
        weights["bias"] = c
    g.add(node, "dense", [node.input[0]], {"out": int(w.shape[0]), "bias": c is not None}, weights)


@translates("MatMul")
def _matmul(g: Graph, node) -> None:
    w = _const(g, node, 1, "the second operand")
    if w is None:
        return
    if w.ndim != 2:
        g.refuse(node, f"a {w.ndim}-D constant operand")
        return
    g.add(node, "dense", [node.input[0]], {"out": int(w.shape[1]), "bias": False}, {"weight": w.T})


@translates("BatchNormalization")
def _batchnorm(g: Graph, node) -> None:
    a = attrs(node)
    consts = [_const(g, node, i, what) for i, what in enumerate(("", "scale", "B", "mean", "var")) if i]
    if any(c is None for c in consts) or a.get("training_mode", 0):
        if a.get("training_mode", 0):
            g.refuse(node, "training_mode=1")
        return
    scale, bias, mean, var = consts
    eps = float(a.get("epsilon", 1e-5))
    # graphspec's inference divides by sqrt(running_var) (DL4J folds eps into it): store var + eps
    # (an epsilon of 0, as graphspec's own export writes it, leaves graphspec's default for training)
    g.add(node, "batchnorm", [node.input[0]], {**({"eps": eps} if eps > 0 else {}),
                                               "decay": float(a.get("momentum", 0.9))},
          {"weight": scale, "bias": bias, "running_mean": mean, "running_var": var.astype(np.float32) + np.float32(eps)})


ACTIVATIONS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
               "Selu": None, "Elu": None, "LeakyRelu": None, "HardSigmoid": None, "HardSwish": "hardswish",
               "Mish": "mish", "Gelu": None, "Abs": "abs"}


@translates(*ACTIVATIONS)
def _activation(g: Graph, node) -> None:
    a, op = attrs(node), node.op_type
    name = ACTIVATIONS[op]
    if op == "LeakyRelu":
        name = "leakyrelu" if np.isclose(a.get("alpha", 0.01), 0.01, rtol=0, atol=1e-9) else None
    elif op == "Elu":
        name = "elu" if a.get("alpha", 1.0) == 1.0 else None
    elif op == "HardSigmoid":
        name = "hardsigmoid" if (np.isclose(a.get("alpha", 0.2), 0.2) and np.isclose(a.get("beta", 0.5), 0.5)) \
            else None
    elif op == "Gelu":
        approx = a.get("approximate", b"none")
        name = {"none": "gelu", "tanh": "gelu_tanh"}.get(approx.decode() if isinstance(approx, bytes) else approx)
    elif op == "Selu":
        name = "selu" if np.isclose(a.get("alpha", 1.67326319), 1.67326319) and np.isclose(
            a.get("gamma", 1.05070102), 1.05070102) else None
    if name is None:
        g.refuse(node, "attributes other than graphspec's activation's (" +
                 ", ".join(f"{k}={v}" for k, v in a.items()) + ")")
        return
    g.add(node, "activation", [node.input[0]], {"activation": name})


@translates("Clip")
def _clip(g: Graph, node) -> None:
    lo, hi = _const(g, node, 1, "min"), _const(g, node, 2, "max")
    bounds = (None if lo is None else float(lo), None if hi is None else float(hi))
    name = {(0.0, 6.0): "relu6", (0.0, None): "relu", (-1.0, 1.0): "hardtanh"}.get(bounds)
    if name is None:
        g.refuse(node, f"bounds {bounds} (graphspec has relu [0, inf), relu6 [0, 6], hardtanh [-1, 1])")
        return
    g.add(node, "activation", [node.input[0]], {"activation": name})


@translates("Softmax")
def _softmax(g: Graph, node) -> None:
    axis, rank = attrs(node).get("axis", -1), len(g.shapes.get(node.input[0]) or (0, 0))
    if axis % max(rank, 1) != 1:
        g.refuse(node, f"axis {axis} on a rank-{rank} tensor (graphspec's softmax is over dimension 1: the "
                       "features or channels)")
        return
    g.add(node, "activation", [node.input[0]], {"activation": "softmax"})


@translates("Identity", "Dropout")
def _identity(g: Graph, node) -> None:
    training = _const(g, node, 2, "training_mode") if node.op_type == "Dropout" else None
    if training is not None and bool(training):
        g.refuse(node, "training_mode=true (graphspec imports networks for inference: Dropout passes through)")
        return
    g.alias(node, node.input[0])  # Dropout at inference passes its input through


@translates("MaxPool", "AveragePool")
def _pool(g: Graph, node) -> None:
    a = attrs(node)
    window, before = _pairs(node, a, g)
    if window is None:
        return
    if a.get("ceil_mode", 0):
        g.refuse(node, "ceil_mode=1")
        return
    if any(d != 1 for d in a.get("dilations") or [1, 1]):
        g.refuse(node, f"dilations {list(a['dilations'])}")
        return
    padded = before is not None or any(window.get("padding", [0, 0])) or window.get("convolution_mode") == "same"
    if padded and node.op_type == "AveragePool" and not a.get("count_include_pad", 0):
        g.refuse(node, "padding with count_include_pad=0 (graphspec's average counts the padding, as DL4J's)")
        return
    if padded and node.op_type == "MaxPool" and g.producer.get(node.input[0]) not in g.nonneg:
        # graphspec pads with zeros (DL4J); ONNX with -inf: the same only where the input is never negative
        g.refuse(node, "padding on an input that may be negative (graphspec's max pooling pads with 0, ONNX's "
                       "with -inf)")
        return
    g.add(node, "subsampling", [_window_input(g, node, before)],
          {"pooling": "max" if node.op_type == "MaxPool" else "avg", **window})


@translates("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(g: Graph, node) -> None:
    g.add(node, "global_pool", [node.input[0]],
          {"pooling": "avg" if node.op_type == "GlobalAveragePool" else "max", "collapse": False})


@translates("Flatten")
def _flatten(g: Graph, node) -> None:
    if attrs(node).get("axis", 1) != 1:
        g.refuse(node, f"axis {attrs(node)['axis']} (graphspec flattens each example: axis 1)")
        return
    g.add(node, "reshape", [node.input[0]], {"shape": [-1]})


@translates("Reshape")
def _reshape(g: Graph, node) -> None:
    shape = _const(g, node, 1, "the shape")
    source = g.per_example(node.input[0])
    if shape is None:
        return
    keeps_batch = len(shape) > 0 and np.asarray(shape).reshape(-1)[0] == BATCH  # the batch size, from a Shape
    shape = [0 if d == BATCH else int(d) for d in np.asarray(shape).reshape(-1)]
    if attrs(node).get("allowzero", 0) and 0 in shape[1 if keeps_batch else 0:]:
        g.refuse(node, "allowzero=1 with a 0 in the shape")
        return
    if not shape or shape[0] not in (0, -1) and shape[0] != (g.shapes.get(node.input[0]) or [None])[0]:
        g.refuse(node, f"shape {shape} that changes the batch dimension")
        return
    if source is None or not _static(source):
        g.refuse(node, "an input whose shape is not known statically")
        return
    rest = [source[i] if d == 0 and i < len(source) else d for i, d in enumerate(shape[1:])]
    values, known = int(np.prod(source)), int(np.prod([d for d in rest if d != -1]))
    if rest.count(-1) > 1 or (values % max(known, 1) if -1 in rest else values != known):
        g.refuse(node, f"shape {shape} on {[None, *source]} (each example must keep its {values} values)")
        return
    g.add(node, "reshape", [node.input[0]], {"shape": rest or [1]})


@translates("Concat")
def _concat(g: Graph, node) -> None:
    rank = len(g.shapes.get(node.input[0]) or ())
    axis = attrs(node).get("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        g.refuse(node, "axis 0 (the batch)")
        return
    g.add(node, "merge", list(node.input), {} if axis == 1 else {"axis": axis})


ELEMENTWISE = {"Add": "add", "Sub": "subtract", "Mul": "product", "Div": "divide", "Sum": "add", "Max": "max",
               "Min": "min", "Mean": "average"}


@translates(*ELEMENTWISE)
def _elementwise(g: Graph, node) -> None:
    consts = [i for i in node.input if i in g.const]
    if consts:
        _with_constant(g, node, consts)
        return
    shapes = [g.shapes.get(i) for i in node.input]
    if not _same_shapes(shapes):
        g.refuse(node, f"broadcasting between shapes {sorted(map(str, shapes))}")
        return
    g.add(node, "elementwise", list(node.input), {"op": ELEMENTWISE[node.op_type]})


def _same_shapes(shapes) -> bool:
    """Equal ranks and no two known sizes that differ (unknown sizes are checked by graphspec's analysis)."""
    if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
        return all(s is None for s in shapes)
    return all(len({d for d in dims if d is not None}) <= 1 for dims in zip(*shapes))


@translates("ReduceMean", "ReduceMax")
def _reduce(g: Graph, node) -> None:
    a = attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = _const(g, node, 1, "the axes")
        if axes is None:
            return
    rank = len(g.shapes.get(node.input[0]) or ())
    if axes is None or sorted(int(x) % rank for x in axes) != list(range(2, rank)) or rank < 3:
        g.refuse(node, f"axes {None if axes is None else [int(x) for x in axes]} (graphspec reduces every "
                       "position of each channel: a global pooling)")
        return
    g.add(node, "global_pool", [node.input[0]], {"pooling": "avg" if node.op_type == "ReduceMean" else "max",
                                                 "collapse": not a.get("keepdims", 1)})


def _with_constant(g: Graph, node, consts: list[str]) -> None:
    """x + c, x · c, x − c, x / c with a constant c: a scalar is a shift or scale vertex, a per-channel [C, 1, 1] or
    [C] constant the affine batch-norm of inference (mean 0, variance 1)."""
    x = [i for i in node.input if i not in g.const]
    if len(x) != 1 or len(consts) != 1 or node.op_type not in ("Add", "Sub", "Mul", "Div") or \
            (node.op_type in ("Sub", "Div") and node.input[0] != x[0]):
        g.refuse(node, "this combination of a constant and a tensor")
        return
    c = g.const[consts[0]].astype(np.float32)
    add = node.op_type in ("Add", "Sub")
    c = -c if node.op_type == "Sub" else (np.float32(1) / c if node.op_type == "Div" else c)
    if c.size == 1:
        g.add(node, "shift" if add else "scale", x, {"amount" if add else "factor": float(c.reshape(()))})
        return
    shape = g.per_example(x[0])
    channels = shape[0] if shape else None
    if channels is None or c.size != channels or c.ndim > len(shape) or \
            any(d != 1 for d in c.shape[:-len(shape)] or ()) or (c.ndim == len(shape) and c.shape[0] != channels
                                                                 and c.size != c.shape[-1]):
        g.refuse(node, f"a constant of shape {list(c.shape)} on {list(shape or [])} (scalars and per-channel only)")
        return
    per_channel = c.reshape(-1)
    weights = {"weight": np.ones_like(per_channel), "bias": per_channel} if add else \
        {"weight": per_channel, "bias": np.zeros_like(per_channel)}
    g.add(node, "batchnorm", x, {}, {**weights, "running_mean": np.zeros_like(per_channel),
                                     "running_var": np.ones_like(per_channel)})


@translates("LRN")
def _lrn(g: Graph, node) -> None:
    a = attrs(node)
    size = int(a["size"])
    if size % 2 == 0:
        g.refuse(node, f"even size {size} (its window is not centred; DL4J's and graphspec's are)")
        return
    # ONNX: x / (bias + alpha/size · Σ x²)^beta; DL4J: x / (k + alpha · Σ x²)^beta
    g.add(node, "lrn", [node.input[0]], {"n": size, "k": float(a.get("bias", 1.0)),
                                         "alpha": float(a.get("alpha", 1e-4)) / size, "beta": float(a.get("beta", 0.75))})


@translates("Pad")
def _pad(g: Graph, node) -> None:
    a = attrs(node)
    mode = a.get("mode", b"constant")
    pads, value = _const(g, node, 1, "the pads"), _const(g, node, 2, "the value")
    if pads is None and len(node.input) > 1:
        return
    if len(node.input) > 3 and node.input[3]:
        g.refuse(node, "an axes input")
        return
    pads = [int(p) for p in (pads if pads is not None else a.get("pads", []))]
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant" or (value is not None and float(value) != 0):
        g.refuse(node, "a mode other than constant zeros")
        return
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or any(p < 0 for p in pads):
        g.refuse(node, f"pads {pads} (graphspec pads height and width of an image with zeros)")
        return
    g.add(node, "zero_padding", [node.input[0]], {"padding": [pads[2], pads[6], pads[3], pads[7]]})


@translates("Resize", "Upsample")
def _resize(g: Graph, node) -> None:
    a = attrs(node)
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    scales = _const(g, node, 2 if node.op_type == "Resize" else 1, "the scales")
    if scales is None or len(scales) != 4 or list(scales[:2]) != [1, 1] or any(s != int(s) or s < 1 for s in scales):
        g.refuse(node, "sizes other than whole-number scales of height and width")
        return
    nearest = mode == "nearest" and a.get("nearest_mode", b"round_prefer_floor") in (b"floor", "floor") or \
        (mode == "nearest" and node.op_type == "Upsample")
    if not nearest:
        g.refuse(node, f"mode {mode} (graphspec imports nearest-neighbour upsampling by whole factors)")
        return
    g.add(node, "upsampling", [node.input[0]], {"size": [int(scales[2]), int(scales[3])]})


# --- the whole import ---------------------------------------------------------------------------------------


def import_onnx(path: Path, name: str | None = None) -> Imported:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportRefused("importing ONNX needs the onnx package: pip install 'graphspec[onnx]'",
                            location=Location(str(path))) from None
    model = read(path)
    try:
        return _translate(model, path, name)
    except ImportRefused:
        recorded = _recorded(model, path, name)
        if recorded is None:
            raise
        return recorded


def _translate(model, path: Path, name: str | None) -> Imported:
    g = Graph(model, path)
    inputs = _inputs(g)
    for node in fold(g):
        extra = [o for o in node.output[1:] if o and (o in g.consumers or o in {v.name for v in model.graph.output})]
        if extra:
            g.refuse(node, f"its output '{extra[0]}' (graphspec computes an operator's first output only)")
            continue
        translate = TRANSLATIONS.get(node.op_type)
        if translate is None:
            g.refuse(node, "no graphspec translation of this operator")
            continue
        translate(g, node)
    g.unsupported.raise_if_any()
    outputs = _outputs(g)
    spec_name = name or Path(path).stem
    document = {"version": 1, "name": spec_name,
                "description": f"Imported from {Path(path).name} (ONNX, opset {_opset(model, path)}).",
                "defaults": {"activation": "identity", "convolution_mode": "truncate"},
                "inputs": inputs, "vertices": g.vertices, "outputs": outputs}
    _validate(document, path)
    return Imported(spec_name, document, g.weights, str(path), g.notes,
                    {g.producer[v.name]: v.name for v in model.graph.input if v.name in g.producer})


MAX_DOCUMENT = 16 << 20  # bytes of a recorded spec


def _recorded(model, path: Path, name: str | None) -> Imported | None:
    """The network of a file graphspec exported, from the spec it recorded in its metadata and the parameters among
    its initializers (``model.<vertex>.<param>``): used when the operators torch's exporter wrote for a vertex
    (e.g. DL4J's LRN, p-norm pooling) have no translation. None when the file has no recorded spec."""
    import json
    text = next((p.value for p in model.metadata_props if p.key == "graphspec.document"), None)
    if text is None:
        return None
    where = Location(str(path))
    if len(text) > MAX_DOCUMENT:
        raise ImportRefused(f"{path.name}: its recorded spec is {len(text):,} bytes (at most {MAX_DOCUMENT:,})",
                            location=where)
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ImportRefused(f"{path.name}: its recorded spec is not valid JSON ({type(e).__name__})",
                            location=where) from None
    _validate(document, path)
    from onnx import numpy_helper

    from ..compiler import build
    fresh = build(document, seed=0).state_dict()
    stored = {t.name: t for t in model.graph.initializer}
    weights, missing = {}, []
    for key, value in fresh.items():
        t = stored.get(f"model.{key}")
        if t is not None and tuple(t.dims) == tuple(value.shape):
            weights[key] = numpy_helper.to_array(t)
        else:
            weights[key], _ = value.numpy(), missing.append(key)
    document = {**document, "name": name or document.get("name") or Path(path).stem}
    notes = [f"{path.name} was written by graphspec: its recorded spec is the import (its operators are not all "
             "translatable one by one)"]
    if missing:
        notes.append(f"not in the file (the forward does not use them), initialised as the spec says: "
                     f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    inputs = {i: i for i in document.get("inputs", {})}
    return Imported(document["name"], document, weights, str(path), notes, inputs)


def _validate(document: dict, path: Path) -> None:
    """The translated spec must validate whole (shapes the file left unknown are checked here)."""
    from ..errors import SpecError
    from ..spec.loader import load_spec
    try:
        load_spec(document)
    except SpecError as e:
        raise ImportRefused(f"the spec translated from {path.name} does not validate:\n{e}",
                            location=Location(str(path))) from None


def check(imported: Imported, batch: int = 2, seed: int = 0) -> float | None:
    """The largest difference between the imported network and onnxruntime running the file on a random batch
    (None when onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import torch

    from ..export import example_inputs
    model = imported.model()
    import onnx
    names = {imported.file_inputs.get(n, n) for n in model.graphspec.spec.inputs}
    fixed = {d.dim_value for v in onnx.load(imported.source, load_external_data=False).graph.input
             if v.name in names for d in v.type.tensor_type.shape.dim[:1] if d.HasField("dim_value")}
    xs = example_inputs(model, fixed.pop() if len(fixed) == 1 else batch, seed)  # a file may fix its batch
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(imported.source, options, providers=["CPUExecutionProvider"])
    feeds = {imported.file_inputs.get(n, n): x.numpy() for n, x in zip(model.graphspec.spec.inputs, xs)}
    theirs = session.run(None, feeds)
    with torch.no_grad():
        ours = model(*xs)
    ours = list(ours.values()) if isinstance(ours, dict) else [ours]
    return max(float(np.abs(a.numpy() - b).max()) for a, b in zip(ours, theirs))


def _inputs(g: Graph) -> dict[str, dict]:
    out = {}
    for v in g.model.graph.input:
        if v.name in g.const:
            continue  # an initializer also listed as an input (older exporters): a constant
        shape = g.shapes.get(v.name) or ()
        dims = shape[1:]
        name = g.names(v.name, "input")
        g.producer[v.name] = name
        if len(dims) == 3 and _static(dims):
            out[name] = {"type": "convolutional", "channels": dims[0], "height": dims[1], "width": dims[2]}
        elif len(dims) == 1 and _static(dims):
            out[name] = {"type": "feed_forward", "size": dims[0]}
        elif len(dims) == 2 and dims[0] is not None:
            out[name] = {"type": "recurrent", "size": dims[0], **({"length": dims[1]} if dims[1] else {})}
        else:
            g.unsupported.add("input", f"shape {list(shape)} (graphspec takes [N, C, H, W], [N, F] or [N, F, T] "
                              "with static sizes)", v.name)
    return out


def _outputs(g: Graph) -> list[str]:
    outs = []
    for o in g.model.graph.output:
        vertex = g.producer.get(o.name)
        if vertex is None or vertex in outs or vertex not in g.vertices:  # an input, a repeat, an alias
            name = g.output_names.pop(o.name, None) or g.names(o.name, "output")
            g.vertices[name] = {"type": "identity", "inputs": [vertex]}
            vertex = name
        outs.append(vertex)
    return outs
