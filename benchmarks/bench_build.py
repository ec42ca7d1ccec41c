"""How `graphspec.build` scales with the size of a graph: chains and wide merges of 100, 1,000 and 10,000
vertices, plus nn4small2; the growth exponent is fitted on a log-log scale (1.0 = linear).

    .venv/bin/python benchmarks/bench_build.py [--sizes 100 1000 10000] [--repeats 3]

The graphs are generated as Python dicts (what a YAML file parses to), so the times are validation + analysis
+ module construction + initialisation + fx code generation, without YAML parsing. Chain: input -> N-1 dense
layers of width 8 in a row. Wide merge: input -> N-2 dense branches of width 2 -> one merge vertex. Target:
about linear growth, 10,000 vertices in under 5 s.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graphspec  # noqa: E402


def chain(n: int) -> dict:
    vertices, prev = {}, "x"
    for i in range(n - 1):
        vertices[f"d{i}"] = {"type": "dense", "inputs": [prev], "out": 8}
        prev = f"d{i}"
    return {"version": 1, "name": f"chain-{n}", "inputs": {"x": {"type": "feed_forward", "size": 8}},
            "vertices": vertices, "outputs": [prev]}


def wide(n: int) -> dict:
    vertices = {f"b{i}": {"type": "dense", "inputs": ["x"], "out": 2} for i in range(n - 2)}
    vertices["merge"] = {"type": "merge", "inputs": list(vertices)}
    return {"version": 1, "name": f"wide-{n}", "inputs": {"x": {"type": "feed_forward", "size": 8}},
            "vertices": vertices, "outputs": ["merge"]}


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def slope(points: list[tuple[int, float]]) -> float:
    xs, ys = [math.log(n) for n, _ in points], [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    results = {"nn4small2": best_of(lambda: graphspec.build(ROOT / "specs" / "nn4small2.yaml", seed=1),
                                    args.repeats)}
    print(f"nn4small2 (YAML file, 133 vertices): {results['nn4small2'] * 1e3:.0f} ms")
    print("| graph | " + " | ".join(f"{n:,} vertices" for n in args.sizes) + " | growth exponent |")
    print("|---|" + "---:|" * (len(args.sizes) + 1))
    for label, make in (("chain", chain), ("wide merge", wide)):
        points = [(n, best_of(lambda n=n: graphspec.build(make(n), seed=1), args.repeats if n < 10000 else 1))
                  for n in args.sizes]
        results[label] = points
        print(f"| {label} | " + " | ".join(f"{t:.2f} s" for _, t in points) + f" | {slope(points):.2f} |")
    return results


if __name__ == "__main__":
    main()
