"""`graphspec embed` end to end (JPEG decode + preprocessing + network) on LFW photos, per execution option.

    .venv/bin/python benchmarks/bench_embed.py [--images 512] [--compile]
    .venv/bin/python benchmarks/bench_embed.py --network-only   # the network alone, three interleaved rounds

The model is the shipped `nn4small2-lfw` (the snipped tutorial network, 96x96 RGB input), run as on photos aligned
once (`--aligned`: the pipeline without its ~30 ms of face detection per photo, which `graphspec dataset --align`
pays once); the images are the first ``--images`` files of the LFW folder (else the synthetic faces). Options run one after the other, twice
each (the second run is reported: the OS file cache is warm and compilation, if any, is done). Goal (issue 8):
>= 200 images/s on the project's 2-vCPU machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graphspec  # noqa: E402  (before torch, as the command line: graphspec/openmp.py)
import torch  # noqa: E402
from graphspec.allocator import reuse_freed_memory  # noqa: E402
from graphspec.faces.data import locate_lfw  # noqa: E402
from graphspec.execution import Execution  # noqa: E402
from graphspec.faces.embed import embed, image_files  # noqa: E402

OPTIONS = {
    "NCHW float32": Execution(channels_last=False, aligned=True),
    "NHWC float32, no inference rewrites": Execution(rewrite=False, aligned=True),
    "NHWC float32 (default)": Execution(aligned=True),
    "NHWC bf16, no inference rewrites": Execution(precision="bf16", rewrite=False, aligned=True),
    "NHWC bf16": Execution(precision="bf16", aligned=True),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--network-only", action="store_true", help="time the network on a random batch of 64, "
                    "without decoding, three rounds of 8 batches interleaved over the options")
    args = ap.parse_args(argv)
    reuse_freed_memory()  # as the graphspec command line does (GRAPHSPEC_MALLOC=default: glibc's defaults)
    if args.network_only:
        return network_only()
    lfw = locate_lfw()
    if lfw is not None:
        files = image_files([lfw / "lfw-deepfunneled"])[:args.images]
    else:
        from graphspec.faces.data.synthetic import synthetic_faces
        files = image_files([synthetic_faces(identities=32, images=16)])[:args.images]
    options = dict(OPTIONS)
    if args.compile:
        options["NHWC float32 + compile"] = Execution(compile=True, aligned=True)
        options["NHWC bf16 + compile"] = Execution(precision="bf16", compile=True, aligned=True)
    results = {}
    print(f"graphspec embed nn4small2-lfw, {len(files)} images, batch 64 (decode + preprocess + network)")
    print("| option | images/s | first run (s) |\n|---|---:|---:|")
    for name, ex in options.items():
        model = graphspec.load("nn4small2-lfw")
        times = []
        for _ in range(2):
            t = time.perf_counter()
            embed(model, files, execution=ex)
            times.append(time.perf_counter() - t)
        results[name] = len(files) / times[1]
        print(f"| {name} | {results[name]:.0f} | {times[0]:.1f} |", flush=True)
    return results


def network_only() -> dict:
    from graphspec.compiler import subgraph
    x = torch.rand(64, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    rates = {name: [] for name in OPTIONS}
    for _ in range(3):
        for name, ex in OPTIONS.items():
            model = graphspec.load("nn4small2-lfw").eval()
            net, batch = ex.prepare(model, subgraph(model, ["embeddings"], needed_inputs_only=True)), ex.input(x)
            with torch.no_grad(), ex.context():
                net(batch)
                start = time.perf_counter()
                for _ in range(8):
                    net(batch)
            rates[name].append(8 * 64 / (time.perf_counter() - start))
    print("nn4small2-lfw's network alone, batch 64, images/s of three interleaved rounds")
    print("| option | images/s |\n|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {' / '.join(f'{v:.0f}' for v in r)} |")
    return rates


if __name__ == "__main__":
    main()
