"""graphspec vs a hand-written PyTorch module: build time, inference forward and training step for nn4small2.

Run from the repository root:

    .venv/bin/python benchmarks/bench_core.py            # full run (~1-2 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/bench_core.py --quick    # smoke run
    .venv/bin/python benchmarks/bench_core.py --threads 1 --clock cpu   # low-noise variant on a shared machine
    .venv/bin/python benchmarks/bench_core.py --control    # + an A/A row: hand-written vs a copy of itself
    .venv/bin/python benchmarks/bench_core.py --attribute  # + probe: graphspec with in-place ReLU vertices

Everything is measured in one process, interleaved (graphspec and hand-written alternate, and which one goes
first alternates from round to round), eager mode, torch's default thread count. Reported: the median time of
each side and the median of the per-round ratios graphspec / hand-written (paired, so slow drifts of the
machine cancel). Both models hold the same weights (the hand-written one is loaded from the graphspec one).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import graphspec  # noqa: E402
from graphspec.allocator import reuse_freed_memory  # noqa: E402
from nn4small2_handwritten import NN4Small2, load_graphspec_state  # noqa: E402

SPEC = ROOT / "specs" / "nn4small2.yaml"
BATCH, SIDE, CLASSES = 48, 96, 5749


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


CLOCK = time.perf_counter  # --clock cpu: time.process_time (with --threads 1: robust to other processes)


def paired(fn_g, fn_h, rounds: int, warmup: int = 1):
    """Alternate fn_g/fn_h for ``rounds`` rounds (order swapped every round); returns (times_g, times_h)."""
    for _ in range(warmup):
        fn_g()
        fn_h()
    tg, th = [], []
    for r in range(rounds):
        order = ((fn_g, tg), (fn_h, th)) if r % 2 == 0 else ((fn_h, th), (fn_g, tg))
        for fn, acc in order:
            gc.collect()
            t0 = CLOCK()
            fn()
            acc.append(CLOCK() - t0)
    return tg, th


def summarize(name: str, tg, th) -> dict:
    ratios = [g / h for g, h in zip(tg, th)]
    return {"name": name, "g": statistics.median(tg), "h": statistics.median(th),
            "ratio": statistics.median(ratios), "ratio_of_medians": statistics.median(tg) / statistics.median(th),
            "ratio_of_minima": min(tg) / min(th), "n": len(tg)}


def bench_build(rounds: int) -> dict:
    def build_g():
        graphspec.build(SPEC, seed=123)

    def build_h():
        NN4Small2()

    tg, th = paired(build_g, build_h, rounds)
    res = summarize("build (load+build vs construct)", tg, th)
    res["overhead_ms"] = (res["g"] - res["h"]) * 1e3
    return res


def make_models():
    g = graphspec.build(SPEC, seed=123)
    h = load_graphspec_state(NN4Small2(), g.state_dict())
    return g, h


def forward_runner(m, x):
    """One inference forward of ``m`` on ``x`` without autograd, as a zero-argument callable."""
    def f():
        with torch.no_grad():
            m(x)
    return f


def bench_forward(rounds: int, x) -> dict:
    g, h = make_models()
    g.eval()
    h.eval()

    with torch.no_grad():
        torch.testing.assert_close(g(x), h(x), rtol=1e-4, atol=1e-7)
    return summarize(f"forward eval no_grad (batch {x.shape[0]})", *paired(forward_runner(g, x), forward_runner(h, x), rounds, warmup=2))


def bench_forward_control(rounds: int, x) -> dict:
    """A/A control: the hand-written module against a second copy of itself, measured exactly as the forward row.
    Any ratio away from 1.000 here is the machine's noise, so it bounds how far the graphspec row can be read."""
    _, h = make_models()
    _, h2 = make_models()
    h.eval()
    h2.eval()
    return summarize("A/A control: forward, hand-written vs a copy of itself",
                     *paired(forward_runner(h2, x), forward_runner(h, x), rounds, warmup=2))


def _inplace_relu(model):
    """Attribution probe (NOT graphspec behaviour): make this model's ReLU activation vertices work in place.

    Valid for nn4small2 only because every activation vertex there reads a batchnorm output that nothing else
    reads (and batchnorm's backward does not need its output). Switches the class of those instances only.
    """
    from graphspec.layers import modules

    class InplaceReLU(modules.Activation):
        def forward(self, x):
            return F.relu(x, inplace=True)

    for m in model.modules():
        if type(m) is modules.Activation and m.activation == "relu":
            m.__class__ = InplaceReLU
    return model


def bench_forward_probe(rounds: int, x) -> dict:
    g, h = make_models()
    _inplace_relu(g).eval()
    h.eval()

    return summarize("probe: forward, graphspec with in-place ReLU vertices", *paired(forward_runner(g, x), forward_runner(h, x), rounds, 2))


def bench_train(rounds: int, x, y, probe: bool = False) -> dict:
    g, h = make_models()
    if probe:
        _inplace_relu(g)
    g.train()
    h.train()
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3)
    opt_h = torch.optim.Adam(h.parameters(), lr=1e-3)

    def step(m, opt):
        def f():
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(m(x), y, reduction="sum")
            loss.backward()
            opt.step()
        return f

    name = "probe: train step, graphspec with in-place ReLU vertices" if probe else \
        f"train step fwd+bwd+Adam (batch {x.shape[0]})"
    return summarize(name, *paired(step(g, opt_g), step(h, opt_h), rounds, warmup=2))


def table(results) -> str:
    lines = ["| measurement | graphspec (median) | hand-written (median) | ratio g/h: median of paired rounds "
             "| ratio of medians | ratio of minima | rounds |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        extra = f" (overhead {r['overhead_ms']:+.1f} ms)" if "overhead_ms" in r else ""
        lines.append(f"| {r['name']} | {r['g'] * 1e3:.1f} ms | {r['h'] * 1e3:.1f} ms | {r['ratio']:.3f}{extra} | "
                     f"{r['ratio_of_medians']:.3f} | {r['ratio_of_minima']:.3f} | {r['n']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, for a smoke test")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: time.perf_counter (default); cpu: process CPU time, meaningful with --threads 1 on "
                         "a machine shared with other jobs")
    ap.add_argument("--control", action="store_true",
                    help="add an A/A row: the hand-written forward against a copy of itself (the machine's noise)")
    ap.add_argument("--attribute", action="store_true",
                    help="add probe rows: forward and train step with graphspec's ReLU vertices patched to run in place")
    args = ap.parse_args(argv)
    reuse_freed_memory()  # as the graphspec command line does (GRAPHSPEC_MALLOC=default: glibc's defaults)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    n_build, n_fwd, n_train = (3, 3, 2) if args.quick else (15, 31, 21)

    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, SIDE, SIDE) * 255  # DL4J LFW input: BGR 0..255, unscaled
    y = F.one_hot(torch.randint(0, CLASSES, (args.batch,)), CLASSES).float()

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    results = [bench_build(n_build), bench_forward(n_fwd, x), bench_train(n_train, x, y)]
    if args.control:
        results.append(bench_forward_control(n_fwd, x))
    if args.attribute:
        results += [bench_forward_probe(n_fwd, x), bench_train(n_train, x, y, probe=True)]
    wall = time.perf_counter() - t0

    print(f"date: {datetime.date.today().isoformat()}  machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}")
    print("command: .venv/bin/python benchmarks/bench_core.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"clock: {'process CPU time' if args.clock == 'cpu' else 'wall (perf_counter)'}")
    print(table(results))
    build, fwd, train = results[:3]
    print(f"targets: build overhead < 100 ms: {'OK' if build['overhead_ms'] < 100 else 'MISSED'} "
          f"({build['overhead_ms']:.1f} ms); forward ratio <= 1.02: {'OK' if fwd['ratio'] <= 1.02 else 'MISSED'}; "
          f"train ratio <= 1.02: {'OK' if train['ratio'] <= 1.02 else 'MISSED'}")
    load_after = os.getloadavg()
    print(f"benchmark wall time: {wall:.0f} s; load average (1 min) before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f} (other processes on the machine add noise)")
    return results


if __name__ == "__main__":
    main()
