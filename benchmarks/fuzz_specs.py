"""Long fuzzing run of the spec language (RELIABILITY.md): N random documents, N mutations of the tutorial's spec
(as YAML and as dicts) and N random texts; each must end in a spec or a located GraphspecError within a time cap.
Then N hostile documents of each family of graphspec.fuzz.HOSTILE_FAMILIES (template expressions, YAML aliases,
non-finite and huge numbers, huge shapes, mistyped names, control characters) through `validate`, `summary` and
`forward` in turn, in a sandboxed worker (graphspec.fuzz.Sandbox: an alarm of --cap seconds and a 3 GB address
space per case): each must exit 0 or 2, never 3, within the cap, printing no raw control character.

    .venv/bin/python benchmarks/fuzz_specs.py --cases 2500 [--hostile-cases 2500] [--seed 0] [--cap 10] \
        [--save failures/]
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
from graphspec.fuzz import (CASE_MEMORY, COMMANDS, HOSTILE_FAMILIES, Sandbox, check, dump, mutate,  # noqa: E402
                            random_yaml)

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
    ap.add_argument("--hostile-cases", type=int, default=None, help="cases per hostile family (default: --cases)")
    ap.add_argument("--families", default="", help="only the families whose names contain this text")
    ap.add_argument("--save", type=Path, help="write every failing document into this folder")
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
    for name, make in [(n, m) for n, m in families.items() if args.families in n]:
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
    failures += hostile(args, rng)
    return 1 if failures else 0


def hostile(args, rng: random.Random) -> int:
    """The hostile families through the command line in the sandbox; the failures' count."""
    cases = args.cases if args.hostile_cases is None else args.hostile_cases
    print(f"\n| hostile family | cases | exit 0 | exit 2 | internal errors | hangs (> {args.cap:g} s) | "
          "raw control characters | crashes | slowest | peak memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failures = 0
    with Sandbox(args.cap, CASE_MEMORY) as box:
        for name, make in HOSTILE_FAMILIES.items():
            if args.families not in name:
                continue
            counts, slowest, peak = Counter(), 0.0, 0.0
            for i in range(cases):
                document, command = make(rng), COMMANDS[i % len(COMMANDS)]
                outcome = box.run(command, document)
                counts[outcome.status] += 1
                slowest, peak = max(slowest, outcome.seconds), max(peak, outcome.peak_mb)
                if not outcome.survived:
                    print(f"  {name} #{i}: {outcome.describe()}", file=sys.stderr)
                    if args.save:
                        args.save.mkdir(parents=True, exist_ok=True)
                        (args.save / f"{name.split()[0]}-{i}-{command[0]}.yaml").write_text(document)
            failures += cases - counts["ok"] - counts["error"]
            print(f"| {name} | {cases:,} | {counts['ok']:,} | {counts['error']:,} | {counts['internal']} | "
                  f"{counts['hang']} | {counts['unsafe output']} | {counts['crash']} | {slowest:.1f} s | "
                  f"{peak:,.0f} MB |", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(main())
