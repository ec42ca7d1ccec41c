"""The framework's commands: a spec or model in, a summary, a drawing, a model file, an export out."""
from __future__ import annotations

import json
import sys

from ..opening import open, open_spec
from ..text import printable
from .common import console


def cmd_summary(args) -> int:
    from ..summary import render_json, render_markdown, render_table, summarize
    spec, frozen = open_spec(args.spec)
    s = summarize(spec, batch_size=args.batch_size, frozen=set(frozen))
    if args.format == "json":
        print(render_json(s))
    elif args.format == "markdown":
        print(render_markdown(s), end="")
    else:
        render_table(s, console())
    for w in s.warnings:
        print(w, file=sys.stderr)
    return 0


def cmd_validate(args) -> int:
    """A spec file, or the spec a model file (or catalogued model) carries, checked statically."""
    from ..graph import analyze
    spec, _ = open_spec(args.spec, check_graph=False)
    a = analyze(spec, warn=False)
    for w in a.warnings:
        print(w, file=sys.stderr)
    print(f"{printable(args.spec)}: ok ({len(spec.vertices)} vertices, outputs: {', '.join(spec.outputs)})")
    return 0


def cmd_schema(args) -> int:
    from ..schema import json_schema
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_import(args) -> int:
    """Import an ONNX or Keras model: a readable spec and a model file, checked against onnxruntime (ONNX)."""
    from pathlib import Path

    from ..importers import import_model
    imported = import_model(args.model, name=args.name, format=getattr(args, "format", None))
    spec_path, model_path = imported.write(args.out)
    print(f"wrote {spec_path} ({len(imported.document['vertices'])} vertices) and {model_path}")
    for note in imported.notes:
        print(f"note: {note}")
    if args.no_check:
        return 0
    kind = getattr(args, "format", None) or Path(args.model).suffix.lower().lstrip(".")
    if kind == "onnx":
        from ..importers.onnx import check
        diff = check(imported)
        print("not checked: onnxruntime is not installed" if diff is None else
              f"checked against onnxruntime on a random batch of 2: max abs difference {diff:.3g}")
    elif kind in ("dlib", "dat"):
        print("not checked here: graphspec runs without dlib (the importer is compared with dlib in its tests)")
    else:
        print("not checked here: graphspec runs without Keras (the importer is compared with Keras in its tests)")
    return 0


def cmd_forward(args) -> int:
    """Build the spec and run a random batch through it, checking real shapes against the static ones."""
    import time

    import torch

    from ..budget import check, running
    from ..devices import resolve, to
    from ..export import example_inputs
    from ..opening import resolve as resolve_source
    device = resolve(args.device)
    spec, _ = open_spec(args.spec)
    check(spec, batch_size=args.batch_size)  # the batch's memory, before anything is allocated
    is_model = resolve_source(args.spec)[0] == "model"
    net = open(args.spec if is_model else spec, seed=args.seed)  # a spec is read once; a model file has weights
    info = net.graphspec
    net.train(args.train)
    xs = example_inputs(net, args.batch_size, args.seed or 0)  # class indices for the inputs of embeddings
    net.to(device)
    xs = to(list(xs), device)
    with torch.no_grad(), running(f"the forward pass of a batch of {args.batch_size}"):
        start = time.perf_counter()
        out = net(*xs)
        elapsed = time.perf_counter() - start
    outs = out if isinstance(out, dict) else {info.spec.outputs[0]: out}
    for name, tensor in outs.items():
        expected = (args.batch_size, *info.analysis.shapes[name])
        status = "ok" if tuple(tensor.shape) == expected else f"MISMATCH (static {list(expected)})"
        print(f"{name}: {list(tensor.shape)} {status}")
        if status != "ok":
            return 1
    print(f"forward of batch {args.batch_size} in {elapsed * 1000:.1f} ms "
          f"({args.batch_size / elapsed:.1f} examples/s, {'training' if args.train else 'inference'} mode)")
    return 0


def cmd_draw(args) -> int:
    from ..draw import draw
    spec, frozen = open_spec(args.source)
    path = draw(spec, args.output, frozen=frozen, depth=args.depth, fmt=args.format)
    print(f"wrote {path}")
    return 0


def cmd_upgrade(args) -> int:
    """Print a spec brought to the current language version (blocks and comments aside, unchanged)."""
    import yaml

    from ..errors import GraphspecError
    from ..spec import versions
    from ..spec.loader import check_version
    from ..spec.yaml_source import load_yaml
    src = load_yaml(args.spec)
    if not isinstance(src.data, dict):
        raise GraphspecError("expected a spec: a mapping with 'version', 'inputs', 'vertices' and 'outputs'",
                             location=src.loc(()))
    check_version(src.data, src)  # a newer spec than this graphspec reads is refused, not "upgraded"
    if src.data["version"] == versions.CURRENT:
        print(f"{src.file}: already at version {versions.CURRENT}, the current spec language; nothing to upgrade",
              file=sys.stderr)
    print(yaml.safe_dump(versions.upgrade(src.data, src.file), sort_keys=False, default_flow_style=None, width=120),
          end="")
    return 0


def cmd_init(args) -> int:
    """Build a spec with fresh seeded weights and save it as a model file (a model file is saved as it is)."""
    from ..model_io import save
    net = open(args.spec, seed=args.seed)
    path = save(net, args.output)
    print(f"wrote {path} ({len(net.graphspec.spec.vertices)} vertices, "
          f"{sum(t.numel() for t in net.state_dict().values()):,} values)")
    return 0


def cmd_snip(args) -> int:
    """Cut a model at the given outputs, as the tutorial does, and save the result."""
    from ..model_io import save
    from ..summary import render_table, summarize
    from ..surgery import snip
    model = open(args.model, seed=args.seed)
    freeze = [] if args.no_freeze else (args.freeze or None)
    new = snip(model, args.output, remove=args.remove or [], freeze=freeze)
    for line in new.graphspec.surgery.lines():
        print(line)
    info = new.graphspec
    render_table(summarize(info.spec, batch_size=1, frozen=set(info.frozen)), console())
    out = args.out or _snipped_name(args.model)
    save(new, out)
    print(f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    """Write a model as ONNX or TorchScript for use outside graphspec."""
    from ..devices import resolve
    from ..export import export
    device = resolve(args.device)  # a device this machine lacks is refused before the model is read
    model = open(args.model, seed=args.seed)
    report = export(model, args.out, format=args.format, check=not args.no_check, opset=args.opset, device=device,
                    masks=args.masks, length=args.length)
    for line in report.lines():
        print(line)
    return 0


def cmd_models(args) -> int:
    """The catalogued (trained) models, one line each: name, the first line of its model card, its file; then the
    zoo's architectures: name, trainable parameters, MACs per example, input, description."""
    from .. import catalog, load_spec, zoo
    from ..summary import summarize
    from ..text import printable
    models = catalog.available()
    print("trained models (graphspec embed / verify / open NAME):")
    if not models:
        print("  none (applications and plugins add them through the 'graphspec.models' entry points)")
    width = max((len(printable(name)) for name in models), default=0)
    for name, path in models.items():  # names, cards and paths come from plugins: escaped like any file's text
        about = printable(catalog.summary(name) or "")
        print(f"  {printable(name):<{width}}  {about + '  ' if about else ''}{printable(str(path))}")
    print("architectures (graphspec.build(\"NAME\"), graphspec summary / train NAME), untrained:")
    width = max(len(name) for name in zoo.names())
    for name in zoo.names():
        spec = load_spec(name)
        s = summarize(spec)
        shape = "x".join(str(d) for d in next(iter(s.inputs.values())))
        macs = "?" if s.macs is None else f"{s.macs / 1e9:.2f} G"
        print(f"  {name:<{width}}  {s.trainable:>11,} params  {macs:>9} MACs  {shape:<11}  {spec.description or ''}")
    return 0


def _snipped_name(path: str) -> str:
    from pathlib import Path
    p = Path(path)
    return str(p.with_name(p.name.split(".")[0] + "-snipped.safetensors"))

