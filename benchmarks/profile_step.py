"""Where a training step of nn4small2 spends its time: per block and per vertex type (forward, timed with hooks
on graphspec's vertex modules) and per operator (forward + backward + AdamW, torch.profiler).

    .venv/bin/python benchmarks/profile_step.py [--batch 48] [--channels-last] [--bf16]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graphspec  # noqa: E402


def vertex_times(model, x, steps: int = 3) -> dict[str, float]:
    """Seconds per forward spent in each vertex (training mode, with autograd recording)."""
    spent: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name in model.graphspec.analysis.order:
        sub = model.get_submodule(name)
        handles.append(sub.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(sub.register_forward_hook(
            lambda m, a, o, n=name: spent.__setitem__(n, spent[n] + time.perf_counter() - starts[n])))
    for _ in range(steps):
        model(x)
    for h in handles:
        h.remove()
    return {k: v / steps for k, v in spent.items()}


def training_step(model, x, y, bf16: bool, forward=None):
    """One training step of NN4.Small2 as the profiles and bench_compile.py time it: AdamW, the negative log of the
    spec's softmax output (bf16 autocast on request); ``forward`` (e.g. a compiled model) replaces ``model``'s."""
    forward = forward or model
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx():
            p = forward(x)
        F.nll_loss(torch.log(p.float() + 1e-9), y).backward()
        opt.step()
    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = graphspec.build(ROOT / "specs" / "nn4small2.yaml", seed=1)
    x, y = torch.rand(args.batch, 3, 96, 96), torch.randint(0, 5749, (args.batch,))
    if args.channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    step = training_step(model, x, y, args.bf16)
    step()
    with ctx():
        per_vertex = vertex_times(model, x)
    spec = model.graphspec.spec
    total = sum(per_vertex.values())
    by_block, by_type = defaultdict(float), defaultdict(float)
    for name, t in per_vertex.items():
        v = spec.vertices[name]
        by_block[v.group[0] if v.group else name] += t
        by_type[v.type] += t
    print(f"forward, batch {args.batch}{' channels-last' if args.channels_last else ''}"
          f"{' bf16' if args.bf16 else ''}: {total * 1e3:.0f} ms in vertices")
    print("| block | ms | share |\n|---|---:|---:|")
    for k, t in sorted(by_block.items(), key=lambda kv: -kv[1])[:10]:
        print(f"| {k} | {t * 1e3:.1f} | {100 * t / total:.0f}% |")
    print("| vertex type | ms | share |\n|---|---:|---:|")
    for k, t in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {t * 1e3:.1f} | {100 * t / total:.0f}% |")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print("training step, top operators by self CPU time (forward + backward + AdamW):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
