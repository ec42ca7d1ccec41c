"""Execution options side by side: graphspec's nn4small2 vs the hand-written module, inference and training.

    .venv/bin/python benchmarks/bench_options.py [--rounds 5] [--batch 48] [--compile] [--quick] [--only OPTION ...]

Options: eager (float32, NCHW), channels-last, bf16 autocast, channels-last + bf16, and with --compile
``torch.compile`` (inductor; minutes of compilation per model and mode, cached under TORCHINDUCTOR_CACHE_DIR).
Every option runs both sides in one process, interleaved (graphspec and hand-written alternate and swap order
every round); the table gives the median images/s of each side and the median of the paired ratios
(graphspec time / hand-written time). Training = forward + cross-entropy on a 5,749-way head + backward + AdamW,
as `graphspec train` does it (the head's cost is the same on both sides; graphspec's AdamW is the fused one its
trainer builds, the hand-written loop's the stock one).

Also measured here: this CPU's peak float32 and bfloat16 matrix-multiply rates, and the FLOPs of one image
(2 x the MACs of `graphspec summary`; training ~3x forward), to say how far each figure is from the arithmetic
limit.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import graphspec  # noqa: E402
from graphspec.allocator import reuse_freed_memory  # noqa: E402
from graphspec.train.steps import fused_if_possible  # noqa: E402
from bench_core import cpu_model, paired  # noqa: E402
from nn4small2_handwritten import NN4Small2, load_graphspec_state  # noqa: E402

SPEC = ROOT / "specs" / "nn4small2.yaml"
CLASSES = 5749
OPTIONS = {  # name: (channels_last, bf16, compile)
    "eager": (False, False, False),
    "channels-last": (True, False, False),
    "bf16": (False, True, False),
    "channels-last + bf16": (True, True, False),
    "compile": (False, False, True),
    "compile + channels-last": (True, False, True),
}


def forward_macs() -> int:
    return graphspec.summarize(graphspec.load_spec(SPEC)).macs


def peak_matmul(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of an n x n matrix product (2n^3 FLOPs) over a few repetitions."""
    a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def models():
    g = graphspec.build(SPEC, seed=123)
    h = load_graphspec_state(NN4Small2(), g.state_dict())
    return g, h


def embeddings(side: str, m):
    """The [N, 128] embedding function of either side (graphspec: its `embeddings` vertex)."""
    if side == "h":
        return m.embed
    trunk = graphspec.compiler.subgraph(m, ["embeddings"])
    return lambda x: trunk(x)["embeddings"]


def prepare(side: str, m, channels_last: bool, compile_: bool, train: bool):
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    fn = embeddings(side, m)
    head = torch.nn.Linear(128, CLASSES)
    if compile_:
        fn = torch.compile(fn)
    if not train:
        m.eval()
        return fn, None
    m.train()
    params = [{"params": list(m.parameters()) + list(head.parameters())}]
    # each side's optimizer as it is written: graphspec train's (fused where torch has the kernel), and the stock
    # AdamW a hand-written loop constructs
    opt = fused_if_possible(torch.optim.AdamW, params, lr=1e-3) if side == "g" else torch.optim.AdamW(params, lr=1e-3)
    return fn, (head, opt)


def runner(fn, extra, x, y, bf16: bool):
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if extra is None:
        def infer():
            with torch.no_grad(), ctx():
                fn(x)
        return infer
    head, opt = extra

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            e = fn(x)
        loss = F.cross_entropy(head(e.float()), y)
        loss.backward()
        opt.step()
    return step


def measure(option: str, train: bool, x, y, rounds: int) -> dict:
    channels_last, bf16, compile_ = OPTIONS[option]
    xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    g, h = models()
    fg = runner(*prepare("g", g, channels_last, compile_, train), xs, y, bf16)
    fh = runner(*prepare("h", h, channels_last, compile_, train), xs, y, bf16)
    t0 = time.perf_counter()
    tg, th = paired(fg, fh, rounds, warmup=2)
    n = x.shape[0]
    return {"option": option, "mode": "train" if train else "inference",
            "g": n / statistics.median(tg), "h": n / statistics.median(th),
            "ratio": statistics.median(a / b for a, b in zip(tg, th)), "seconds": time.perf_counter() - t0}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--compile", action="store_true", help="add the torch.compile options (slow to compile)")
    ap.add_argument("--quick", action="store_true", help="2 rounds, eager and channels-last + bf16 only")
    ap.add_argument("--only", nargs="+", choices=list(OPTIONS), metavar="OPTION",
                    help=f"run only these options ({', '.join(OPTIONS)})")
    args = ap.parse_args(argv)
    reuse_freed_memory()  # as the graphspec command line does (GRAPHSPEC_MALLOC=default: glibc's defaults)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 96, 96)
    y = torch.randint(0, CLASSES, (args.batch,))
    options = [o for o in OPTIONS if args.compile or not OPTIONS[o][2]]
    if args.quick:
        options, args.rounds = ["eager", "channels-last + bf16"], 2
    if args.only:
        options = args.only
    rows = [measure(o, train, x, y, args.rounds) for train in (False, True) for o in options]
    macs = forward_macs()
    fp32, bf16 = peak_matmul(torch.float32), peak_matmul(torch.bfloat16)
    print(f"machine: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; batch {args.batch}")
    print(f"peak matmul (2048^2): float32 {fp32 / 1e9:.0f} GFLOP/s, bfloat16 {bf16 / 1e9:.0f} GFLOP/s; "
          f"nn4small2 forward {2 * macs / 1e9:.3f} GFLOP/image, training ~{6 * macs / 1e9:.2f} GFLOP/image")
    print("| mode | option | graphspec images/s | hand-written images/s | ratio g/h (time, median of pairs) "
          "| graphspec GFLOP/s | % of fp32 matmul peak |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        flops = r["g"] * (6 if r["mode"] == "train" else 2) * macs
        print(f"| {r['mode']} | {r['option']} | {r['g']:.1f} | {r['h']:.1f} | {r['ratio']:.3f} | "
              f"{flops / 1e9:.0f} | {100 * flops / fp32:.0f}% |")
    return rows


if __name__ == "__main__":
    main()
