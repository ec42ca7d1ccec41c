"""``graphspec verify``: embed the images of a pairs file once, then score the protocol."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import GraphspecError, Location
from .metrics import VerificationReport, best_threshold, distances, evaluate_folds, evaluate_with_threshold

FOLDS_IN_FILE = 10


def image_root(root: str | os.PathLike, pairs) -> Path:
    """The folder holding NAME/NAME_0001.jpg: ``root`` itself or its ``lfw-deepfunneled``/``lfw`` subfolder."""
    root = Path(root)
    name = pairs[0].name1 if pairs else ""
    for candidate in (root, root / "lfw-deepfunneled", root / "lfw"):
        if (candidate / name).is_dir():
            return candidate
    raise GraphspecError(f"no folder '{name}' (the first person of the pairs file) in {root} or its "
                         "lfw-deepfunneled/lfw subfolders; --data must be an LFW image folder",
                         location=Location(str(root)))


def pair_distances(model, root: Path, pairs, metric: str, *, flip: bool, batch_size: int, cache: dict,
                   progress=None, execution=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances and same-flags of ``pairs``; ``cache`` maps image path -> embedding across calls."""
    from ..embed import embed
    files = sorted({p for pair in pairs for p in pair.paths(root)} - set(cache))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise GraphspecError(f"{len(missing)} image(s) of the pairs file are missing, e.g. {missing[0]}",
                             location=Location(str(root)))
    if files:
        from ...execution import Execution
        no_face: list = []
        rows, done, skipped = embed(model, files, batch_size=batch_size, flip=flip, progress=progress,
                                    execution=execution or Execution(), no_subject=no_face)
        if skipped:
            raise GraphspecError(f"cannot read {skipped[0][0]}: {skipped[0][1]}", location=Location(str(root)))
        cache.update(zip(done, rows))
        cache.update({f: None for f in no_face})  # no face found: its pairs are scored as different
    paths = [p.paths(root) for p in pairs]
    found = np.array([cache[a] is not None and cache[b] is not None for a, b in paths])
    blank = np.zeros_like(next((v for v in cache.values() if v is not None), np.zeros(1, np.float32)))
    a = np.stack([blank if cache[p] is None else cache[p] for p, _ in paths])
    b = np.stack([blank if cache[q] is None else cache[q] for _, q in paths])
    d = np.where(found, distances(a, b, metric), np.inf)  # infinite: never "same"
    return d, np.array([p.same for p in pairs])


def verify(model, data: str | os.PathLike, pairs_path: str | os.PathLike, *, train_pairs: str | None = None,
           threshold: float | None = None, metric: str = "sqeuclidean", flip: bool = False, batch_size: int = 64,
           progress=None, execution=None) -> tuple[VerificationReport, np.ndarray, np.ndarray]:
    """The report, and the test distances and same-flags (for plots).

    The threshold: chosen per fold (View 2 files), on ``train_pairs``, fixed by ``threshold`` (e.g. the one a
    model card gives, for pairs of your own), or else by 10-fold cross-validation inside the file."""
    from ..data.protocol import read_pairs
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise GraphspecError("the pairs file has no pairs", location=Location(str(pairs_path)))
    folds = np.array([p.fold for p in pairs])
    if threshold is not None and (train_pairs or folds.max() > 0):
        why = "--train-pairs chooses one" if train_pairs else "a View 2 file chooses one per fold"
        raise GraphspecError(f"a fixed --threshold cannot be used here: {why}", location=Location(str(pairs_path)))
    root = image_root(data, pairs)
    cache: dict = {}
    d, same = pair_distances(model, root, pairs, metric, flip=flip, batch_size=batch_size, cache=cache,
                             progress=progress, execution=execution)
    name = Path(pairs_path).name
    without = int(np.isinf(d).sum())
    if without:
        name += f"; {without} pairs with a photo where no face was found, scored as different"
    if folds.max() > 0:
        report = evaluate_folds(d, same, folds, metric, f"{name}: {folds.max()} folds (View 2)")
    elif threshold is not None:
        report = evaluate_with_threshold(d, same, threshold, metric, f"{name}, threshold {threshold:g} given")
    elif train_pairs:
        tpairs = read_pairs(train_pairs)
        td, tsame = pair_distances(model, image_root(data, tpairs), tpairs, metric, flip=flip,
                                   batch_size=batch_size, cache=cache, progress=progress, execution=execution)
        t = best_threshold(td, tsame)
        report = evaluate_with_threshold(d, same, t, metric, f"{name}, threshold from {Path(train_pairs).name}")
    else:
        k = stratified_folds(same, FOLDS_IN_FILE)
        report = evaluate_folds(d, same, k, metric, f"{name}: {FOLDS_IN_FILE}-fold cross-validation in the file")
    return report, d, same


def stratified_folds(same: np.ndarray, k: int) -> np.ndarray:
    """Fold ids 1..k: contiguous runs within the matched and within the mismatched pairs, so every fold has
    both kinds in the file's proportion (as LFW's View 2 folds do)."""
    folds = np.zeros(len(same), dtype=np.int64)
    for flag in (True, False):
        idx = np.flatnonzero(same == flag)
        folds[idx] = np.arange(len(idx)) * k // max(len(idx), 1) + 1
    return folds


def check_plotting() -> None:
    """Refuse ``--plot`` now, before any pair is embedded, when matplotlib is missing."""
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        raise GraphspecError("--plot needs matplotlib: pip install 'graphspec[plot]'")


def plot_roc(d: np.ndarray, same: np.ndarray, report: VerificationReport, path: str | os.PathLike) -> None:
    check_plotting()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .metrics import roc_curve
    fpr, tpr = roc_curve(d, same)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {report.auc:.4f}, accuracy {report.accuracy:.4f}")
    ax.plot([0, 1], [0, 1], ls=":", c="gray")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(report.protocol, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
