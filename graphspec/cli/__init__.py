"""The ``graphspec`` command line: a thin shell over the Python API.

Every error a user can cause is a :class:`GraphspecError`, printed as ``FILE:LINE:COL: vertex 'NAME': ...``
with exit status 2. Anything else is a bug: one line with exit status 3. ``--debug`` shows the traceback of
either, with the low-level error it wraps (``raise ... from e``).
"""
from __future__ import annotations

import argparse
import sys
import traceback

from .. import __version__, budget
from ..errors import GraphspecError, suggestion_budget
from ..text import printable_lines
from .commands import (cmd_draw, cmd_export, cmd_forward, cmd_import, cmd_init, cmd_models, cmd_schema, cmd_snip,
                       cmd_summary, cmd_upgrade, cmd_validate)
from .common import positive

EXIT_USAGE, EXIT_INTERNAL = 2, 3
# Problems printed for one error (a spec with 20,000 mistakes prints the first 50 and a count of the rest): the
# first screenfuls are what anyone reads, and printing stays quick.
MAX_PRINTED_PROBLEMS = 50


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphspec", description="graphspec: declarative neural-network graphs for "
                                "PyTorch with Deeplearning4j semantics (docs: README.md, docs/)")
    p.add_argument("--version", action="version", version=f"graphspec {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks, with the errors they wrap")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("summary", help="print the vertices, shapes, parameters and totals of a spec")
    s.add_argument("spec", help="a spec, a model file or a catalogued model's name")
    s.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    s.add_argument("--batch-size", type=positive, default=1, help="for activation memory and MACs (default 1)")
    s.set_defaults(func=cmd_summary)

    v = sub.add_parser("validate", help="check a spec statically (exit 0 if valid, 2 with the errors)")
    v.add_argument("spec", help="a spec, or a model file (or catalogued model's name) whose embedded spec to check")
    v.set_defaults(func=cmd_validate)

    sc = sub.add_parser("schema", help="print the JSON Schema of the spec language")
    sc.set_defaults(func=cmd_schema)

    mo = sub.add_parser("models", help="list the trained models (name, model card, file) and the zoo's "
                                       "architectures (parameters, MACs)")
    mo.set_defaults(func=cmd_models)

    dr = sub.add_parser("draw", help="draw a spec or model: DOT, Mermaid, or SVG/PNG through Graphviz")
    dr.add_argument("source", help="a spec, a model file or a catalogued model's name")
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
    ex.add_argument("--opset", type=positive, help="ONNX opset (default: the exporter's)")
    ex.add_argument("--masks", action="store_true",
                    help="give every sequence input x a mask input x_mask [N, T] (1: a real step, 0: padding)")
    ex.add_argument("--length", type=positive, help="the examples' T for sequence inputs without a fixed length "
                    "(default 64): the steps an unrolled step loop takes (where the time axis cannot be dynamic)")
    ex.add_argument("--no-check", action="store_true",
                    help="skip running the file (onnxruntime / TorchScript) against PyTorch on a random batch")
    ex.add_argument("--seed", type=int, default=None)
    ex.add_argument("--device", default="cpu", help="where to trace: cpu (default), auto, cuda, cuda:N or mps "
                                                   "(the file is the same)")
    ex.set_defaults(func=cmd_export)

    im = sub.add_parser("import", help="turn an ONNX, Keras or dlib model into a graphspec spec and model file")
    im.add_argument("format", nargs="?", choices=["onnx", "keras", "dlib"], default=None,
                    help="the file's format (default: from its suffix; .dat is dlib's face recognition model)")
    im.add_argument("model", help="an .onnx, .keras or .h5 file, or dlib_face_recognition_resnet_model_v1.dat")
    im.add_argument("-o", "--out", required=True, help="folder to write NAME.yaml and NAME.safetensors into")
    im.add_argument("--name", help="the spec's name (default: the file's stem)")
    im.add_argument("--no-check", action="store_true",
                    help="skip comparing the imported network with onnxruntime on a random batch (ONNX)")
    im.set_defaults(func=cmd_import)

    from ..faces.commands import register as register_faces  # the one place the framework names faces
    register_faces(sub)

    f = sub.add_parser("forward", help="build a spec (or open a model) and run a random batch through it")
    f.add_argument("spec", help="a spec, a model file or a catalogued model's name")
    f.add_argument("--batch-size", type=positive, default=2)
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--train", action="store_true", help="training mode (batch statistics)")
    f.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps")
    f.set_defaults(func=cmd_forward)
    for name, command in sub.choices.items():
        _verbosity_flags(command)
        if name in BUILDING_COMMANDS:
            _memory_flag(command)
    return p


# The commands that build a model (and so allocate its parameters): they take --memory-limit (graphspec.budget).
BUILDING_COMMANDS = ("init", "snip", "export", "import", "forward", "train", "embed", "identify", "cluster", "verify")


def _memory_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-limit", type=_memory_size, default=budget.DEFAULT, metavar="SIZE",
                   help=f"refuse a model whose estimated memory is over SIZE (e.g. 8G, 512M; 'none': no check; "
                        f"default {budget.MEMORY_FRACTION * 100:.0f}%% of this machine's memory), before allocating "
                        "it")  # %% is argparse's %


def _memory_size(text: str):
    if text == budget.DEFAULT:
        return text  # argparse passes a string default through its type too
    try:
        budget.parse_size(text)
    except GraphspecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _verbosity_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors (no progress or notes)")
    group.add_argument("-v", "--verbose", action="store_true", help="also what the command does on the way")


def main(argv: list[str] | None = None) -> int:
    import warnings

    from ..allocator import reuse_freed_memory
    from ..graph import SpecWarning
    from ..log import NORMAL, QUIET, VERBOSE, command_line
    from ..train.distributed import end_process
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    reuse_freed_memory()  # before the first tensor: freed activations stay in the heap for the next batch
    level = QUIET if args.quiet else VERBOSE if args.verbose else NORMAL
    with warnings.catch_warnings(), command_line(level):
        warnings.simplefilter("ignore", SpecWarning)  # commands print spec warnings themselves, once, located
        warnings.showwarning = _note
        with budget.memory_limit(getattr(args, "memory_limit", budget.DEFAULT)):  # every build the command makes
            code = _run(args)
    return end_process(code)  # a distributed worker ends here, skipping a teardown that can abort in gloo


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as one line on stderr (through the package's logger): what happened, without the source line
    that raised it."""
    from ..log import logger
    logger.warning(" ".join(str(message).split()))


def _run(args) -> int:
    try:
        # did-you-mean over the whole command: linear however many errors there are; running out of memory where
        # no estimate foresaw it is the machine's limit, said as such, not an internal error
        command = getattr(args, "command", None)
        with suggestion_budget(), budget.running(f"'graphspec {command}'" if command else "the command"):
            return args.func(args)
    except GraphspecError as e:
        if args.debug:  # a user error may wrap a low-level one (an OSError, a parser's error): show the chain
            traceback.print_exception(e, file=sys.stderr)
        problems = e.problems
        for problem in problems[:MAX_PRINTED_PROBLEMS]:
            print(f"{e.label}: {problem}" if problem.severity == "error" else str(problem), file=sys.stderr)
        if len(problems) > MAX_PRINTED_PROBLEMS:
            print(f"... and {len(problems) - MAX_PRINTED_PROBLEMS:,} more errors", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in graphspec, not the user's fault: one line, no traceback
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {printable_lines(e)} (run with --debug for the traceback and "
              "please report it)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
