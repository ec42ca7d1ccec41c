"""Long fuzzing run of the spec language (RELIABILITY.md): N random documents, N mutations of the tutorial's spec
(as YAML and as dicts) and N random texts; each must end in a spec or a located GraphspecError within a time cap.

    .venv/bin/python benchmarks/fuzz_specs.py --cases 10000 [--seed 0] [--cap 10]
"""
from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from graphspec.fuzz import check, dump, mutate, random_yaml  # noqa: E402

SPEC = yaml.safe_load((Path(__file__).resolve().parents[1] / "specs" / "nn4small2.yaml").read_text())
ALPHABET = list("abc:-[]{}!&*#|>'\"\n\t 0123456789$%.,?@`~")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=10_000, help="cases per family")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cap", type=float, default=10.0, help="seconds before a case counts as a hang")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(args.seed)
    families = {
        "random documents": lambda: dump(random_yaml(rng)),
        "mutated tutorial spec (YAML)": lambda: dump(mutate(SPEC, rng, rng.randint(1, 4))),
        "mutated tutorial spec (dict)": lambda: mutate(SPEC, rng, rng.randint(1, 4)),
        "random text": lambda: "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 120))) + "\n",
    }
    failures = 0
    print(f"| family | cases | valid | located errors | other exceptions | hangs (> {args.cap:g} s) | slowest |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, make in families.items():
        counts, slowest = Counter(), 0.0
        for _ in range(args.cases):
            case = make()
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.cap)
            try:
                counts[check(case)] += 1
            except Hang:
                counts["hang"] += 1
            except Exception as e:  # noqa: BLE001 - the point is to count these
                counts["other"] += 1
                print(f"  {name}: {type(e).__name__}: {e}", file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - start)
        failures += counts["other"] + counts["hang"]
        print(f"| {name} | {args.cases:,} | {counts['ok']:,} | {counts['error']:,} | {counts['other']} | "
              f"{counts['hang']} | {slowest * 1000:.0f} ms |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
