"""Data-path throughput: is the input pipeline ever the bottleneck of training?

    .venv/bin/python benchmarks/bench_data.py                      # LFW if found, else the synthetic set
    .venv/bin/python benchmarks/bench_data.py --data DIR --images 2000 --measure-train

Measures, in images per second:
  scan         listing + cheap checks of the whole folder (no decoding)
  cold 1 thr   JPEG decode + preprocessing (the tutorial's: 250x250 -> 96x96 BGR), one thread
  cache build  the same into the uint8 memory-mapped cache, with the decoding thread pool
  warm         batches of 48 from the cache through make_loader (augmentation: pad 4 + random crop + flip,
               then float32), i.e. what a training loop receives
  lazy         batches decoded on the fly (cache=False), without and with one loader worker
and compares warm with what training consumes: ``--train-rate`` (default 40 images/s, nn4.small2 on a 2-core
CPU) or, with ``--measure-train``, a timed forward+backward+update of specs/nn4small2.yaml at batch 48.
The cache goes to a fresh temporary folder (so "cold" is cold for the cache; the OS file cache may still hold the
JPEGs, which is the common case after the first epoch).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphspec.data import Augmentation, Preprocessing, make_loader
from graphspec.faces.data import lfw_dataset, locate_lfw, scan_folder, synthetic_faces


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_scan(root) -> float:
    seconds, scan = timed(lambda: scan_folder(root))
    return rate(scan.n_images, seconds)


def bench_cold(paths, prep: Preprocessing) -> float:
    seconds, _ = timed(lambda: [prep.load(p) for p in paths])
    return rate(len(paths), seconds)


def bench_loader(ds, batch_size: int, augmentation, epochs: int = 1, workers: int | None = None) -> float:
    loader = make_loader(ds, batch_size, augmentation=augmentation, workers=workers)

    def run():
        n = 0
        for _ in range(epochs):
            for _, y in loader:
                n += len(y)
        return n
    seconds, n = timed(run)
    return rate(n, seconds)


def measure_train(batch_size: int, steps: int = 3) -> float:
    """Images/s of forward + backward + Adam on the tutorial network (squared loss on the softmax output)."""
    import torch

    import graphspec
    net = graphspec.build(str(Path(__file__).resolve().parents[1] / "specs" / "nn4small2.yaml"), seed=0)
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(batch_size, 3, 96, 96) * 255
    target = torch.nn.functional.one_hot(torch.arange(batch_size) % 5749, 5749).float()

    def step():
        out = net(x)
        out = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
        loss = ((out - target) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()  # warm-up
    seconds, _ = timed(lambda: [step() for _ in range(steps)])
    return rate(steps * batch_size, seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="LFW-layout folder (default: located LFW, else synthetic 20x24)")
    ap.add_argument("--images", type=int, default=2000, help="images for the cold/cache/warm runs")
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--train-rate", type=float, default=40.0, help="images/s training consumes (if not measured)")
    ap.add_argument("--measure-train", action="store_true")
    ap.add_argument("--cache-dir", help="default: a fresh temporary folder, removed afterwards")
    args = ap.parse_args(argv)

    tmp = None if args.cache_dir else tempfile.mkdtemp(prefix="bench-data-")
    cache_dir = args.cache_dir or tmp
    try:
        report(args, cache_dir)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(args, cache_dir) -> None:
    root = Path(args.data) if args.data else (locate_lfw() or synthetic_faces(identities=20, images=24, seed=0,
                                                                               cache_dir=cache_dir))
    prep = Preprocessing.dl4j()
    rows = [("scan (list + cheap checks, whole folder)", bench_scan(root))]
    ds = lfw_dataset(root, limit=args.images, seed=0, preprocessing=prep, cache=False, warn=False)
    n = len(ds)
    rows.append((f"cold decode + preprocess, 1 thread ({min(n, 500)} images)", bench_cold(ds.paths[:500], prep)))
    seconds, cached = timed(lambda: lfw_dataset(root, limit=args.images, seed=0, preprocessing=prep,
                                                cache_dir=cache_dir, warn=False))
    rows.append((f"cache build, {os.cpu_count()} threads ({n} images)", rate(n, seconds)))
    aug = Augmentation(padding=4, flip=0.5, seed=0)
    rows.append(("warm: cache -> augmented float batches (3 epochs)", bench_loader(cached, args.batch_size, aug, 3)))
    rows.append(("warm: cache -> float batches, no augmentation", bench_loader(cached, args.batch_size, None, 3)))
    lazy = lfw_dataset(root, limit=min(n, 480), seed=0, preprocessing=prep, cache=False, warn=False)
    rows.append(("lazy: decode per batch, 0 workers", bench_loader(lazy, args.batch_size, aug, workers=0)))
    rows.append(("lazy: decode per batch, 1 worker", bench_loader(lazy, args.batch_size, aug, workers=1)))
    train = measure_train(args.batch_size) if args.measure_train else args.train_rate
    print(f"data: {root} ({n} images), preprocessing {prep.describe()}, batch {args.batch_size}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    print(f"training consumes {train:.1f} images/s ({'measured' if args.measure_train else 'assumed'})\n")
    print("| stage | images/s | x training |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} | {r / train:,.1f} |")


if __name__ == "__main__":
    sys.exit(main())
