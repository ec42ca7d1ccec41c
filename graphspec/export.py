"""Export a model for use outside graphspec: ONNX (nodes named after the spec's vertices) or TorchScript.

ONNX goes through torch's own exporter (``torch.onnx.export(dynamo=True)``, built on ``torch.export``), without
its graph optimiser, so that every ONNX node comes from exactly one vertex; each node is then renamed
``<vertex>/<OpType>`` (``stem-cnn1/Conv``, ``inception-3a-3x3/Relu``) from the module scope the exporter records,
which is what Netron and other viewers show. onnxruntime fuses convolutions and batch norms itself when it loads
the file. The batch dimension is dynamic, every intermediate value carries its shape, and the file's metadata
records the spec's name, its outputs and the preprocessing the inputs need.

Both formats take inputs already preprocessed (``model.graphspec.preprocessing``: crop, size, channel order,
scale) in NCHW float32; they compute the model's outputs in inference mode. Sequences are ``[N, size, T]`` with a
fixed T: the input's ``length``, or for a sequence input without one the export's ``length`` (default
EXAMPLE_LENGTH), over which the exporter unrolls the step loops (:attr:`ExportReport.lengths`); shorter sequences
are padded to T and masked. With ``masks=True`` every sequence input ``x`` is followed by a mask input ``x_mask``
``[N, T]`` (float32, 1 = a real step, 0 = padding), the compiled module's ``x_mask``. (No dynamic time axis: torch's
exporter unrolls ``simple_rnn`` and every step loop over the example's steps, and its while-loop decompositions of
LSTM and GRU gave, for some graphs, files that fail at other lengths.)
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
from .spec.model import EXAMPLE_LENGTH

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
    masks: list[str] = field(default_factory=list)  # the mask inputs, after the inputs: "<input>_mask"
    # each sequence input without a fixed length of its own: the number of steps the file takes
    lengths: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.format})"]
        if self.nodes:
            top = ", ".join(f"{op} {n}" for op, n in self.ops.most_common(6))
            out.append(f"{self.nodes} nodes from {self.vertices} vertices ({top}, ...)")
        if self.masks:
            out.append(f"mask inputs after the inputs: {', '.join(self.masks)} [N, T] (1: a real step, 0: padding)")
        for name, steps in self.lengths.items():
            out.append(f"input '{name}': sequences of exactly {steps} steps (choose with --length; pad shorter ones "
                       "and mask them: --masks)")
        if self.max_abs_diff is not None:
            padded = " of sequences of random lengths, masked" if self.masks else ""
            out.append(f"checked against PyTorch on a random batch of 3{padded}: max abs difference "
                       f"{self.max_abs_diff:.2e}")
        return out


class _Positional(torch.nn.Module):
    """The model with positional inputs and a tuple of outputs in the spec's order (what exporters want). With
    ``masks``, the inputs are followed by the masks of the sequence inputs (:func:`mask_inputs`), in that order:
    the compiled forward's positional order."""

    def __init__(self, model, masks: bool = False, length: int | None = None, device: str = "cpu"):
        super().__init__()
        self.model, self.device = model, device
        self.outputs = list(model.graphspec.spec.outputs)
        self.masks = mask_inputs(model) if masks else []
        self.length = length  # the examples' T for sequence inputs without a fixed length

    def forward(self, *xs):
        y = self.model(*xs)
        return tuple(y[o] for o in self.outputs) if isinstance(y, dict) else (y,)

    def input_names(self) -> list[str]:
        return list(self.model.graphspec.spec.inputs) + [f"{name}_mask" for name in self.masks]

    def examples(self, batch: int, seed: int, length: int | None = None) -> tuple[torch.Tensor, ...]:
        length = length or self.length
        from .devices import to
        xs = example_inputs(self.model, batch, seed, length)
        return to(xs + example_masks(self.model, batch, seed, length) if self.masks else xs, self.device)

    def dynamic_shapes(self) -> tuple:
        """torch.export's dynamic dimensions, per positional input: the batch."""
        batch = torch.export.Dim("batch")
        return tuple({0: batch} for _ in self.input_names())


def mask_inputs(model) -> list[str]:
    """The inputs that take a mask: the sequences ``[size, T]`` (the compiled forward's ``<input>_mask``)."""
    spec = model.graphspec.spec
    return [name for name in spec.inputs if len(spec.input_shape(name)) == 2]


def variable_inputs(model) -> list[str]:
    """The sequence inputs without a fixed length (``{type: recurrent, size: S}``)."""
    spec = model.graphspec.spec
    return [name for name in spec.inputs if spec.is_variable(name)]


def index_classes(spec, name: str) -> int | None:
    """How many classes the indices of input ``name`` may take when it feeds layers whose nIn is a class count
    (registry fact ``n_in_is_parameter``: embeddings; the smallest among the vertices reading it), else None."""
    counts = [spec.analysis.inference[v.shares or v.name].n_in for v in spec.vertices.values()
              if name in v.inputs and v.entry.n_in_is_parameter]
    return min(counts) if counts else None


def example_inputs(model, batch: int = 2, seed: int = 0, length: int | None = None) -> tuple[torch.Tensor, ...]:
    """Random inputs of the spec's input shapes: uniform in [0, 1), like preprocessed images, or, for an input that
    feeds embeddings, class indices 0..num_embeddings-1 (as floats, what the data gives). A sequence input without
    a fixed length gets ``length`` steps (default EXAMPLE_LENGTH)."""
    g = torch.Generator().manual_seed(seed)
    spec = model.graphspec.spec
    out = []
    for name in spec.inputs:
        shape, classes = (batch, *spec.input_shape(name, length)), index_classes(spec, name)
        out.append(torch.rand(shape, generator=g) if classes is None
                   else torch.randint(0, classes, shape, generator=g).float())
    return tuple(out)


def example_masks(model, batch: int = 2, seed: int = 0, length: int | None = None) -> tuple[torch.Tensor, ...]:
    """A mask [batch, T] for each sequence input: example i has its first L_i steps real and the rest padding, with
    L_0 = T and the other lengths random in 1..T (so that padding is exercised)."""
    g = torch.Generator().manual_seed(seed + 1)
    spec = model.graphspec.spec
    out = []
    for name in mask_inputs(model):
        steps = spec.input_shape(name, length)[1]
        lengths = torch.randint(1, steps + 1, (batch,), generator=g)
        lengths[0] = steps
        out.append((torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)).float())
    return tuple(out)


def export(model, path: str | os.PathLike, *, format: str = "onnx", check: bool = True,
           opset: int | None = None, masks: bool = False, length: int | None = None,
           device: str = "cpu") -> ExportReport:
    """Write ``model`` (a module built or loaded by graphspec) to ``path`` as ONNX or TorchScript.

    With ``masks``, the exported model takes after its inputs a mask ``<input>_mask`` [N, T] (float32, 1 = a real
    step, 0 = padding) for each sequence input, as the compiled forward's ``<input>_mask``; all ones is the
    unmasked result (within rounding: the masked recurrent layers run their step loop, not torch's fused kernel).
    A sequence input without a fixed length of its own is exported at ``length`` steps (default EXAMPLE_LENGTH):
    the file takes exactly that many. With ``check``, the written file is run on a random batch (onnxruntime for
    ONNX, when installed; with masks, sequences of random lengths) and the largest absolute difference from
    PyTorch is reported. ``device``: where the model is traced (the file is the same; a large model may trace
    faster on a GPU).
    """
    path = str(path)
    if format not in FORMATS:
        raise GraphspecError(f"unknown export format '{format}' (expected one of: {', '.join(FORMATS)})",
                             location=Location(path))
    if masks and not mask_inputs(model):
        raise GraphspecError("cannot export masks: the model has no sequence input ([size, T]) to mask",
                             location=Location(path))
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise GraphspecError(f"the export length must be a positive number of steps; received {length!r}",
                                 location=Location(path))
        if not variable_inputs(model):
            raise GraphspecError("an export length applies to sequence inputs without a fixed length; this model "
                                 "has none", location=Location(path))
    model.eval().to(device)
    wrapped = _Positional(model, masks, length, device).eval()
    if format == "torchscript":
        report = _torchscript(wrapped, path)
    else:
        report = _onnx(wrapped, path, opset)
    report.masks = [f"{name}_mask" for name in wrapped.masks]
    report.lengths = {name: length or EXAMPLE_LENGTH for name in variable_inputs(model)}
    if check:
        report.max_abs_diff = _check(wrapped, path, format)
    return report


def _torchscript(wrapped, path: str) -> ExportReport:
    # Tracing (not scripting): the compiled graph is static, so a trace records all of it.
    with torch.no_grad(), _quiet():
        traced = torch.jit.trace(wrapped, wrapped.examples(2, 0), check_trace=False)
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
    inputs = wrapped.input_names()
    kwargs = {"opset_version": opset} if opset else {}
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(
            wrapped, wrapped.examples(2, 0), None, dynamo=True, optimize=False, verbose=False,
            input_names=inputs, output_names=wrapped.outputs,
            dynamic_shapes=(wrapped.dynamic_shapes(),), **kwargs)  # forward(*xs): one tuple argument
    proto = program.model_proto
    report = ExportReport(path, "onnx")
    report.vertices = name_nodes(proto.graph, set(info.spec.vertices))
    report.nodes, report.ops = len(proto.graph.node), Counter(n.op_type for n in proto.graph.node)
    _describe(proto, info, wrapped.masks)
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


def _describe(proto, info, masks: list[str] = ()) -> None:
    import json
    proto.doc_string = f"graphspec model '{info.spec.name}': inputs preprocessed as recorded in metadata"
    prep = info.preprocessing
    meta = {"graphspec.spec": info.spec.name, "graphspec.outputs": ",".join(info.spec.outputs),
            # the flat spec, so that `graphspec import` gives back exactly this network (docs/import.md)
            "graphspec.document": json.dumps(info.spec.to_dict())}
    if masks:  # which graph inputs are masks [N, T] (1 = a real step, 0 = padding), and of which input
        meta["graphspec.masks"] = ",".join(f"{name}_mask" for name in masks)
    if prep is not None:
        meta["graphspec.preprocessing"] = prep.model_dump_json() if hasattr(prep, "model_dump_json") \
            else json.dumps(prep)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _check(wrapped, path: str, format: str) -> float | None:
    xs = wrapped.examples(3, 1)  # another batch size than the export's: dynamic batch
    with torch.no_grad():
        want = wrapped(*xs)
    if format == "torchscript":
        with _quiet(), torch.no_grad():
            got = torch.jit.load(path)(*xs)
        return max(float((a - b).abs().max()) for a, b in zip(got, want))
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimiser's notes (constant folding) are not the user's
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: x.cpu().numpy() for n, x in zip(names, xs)})
    return max(float(abs(torch.from_numpy(a) - b.cpu()).max()) for a, b in zip(got, want))


def _atomic(path: str, write) -> None:
    """The model files' atomic writer, with a located error instead of an OSError."""
    from .model_io import atomic_write
    try:
        atomic_write(path, write)
    except OSError as e:
        raise GraphspecError(f"cannot write the exported model: {e.strerror or e}", location=Location(path)) \
            from e
