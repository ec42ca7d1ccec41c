"""Peak resident memory (RSS) of nn4small2 training and inference, graphspec vs the hand-written module.

    .venv/bin/python benchmarks/bench_memory.py [--batch 48] [--steps 3]

Each measurement runs in a fresh Python process (peak RSS only grows within a process): import, build, then
``--steps`` training steps (forward, cross-entropy on the 5,749-way head, backward, AdamW) or inference
forwards under ``no_grad``, and reports the peak resident set (``VmHWM`` of /proc/self/status; Linux). The baseline row is a process that only imports torch and
graphspec, so the differences are the model's own memory.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
sys.path[:0] = [{root!r}, {bench!r}]
import torch, torch.nn.functional as F
import graphspec
from graphspec.allocator import reuse_freed_memory
from nn4small2_handwritten import NN4Small2
reuse_freed_memory()  # both sides, as the graphspec command line runs (GRAPHSPEC_MALLOC=default: glibc's defaults)
side, mode, batch, steps, nhwc = {side!r}, {mode!r}, {batch}, {steps}, {nhwc!r}
if side != "none":
    torch.manual_seed(0)
    x, y = torch.rand(batch, 3, 96, 96), torch.randint(0, 5749, (batch,))
    if side == "g":
        m = graphspec.build({spec!r}, seed=1)
        out = lambda x: m(x)  # softmax over 5,749 classes, as the spec's output layer
    else:
        m = NN4Small2()
        out = m
    if nhwc:  # what `graphspec train` and `embed` do for image inputs by default
        m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if mode == "train":
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.nll_loss(torch.log(out(x) + 1e-9), y).backward()
            opt.step()
    else:
        m.eval()
        with torch.no_grad():
            for _ in range(steps):
                out(x)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec from the (large) parent process
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"maxrss_kib": hwm}}))
"""


def peak(side: str, mode: str, batch: int, steps: int, nhwc: bool = False) -> float:
    code = CHILD.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), side=side, mode=mode, batch=batch,
                        steps=steps, nhwc=nhwc, spec=str(ROOT / "specs" / "nn4small2.yaml"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["maxrss_kib"] / 1024  # MiB


def main(argv=None) -> list[tuple]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--channels-last", action="store_true", help="NHWC models and inputs, as train/embed run")
    args = ap.parse_args(argv)
    base = peak("none", "-", args.batch, 0)
    rows = []
    layout = "channels-last" if args.channels_last else "NCHW"
    print(f"peak RSS, MiB (batch {args.batch}, {args.steps} steps, {layout}; baseline process: imports only = "
          f"{base:.0f} MiB)")
    print("| run | graphspec | hand-written | graphspec − baseline | hand-written − baseline | ratio of increments |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in ("train", "inference"):
        g = peak("g", mode, args.batch, args.steps, args.channels_last)
        h = peak("h", mode, args.batch, args.steps, args.channels_last)
        rows.append((mode, g, h))
        print(f"| {mode} | {g:.0f} | {h:.0f} | {g - base:.0f} | {h - base:.0f} | {(g - base) / (h - base):.3f} |")
    return rows


if __name__ == "__main__":
    main()
