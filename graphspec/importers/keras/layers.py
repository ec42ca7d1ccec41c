"""One converter per Keras layer class: (converter, layer, inputs) -> the output tensor. ``cx`` is the
conversion in progress (:class:`.convert._Converter`, which imports this module's table: no import back)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .config import NONNEG
from .model import (_BadConfig, _graphspec_shape, _keeps_order, _Layer, _pair, _Perm, _Poisoned, _prod, _Restart,
                    _single, _T, _to_graphspec_axes)


# --- layer converters: (converter, layer, inputs) -> output tensor ---------------------------------------------
def _one(cx, L: _Layer, ins) -> _T | None:
    if ins is None:
        return None
    if len(ins) != 1:
        raise cx.r.refuse(f"layer '{L.name}' ({L.cls}) is called with {len(ins)} inputs; it takes one")
    return ins[0]


def _need_rank(cx, L, t: _T, ranks: tuple, what: str) -> None:
    if len(t.shape) not in ranks:
        cx.bad(L, f"an input of shape {list(t.shape)} (expects {what})")
        raise _Poisoned()


def _hw(a: int, b: int):
    """[a, b] as the spec writes it: one number when both are equal."""
    return a if a == b else [a, b]


def _tidy(v: dict) -> dict:
    """Leave out what the spec's defaults already say (stride 1, no padding or dilation, a bias)."""
    for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("bias", True), ("groups", 1),
                         ("depth_multiplier", 1)):
        if v.get(key, object()) == default:
            del v[key]
    return v


def _conv_out(n: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if n is None:
        return None
    ke = (k - 1) * d + 1
    if padding == "same" or padding == "causal":
        return -(-n // s)
    return (n - ke) // s + 1


def _mode(cx, L, padding) -> str:
    if padding == "valid":
        return "truncate"
    if padding == "same":
        return "same"
    cx.bad(L, f"padding '{padding}'")
    raise _Poisoned()


class _Window:
    """What Conv2D, DepthwiseConv2D and SeparableConv2D read alike: activation, kernel, strides, dilation, padding
    and graphspec's mode for it, the input tensor (an image [H, W, C]) and the output's height and width."""

    def __init__(self, cx, L: _Layer, ins):
        c = L.config
        cx.channels_last(L)
        self.act = cx.activation(L, c.get("activation"))
        self.kernel = _pair(c["kernel_size"], "kernel_size")
        self.stride = _pair(c.get("strides", 1), "strides")
        self.dilation = _pair(c.get("dilation_rate", 1), "dilation_rate")
        padding = c.get("padding", "valid")
        self.mode = _mode(cx, L, padding)
        self.t = _one(cx, L, ins)
        if self.t is None or cx.failed:
            raise _Poisoned()
        _need_rank(cx, L, self.t, (3,), "an image [H, W, C]")
        h, w, self.cin = self.t.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        self.oh, self.ow = _conv_out(h, kh, sh, dh, padding), _conv_out(w, kw, sw, dw, padding)
        if self.oh < 1 or self.ow < 1:
            raise cx.r.refuse(f"layer '{L.name}': a {kh}x{kw} kernel does not fit its {h}x{w} input")
        self.use_bias = bool(c.get("use_bias", True))

    def params(self) -> dict:
        return {"kernel": _hw(*self.kernel), "stride": _hw(*self.stride), "dilation": _hw(*self.dilation),
                "convolution_mode": self.mode, "activation": self.act, "bias": self.use_bias}

    def out(self, cx, v: dict, params: dict, filters: int) -> _T:
        return _T(cx.emit(_tidy(v), params), (self.oh, self.ow, filters), nonneg=self.act in NONNEG)


def _conv2d(cx, L: _Layer, ins):
    c = L.config
    win = _Window(cx, L, ins)
    groups, filters, cin = int(c.get("groups", 1) or 1), int(c["filters"]), win.cin
    if cin % groups or filters % groups:
        raise cx.r.refuse(f"layer '{L.name}': {cin} input channels and {filters} filters do not split into "
                          f"{groups} groups")
    kh, kw = win.kernel
    wanted = [("kernel", (kh, kw, cin // groups, filters))] + ([("bias", (filters,))] if win.use_bias else [])
    ws = cx.read(L, [("", wanted)])
    params = {"weight": ws[0].transpose(3, 2, 0, 1)}
    if win.use_bias:
        params["bias"] = ws[1]
    v = {"type": "conv", "inputs": [win.t.vertex], "out": filters, "groups": groups, **win.params()}
    return win.out(cx, v, params, filters)


def _depthwise(cx, L: _Layer, ins):
    c = L.config
    win = _Window(cx, L, ins)
    m, cin, (kh, kw) = int(c.get("depth_multiplier", 1)), win.cin, win.kernel
    sep = L.cls == "SeparableConv2D"
    if sep:
        filters = int(c["filters"])
        wanted = [("depthwise_kernel", (kh, kw, cin, m)), ("pointwise_kernel", (1, 1, cin * m, filters))]
    else:
        filters = cin * m
        wanted = [("depthwise_kernel|kernel", (kh, kw, cin, m))]
    wanted += [("bias", (filters,))] if win.use_bias else []
    ws = cx.read(L, [("", wanted)])
    depthwise = ws[0].transpose(2, 3, 0, 1).reshape(cin * m, 1, kh, kw)  # channel c·m + j, as Keras
    v = {"type": "separable_conv" if sep else "depthwise_conv", "inputs": [win.t.vertex]}
    if sep:
        v["out"] = filters
        params = {"depthwise_weight": depthwise, "pointwise_weight": ws[1].transpose(3, 2, 0, 1)}
    else:
        params = {"weight": depthwise}
    v.update({"depth_multiplier": m, **win.params()})
    if win.use_bias:
        params["bias"] = ws[-1]
    return win.out(cx, v, params, filters)


def _deconv(cx, L: _Layer, ins):
    c = L.config
    cx.channels_last(L)
    act = cx.activation(L, c.get("activation"))
    kh, kw = _pair(c["kernel_size"], "kernel_size")
    sh, sw = _pair(c.get("strides", 1), "strides")
    if _pair(c.get("dilation_rate", 1)) != (1, 1):
        cx.bad(L, "dilation_rate other than 1")
    if c.get("output_padding") is not None:
        cx.bad(L, "output_padding")
    padding = c.get("padding", "valid")
    mode = _mode(cx, L, padding)
    if padding == "valid" and (kh < sh or kw < sw):
        cx.bad(L, "padding 'valid' with a kernel smaller than the stride (Keras pads the output to n·s; "
                  "graphspec's deconv gives s·(n-1)+k)")
    if padding == "same" and (kh < sh or kw < sw):
        cx.bad(L, "padding 'same' with a kernel smaller than the stride (Keras and graphspec crop differently)")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (3,), "an image [H, W, C]")
    h, w, cin = t.shape
    filters = int(c["filters"])
    oh, ow = (h * sh, w * sw) if padding == "same" else ((h - 1) * sh + kh, (w - 1) * sw + kw)
    use_bias = bool(c.get("use_bias", True))
    ws = cx.read(L, [("", [("kernel", (kh, kw, filters, cin))] + ([("bias", (filters,))] if use_bias else []))])
    params = {"weight": ws[0].transpose(3, 2, 0, 1)}  # [kh, kw, out, in] -> [in, out, kh, kw]
    if use_bias:
        params["bias"] = ws[1]
    v = _tidy({"type": "deconv", "inputs": [t.vertex], "out": filters, "kernel": _hw(kh, kw), "stride": _hw(sh, sw),
               "convolution_mode": mode, "activation": act, "bias": use_bias})
    return _T(cx.emit(v, params), (oh, ow, filters), nonneg=act in NONNEG)


def _conv1d(cx, L: _Layer, ins):
    c = L.config
    cx.channels_last(L)
    act = cx.activation(L, c.get("activation"))
    k = _single(c["kernel_size"], "kernel_size")
    s = _single(c.get("strides", 1), "strides")
    d = _single(c.get("dilation_rate", 1), "dilation_rate")
    if int(c.get("groups", 1) or 1) != 1:
        cx.bad(L, "groups other than 1 (graphspec's conv1d has no groups)")
    padding = c.get("padding", "valid")
    modes = {"valid": "truncate", "same": "same", "causal": "causal"}
    if padding not in modes:
        cx.bad(L, f"padding '{padding}'")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (2,), "a sequence [T, F]")
    n, cin = t.shape
    out_n = _conv_out(n, k, s, d, padding)
    if out_n is not None and out_n < 1:
        raise cx.r.refuse(f"layer '{L.name}': a kernel of {k} does not fit its {n} steps")
    filters = int(c["filters"])
    use_bias = bool(c.get("use_bias", True))
    ws = cx.read(L, [("", [("kernel", (k, cin, filters))] + ([("bias", (filters,))] if use_bias else []))])
    params = {"weight": ws[0].transpose(2, 1, 0)}
    if use_bias:
        params["bias"] = ws[1]
    v = _tidy({"type": "conv1d", "inputs": [t.vertex], "out": filters, "kernel": k, "stride": s, "dilation": d,
               "convolution_mode": modes[padding], "activation": act, "bias": use_bias})
    return _T(cx.emit(v, params), (out_n, filters), nonneg=act in NONNEG)


def _dense(cx, L: _Layer, ins):
    c = L.config
    act = cx.activation(L, c.get("activation"))
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (1, 2, 3), "a vector, a sequence or an image")
    units, fin = int(c["units"]), t.shape[-1]
    use_bias = bool(c.get("use_bias", True))
    ws = cx.read(L, [("", [("kernel", (fin, units))] + ([("bias", (units,))] if use_bias else []))])
    kernel = ws[0]
    if t.perm is not None:
        kernel = kernel[t.perm.index]  # graphspec feature j is Keras feature perm[j]
        cx.note("flatten", L.name)
    params = {"weight": kernel.T}
    if use_bias:
        params["bias"] = ws[1]
    if len(t.shape) == 3:  # Keras applies Dense to the channels of every pixel: a 1x1 convolution
        params["weight"] = kernel.T[:, :, None, None]
        v = {"type": "conv", "inputs": [t.vertex], "out": units, "kernel": 1, "convolution_mode": "truncate",
             "activation": act, "bias": use_bias}
    else:  # a vector, or every step of a sequence (graphspec's dense on [F, T])
        v = {"type": "dense", "inputs": [t.vertex], "out": units, "activation": act, "bias": use_bias}
    _tidy(v)
    return _T(cx.emit(v, params), (*t.shape[:-1], units), nonneg=act in NONNEG)


def _axis_last(cx, L, rank: int) -> None:
    axis = L.config.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis not in (-1, rank):  # rank counts the batch: the last axis of a rank-r-per-example tensor is r
        cx.bad(L, f"axis {axis} (only the last axis: channels/features)")
        raise _Poisoned()


def _normalised(cx, L: _Layer, ins, unsupported: str):
    """A normalisation layer's input (normalised along its last axis), its width, and whether the layer has a
    scale (gamma) and a center (beta), whose weights come first in the file."""
    c = L.config
    if c.get(unsupported):
        cx.bad(L, unsupported)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (1, 2, 3), "a vector, a sequence or an image")
    _axis_last(cx, L, len(t.shape))
    n = t.shape[-1]
    scale, center = bool(c.get("scale", True)), bool(c.get("center", True))
    wanted = ([("gamma", (n,))] if scale else []) + ([("beta", (n,))] if center else [])
    if not scale:
        cx.note("no scale", L.name)
    return t, n, scale, center, wanted


def _emit_normalised(cx, t: _T, v: dict, params: dict) -> _T:
    if t.perm is not None:
        params = {k: x[t.perm.index] for k, x in params.items()}
    return _T(cx.emit(v, params), t.shape, perm=t.perm)


def _batchnorm(cx, L: _Layer, ins):
    c = L.config
    t, n, scale, center, wanted = _normalised(cx, L, ins, "renorm")
    eps = float(c.get("epsilon", 1e-3))
    ws = list(cx.read(L, [("", wanted + [("moving_mean", (n,)), ("moving_variance", (n,))])]))
    gamma = ws.pop(0) if scale else np.ones(n, np.float32)
    beta = ws.pop(0) if center else np.zeros(n, np.float32)
    mean, var = ws
    if not center:
        cx.note("no center", L.name)
    params = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": (var.astype(np.float64) + eps)}
    cx.note("batchnorm", L.name)
    v = {"type": "batchnorm", "inputs": [t.vertex], "eps": eps, "decay": float(c.get("momentum", 0.99))}
    return _emit_normalised(cx, t, v, params)


def _layernorm(cx, L: _Layer, ins):
    t, n, scale, center, wanted = _normalised(cx, L, ins, "rms_scaling")
    ws = list(cx.read(L, [("", wanted)]))
    params = {"weight": ws.pop(0) if scale else np.ones(n, np.float32)}
    if center:
        params["bias"] = ws.pop(0)
    v = {"type": "layer_norm", "inputs": [t.vertex], "eps": float(L.config.get("epsilon", 1e-3)), "bias": center}
    return _emit_normalised(cx, t, v, params)


def _pooling(cx, L: _Layer, ins, read, ranks: tuple, what: str):
    """What the pooling layers read alike: the window and strides (``read``: _pair or _single; the strides default
    to the window), the padding, max or avg, and the input tensor."""
    c = L.config
    cx.channels_last(L)
    window = read(c.get("pool_size", 2), "pool_size")
    strides = c.get("strides")
    stride = read(strides if strides is not None else window, "strides")
    padding = c.get("padding", "valid")
    _mode(cx, L, padding)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, ranks, what)
    return window, stride, padding, "max" if L.cls.startswith("Max") else "avg", t


def _pool2d(cx, L: _Layer, ins):
    (kh, kw), (sh, sw), padding, pooling, t = _pooling(cx, L, ins, _pair, (3,), "an image [H, W, C]")
    h, w, ch = t.shape
    oh, ow = _conv_out(h, kh, sh, 1, padding), _conv_out(w, kw, sw, 1, padding)
    if oh < 1 or ow < 1:
        raise cx.r.refuse(f"layer '{L.name}': a {kh}x{kw} window does not fit its {h}x{w} input")
    mode = "truncate"
    if padding == "same":
        pads = [max((o - 1) * s + k - n, 0) for o, s, k, n in ((oh, sh, kh, h), (ow, sw, kw, w))]
        if any(pads) and not (pooling == "max" and t.nonneg):
            cx.bad(L, "padding 'same' where windows reach past the edge: Keras ignores the padded cells, graphspec "
                      "pools them as 0" + ("" if pooling == "avg" else " (exact only after a non-negative "
                                                                          "activation such as relu)"))
            raise _Poisoned()
        mode = "same"
    v = {"type": "subsampling", "inputs": [t.vertex], "pooling": pooling, "kernel": _hw(kh, kw),
         "stride": _hw(sh, sw), "convolution_mode": mode}
    return _T(cx.emit(v), (oh, ow, ch), nonneg=t.nonneg)


def _pool1d(cx, L: _Layer, ins):
    k, s, padding, pooling, t = _pooling(cx, L, ins, _single, (2,), "a sequence [T, F]")
    n, ch = t.shape
    out_n = _conv_out(n, k, s, 1, padding)
    mode = "truncate"
    if padding == "same":
        pad = None if n is None else max((out_n - 1) * s + k - n, 0)
        if (pad is None or pad) and not (pooling == "max" and t.nonneg):
            cx.bad(L, "padding 'same' where windows may reach past the end: Keras ignores the padded steps, "
                      "graphspec pools them as 0")
            raise _Poisoned()
        mode = "same"
    v = {"type": "subsampling1d", "inputs": [t.vertex], "pooling": pooling, "kernel": k, "stride": s,
         "convolution_mode": mode}
    return _T(cx.emit(v), (out_n, ch), nonneg=t.nonneg)


def _global_pool(cx, L: _Layer, ins):
    c = L.config
    cx.channels_last(L)
    keep = bool(c.get("keepdims", False))
    pooling = "max" if "Max" in L.cls else "avg"
    rank = 3 if L.cls.endswith("2D") else 2
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (rank,), "an image [H, W, C]" if rank == 3 else "a sequence [T, F]")
    v = {"type": "global_pool", "inputs": [t.vertex], "pooling": pooling, "collapse": not keep}
    shape = (*(1,) * (rank - 1), t.shape[-1]) if keep else (t.shape[-1],)
    return _T(cx.emit(v), shape, nonneg=t.nonneg)


def _flatten(cx, L: _Layer, ins):
    cx.channels_last(L)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    if any(s is None for s in t.shape):
        cx.bad(L, "an input of unknown length")
        raise _Poisoned()
    if len(t.shape) <= 1:
        return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), t.shape, perm=t.perm, nonneg=t.nonneg)
    n = _prod(t.shape)
    to_keras = _keras_order_dims(len(t.shape))
    gshape = _graphspec_shape(t.shape)
    if _keeps_order(gshape, [d - 1 for d in to_keras]):  # e.g. 1x1 pixels: both orders agree
        return _T(cx.emit({"type": "reshape", "inputs": [t.vertex], "shape": [-1]}), (n,), nonneg=t.nonneg)
    if L.name in cx.exact_flatten:
        cx.note("exact flatten", L.name)
        p = cx.emit({"type": "permute", "inputs": [t.vertex], "dims": to_keras}, suffix="keras_order")
        return _T(cx.emit({"type": "reshape", "inputs": [p], "shape": [-1]}), (n,), nonneg=t.nonneg)
    index = np.moveaxis(np.arange(n).reshape(t.shape), -1, 0).ravel()  # graphspec feature j = Keras feature index[j]
    return _T(cx.emit({"type": "reshape", "inputs": [t.vertex], "shape": [-1]}), (n,),
              perm=_Perm(index, frozenset({L.name})), nonneg=t.nonneg)


def _keras_order_dims(rank: int) -> list[int]:
    """1-based graphspec ``permute`` dims turning graphspec's layout (channels first) into Keras's (channels last)."""
    return [*range(2, rank + 1), 1]


def _graphspec_order_dims(rank: int) -> list[int]:
    """1-based ``permute`` dims turning Keras's layout (channels last) into graphspec's (channels first)."""
    return [rank, *range(1, rank)]


def _reshape(cx, L: _Layer, ins):
    target = L.config.get("target_shape")
    t = _one(cx, L, ins)
    if t is None:
        raise _Poisoned()
    if not isinstance(target, list) or not all(isinstance(x, int) for x in target):
        raise _BadConfig(f"target_shape {target!r}")
    if any(s is None for s in t.shape):
        cx.bad(L, "an input of unknown length")
        raise _Poisoned()
    n = _prod(t.shape)
    if target.count(-1) > 1 or any(x < -1 or x == 0 for x in target):
        raise _BadConfig(f"target_shape {target!r}")
    if -1 in target:
        known = _prod(x for x in target if x != -1)
        target = [n // known if x == -1 else x for x in target]
    if _prod(target) != n:
        raise cx.r.refuse(f"layer '{L.name}': target_shape {target} does not hold the {n} values of its input")
    if len(target) > 3:
        cx.bad(L, f"target_shape {target} (graphspec tensors have up to 3 dimensions per example)")
        raise _Poisoned()
    src = t.vertex
    rank = len(t.shape)
    if rank > 1 and not _keeps_order(_graphspec_shape(t.shape), [d - 1 for d in _keras_order_dims(rank)]):
        src = cx.emit({"type": "permute", "inputs": [src], "dims": _keras_order_dims(rank)}, suffix="keras_order")
    out_rank = len(target)
    if out_rank > 1 and not _keeps_order(tuple(target), [d - 1 for d in _graphspec_order_dims(out_rank)]):
        src = cx.emit({"type": "reshape", "inputs": [src], "shape": list(target)}, suffix="keras_layout")
        name = cx.emit({"type": "permute", "inputs": [src], "dims": _graphspec_order_dims(out_rank)})
    else:
        name = cx.emit({"type": "reshape", "inputs": [src], "shape": list(_graphspec_shape(tuple(target)))})
    return _T(name, tuple(target), nonneg=t.nonneg)


def _permute(cx, L: _Layer, ins):
    dims = L.config.get("dims")
    t = _one(cx, L, ins)
    if t is None:
        raise _Poisoned()
    r = len(t.shape)
    if not isinstance(dims, list) or sorted(dims) != list(range(1, r + 1)):
        raise _BadConfig(f"dims {dims!r}")
    d = [x - 1 for x in dims]  # Keras: out axis i = in axis d[i] (per example)
    to_g = _to_graphspec_axes(r)  # graphspec axis i = Keras axis to_g[i]
    inv = [to_g.index(a) for a in range(r)]  # Keras axis a = graphspec axis inv[a]
    p = [inv[d[to_g[i]]] for i in range(r)]
    shape = tuple(t.shape[a] for a in d)
    if p == list(range(r)):
        return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), shape, nonneg=t.nonneg)
    return _T(cx.emit({"type": "permute", "inputs": [t.vertex], "dims": [x + 1 for x in p]}), shape,
              nonneg=t.nonneg)


def _activation_layer(cx, L: _Layer, ins):
    c = L.config
    cls = L.cls
    t = _one(cx, L, ins)
    if cls == "Activation":
        act = cx.activation(L, c.get("activation"))
    elif cls == "ReLU":
        mx, slope, th = c.get("max_value"), float(c.get("negative_slope", 0) or 0), float(c.get("threshold", 0) or 0)
        if slope == 0 and th == 0 and mx is None:
            act = "relu"
        elif slope == 0 and th == 0 and mx is not None and float(mx) == 6.0:
            act = "relu6"
        else:
            cx.bad(L, f"max_value={mx}, negative_slope={slope}, threshold={th} (graphspec has relu and relu6)")
            act = None
    elif cls == "Softmax":
        axis = c.get("axis", -1)
        if axis not in (-1, [-1]) and not (t is not None and axis in (len(t.shape), [len(t.shape)])):
            cx.bad(L, f"axis {axis} (only the last axis: channels/features)")
        act = "softmax"
    elif cls == "ELU":
        if float(c.get("alpha", 1.0)) != 1.0:
            cx.bad(L, f"alpha {c.get('alpha')} (graphspec's elu has alpha 1)")
        act = "elu"
    elif cls == "LeakyReLU":
        slope = float(c.get("negative_slope", c.get("alpha", 0.3)))
        if not 0 <= slope <= 1:
            cx.bad(L, f"slope {slope} outside [0, 1]")
        act = "leakyrelu"
    else:  # pragma: no cover
        raise AssertionError(cls)
    if t is None or cx.failed:
        raise _Poisoned()
    if cls == "LeakyReLU" and slope != 0.01:  # max(x, slope·x) is exact for 0 <= slope <= 1
        cx.note("leaky", L.name)
        s = cx.emit({"type": "scale", "inputs": [t.vertex], "factor": slope}, suffix="scaled")
        name = cx.emit({"type": "elementwise", "inputs": [t.vertex, s], "op": "max"})
        return _T(name, t.shape, perm=t.perm, nonneg=t.nonneg)
    # (softmax over all of a vector's features does not depend on their order: a permuted vector passes)
    return _T(cx.emit({"type": "activation", "inputs": [t.vertex], "activation": act}), t.shape, perm=t.perm,
              nonneg=act in NONNEG or (t.nonneg and act in ("relu", "relu6", "leakyrelu", "elu", "identity")))


def _dropout(cx, L: _Layer, ins):
    t = _one(cx, L, ins)
    if t is None:
        raise _Poisoned()
    if L.cls == "Dropout":
        rate = float(L.config.get("rate", 0.5))
        if L.config.get("noise_shape") is not None:
            cx.note("noise", L.name)
            return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), t.shape, perm=t.perm, nonneg=t.nonneg)
        cx.note("dropout", L.name)
        return _T(cx.emit({"type": "dropout", "inputs": [t.vertex], "rate": rate}), t.shape, perm=t.perm,
                  nonneg=t.nonneg)
    cx.note("noise", L.name)
    return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), t.shape, perm=t.perm,
              nonneg=t.nonneg and L.cls not in ("GaussianNoise", "AlphaDropout"))


MERGE_OPS = {"Add": "add", "Subtract": "subtract", "Multiply": "product", "Average": "average", "Maximum": "max",
             "Minimum": "min"}


def _elementwise(cx, L: _Layer, ins):
    if ins is None:
        raise _Poisoned()
    if len(ins) < 2 or (L.cls == "Subtract" and len(ins) != 2):
        raise cx.r.refuse(f"layer '{L.name}' ({L.cls}) is called with {len(ins)} inputs")
    shapes = {t.shape for t in ins}
    if len(shapes) != 1:
        cx.bad(L, f"inputs of different shapes {sorted(map(list, shapes))} (Keras broadcasts; graphspec's "
                  "elementwise needs equal shapes)")
        raise _Poisoned()
    perms = [t.perm for t in ins]
    if any(p is not None for p in perms) and not all(p is not None and p == perms[0] for p in perms):
        raise _Restart(set().union(*(p.origins for p in perms if p is not None)))
    op = MERGE_OPS[L.cls]
    nonneg = all(t.nonneg for t in ins) and op in ("add", "product", "average", "max", "min")
    return _T(cx.emit({"type": "elementwise", "inputs": [t.vertex for t in ins], "op": op}), ins[0].shape,
              perm=perms[0], nonneg=nonneg)


def _concatenate(cx, L: _Layer, ins):
    if ins is None:
        raise _Poisoned()
    r = len(ins[0].shape)
    axis = L.config.get("axis", -1)
    if not isinstance(axis, int) or not -(r + 1) <= axis <= r:
        raise _BadConfig(f"axis {axis!r}")
    axis = axis + r + 1 if axis < 0 else axis
    if axis == 0:
        cx.bad(L, "concatenation along the batch")
        raise _Poisoned()
    if any(len(t.shape) != r for t in ins):
        raise cx.r.refuse(f"layer '{L.name}': its inputs have different ranks")
    k = axis - 1  # per-example Keras axis
    for t in ins:
        if any(a != b for i, (a, b) in enumerate(zip(t.shape, ins[0].shape)) if i != k):
            raise cx.r.refuse(f"layer '{L.name}': inputs {[list(t.shape) for t in ins]} do not fit together "
                              f"along axis {axis}")
    g_axis = _to_graphspec_axes(r).index(k) + 1  # graphspec merge axis counts the batch as 0
    shape = list(ins[0].shape)
    shape[k] = None if any(t.shape[k] is None for t in ins) else sum(t.shape[k] for t in ins)
    perm = None
    if any(t.perm is not None for t in ins):  # vectors after a Flatten: the permutation of the concatenation
        parts, off, origins = [], 0, set()
        for t in ins:
            n = t.shape[0]
            parts.append((t.perm.index if t.perm is not None else np.arange(n)) + off)
            origins |= t.perm.origins if t.perm is not None else set()
            off += n
        perm = _Perm(np.concatenate(parts), frozenset(origins))
    v = {"type": "merge", "inputs": [t.vertex for t in ins], "axis": g_axis}
    return _T(cx.emit(v), tuple(shape), perm=perm, nonneg=all(t.nonneg for t in ins))


def _zero_padding(cx, L: _Layer, ins, crop: bool = False):
    cx.channels_last(L)
    value = L.config.get("cropping" if crop else "padding", 0 if crop else 1)
    if isinstance(value, int):
        pads = [value] * 4
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(x, int) for x in value):
        pads = [value[0], value[0], value[1], value[1]]
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(x, list) and len(x) == 2 for x in value):
        pads = [*value[0], *value[1]]
    else:
        raise _BadConfig(f"{'cropping' if crop else 'padding'} {value!r}")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (3,), "an image [H, W, C]")
    h, w, ch = t.shape
    sign = -1 if crop else 1
    shape = (h + sign * (pads[0] + pads[1]), w + sign * (pads[2] + pads[3]), ch)
    if crop:
        v = {"type": "cropping", "inputs": [t.vertex], "cropping": pads}
    else:
        v = {"type": "zero_padding", "inputs": [t.vertex], "padding": pads}
    return _T(cx.emit(v), shape, nonneg=t.nonneg)


def _cropping(cx, L, ins):
    return _zero_padding(cx, L, ins, crop=True)


def _upsampling(cx, L: _Layer, ins):
    cx.channels_last(L)
    sh, sw = _pair(L.config.get("size", 2), "size")
    interp = L.config.get("interpolation", "nearest")
    if interp not in ("nearest", "bilinear"):
        cx.bad(L, f"interpolation '{interp}'")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (3,), "an image [H, W, C]")
    h, w, ch = t.shape
    v = {"type": "upsampling", "inputs": [t.vertex], "size": _hw(sh, sw)}
    if interp != "nearest":
        v["interpolation"] = interp
    return _T(cx.emit(v), (h * sh, w * sw, ch), nonneg=t.nonneg)


def _rescaling(cx, L: _Layer, ins):
    scale, offset = L.config.get("scale", 1.0), L.config.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        cx.bad(L, "per-channel scale or offset (graphspec's scale and shift take one number)")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    if offset == 0:
        return _T(cx.emit({"type": "scale", "inputs": [t.vertex], "factor": float(scale)}), t.shape, perm=t.perm)
    s = cx.emit({"type": "scale", "inputs": [t.vertex], "factor": float(scale)}, suffix="scale")
    return _T(cx.emit({"type": "shift", "inputs": [s], "amount": float(offset)}), t.shape, perm=t.perm)


RNN_KINDS = {"LSTM": ("lstm", 4), "GRU": ("gru", 3), "SimpleRNN": ("simple_rnn", 1)}


def _rnn_settings(cx, L: _Layer, c: dict) -> dict:
    kind, _ = RNN_KINDS[L.cls]
    for key in ("stateful", "return_state", "time_major"):
        if c.get(key):
            cx.bad(L, f"{key}=True")
    if c.get("dropout") or c.get("recurrent_dropout"):
        cx.note("recurrent dropout", L.name)
    v = {"activation": cx.activation(L, c.get("activation", "tanh"))}
    if kind != "simple_rnn":
        v["gate_activation"] = cx.activation(L, c.get("recurrent_activation", "sigmoid"))
    if kind == "gru" and not c.get("reset_after", cx.keras3):  # absent in Keras < 2.1: the original GRU
        cx.bad(L, "reset_after=False (the original GRU; graphspec's gru is torch's, Keras's reset_after=True)")
    return v


def _rnn_params(L: _Layer, c: dict, fin: int) -> tuple[list, dict]:
    """The weights Keras keeps for one direction: [(label, shape)], and the units and use_bias."""
    kind, gates = RNN_KINDS[L.cls]
    units = int(c["units"])
    use_bias = bool(c.get("use_bias", True))
    bias_shape = (2, 3 * units) if kind == "gru" else (gates * units,)
    wanted = [("kernel", (fin, gates * units)), ("recurrent_kernel", (units, gates * units))]
    wanted += [("bias", bias_shape)] if use_bias else []
    return wanted, {"units": units, "use_bias": use_bias}


def _rnn_convert(kind: str, units: int, ws: list, use_bias: bool) -> dict:
    kernel, recurrent = ws[0], ws[1]
    if kind == "gru":  # Keras blocks z, r, h -> torch r, z, n
        order = np.r_[units:2 * units, 0:units, 2 * units:3 * units]
        bias = ws[2] if use_bias else np.zeros((2, 3 * units), np.float32)
        return {"weight_ih": kernel[:, order].T, "weight_hh": recurrent[:, order].T,
                "bias_ih": bias[0][order], "bias_hh": bias[1][order]}
    bias = ws[2] if use_bias else np.zeros(kernel.shape[1], np.float32)
    return {"weight_ih": kernel.T, "weight_hh": recurrent.T, "bias": bias}  # LSTM: i, f, c, o = torch's i, f, g, o


def _rnn(cx, L: _Layer, ins):
    c = L.config
    kind, _ = RNN_KINDS[L.cls]
    settings = _rnn_settings(cx, L, c)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (2,), "a sequence [T, F]")
    wanted, info = _rnn_params(L, c, t.shape[1])
    ws = cx.read(L, [("cell", wanted)])
    units = info["units"]
    if not info["use_bias"]:
        cx.note("no bias", L.name)
    params = _rnn_convert(kind, units, ws, info["use_bias"])
    src = t.vertex
    if c.get("go_backwards"):  # Keras reads the sequence backwards and returns the outputs in that order
        src = cx.emit({"type": "reverse_time_series", "inputs": [src]}, suffix="reversed")
    name = cx.emit({"type": kind, "inputs": [src], "out": units, **settings}, params)
    if c.get("return_sequences"):
        return _T(name, (t.shape[0], units))
    cx.note("last step", L.name)
    return _T(cx.emit({"type": "time_step", "inputs": [name], "index": -1}, suffix="last"), (units,))


def _bidirectional(cx, L: _Layer, ins):
    c = L.config
    inner = c.get("layer")
    if not isinstance(inner, dict) or inner.get("class_name") not in RNN_KINDS:
        cx.bad(L, f"wrapping {inner.get('class_name') if isinstance(inner, dict) else inner!r} (LSTM, GRU and "
                  "SimpleRNN are imported)")
        raise _Poisoned()
    fwd = _Layer(cls=inner["class_name"], name=L.name, config=inner.get("config") or {})
    back_cfg = c.get("backward_layer")
    bwd = _Layer(cls=back_cfg["class_name"], name=L.name, config=back_cfg.get("config") or {}) if isinstance(
        back_cfg, dict) else _Layer(cls=fwd.cls, name=L.name, config={**fwd.config, "go_backwards": True})
    if bwd.cls != fwd.cls:
        cx.bad(L, "different layer types in the two directions")
    mode = c.get("merge_mode", "concat")
    modes = {"concat": "concat", "sum": "add", "mul": "mul", "ave": "average"}
    if mode not in modes:
        cx.bad(L, f"merge_mode {mode!r}")
    settings = _rnn_settings(cx, fwd, fwd.config)
    other = _rnn_settings(cx, bwd, bwd.config)
    for key in ("units", "use_bias", "return_sequences"):
        if fwd.config.get(key) != bwd.config.get(key):
            cx.bad(L, f"different {key} in the two directions")
    if settings != other:
        cx.bad(L, "different activations in the two directions")
    if fwd.config.get("go_backwards") or not bwd.config.get("go_backwards", True):
        cx.bad(L, "directions other than one forward and one backward layer")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (2,), "a sequence [T, F]")
    kind, _ = RNN_KINDS[fwd.cls]
    wanted, info = _rnn_params(fwd, fwd.config, t.shape[1])
    units, use_bias = info["units"], info["use_bias"]
    ws = cx.read(L, [("forward_layer/cell", wanted), ("backward_layer/cell", wanted)])
    n = len(wanted)
    pf, pb = _rnn_convert(kind, units, ws[:n], use_bias), _rnn_convert(kind, units, ws[n:], use_bias)
    if not use_bias:
        cx.note("no bias", L.name)
    width = 2 * units if mode == "concat" else units
    if fwd.config.get("return_sequences"):
        params = {**pf, **{f"{k}_reverse": v for k, v in pb.items()}}
        name = cx.emit({"type": kind, "inputs": [t.vertex], "out": units, **settings,
                        "bidirectional": modes[mode]}, params)
        return _T(name, (t.shape[0], width))
    # Keras returns the forward layer's last step and the backward layer's last step (which read step 0 last):
    # two layers, each followed by its last step, then combined.
    cx.note("last step", L.name)
    f = cx.emit({"type": kind, "inputs": [t.vertex], "out": units, **settings}, pf, suffix="forward")
    fl = cx.emit({"type": "time_step", "inputs": [f], "index": -1}, suffix="forward_last")
    r = cx.emit({"type": "reverse_time_series", "inputs": [t.vertex]}, suffix="reversed")
    b = cx.emit({"type": kind, "inputs": [r], "out": units, **settings}, pb, suffix="backward")
    bl = cx.emit({"type": "time_step", "inputs": [b], "index": -1}, suffix="backward_last")
    if mode == "concat":
        v = {"type": "merge", "inputs": [fl, bl], "axis": 1}
    else:
        v = {"type": "elementwise", "inputs": [fl, bl], "op": {"sum": "add", "mul": "product", "ave": "average"}[mode]}
    return _T(cx.emit(v), (width,))


def _embedding(cx, L: _Layer, ins):
    c = L.config
    if c.get("mask_zero"):
        cx.bad(L, "mask_zero=True (a mask computed from the values)")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    if not t.indices:
        cx.bad(L, "an input that is not a model input of class indices")
        raise _Poisoned()
    vocab, dim = int(c["input_dim"]), int(c["output_dim"])
    (w,) = cx.read(L, [("", [("embeddings", (vocab, dim))])])
    v = {"type": "embedding_sequence", "inputs": [t.vertex], "num_embeddings": vocab, "out": dim, "bias": False,
         "activation": "identity"}
    return _T(cx.emit(v, {"weight": w}), (t.shape[0], dim))


CONVERTERS: dict[str, Callable] = {
    "Conv2D": _conv2d, "Convolution2D": _conv2d, "DepthwiseConv2D": _depthwise, "SeparableConv2D": _depthwise,
    "SeparableConvolution2D": _depthwise, "Conv2DTranspose": _deconv, "Conv1D": _conv1d, "Convolution1D": _conv1d,
    "Dense": _dense, "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "MaxPooling2D": _pool2d, "AveragePooling2D": _pool2d, "MaxPool2D": _pool2d, "AvgPool2D": _pool2d,
    "MaxPooling1D": _pool1d, "AveragePooling1D": _pool1d, "MaxPool1D": _pool1d, "AvgPool1D": _pool1d,
    "GlobalAveragePooling2D": _global_pool, "GlobalMaxPooling2D": _global_pool, "GlobalAvgPool2D": _global_pool,
    "GlobalMaxPool2D": _global_pool, "GlobalAveragePooling1D": _global_pool, "GlobalMaxPooling1D": _global_pool,
    "Flatten": _flatten, "Reshape": _reshape, "Permute": _permute,
    "Activation": _activation_layer, "ReLU": _activation_layer, "LeakyReLU": _activation_layer,
    "Softmax": _activation_layer, "ELU": _activation_layer,
    "Dropout": _dropout, "SpatialDropout1D": _dropout, "SpatialDropout2D": _dropout, "GaussianNoise": _dropout,
    "GaussianDropout": _dropout, "AlphaDropout": _dropout, "ActivityRegularization": _dropout,
    **{k: _elementwise for k in MERGE_OPS}, "Concatenate": _concatenate,
    "ZeroPadding2D": _zero_padding, "Cropping2D": _cropping, "UpSampling2D": _upsampling, "Rescaling": _rescaling,
    "LSTM": _rnn, "GRU": _rnn, "SimpleRNN": _rnn, "Bidirectional": _bidirectional, "Embedding": _embedding,
}
PERM_AWARE = {_dense, _batchnorm, _layernorm, _activation_layer, _dropout, _elementwise, _concatenate, _rescaling,
              _flatten}
