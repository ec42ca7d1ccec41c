"""ONNX -> a graphspec spec and its weights (docs/import.md).

The file is read without running anything: protobuf only, external data only from files inside the model's folder
and within their size. Old opsets are converted to opset 13 by ONNX's own version converter. Constant subgraphs
(weights computed by Constant/ConstantOfShape/Cast/... nodes, shapes of static tensors) are folded with ONNX's
reference evaluator, within a size limit. Every remaining node becomes a vertex named after it, through the
translations in ``TRANSLATIONS`` (one function per operator type); anything not expressible exactly is collected
and refused, one line per (operator, detail), before anything is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import Location
from ..common import Imported, ImportRefused
from .reading import _opset, read
from .graph import Graph, _static, fold
from .translations import TRANSLATIONS


def import_onnx(path: Path, name: str | None = None) -> Imported:
    import importlib.util
    if importlib.util.find_spec("onnx") is None:
        raise ImportRefused("importing ONNX needs the onnx package: pip install 'graphspec[onnx]'",
                            location=Location(str(path)))
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
        if node.output[0] in g.absorbed:
            continue
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

    from ...compiler import build
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
    from ...errors import SpecError
    from ...spec.loader import load_spec
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

    from ...export import example_inputs
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
