"""The ``graphspec`` command line: a thin shell over the Python API.

Every error a user can cause is a :class:`GraphspecError`, printed as ``FILE:LINE:COL: vertex 'NAME': ...``
with exit status 2. Anything else is a bug: one line with exit status 3 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import GraphspecError

EXIT_USAGE, EXIT_INTERNAL = 2, 3


def _console(stderr: bool = False):
    from rich.console import Console
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pkl")


def is_model_file(path: str) -> bool:
    """Model files are safetensors (and checkpoints we refuse with a clear message); the rest is a spec."""
    from .model_io import looks_like_checkpoint
    if str(path).endswith(MODEL_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return (len(head) == 9 and head[8:9] == b"{") or looks_like_checkpoint(head)


def load_model_or_spec(path: str, seed: int | None = None):
    """A model file with its weights, the name of a model shipped with graphspec, or a spec (fresh weights)."""
    import os

    from . import models
    from .compiler import build
    from .model_io import load
    shipped = models.path(path) if not os.path.exists(path) else None
    if shipped is not None:
        return load(shipped)
    return load(path) if is_model_file(path) else build(path, seed=seed)


def cmd_summary(args) -> int:
    from . import models
    from .summary import render_json, render_markdown, render_table, summarize
    if is_model_file(args.spec) or models.path(args.spec) is not None:
        from .model_io import load
        info = load(args.spec).graphspec
        s = summarize(info.spec, batch_size=args.batch_size, frozen=set(info.frozen))
    else:
        s = summarize(args.spec, batch_size=args.batch_size)
    if args.format == "json":
        print(render_json(s))
    elif args.format == "markdown":
        print(render_markdown(s), end="")
    else:
        render_table(s, _console())
    for w in s.warnings:
        print(w, file=sys.stderr)
    return 0


def cmd_validate(args) -> int:
    from .graph import analyze
    from .spec.loader import load_spec
    spec = load_spec(args.spec, check_graph=False)
    a = analyze(spec, warn=False)
    for w in a.warnings:
        print(w, file=sys.stderr)
    print(f"{spec.file}: ok ({len(spec.vertices)} vertices, outputs: {', '.join(spec.outputs)})")
    return 0


def cmd_schema(args) -> int:
    from .schema import json_schema
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_forward(args) -> int:
    """Build the spec and run a random batch through it, checking real shapes against the static ones."""
    import time

    import torch

    from .compiler import build
    net = build(args.spec, seed=args.seed)
    info = net.graphspec
    net.train(args.train)
    xs = [torch.randn(args.batch_size, *info.spec.input_shape(n)) for n in info.spec.inputs]
    with torch.no_grad():
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
    from .draw import draw
    if is_model_file(args.source):
        from .model_io import load
        info = load(args.source).graphspec
        spec, frozen = info.spec, info.frozen
    else:
        from .spec.loader import load_spec
        spec, frozen = load_spec(args.source), frozenset()
    path = draw(spec, args.output, frozen=frozen, depth=args.depth, fmt=args.format)
    print(f"wrote {path}")
    return 0


def cmd_upgrade(args) -> int:
    """Print a spec brought to the current language version (blocks and comments aside, unchanged)."""
    import yaml

    from .spec import versions
    from .yamlsrc import load_yaml
    src = load_yaml(args.spec)
    data = src.data if isinstance(src.data, dict) else {}
    print(yaml.safe_dump(versions.upgrade(data, src.file), sort_keys=False, default_flow_style=None, width=120), end="")
    return 0


def cmd_init(args) -> int:
    """Build a spec with fresh seeded weights and save it as a model file."""
    from .compiler import build
    from .model_io import save
    net = build(args.spec, seed=args.seed)
    path = save(net, args.output)
    print(f"wrote {path} ({len(net.graphspec.spec.vertices)} vertices, "
          f"{sum(t.numel() for t in net.state_dict().values()):,} values)")
    return 0


def cmd_snip(args) -> int:
    """Cut a model at the given outputs, as the tutorial does, and save the result."""
    from .model_io import save
    from .summary import render_table, summarize
    from .surgery import snip
    model = load_model_or_spec(args.model, seed=args.seed)
    freeze = [] if args.no_freeze else (args.freeze or None)
    new = snip(model, args.output, remove=args.remove or [], freeze=freeze)
    for line in new.graphspec.surgery.lines():
        print(line)
    info = new.graphspec
    render_table(summarize(info.spec, batch_size=1, frozen=set(info.frozen)), _console())
    out = args.out or _snipped_name(args.model)
    save(new, out)
    print(f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    """Write a model as ONNX or TorchScript for use outside graphspec."""
    from .export import export
    model = load_model_or_spec(args.model, seed=args.seed)
    report = export(model, args.out, format=args.format, check=not args.no_check, opset=args.opset)
    for line in report.lines():
        print(line)
    return 0


def _snipped_name(path: str) -> str:
    from pathlib import Path
    p = Path(path)
    return str(p.with_name(p.name.split(".")[0] + "-snipped.safetensors"))


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            out.append(a)
    return out


def cmd_train(args) -> int:
    from .train import distributed
    from .train.run import train
    if args.nproc_per_node > 1 and not distributed.under_launcher():
        return distributed.launch(_without_nproc(args.argv), args.nproc_per_node)
    ctx = distributed.init_from_env()
    ok = False
    try:
        result = _train(args, train, ctx)
        ok = True
        return result
    finally:
        distributed.shutdown(ok)


def _train(args, train, ctx) -> int:
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                 "semantics": args.semantics, "print_every": args.print_every, "data.limit": args.limit,
                 "data.people": args.people, "data.min_images": args.min_images,
                 "data.eval_fraction": args.eval_fraction, "data.dl4j": True if args.dl4j_data else None,
                 "sync_batchnorm": True if args.sync_bn else None, "precision": args.precision,
                 "channels_last": {"on": True, "off": False}.get(args.channels_last)}
    trainer = train(args.spec, data=args.data, recipe_path=args.recipe, out=args.out, resume=args.resume,
                    overrides=overrides, console=_console() if ctx.is_main else None, ctx=ctx)
    metrics = trainer.evaluate() if trainer.eval_data is not None else {}
    if metrics:
        print("evaluation: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in metrics.items()))
    return 0


def cmd_embed(args) -> int:
    from rich.progress import Progress
    from .embed import embed, image_files, write
    model = load_model_or_spec(args.model)
    files = image_files(args.paths)
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("embedding", total=len(files))
        rows, done, skipped = embed(model, files, output=args.output, batch_size=args.batch_size, flip=args.flip,
                                    progress=lambda n: bar.update(task, completed=n), execution=_execution(args))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    written = write(rows, done, args.out)
    print(f"embedded {len(done)} images ({rows.shape[1] if rows.size else 0} values each) -> "
          + ", ".join(map(str, written)))
    return 0


def _execution(args):
    from .embed import Execution
    return Execution(channels_last=not args.no_channels_last, precision=args.precision, compile=args.compile)


def _execution_flags(p) -> None:
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: bfloat16 autocast (faster on AVX512-BF16 CPUs; rows change by ~1e-2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (compiles once: for big runs)")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW instead of the default NHWC layout")


def cmd_verify(args) -> int:
    from rich.progress import Progress
    from .verify.run import plot_roc, verify
    model = load_model_or_spec(args.model)
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("embedding pairs", total=None)
        report, d, same = verify(model, args.data, args.pairs, train_pairs=args.train_pairs,
                                 threshold=args.threshold, metric=args.metric,
                                 flip=args.flip, batch_size=args.batch_size,
                                 progress=lambda n: bar.update(task, completed=n), execution=_execution(args))
    if args.plot:
        plot_roc(d, same, report, args.plot)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphspec", description="graphspec: declarative neural-network graphs for "
                                "PyTorch with Deeplearning4j semantics (docs: README.md, docs/)")
    p.add_argument("--version", action="version", version=f"graphspec {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for internal errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("summary", help="print the vertices, shapes, parameters and totals of a spec")
    s.add_argument("spec", help="a spec or a model file")
    s.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    s.add_argument("--batch-size", type=_positive, default=1, help="for activation memory and MACs (default 1)")
    s.set_defaults(func=cmd_summary)

    v = sub.add_parser("validate", help="check a spec statically (exit 0 if valid, 2 with the errors)")
    v.add_argument("spec")
    v.set_defaults(func=cmd_validate)

    sc = sub.add_parser("schema", help="print the JSON Schema of the spec language")
    sc.set_defaults(func=cmd_schema)

    dr = sub.add_parser("draw", help="draw a spec or model: DOT, Mermaid, or SVG/PNG through Graphviz")
    dr.add_argument("source", help="a spec or a model file")
    dr.add_argument("-o", "--output", required=True, help="FILE.dot, FILE.mmd, FILE.svg or FILE.png")
    dr.add_argument("--format", choices=("dot", "mermaid", "svg", "png"), help="default: from the file name")
    dr.add_argument("--depth", type=int, help="collapse blocks nested deeper than this (0: every block one node)")
    dr.set_defaults(func=cmd_draw)

    u = sub.add_parser("upgrade", help="print a spec upgraded to the current spec-language version")
    u.add_argument("spec")
    u.set_defaults(func=cmd_upgrade)

    i = sub.add_parser("init", help="build a spec with fresh weights and save it as a model file")
    i.add_argument("spec")
    i.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    i.add_argument("--seed", type=int, default=None, help="initialisation seed (default: the spec's)")
    i.set_defaults(func=cmd_init)

    sn = sub.add_parser("snip", help="cut a model at chosen outputs (freeze, remove, set outputs) and save it")
    sn.add_argument("model", help="a model file, or a spec (fresh weights)")
    sn.add_argument("--output", action="append", required=True, metavar="VERTEX",
                    help="vertex that becomes an output (repeatable)")
    sn.add_argument("--remove", action="append", metavar="VERTEX", help="also remove this vertex (repeatable)")
    sn.add_argument("--freeze", action="append", metavar="VERTEX",
                    help="freeze this vertex and its ancestors instead of the outputs (repeatable)")
    sn.add_argument("--no-freeze", action="store_true", help="freeze nothing")
    sn.add_argument("--seed", type=int, default=None)
    sn.add_argument("-o", "--out", help="model file to write (default: MODEL-snipped.safetensors)")
    sn.set_defaults(func=cmd_snip)

    ex = sub.add_parser("export", help="write a model as ONNX (nodes named after vertices) or TorchScript")
    ex.add_argument("model", help="a model file, a shipped model's name, or a spec (fresh weights)")
    ex.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    ex.add_argument("-o", "--out", required=True, help="file to write (.onnx / .pt)")
    ex.add_argument("--opset", type=_positive, help="ONNX opset (default: the exporter's)")
    ex.add_argument("--no-check", action="store_true",
                    help="skip running the file (onnxruntime / TorchScript) against PyTorch on a random batch")
    ex.add_argument("--seed", type=int, default=None)
    ex.set_defaults(func=cmd_export)

    e = sub.add_parser("embed", help="feed images through a model and write one row per image")
    e.add_argument("model", help="a model file (or a spec: fresh weights)")
    e.add_argument("paths", nargs="+", help="image files or folders")
    e.add_argument("-o", "--out", required=True, help="embeddings.npy (+ .paths.txt) or embeddings.csv")
    e.add_argument("--output", help="vertex to read (default: the model's output)")
    e.add_argument("--batch-size", type=_positive, default=64)
    e.add_argument("--flip", action="store_true", help="average with the mirrored image")
    _execution_flags(e)
    e.set_defaults(func=cmd_embed)

    vf = sub.add_parser("verify", help="face verification accuracy on a pairs protocol (LFW View 1 / View 2)")
    vf.add_argument("model", help="a model file or the name of a model shipped with graphspec")
    vf.add_argument("--data", required=True, help="LFW image folder (NAME/NAME_0001.jpg) or its parent")
    vf.add_argument("--pairs", required=True, help="pairs file: pairsDevTest.txt (View 1) or pairs.txt (View 2)")
    vf.add_argument("--train-pairs", help="View 1: choose the threshold on these pairs (e.g. pairsDevTrain.txt)")
    vf.add_argument("--threshold", type=float, help="a fixed threshold (e.g. a model card's) instead of choosing one")
    vf.add_argument("--metric", choices=("sqeuclidean", "cosine"), default="sqeuclidean")
    vf.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    vf.add_argument("--batch-size", type=_positive, default=64)
    vf.add_argument("--format", choices=("text", "json"), default="text")
    vf.add_argument("--plot", help="write the ROC curve to this PNG (needs matplotlib)")
    _execution_flags(vf)
    vf.set_defaults(func=cmd_verify)

    t = sub.add_parser("train", help="train a spec (or model file) on a face folder or the synthetic set")
    t.add_argument("spec", help="a spec or a model file")
    t.add_argument("--data", help="folder in LFW layout (NAME/NAME_0001.jpg) or 'synthetic' "
                                  "(default: the LFW folder if found, else synthetic)")
    t.add_argument("--recipe", help="recipe YAML (data, preprocessing, augmentation, optimizer, schedule)")
    t.add_argument("--out", help="run directory (checkpoints, metrics.jsonl, model.safetensors)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--epochs", type=_positive)
    t.add_argument("--batch-size", type=_positive)
    t.add_argument("--limit", type=_positive, help="use at most N images")
    t.add_argument("--seed", type=int)
    t.add_argument("--semantics", choices=("dl4j", "pytorch"))
    t.add_argument("--people", help="official people file (e.g. peopleDevTrain.txt) restricting identities")
    t.add_argument("--min-images", type=_positive, help="keep people with at least N images")
    t.add_argument("--eval-fraction", type=float, help="fraction of images held out for evaluation")
    t.add_argument("--dl4j-data", action="store_true", help="DL4J LFWDataSetIterator selection (one image/person)")
    t.add_argument("--print-every", type=_positive, help="score line every N iterations (default 1)")
    t.add_argument("--nproc-per-node", type=_positive, default=1,
                   help="train in N processes on this machine (DistributedDataParallel; also works under torchrun)")
    t.add_argument("--sync-bn", action="store_true", help="distributed: batch-norm statistics over all processes")
    t.add_argument("--precision", choices=("fp32", "bf16"),
                   help="bf16: bfloat16 autocast forward (float32 weights and updates); fast on AVX512-BF16 CPUs")
    t.add_argument("--channels-last", choices=("on", "off"),
                   help="NHWC memory format (default: on for image inputs; faster convolutions on CPUs)")
    t.set_defaults(func=cmd_train)

    from .data.cli import register_cli as register_dataset
    register_dataset(sub)

    f = sub.add_parser("forward", help="build a spec and run a random batch through it")
    f.add_argument("spec")
    f.add_argument("--batch-size", type=_positive, default=2)
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--train", action="store_true", help="training mode (batch statistics)")
    f.set_defaults(func=cmd_forward)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    import warnings

    from .graph import SpecWarning
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    warnings.simplefilter("ignore", SpecWarning)  # commands print spec warnings themselves, once, located
    try:
        return args.func(args)
    except GraphspecError as e:
        for problem in e.problems:
            print(f"error: {problem}" if problem.severity == "error" else str(problem), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in graphspec, not the user's fault: one line, no traceback
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback and please report it)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
