"""``identify`` and ``cluster``: who is in each photo, against a gallery of known people (one sub-folder each), and
which photos of a collection show the same person.

Both work on a model's embeddings (``embed``) and the verification distance (squared L2, or cosine): a photo is a
gallery person when its nearest gallery image is closer than the threshold (the model's verification threshold),
else "unknown"; a collection is grouped by dlib's Chinese whispers on the graph whose edges join photos closer than
the threshold.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import GraphspecError, Location
from .verify.metrics import distances

UNKNOWN = "unknown"


@dataclass
class Match:
    """One photo's answer: the gallery person (or ``unknown``), the distance to that person's nearest gallery image,
    and the nearest person even when beyond the threshold."""

    path: str
    name: str
    distance: float
    nearest: str


def gallery_of(folder: "str | os.PathLike") -> tuple[list[Path], list[str]]:
    """The images of a gallery folder and their people: one sub-folder per person, named after them."""
    from .embed import image_files
    root = Path(folder)
    if not root.is_dir():
        raise GraphspecError("the gallery must be a folder with one sub-folder of images per person",
                             location=Location(str(root)))
    people = sorted(p for p in root.iterdir() if p.is_dir())
    files, names = [], []
    for person in people:
        found = image_files([person]) if any(person.iterdir()) else []
        files += found
        names += [person.name] * len(found)
    if not files:
        raise GraphspecError("the gallery has no images in person sub-folders (gallery/NAME/photo.jpg)",
                             location=Location(str(root)))
    return files, names


def pairwise(a: np.ndarray, b: np.ndarray, metric: str = "sqeuclidean") -> np.ndarray:
    """Distances [len(a), len(b)] between every row of ``a`` and every row of ``b``: the verification metric's
    (:func:`graphspec.faces.verify.metrics.distances`), as matrix products (no [len(a)·len(b), D] copy)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "sqeuclidean":
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)
    if metric == "cosine":
        na = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
        nb = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
        return 1.0 - na @ nb.T
    return distances(a[:1], b[:1], metric)  # the metric's own error for an unknown name


def identify(probes: np.ndarray, gallery: np.ndarray, names: Sequence[str], paths: Sequence[str],
             threshold: float, metric: str = "sqeuclidean") -> list[Match]:
    """Each probe's nearest gallery image: its person when closer than ``threshold``, else ``unknown``."""
    if len(gallery) == 0:
        raise GraphspecError("the gallery is empty")
    d = pairwise(probes, gallery, metric)
    best = d.argmin(1)
    return [Match(str(p), names[k] if d[i, k] < threshold else UNKNOWN, float(d[i, k]), names[k])
            for i, (p, k) in enumerate(zip(paths, best))]


def chinese_whispers(rows: np.ndarray, threshold: float, metric: str = "sqeuclidean", iterations: int = 100,
                     seed: int = 0) -> np.ndarray:
    """dlib's Chinese whispers clustering (Biemann 2006; dlib's ``chinese_whispers``): every photo starts in its own
    cluster; in each of ``iterations`` rounds, in a random order, a photo takes the label most common among the
    photos closer than ``threshold`` (ties: the smallest label). Clusters are numbered by size, largest first."""
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    d = pairwise(rows, rows, metric)
    neighbours = [np.flatnonzero((d[i] < threshold) & (np.arange(n) != i)) for i in range(n)]
    labels = np.arange(n)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = False
        for i in rng.permutation(n):
            if len(neighbours[i]) == 0:
                continue
            counts = np.bincount(labels[neighbours[i]], minlength=n)
            best = int(counts.argmax())
            if best != labels[i]:
                labels[i], changed = best, True
        if not changed:
            break
    sizes = np.bincount(labels, minlength=n)
    order = sorted(set(labels.tolist()), key=lambda c: (-sizes[c], c))
    renumber = {c: k for k, c in enumerate(order)}
    return np.array([renumber[c] for c in labels], dtype=np.int64)


def pair_scores(labels: np.ndarray, truth: Sequence) -> dict[str, float]:
    """Pairwise precision, recall and F-measure of a clustering against the true identities: over all pairs of
    photos, a pair is predicted "same" when both are in one cluster."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    i, j = np.triu_indices(len(labels), k=1)
    predicted, actual = labels[i] == labels[j], truth[i] == truth[j]
    tp = float((predicted & actual).sum())
    precision = tp / predicted.sum() if predicted.any() else 1.0
    recall = tp / actual.sum() if actual.any() else 1.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f_measure": f, "clusters": int(len(set(labels.tolist())))}


def write_matches(matches: Sequence[Match], out: "str | os.PathLike") -> Path:
    """``.csv`` (path, name, distance, nearest) or ``.json`` (a list of objects)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps([asdict(m) for m in matches], indent=2))
        return out
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "name", "distance", "nearest"])
        for m in matches:
            w.writerow([m.path, m.name, repr(m.distance), m.nearest])
    return out


def write_clusters(labels: np.ndarray, files: Sequence, out: "str | os.PathLike") -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "cluster"])
        for f, c in zip(files, labels):
            w.writerow([str(f), int(c)])
    return out


def contact_sheets(labels: np.ndarray, files: Sequence, folder: "str | os.PathLike", thumb: int = 96,
                   per_sheet: int = 36, picture=None) -> list[Path]:
    """One JPEG per cluster of two or more photos: a grid of up to ``per_sheet`` thumbnails. ``picture(name)``
    gives a member's Pillow image (default: the file opened; ``--every-face`` clusters show the aligned face)."""
    from PIL import Image
    picture = picture or _opened
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for c in sorted(set(labels.tolist())):
        members = [f for f, label in zip(files, labels) if label == c][:per_sheet]
        if len(members) < 2:
            continue
        cols = min(6, len(members))
        sheet = Image.new("RGB", (cols * thumb, -(-len(members) // cols) * thumb), "white")
        for k, f in enumerate(members):
            im = picture(f).convert("RGB")
            im.thumbnail((thumb, thumb))
            sheet.paste(im, ((k % cols) * thumb, (k // cols) * thumb))
        path = folder / f"cluster-{c:04d}.jpg"
        sheet.save(path, quality=85)
        written.append(path)
    return written


def _opened(path):
    from ..data.images import open_image
    with open_image(path) as image:
        image.load()
        return image
