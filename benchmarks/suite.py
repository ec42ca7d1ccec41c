"""Every performance benchmark in one command, each printing its own table (BENCHMARKS.md records the results).

    .venv/bin/python benchmarks/suite.py            # ~10 minutes on the project's 2-vCPU machine
    .venv/bin/python benchmarks/suite.py --quick    # smoke run (~2 minutes)
    .venv/bin/python benchmarks/suite.py --compile  # + torch.compile options (adds minutes of compilation)

1. core: graphspec vs hand-written nn4small2, eager: build, inference forward, training step (bench_core.py)
2. build scaling: chains and wide merges of 100 / 1,000 / 10,000 vertices (bench_build.py)
3. execution options: eager, channels-last, bf16, (compile) for both sides, with % of the matmul peak
   (bench_options.py)
4. `graphspec embed` end to end (decode + network) per execution option (bench_embed.py), and how it shares
   the cores between decoding and the network (bench_decode.py), and the CPU time its work takes per image: the
   best it could do with every core busy (bench_embed_budget.py)
5. peak memory (RSS) of training and inference (bench_memory.py)
6. data path: cold decode, cache build, warm batches vs training consumption (bench_data.py)
7. profile of a training step: blocks, vertex types, operators (profile_step.py)

Run it on an otherwise idle machine: with 2 cores, any other process changes the absolute figures (the ratios,
measured side by side and interleaved, much less).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import graphspec  # noqa: E402  first: libgomp's spin is set before torch loads, as the command line does

import bench_build  # noqa: E402
import bench_core  # noqa: E402
import bench_data  # noqa: E402
import bench_decode  # noqa: E402
import bench_embed  # noqa: E402
import bench_embed_budget  # noqa: E402
import bench_memory  # noqa: E402
import bench_options  # noqa: E402
import profile_step  # noqa: E402
import torch  # noqa: E402


def section(title: str) -> float:
    print(f"\n## {title}\n", flush=True)
    return time.perf_counter()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    q = ["--quick"] if args.quick else []
    print(f"graphspec benchmark suite, {datetime.datetime.now().isoformat(timespec='minutes')}; "
          f"{bench_core.cpu_model()}, {os.cpu_count()} CPUs, graphspec {graphspec.__version__}, "
          f"torch {torch.__version__}, python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}")
    print("command: .venv/bin/python benchmarks/suite.py " + " ".join(sys.argv[1:] if argv is None else argv))
    steps = [
        ("1. core: graphspec vs hand-written (eager)", lambda: bench_core.main(q)),
        ("2. build scaling", lambda: bench_build.main(["--sizes", "100", "1000"] if args.quick else [])),
        ("3. execution options", lambda: bench_options.main(q + (["--compile"] if args.compile else []))),
        ("4. graphspec embed end to end", lambda: bench_embed.main((["--images", "128"] if args.quick else [])
                                                                   + (["--compile"] if args.compile else []))),
        ("4b. embed's decoding", lambda: bench_decode.main(["--photos", "32", "--aligned", "128"] if args.quick
                                                             else [])),
        ("4c. embed's work per image", lambda: bench_embed_budget.main(["--images", "128", "--rounds", "1"]
                                                                        if args.quick else [])),
        ("5. peak memory", lambda: bench_memory.main(["--steps", "1"] if args.quick else [])),
        ("6. data path", lambda: bench_data.main(["--images", "500"] if args.quick else [])),
        ("7. profile of a training step", lambda: profile_step.main(["--channels-last"])),
    ]
    for title, run in steps:
        t = section(title)
        run()
        print(f"({time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
