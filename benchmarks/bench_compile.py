"""What torch.compile costs and buys for a graphspec training run: NN4.Small2, channels-last, batch 64.

Run from the repository root (about 5 minutes on 2 CPU cores, most of it compiling):

    .venv/bin/python benchmarks/bench_compile.py            # float32
    .venv/bin/python benchmarks/bench_compile.py --bf16     # bf16 autocast

Two fresh processes share one Inductor cache folder: the first starts from an empty cache (what a first run
pays), the second reuses it (what a second run of the same spec and batch pays). Each process times the eager
training step and the compiled one, interleaved, and the first compiled step (compilation included). Printed:
the compilation's cost, the steady-state gain, and the number of steps after which compiling has paid for
itself — the measurement `graphspec train` needs to decide whether to offer compilation.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(batch: int, steps: int, bf16: bool) -> dict:
    import torch
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    import graphspec
    from profile_step import training_step

    def make():
        return graphspec.build(ROOT / "specs" / "nn4small2.yaml", seed=1).to(memory_format=torch.channels_last)

    torch.manual_seed(0)
    x = torch.rand(batch, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5749, (batch,))

    def stepper(model, fn):
        return training_step(model, x, y, bf16, forward=fn)

    eager_model, compiled_model = make(), make()
    eager = stepper(eager_model, eager_model)
    compiled = stepper(compiled_model, torch.compile(compiled_model))
    t0 = time.perf_counter()
    compiled()
    first = time.perf_counter() - t0
    eager()
    te, tc = [], []
    for i in range(steps):
        for fn, acc in ((eager, te), (compiled, tc)) if i % 2 == 0 else ((compiled, tc), (eager, te)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return {"first": first, "eager": statistics.median(te), "compiled": statistics.median(tc)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.batch, args.steps, args.bf16)))
        return
    cache = Path(tempfile.mkdtemp(prefix="graphspec-inductor-"))
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    command = [sys.executable, __file__, "--child", "--batch", str(args.batch), "--steps", str(args.steps)] + \
        (["--bf16"] if args.bf16 else [])
    print(f"NN4.Small2 training step, channels-last{' + bf16' if args.bf16 else ''}, batch {args.batch}")
    print("| cache | first compiled step (s) | eager step (ms) | compiled step (ms) | compiled/eager | "
          "steps to pay back | load before |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    try:
        for label in ("empty", "reused"):
            load = os.getloadavg()[0]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            gain = r["eager"] - r["compiled"]
            payback = f"{(r['first'] - r['compiled']) / gain:,.0f}" if gain > 0 else "never"
            print(f"| {label} | {r['first']:.1f} | {r['eager'] * 1e3:.0f} | {r['compiled'] * 1e3:.0f} | "
                  f"{r['compiled'] / r['eager']:.3f} | {payback} | {load:.2f} |", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
