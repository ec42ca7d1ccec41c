"""Export a model for use outside graphspec: ONNX (nodes named after the spec's vertices) or TorchScript.

ONNX goes through torch's own exporter (``torch.onnx.export(dynamo=True)``, built on ``torch.export``), without
its graph optimiser, so that every ONNX node comes from exactly one vertex; each node is then renamed
``<vertex>/<OpType>`` (``stem-cnn1/Conv``, ``inception-3a-3x3/Relu``) from the module scope the exporter records,
which is what Netron and other viewers show. onnxruntime fuses convolutions and batch norms itself when it loads
the file. The batch dimension is dynamic, every intermediate value carries its shape, and the file's metadata
records the spec's name, its outputs and the preprocessing the inputs need.

Both formats take inputs already preprocessed (``model.graphspec.preprocessing``: crop, size, channel order,
scale) in NCHW float32; they compute the model's outputs in inference mode.
"""
from __future__ import annotations

import ast
import contextlib
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch

from .errors import GraphspecError, Location

FORMATS = ("onnx", "torchscript")
ONNX_EXTRA = "ONNX export needs the optional packages onnx and onnxscript: pip install 'graphspec[onnx]'"


@dataclass
class ExportReport:
    path: str
    format: str
    nodes: int = 0
    vertices: int = 0  # vertices that own at least one ONNX node
    ops: Counter = field(default_factory=Counter)
    max_abs_diff: float | None = None  # onnxruntime (or TorchScript) against PyTorch on the check input

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.format})"]
        if self.nodes:
            top = ", ".join(f"{op} {n}" for op, n in self.ops.most_common(6))
            out.append(f"{self.nodes} nodes from {self.vertices} vertices ({top}, ...)")
        if self.max_abs_diff is not None:
            out.append(f"checked against PyTorch on a random batch of 3: max abs difference {self.max_abs_diff:.2e}")
        return out


class _Positional(torch.nn.Module):
    """The model with positional inputs and a tuple of outputs in the spec's order (what exporters want)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.outputs = list(model.graphspec.spec.outputs)

    def forward(self, *xs):
        y = self.model(*xs)
        return tuple(y[o] for o in self.outputs) if isinstance(y, dict) else (y,)


def example_inputs(model, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the spec's input shapes (uniform in [0, 1), like preprocessed images)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, *i.shape, generator=g) for i in model.graphspec.spec.inputs.values())


def export(model, path: str | os.PathLike, *, format: str = "onnx", check: bool = True,
           opset: int | None = None) -> ExportReport:
    """Write ``model`` (a module built or loaded by graphspec) to ``path`` as ONNX or TorchScript.

    With ``check``, the written file is run on a random batch (onnxruntime for ONNX, when installed) and the
    largest absolute difference from PyTorch is reported.
    """
    path = str(path)
    if format not in FORMATS:
        raise GraphspecError(f"unknown export format '{format}' (expected one of: {', '.join(FORMATS)})",
                             location=Location(path))
    model.eval()
    wrapped = _Positional(model).eval()
    if format == "torchscript":
        report = _torchscript(wrapped, path)
    else:
        report = _onnx(wrapped, path, opset)
    if check:
        report.max_abs_diff = _check(wrapped, path, format)
    return report


def _torchscript(wrapped, path: str) -> ExportReport:
    # Tracing (not scripting): the compiled graph is static, so a trace records all of it.
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(wrapped, example_inputs(wrapped.model), check_trace=False)
    with _quiet():
        _atomic(path, lambda tmp: torch.jit.save(traced, tmp))
    return ExportReport(path, "torchscript")


def _onnx(wrapped, path: str, opset: int | None) -> ExportReport:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise GraphspecError(ONNX_EXTRA, location=Location(path)) from e
    info = wrapped.model.graphspec
    inputs = list(info.spec.inputs)
    batch = torch.export.Dim("batch")
    kwargs = {"opset_version": opset} if opset else {}
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(
            wrapped, example_inputs(wrapped.model), None, dynamo=True, optimize=False, verbose=False,
            input_names=inputs, output_names=wrapped.outputs,
            dynamic_shapes=(tuple({0: batch} for _ in inputs),), **kwargs)  # forward(*xs): one tuple argument
    proto = program.model_proto
    report = ExportReport(path, "onnx")
    report.vertices = name_nodes(proto.graph, set(info.spec.vertices))
    report.nodes, report.ops = len(proto.graph.node), Counter(n.op_type for n in proto.graph.node)
    _describe(proto, info)
    import onnx
    onnx.checker.check_model(proto)
    _atomic(path, lambda tmp: onnx.save(proto, tmp))
    return report


@contextlib.contextmanager
def _quiet():
    """The exporter's notes (optional torchvision ops, deprecations) are not the user's business."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def name_nodes(graph, vertices: set[str]) -> int:
    """Rename every node ``<vertex>/<OpType>`` (``_2``, ``_3`` … when a vertex has several of one type) from the
    module scope the exporter records; returns how many vertices own nodes. Nodes outside any vertex keep their
    names (shape arithmetic of the wrapper, if any)."""
    seen: Counter = Counter()
    owners = set()
    for node in graph.node:
        vertex = _vertex_of(node, vertices)
        if vertex is None:
            continue
        owners.add(vertex)
        key = f"{vertex}/{node.op_type}"
        seen[key] += 1
        node.name = key if seen[key] == 1 else f"{key}_{seen[key]}"
    return len(owners)


def _vertex_of(node, vertices: set[str]) -> str | None:
    meta = {p.key: p.value for p in node.metadata_props}
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    except (ValueError, SyntaxError):
        return None
    # scopes: ['', 'model.<vertex>[.<inner module>]', '<op>'] ('model' is the _Positional wrapper's attribute)
    path = scopes[1] if len(scopes) > 2 else ""
    if not path.startswith("model."):
        return None
    vertex = path[len("model."):].split(".")[0]
    return vertex if vertex in vertices else None


def _describe(proto, info) -> None:
    import json
    proto.doc_string = f"graphspec model '{info.spec.name}': inputs preprocessed as recorded in metadata"
    prep = info.preprocessing
    meta = {"graphspec.spec": info.spec.name, "graphspec.outputs": ",".join(info.spec.outputs)}
    if prep is not None:
        meta["graphspec.preprocessing"] = prep.model_dump_json() if hasattr(prep, "model_dump_json") \
            else json.dumps(prep)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _check(wrapped, path: str, format: str) -> float | None:
    xs = example_inputs(wrapped.model, batch=3, seed=1)  # another batch size than the export's: dynamic batch
    with torch.no_grad():
        want = wrapped(*xs)
    if format == "torchscript":
        with _quiet():
            got = torch.jit.load(path)(*xs)
        return max(float((a - b).abs().max()) for a, b in zip(got, want))
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})
    return max(float(abs(torch.from_numpy(a) - b).max()) for a, b in zip(got, want))


def _atomic(path: str, write) -> None:
    """The model files' atomic writer, with a located error instead of an OSError."""
    from .model_io import atomic_write
    try:
        atomic_write(path, write)
    except OSError as e:
        raise GraphspecError(f"cannot write the exported model: {e.strerror or e}", location=Location(path)) \
            from e
