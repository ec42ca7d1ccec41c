"""The ONNX graph as the translation sees it: constants, static shapes, the vertices made so far, and constant folding."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import Location
from ..common import ImportRefused, Names, Unsupported
from .reading import MAX_ELEMENTS


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
        self.absorbed: set[str] = set()  # outputs of nodes another translation took in (MatMul + Add -> dense)
        self.consumers: dict[str, list] = {}
        for node in model.graph.node:
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)

    def per_example(self, tensor: str) -> tuple | None:
        shape = self.shapes.get(tensor)
        return None if shape is None else shape[1:]

    def add(self, node, type_: str, inputs: list[str], params: dict | None = None,
            weights: dict[str, np.ndarray] | None = None, output: int = 0, also: str | None = None) -> str:
        """A vertex for ``node``'s output ``output`` reading the vertices of the ONNX tensors ``inputs`` (parameters
        at their defaults are left out, so that the spec reads as one written by hand). ``also``: a later tensor
        the vertex computes too (a fused node's output), whose graph-output name it takes if it has one."""
        tensor = node.output[output]
        name = (self.output_names.pop(also, None) if also else None) or self.output_names.pop(tensor, None) or \
            self.names(_vertex_name(node), node.op_type.lower())
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
