"""Drawing a pairs file (LFW View 1 format) from any folder in LFW layout, e.g. the synthetic faces."""
from __future__ import annotations

import os
import random
from pathlib import Path

from ...errors import GraphspecError, Location


def draw_pairs(root: str | os.PathLike, n: int, seed: int = 0, people: list[str] | None = None) -> list[tuple]:
    """``n`` matched pairs ``(name, i, j)`` and ``n`` mismatched pairs ``(name1, i, name2, j)``, seeded; image
    numbers are 1-based as in LFW's files."""
    root = Path(root)
    counts = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if people is None or d.name in people:
            counts[d.name] = len([f for f in d.iterdir() if f.name.startswith(d.name + "_")])
    multi = [p for p, c in counts.items() if c >= 2]
    if len(multi) < 1 or len(counts) < 2:
        raise GraphspecError("need at least one person with two images and two people to draw pairs",
                             location=Location(str(root)))
    rng = random.Random(seed)
    same, diff = set(), set()
    for _ in range(100 * n):
        if len(same) >= n:
            break
        p = rng.choice(multi)
        i, j = sorted(rng.sample(range(1, counts[p] + 1), 2))
        same.add((p, i, j))
    names = sorted(counts)
    for _ in range(100 * n):
        if len(diff) >= n:
            break
        a, b = sorted(rng.sample(names, 2))
        diff.add((a, rng.randint(1, counts[a]), b, rng.randint(1, counts[b])))
    return sorted(same)[:n] + sorted(diff)[:n]


def write_pairs(root: str | os.PathLike, out: str | os.PathLike, n: int, seed: int = 0,
                people: list[str] | None = None) -> Path:
    pairs = draw_pairs(root, n, seed, people)
    half = len(pairs) // 2
    lines = [str(half)] + ["\t".join(map(str, p)) for p in pairs]
    out = Path(out)
    out.write_text("\n".join(lines) + "\n")
    return out
