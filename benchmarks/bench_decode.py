"""How `embed` shares the cores between decoding photos and the network (graphspec.faces.embed._Decoder).

    .venv/bin/python benchmarks/bench_decode.py [--photos 128] [--aligned 512]

Three ways, side by side, three rounds each, on the shipped `nn4small2-lfw` (float32, channels-last, batch 64):
one thread decoding the next batch while the network runs (embed before issue 22's fourth step), every core
decoding the next batch while the network runs (`overlap`, what embed does when the network runs on a GPU), and
every core decoding, then the network (what embed does on the CPU), with where each run's time went. Two workloads: LFW photos whose face is found
and aligned (~30 ms a photo), and the same photos taken as aligned already (`--aligned`: decode and resize only).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graphspec  # noqa: E402  (before torch, as the command line: graphspec/openmp.py)
import torch  # noqa: E402
from graphspec.allocator import reuse_freed_memory  # noqa: E402
from graphspec.compiler import subgraph  # noqa: E402
from graphspec.execution import Execution  # noqa: E402
from graphspec.faces.data import locate_lfw  # noqa: E402
from graphspec.faces.embed import _Decoder, image_files  # noqa: E402

WAYS = {  # name: (overlap, threads; None = every core)
    "1 thread ahead of the network (before)": (True, 1),
    "every core ahead of the network": (True, None),
    "every core, then the network (now, CPU)": (False, None),
}


def timed_run(model, files, aligned: bool, overlap: bool, threads) -> dict[str, float]:
    """Seconds: waiting for decoded images, preparing the batch tensor, the network, and in all."""
    ex = Execution(aligned=aligned)
    prep = ex.preprocessing(model)
    net = ex.prepare(model, subgraph(model, ["embeddings"], needed_inputs_only=True))
    batches = [files[i:i + 64] for i in range(0, len(files), 64)]
    spent = dict.fromkeys(("decoding", "batch tensor", "network"), 0.0)
    start = time.perf_counter()
    with _Decoder(prep, False, overlap, threads) as decoder, torch.no_grad():
        mark = time.perf_counter()
        for images, *_ in decoder.batches(batches):
            spent["decoding"] += time.perf_counter() - mark
            mark = time.perf_counter()
            x = ex.input(prep.to_tensor(np.stack(images)))
            spent["batch tensor"] += time.perf_counter() - mark
            mark = time.perf_counter()
            net(x)["embeddings"].numpy()
            spent["network"] += time.perf_counter() - mark
            mark = time.perf_counter()
    spent["all"] = time.perf_counter() - start
    return spent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=128, help="photos whose face is found and aligned")
    ap.add_argument("--aligned", type=int, default=512, help="photos taken as aligned already")
    args = ap.parse_args(argv)
    reuse_freed_memory()
    lfw = locate_lfw()
    if lfw is None:
        print("skipped: needs LFW's photos (GRAPHSPEC_LFW or ../shared/data/lfw)")
        return
    files = image_files([lfw / "lfw-deepfunneled"])
    model = graphspec.load("nn4small2-lfw").eval()
    print(f"embed's decoding, {torch.get_num_threads()} threads; images/s of three rounds")
    print("| workload | way | images/s | waiting for decoding; batch tensor; network |\n|---|---|---|---|")
    for workload, aligned, n in (("photos, face found", False, args.photos), ("aligned", True, args.aligned)):
        runs = {way: [] for way in WAYS}
        for _ in range(3):
            for way, (overlap, threads) in WAYS.items():
                runs[way].append(timed_run(model, files[:n], aligned, overlap, threads))
        for way, spent in runs.items():
            rates = " / ".join(f"{n / s['all']:.0f}" for s in spent)
            split = "; ".join(f"{k} {min(s[k] for s in spent):.2f}-{max(s[k] for s in spent):.2f} s"
                              for k in ("decoding", "batch tensor", "network"))
            print(f"| {workload} ({n}) | {way} | {rates} | {split} |", flush=True)


if __name__ == "__main__":
    main()
