"""One translation per ONNX operator type into graphspec vertices (exact, or a refusal naming the node)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .graph import BATCH, Graph, _static, attrs


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
    bias, add = _bias_after(g, node, int(w.shape[1]))
    weights = {"weight": w.T, **({"bias": bias} if add is not None else {})}
    name = g.add(node, "dense", [node.input[0]], {"out": int(w.shape[1]), "bias": add is not None}, weights,
                 also=add.output[0] if add is not None else None)
    if add is not None:  # MatMul + Add of a bias: one dense layer, the Add's output is the layer's
        g.producer[add.output[0]] = name
        g.absorbed.add(add.output[0])


def _bias_after(g: Graph, node, out: int):
    """(bias, the Add node) when ``node``'s only reader adds a constant of one value per output, else (None, None)."""
    readers = g.consumers.get(node.output[0], [])
    graph_outputs = {o.name for o in g.model.graph.output}
    if len(readers) != 1 or readers[0].op_type != "Add" or node.output[0] in graph_outputs:
        return None, None
    add = readers[0]
    other = [i for i in add.input if i != node.output[0]]
    if len(other) != 1 or other[0] not in g.const or g.const[other[0]].size != out or \
            g.const[other[0]].ndim > 2 or (g.const[other[0]].ndim == 2 and g.const[other[0]].shape[0] != 1):
        return None, None
    return g.const[other[0]].reshape(-1).astype(np.float32), add


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
