"""What `embed` float32 could reach on this machine at best: the CPU time its work takes, per image.

    .venv/bin/python benchmarks/bench_embed_budget.py [--images 512] [--rounds 3]

Measures, on the shipped `nn4small2-lfw` (float32, channels-last, batch norms folded, batch 64) and LFW's photos
taken as aligned (decode + resize to 96x96, as `bench_embed.py` runs them):

* the network: wall and CPU seconds (``time.process_time``: every thread of the process) for the batches, so how
  busy the cores are while it runs, and its forward time by vertex type (module hooks; the rest is the graph's
  own code);
* decoding one photo on one thread: Pillow's open + JPEG decode, Pillow's resize, and the rest of the pipeline;
* the bound: with every core busy all the time on nothing but this work, images/s = cores / CPU seconds an image;
* libgomp's idle spin: CPU the process spends while its only busy thread sleeps 200 ms after a parallel operator
  (the pool thread spinning; graphspec/openmp.py shortens it; compare with ``GOMP_SPINCOUNT=300000``, libgomp's
  default).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graphspec  # noqa: E402  (before torch, as the command line: graphspec/openmp.py)
import torch  # noqa: E402
from graphspec.allocator import reuse_freed_memory  # noqa: E402
from graphspec.compiler import subgraph  # noqa: E402
from graphspec.execution import Execution  # noqa: E402
from graphspec.faces.data import locate_lfw  # noqa: E402
from graphspec.faces.embed import image_files  # noqa: E402


def network(model, batches: int) -> tuple[float, float, dict[str, float]]:
    """(wall s, CPU s, forward seconds by vertex type) for ``batches`` forwards of 64 random images."""
    ex = Execution(aligned=True)
    net = ex.prepare(model, subgraph(model, ["embeddings"], needed_inputs_only=True))
    x = ex.input(torch.rand(64, 3, 96, 96, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        net(x)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            net(x)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        by_type = by_vertex_type(net, x)
    return wall, cpu, by_type


def by_vertex_type(net, x) -> dict[str, float]:
    """Seconds of one forward by the type of the modules that ran (leaf modules, timed by hooks)."""
    spent, started = defaultdict(float), {}
    hooks = []

    def began(module, args):
        started[id(module)] = time.perf_counter()

    def finished(module, args, out):
        kind = type(module).__name__.removeprefix("Frozen")  # a frozen vertex's module is a subclass (freeze.py)
        spent[kind] += time.perf_counter() - started[id(module)]

    for name, module in net.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_pre_hook(began))
            hooks.append(module.register_forward_hook(finished))
    net(x)
    spent.clear()
    start = time.perf_counter()
    net(x)
    spent["(graph code between modules)"] = time.perf_counter() - start - sum(spent.values())
    for h in hooks:
        h.remove()
    return dict(spent)


def idle_spin_ms() -> float:
    """Median CPU milliseconds the process spends in 200 ms of sleep right after a parallel matrix product."""
    x = torch.rand(1000, 1000)
    spent = []
    for _ in range(5):
        x @ x
        start = time.process_time()
        time.sleep(0.2)
        spent.append((time.process_time() - start) * 1e3)
    return sorted(spent)[2]


def decoding(prep, files) -> dict[str, float]:
    """Seconds an image on one thread: Pillow's open + decode, Pillow's resize, and the whole pipeline."""
    from PIL import Image
    for f in files:  # the OS file cache warm, as in bench_embed's reported run
        prep.load(f)
    spent = {}
    start = time.perf_counter()
    opened = []
    for f in files:
        with Image.open(f) as image:
            image.load()
            opened.append(image.copy())
    spent["open + JPEG decode (Pillow)"] = time.perf_counter() - start
    start = time.perf_counter()
    for image in opened:
        image.resize(prep.size[::-1], Image.Resampling.BILINEAR)
    spent["resize to 96x96 (Pillow, bilinear)"] = time.perf_counter() - start
    start = time.perf_counter()
    for f in files:
        prep.load(f)
    spent["the whole pipeline (Preprocessing.load)"] = time.perf_counter() - start
    return {k: v / len(files) for k, v in spent.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    reuse_freed_memory()  # as the graphspec command line does
    lfw = locate_lfw()
    if lfw is None:
        print("skipped: needs LFW's photos (GRAPHSPEC_LFW or ../shared/data/lfw)")
        return
    files = image_files([lfw / "lfw-deepfunneled"])[:args.images]
    model = graphspec.load("nn4small2-lfw").eval()
    prep = Execution(aligned=True).preprocessing(model)
    cores = torch.get_num_threads()
    batches = -(-len(files) // 64)
    print(f"embed float32's work per image, {len(files)} LFW photos, {cores} cores; rounds one after the other")
    print("| round | network images/s (wall) | network CPU ms/image | cores busy | decoding CPU ms/image "
          "(decode; resize) | bound: images/s with every core busy |\n|---|---:|---:|---:|---:|---:|")
    for r in range(args.rounds):
        wall, cpu, by_type = network(model, batches)
        per_image = decoding(prep, files)
        net_cpu, dec_cpu = cpu / (64 * batches), per_image["the whole pipeline (Preprocessing.load)"]
        decode, resize = per_image["open + JPEG decode (Pillow)"], per_image["resize to 96x96 (Pillow, bilinear)"]
        print(f"| {r + 1} | {64 * batches / wall:.0f} | {net_cpu * 1e3:.2f} | {cpu / wall / cores:.2f} | "
              f"{dec_cpu * 1e3:.2f} ({decode * 1e3:.2f}; {resize * 1e3:.2f}) | {cores / (net_cpu + dec_cpu):.0f} |",
              flush=True)
    spin = os.environ.get("GOMP_SPINCOUNT", "unset")
    print(f"\nlibgomp's idle spin (GOMP_SPINCOUNT={spin}): {idle_spin_ms():.1f} ms of CPU after a parallel operator")
    total = sum(by_type.values())
    print("last round's forward (batch 64) by vertex type: " + ", ".join(
        f"{name} {t * 1e3:.1f} ms ({t / total:.0%})" for name, t in sorted(by_type.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
