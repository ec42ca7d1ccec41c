"""Identification and clustering on LFW's DevTest people (issue 20), for a face model (default: nn4small2-lfw).

    .venv/bin/python benchmarks/bench_identify.py                      # nn4small2-lfw
    .venv/bin/python benchmarks/bench_identify.py --model other.safetensors

* Rank-1 identification: the people of peopleDevTest.txt with at least two images; each person's first image is
  the gallery (one per person), every other image a probe; a probe is right when its nearest gallery image is its
  person (closed set, no threshold).
* Clustering: all images of those people, Chinese whispers at a threshold chosen on the DevTrain people with at
  least two images (the best pairwise F-measure there, so that DevTest is not used to tune), then pairwise
  precision, recall and F-measure on DevTest.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import graphspec  # noqa: E402
from graphspec.faces.embed import embed  # noqa: E402
from graphspec.faces.identify import chinese_whispers, pair_scores, pairwise  # noqa: E402


def people(lfw: Path, listing: str, limit: int | None) -> tuple[list[Path], list[str]]:
    rows = [line.split() for line in (lfw / listing).read_text().splitlines()[1:]]
    chosen = [(name, int(n)) for name, n in (r for r in rows if len(r) == 2) if int(n) >= 2][:limit]
    files = [lfw / "lfw-deepfunneled" / name / f"{name}_{i:04d}.jpg" for name, n in chosen for i in range(1, n + 1)]
    return files, [f.parent.name for f in files]


def embedded(model, files: list[Path]) -> tuple[np.ndarray, list[str], list[Path]]:
    """Rows, names and files of the photos the model embeds (an aligning model skips those without a face:
    reported, and left out of both measures)."""
    rows, done, skipped = embed(model, files)
    if skipped:
        print(f"{len(skipped)} of {len(files)} photos skipped (no face found / unreadable)")
    return rows, [Path(f).parent.name for f in done], done


def rank1(rows: np.ndarray, names: list[str]) -> float:
    first = {}
    for i, n in enumerate(names):
        first.setdefault(n, i)
    gallery = sorted(first.values())
    probes = [i for i in range(len(names)) if i not in set(gallery)]
    d = pairwise(rows[probes], rows[gallery])
    nearest = np.asarray(gallery)[d.argmin(1)]
    return float(np.mean([names[j] == names[i] for i, j in zip(probes, nearest)])), len(probes), len(gallery)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nn4small2-lfw")
    ap.add_argument("--lfw", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"))
    ap.add_argument("--train-people", type=int, default=300, help="DevTrain people used to choose the threshold")
    args = ap.parse_args()
    lfw, model = Path(args.lfw), graphspec.load(args.model)
    start = time.perf_counter()
    test_rows, test_names, test_files = embedded(model, people(lfw, "peopleDevTest.txt", None)[0])
    train_rows, train_names, _ = embedded(model, people(lfw, "peopleDevTrain.txt", args.train_people)[0])
    accuracy, probes, gallery = rank1(test_rows, test_names)
    print(f"model {args.model}: rank-1 identification {accuracy:.3f} ({probes} probes, gallery of {gallery} people)")
    grid = np.round(np.arange(0.02, 1.21, 0.02), 2)
    best = max(grid, key=lambda t: pair_scores(chinese_whispers(train_rows, t), train_names)["f_measure"])
    scores = pair_scores(chinese_whispers(test_rows, best), test_names)
    print(f"clustering at threshold {best} (chosen on {len(set(train_names))} DevTrain people): precision "
          f"{scores['precision']:.3f}, recall {scores['recall']:.3f}, F {scores['f_measure']:.3f}, "
          f"{scores['clusters']} clusters for {len(set(test_names))} people ({len(test_files)} images)")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
