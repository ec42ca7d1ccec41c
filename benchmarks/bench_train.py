"""`graphspec train`'s loop against a plain PyTorch loop over the hand-written NN4.Small2, side by side.

    .venv/bin/python benchmarks/bench_train.py [--rounds 5] [--iters 6] [--batch 48] [--channels-last]

Both sides train the same network shape at the same batch from the same uint8 images in memory: graphspec runs
its Trainer (`pytorch` semantics: batch read and cropped in numpy, scaled, the loss module, AdamW), the plain loop
does `x = images[idx].float(); loss = cross_entropy(net(x), y); loss.backward(); opt.step()`. Rounds alternate
(which side goes first alternates too); the table gives median images/s and the median of per-round ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import graphspec  # noqa: E402
from graphspec.allocator import reuse_freed_memory  # noqa: E402
from graphspec.data.preprocessing import Preprocessing  # noqa: E402
from graphspec.train.recipe import Recipe  # noqa: E402
from graphspec.data import ArrayData
from graphspec.train.trainer import Trainer  # noqa: E402
from nn4small2_handwritten import NN4Small2  # noqa: E402

CLASSES = 5749


def graphspec_side(data, batch, iters, channels_last):
    recipe = Recipe(semantics="pytorch", epochs=1, batch_size=batch, print_every=10**9, channels_last=channels_last,
                    head={"loss": "mcxent", "lambda": 0.0}, optimizer={"type": "adamw", "lr": 1e-3})
    from graphspec.train.session import replace_head
    model = replace_head(graphspec.build(ROOT / "specs" / "nn4small2.yaml"), recipe.head, None)
    trainer = Trainer(model, recipe, data, preprocessing=Preprocessing(), progress=False)
    trainer.fit()  # warm-up epoch
    def run():
        trainer.epoch, trainer.batch_in_epoch = 0, 0
        start = time.perf_counter()
        trainer.fit()
        return batch * iters / (time.perf_counter() - start)
    return run


def plain_side(data, batch, iters, channels_last):
    net = NN4Small2(CLASSES)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    labels = torch.from_numpy(data.labels.astype(np.int64))
    def epoch():
        net.train()
        for b in range(iters):
            idx = slice(b * batch, (b + 1) * batch)
            x = torch.from_numpy(data.images[idx]).float()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net.classifier(net.embed(x)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    epoch()
    def run():
        start = time.perf_counter()
        epoch()
        return batch * iters / (time.perf_counter() - start)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    reuse_freed_memory()  # as the graphspec command line does (GRAPHSPEC_MALLOC=default: glibc's defaults)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = args.batch * args.iters
    data = ArrayData(rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8), rng.integers(0, CLASSES, n),
                     [str(i) for i in range(CLASSES)])
    sides = {"graphspec train": graphspec_side(data, args.batch, args.iters, args.channels_last),
             "plain PyTorch loop": plain_side(data, args.batch, args.iters, args.channels_last)}
    rates = {k: [] for k in sides}
    ratios = []
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        got = {name: sides[name]() for name in order}
        for name, v in got.items():
            rates[name].append(v)
        ratios.append(got["plain PyTorch loop"] / got["graphspec train"])
    print(f"batch {args.batch}, {args.iters} iterations per round, {args.rounds} rounds, "
          f"{'channels-last' if args.channels_last else 'contiguous'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| loop | images/s (median) |")
    print("|---|---:|")
    for name, v in rates.items():
        print(f"| {name} | {statistics.median(v):.1f} |")
    print(f"| time ratio graphspec / plain (median of rounds) | {statistics.median(ratios):.3f} |")


if __name__ == "__main__":
    main()
