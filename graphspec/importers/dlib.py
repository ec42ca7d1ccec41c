"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) -> a graphspec spec and its
weights (docs/import.md, "dlib").

The file is dlib's own serialisation of one fixed network (``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``):
no header, dlib integers (a control byte, then little-endian magnitude bytes), dlib's portable floats (mantissa,
then exponent), raw float32 tensors. The file does not say which tensor each residual addition reads, so the
architecture is written here and the file is checked against it record by record: every version string, shape,
kernel, stride and padding. Anything else is refused with the byte offset where it stops matching; no size read
from the file is trusted before it is checked against what the architecture expects and the bytes that are left.

The network in graphspec terms:

* ``pixels``: RGB values 0-255, NCHW, 150x150. ``normalize`` is a batchnorm with locked gamma/beta, mean = the
  file's channel means and variance 256² (so ``(x - mean) / 256``, exactly dlib's input layer).
* dlib's ``affine`` layers (batch norm folded by dlib) are ``batchnorm`` vertices in inference form: running mean 0,
  running variance 1, weight γ, bias β (graphspec's inference has no eps: exact).
* dlib's residual addition zero-extends the smaller operand (channels at the end, rows at the bottom, columns at the
  right). In the down units the shortcut (avg-pooled input) gets its missing channels from ``merge`` with a
  ``scale`` by 0 of itself, and the branch gets its missing rows/columns from ``zero_padding`` (bottom/right); then
  a plain ``elementwise add``. No parameters are added.
* The head: global average pool and a dense layer without bias: the 128-d descriptor, not normalised.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import Location
from .common import Imported, ImportRefused

SIZE = 150
MAX_FILE = 64 << 20  # the real file is 22,466,066 bytes

# ---------------------------------------------------------------------------------------------------------------
# The architecture, in the file's body order (forward order; tags and skips included, they have no body)


def _architecture() -> list[tuple]:
    """Entries ``(kind, ...)``: ("con", in, out, k, stride, pad), ("affine", C), ("relu",), ("max_pool", k, s),
    ("avg_pool", k, s) (k = 0: the whole map), ("add",), ("tag",), ("skip",), ("fc", in, out)."""
    arch: list[tuple] = [("con", 3, 32, 7, 2, 0), ("affine", 32), ("relu",), ("max_pool", 3, 2)]

    def ident(n):
        arch.extend([("tag",), ("con", n, n, 3, 1, 1), ("affine", n), ("relu",), ("con", n, n, 3, 1, 1),
                     ("affine", n), ("add",), ("relu",)])

    def down(c, n):
        arch.extend([("tag",), ("con", c, n, 3, 2, 0), ("affine", n), ("relu",), ("con", n, n, 3, 1, 1),
                     ("affine", n), ("tag",), ("skip",), ("avg_pool", 2, 2), ("add",), ("relu",)])

    # (width, identity blocks before the down block, the down block's output width), in forward order
    for width, repeats, wider in ((32, 3, 64), (64, 3, 128), (128, 2, 256), (256, 2, 256)):
        for _ in range(repeats):
            ident(width)
        down(width, wider)
    arch.extend([("avg_pool", 0, 1), ("fc", 256, 128)])
    return arch


ARCH = _architecture()
STAGES = [("l4", 32, [False] * 3), ("l3", 64, [True] + [False] * 3), ("l2", 128, [True] + [False] * 2),
          ("l1", 256, [True] + [False] * 2), ("l0", 256, [True])]  # forward order: (name, width, down?)

# ---------------------------------------------------------------------------------------------------------------
# Reading dlib's serialisation


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def refuse(self, what: str, at: int | None = None):
        at = self.pos if at is None else at
        raise ImportRefused(f"{self.path.name} is not dlib's face recognition model "
                            f"(dlib_face_recognition_resnet_model_v1): {what} at byte {at:,}",
                            location=Location(str(self.path)))

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise ImportRefused(f"{self.path.name} is truncated: it ends at byte {len(self.data):,}, inside {what} "
                                f"(starting at byte {self.pos:,})", location=Location(str(self.path)))
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int_(self, what: str) -> int:
        start = self.pos
        control = self.take(1, what)[0]
        n = control & 0x0F
        if control & 0x70 or not 1 <= n <= 8:
            self.refuse(f"{what}: byte 0x{control:02x} does not start a dlib integer", start)
        value = int.from_bytes(self.take(n, what), "little")
        return -value if control & 0x80 else value

    def expect_int(self, expected: int, what: str) -> int:
        start = self.pos
        value = self.int_(what)
        if value != expected:
            self.refuse(f"{what} is {value}, expected {expected}", start)
        return value

    def bool_(self, what: str) -> bool:
        start = self.pos
        b = self.take(1, what)[0]
        if b not in (0x30, 0x31):
            self.refuse(f"{what}: byte 0x{b:02x} is not a dlib bool", start)
        return b == 0x31

    def string(self, what: str) -> str:
        start = self.pos
        n = self.int_(what)
        if not 0 <= n <= 64:
            self.refuse(f"{what}: a string of {n} bytes", start)
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            self.refuse(f"{what}: not an ASCII string", start)

    def expect_string(self, allowed: tuple[str, ...], what: str) -> str:
        start = self.pos
        s = self.string(what)
        if s not in allowed:
            self.refuse(f"{what} is {s!r}, expected {' or '.join(repr(a) for a in allowed)}", start)
        return s

    def real(self, what: str) -> float:
        """dlib's portable float: the mantissa, then the exponent, value = M·2^E."""
        start = self.pos
        mantissa, exponent = self.int_(what), self.int_(what)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        if abs(mantissa) >= 1 << 64 or abs(exponent) > 2000:
            self.refuse(f"{what}: not a dlib float", start)
        return math.ldexp(mantissa, exponent)

    def dims(self, version: int, what: str, expected: tuple[int, ...] | None, bounded: bool = True) -> tuple[int, ...]:
        """An alias tensor (version 1) or a tensor's header (version 2): n, k, nr, nc. ``bounded=False``: the caller
        checks the shape against its own expectations."""
        start = self.pos
        self.expect_int(version, f"{what}: the tensor format")
        shape = tuple(self.int_(what) for _ in range(4))
        if expected is not None and shape != expected:
            self.refuse(f"{what} has shape {list(shape)}, expected {list(expected)}", start)
        if bounded and any(d < 0 or d > 1 << 31 for d in shape):
            self.refuse(f"{what} has shape {list(shape)}", start)
        return shape

    def tensor(self, what: str, expected: tuple[int, ...] | None) -> np.ndarray:
        """A resizable_tensor (format 2): n, k, nr, nc and raw little-endian float32. ``expected=None``: any shape
        (trailers; their contents are skipped), still bounded by the bytes left."""
        shape = self.dims(2, what, expected)
        count = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * count, f"{what} ({count:,} floats)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def multipliers(self, what: str, n: int = 4) -> None:
        for _ in range(n):
            self.real(f"{what}: a learning-rate/weight-decay multiplier")


def _trailer(r: _Reader, what: str, innermost: bool) -> None:
    """Training state after each layer record (ignored): three bools and three tensors, plus the sample expansion
    factor for the wrapper directly on the input layer."""
    for field in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        r.bool_(f"{what}: {field}")
    for field in ("x_grad", "cached_output", "grad_final" if innermost else "params_grad"):
        r.tensor(f"{what}: {field}", None)
    if innermost:
        r.expect_int(1, f"{what}: sample_expansion_factor")


def _layer(r: _Reader, entry: tuple, what: str) -> dict[str, np.ndarray]:
    kind = entry[0]
    if kind == "con":
        _, c, f, k, s, p = entry
        version = r.expect_string(("con_4", "con_5", "con_6"), f"{what}: the record")
        start = r.pos
        shape = r.dims(2, f"{what}: params", None, bounded=False)
        full, bare = (f * c * k * k + f, 1, 1, 1), (f * c * k * k, 1, 1, 1)
        if shape not in (full, bare) or (version == "con_4" and shape != full):
            r.refuse(f"{what}: params has shape {list(shape)}, expected {list(full)}", start)
        params = np.frombuffer(r.take(4 * shape[0], f"{what}: params ({shape[0]:,} floats)"), dtype="<f4")
        for field, value in (("num_filters", f), ("nr", k), ("nc", k), ("stride_y", s), ("stride_x", s),
                             ("padding_y", p), ("padding_x", p)):
            r.expect_int(value, f"{what}: {field}")
        r.dims(1, f"{what}: the filters alias", (f, c, k, k))
        bias_alias = r.dims(1, f"{what}: the biases alias", None)
        r.multipliers(what)
        use_bias = True
        if version != "con_4":
            use_bias = r.bool_(f"{what}: use_bias")
            if version == "con_6" and r.bool_(f"{what}: use_relu"):
                r.refuse(f"{what}: a convolution with a fused ReLU (dlib's fuse_layers)")
        if use_bias != (shape == full) or bias_alias != ((1, f, 1, 1) if use_bias else (0, 0, 0, 0)):
            r.refuse(f"{what}: the bias does not match its params", start)
        weight = params[:f * c * k * k].astype(np.float32).reshape(f, c, k, k)
        bias = params[f * c * k * k:].astype(np.float32) if use_bias else np.zeros(f, np.float32)
        return {"weight": weight, "bias": bias}
    if kind == "affine":
        _, c = entry
        version = r.expect_string(("affine_", "affine_2"), f"{what}: the record")
        params = r.tensor(f"{what}: params", (2 * c, 1, 1, 1)).reshape(-1)
        r.dims(1, f"{what}: the gamma alias", (1, c, 1, 1))
        r.dims(1, f"{what}: the beta alias", (1, c, 1, 1))
        r.expect_int(0, f"{what}: mode (0 = per channel)")
        if version == "affine_2" and r.bool_(f"{what}: disabled"):
            r.refuse(f"{what}: a disabled affine layer")
        return {"weight": params[:c].copy(), "bias": params[c:].copy(),
                "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}
    if kind == "relu":
        version = r.expect_string(("relu_", "relu_2"), f"{what}: the record")
        if version == "relu_2" and r.bool_(f"{what}: disabled"):
            r.refuse(f"{what}: a disabled ReLU")
        return {}
    if kind in ("max_pool", "avg_pool"):
        _, k, s = entry
        r.expect_string((f"{kind}_2",), f"{what}: the record")
        for field, value in (("nr", k), ("nc", k), ("stride_y", s), ("stride_x", s), ("padding_y", 0),
                             ("padding_x", 0)):
            r.expect_int(value, f"{what}: {field}")
        return {}
    if kind == "add":
        r.expect_string(("add_prev_",), f"{what}: the record")
        return {}
    if kind == "fc":
        _, n_in, n_out = entry
        version = r.expect_string(("fc_2", "fc_3"), f"{what}: the record")
        r.expect_int(n_out, f"{what}: num_outputs")
        r.expect_int(n_in, f"{what}: num_inputs")
        params = r.tensor(f"{what}: params", (n_in, n_out, 1, 1))
        r.dims(1, f"{what}: the weights alias", (n_in, n_out, 1, 1))
        r.dims(1, f"{what}: the biases alias", (0, 0, 0, 0))
        r.expect_int(1, f"{what}: bias_mode (1 = no bias)")
        r.multipliers(what)
        if version == "fc_3" and r.bool_(f"{what}: use_bias"):
            r.refuse(f"{what}: a biased fc layer")
        return {"weight": np.ascontiguousarray(params.reshape(n_in, n_out).T)}  # dlib: [in, out]; torch: [out, in]
    raise AssertionError(kind)


def read_dat(path: Path) -> tuple[list[dict[str, np.ndarray]], tuple[float, float, float]]:
    """The parameters of each body (forward order, tags and skips as {}) and the input layer's channel means."""
    size = path.stat().st_size
    if size > MAX_FILE:
        raise ImportRefused(f"{path.name} is {size:,} bytes: too large for dlib's face recognition model "
                            f"(about 22 MB)", location=Location(str(path)))
    r = _Reader(path.read_bytes(), path)
    r.expect_int(1, "the loss wrapper's version")
    loss = r.expect_string(("loss_metric_2", "loss_metric_"), "the loss record")
    if loss == "loss_metric_2":
        r.real("the loss margin"), r.real("the loss distance threshold")
    for i, entry in enumerate(reversed(ARCH)):  # wrapper versions: outermost (fc) first
        expected = 1 if entry[0] in ("tag", "skip") else (3 if i == len(ARCH) - 1 else 2)
        r.expect_int(expected, f"the version of wrapper {i} ({entry[0]})")
    r.expect_string(("input_rgb_image_sized",), "the input layer's record")
    means = tuple(float(np.float32(r.real(f"the input layer's mean {c}"))) for c in ("red", "green", "blue"))
    r.expect_int(SIZE, "the input layer's rows")
    r.expect_int(SIZE, "the input layer's columns")
    bodies = []
    for i, entry in enumerate(ARCH):
        if entry[0] in ("tag", "skip"):
            bodies.append({})
            continue
        what = f"layer body {i} ({entry[0]})"
        bodies.append(_layer(r, entry, what))
        _trailer(r, what, innermost=(i == 0))
    if r.pos != size:
        r.refuse(f"{size - r.pos:,} bytes after the last layer")
    return bodies, means


# ---------------------------------------------------------------------------------------------------------------
# The spec


def import_dlib(path: "str | os.PathLike", name: str | None = None) -> Imported:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` into an :class:`Imported` network: input ``pixels``
    (RGB 0-255, 150x150, NCHW), output ``descriptor`` (128 values, dlib's, not normalised)."""
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"no such file: {path}", location=Location(str(path)))
    bodies, means = read_dat(path)
    params = iter([b for b in bodies if b])
    vertices: dict = {}
    weights: dict[str, np.ndarray] = {}

    def add(vname, vertex, w=None):
        vertices[vname] = vertex
        for k, v in (w or {}).items():
            weights[f"{vname}.{k}"] = v

    def conv_bn(prefix, source, out, k, stride, pad, relu):
        add(f"{prefix}-conv", {"type": "conv", "inputs": [source], "kernel": k, "stride": stride, "padding": pad,
                               "out": out}, next(params))
        add(f"{prefix}-affine", {"type": "batchnorm", "inputs": [f"{prefix}-conv"]}, next(params))
        if relu:
            add(f"{prefix}-relu", {"type": "activation", "inputs": [f"{prefix}-affine"], "activation": "relu"})
            return f"{prefix}-relu"
        return f"{prefix}-affine"

    add("normalize", {"type": "batchnorm", "inputs": ["pixels"], "lock_gamma_beta": True},
        {"running_mean": np.array(means, np.float32), "running_var": np.full(3, 65536.0, np.float32)})
    x = conv_bn("stem", "normalize", 32, 7, 2, 0, relu=True)
    add("stem-pool", {"type": "subsampling", "inputs": [x], "pooling": "max", "kernel": 3, "stride": 2})
    x, channels, size = "stem-pool", 32, 35
    for stage, width, downs in STAGES:
        for j, is_down in enumerate(downs, 1):
            u = f"{stage}-{j}"
            stride, pad = (2, 0) if is_down else (1, 1)
            branch = conv_bn(f"{u}-a", x, width, 3, stride, pad, relu=True)
            branch = conv_bn(f"{u}-b", branch, width, 3, 1, 1, relu=False)
            shortcut = x
            if is_down:  # dlib's add_prev zero-extends: pad the smaller operand at the end of each axis
                branch_size, pooled = (size - 3) // 2 + 1, size // 2
                add(f"{u}-shortcut", {"type": "subsampling", "inputs": [x], "pooling": "avg", "kernel": 2,
                                      "stride": 2})
                shortcut = f"{u}-shortcut"
                if width > channels:
                    assert width == 2 * channels
                    add(f"{u}-zeros", {"type": "scale", "inputs": [shortcut], "factor": 0.0})
                    add(f"{u}-widen", {"type": "merge", "inputs": [shortcut, f"{u}-zeros"]})
                    shortcut = f"{u}-widen"
                if pooled > branch_size:
                    extra = pooled - branch_size
                    add(f"{u}-extend", {"type": "zero_padding", "inputs": [branch], "padding": [0, extra, 0, extra]})
                    branch = f"{u}-extend"
                assert pooled >= branch_size
                size = pooled
            add(f"{u}-add", {"type": "elementwise", "op": "add", "inputs": [branch, shortcut]})
            add(u, {"type": "activation", "inputs": [f"{u}-add"], "activation": "relu"})
            x, channels = u, width
    add("pool", {"type": "global_pool", "inputs": [x], "pooling": "avg"})
    add("descriptor", {"type": "dense", "inputs": ["pool"], "out": 128, "bias": False}, next(params))
    assert next(params, None) is None
    spec_name = name or path.stem
    document = {"version": 1, "name": spec_name,
                "description": f"Imported from {path.name} (dlib's face recognition ResNet, 29 conv layers). Input: "
                               "an aligned 150x150 RGB face chip, pixel values 0-255; output: the 128-d descriptor "
                               "(same person when the Euclidean distance is below 0.6).",
                "defaults": {"activation": "identity", "convolution_mode": "truncate"},
                "inputs": {"pixels": {"type": "convolutional", "channels": 3, "height": SIZE, "width": SIZE}},
                "vertices": vertices, "outputs": ["descriptor"]}
    notes = ["dlib's affine layers (batch norm folded by dlib) are batchnorm vertices with mean 0 and variance 1",
             "dlib's zero-extending residual addition: merge with a zero copy (channels) and zero_padding "
             "bottom/right (rows, columns) before the add",
             f"input: RGB pixels 0-255; normalize subtracts the file's means {[round(m, 3) for m in means]} and "
             "divides by 256"]
    # dlib's chips: detector, 5 landmarks, get_face_chip 150 (graphspec.faces.align), RGB values 0..255 as they are
    from ..data.preprocessing import Preprocessing
    preprocessing = Preprocessing(size=(SIZE, SIZE), channels="rgb", scale="raw", align="dlib-5pt")
    return Imported(spec_name, document, weights, str(path), notes, preprocessing=preprocessing)


__all__ = ["import_dlib", "read_dat"]
