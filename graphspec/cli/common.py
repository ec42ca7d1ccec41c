"""What every command shares: the console, argument types, execution flags."""
from __future__ import annotations

import argparse


def console(stderr: bool = False):
    from rich.console import Console
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {value}")
    return value


def finite_float(text: str) -> float:
    """A real number: NaN and infinity are refused (``--threshold nan`` would compare false with every distance
    and answer silently wrong)."""
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; received '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number; received '{text}'")
    return value


def execution(args):
    from ..execution import Execution
    from ..devices import resolve
    return Execution(channels_last=not args.no_channels_last, precision=args.precision, compile=args.compile,
                     device=resolve(args.device), aligned=args.aligned)


def execution_flags(p) -> None:
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="bf16: bfloat16 autocast (faster on AVX512-BF16 CPUs; rows change by ~1e-2); fp16: CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (compiles once: for big runs)")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW instead of the default NHWC layout")
    p.add_argument("--aligned", action="store_true", help="the photos are already aligned chips (graphspec dataset "
                                                          "--align): skip the model's aligner")

