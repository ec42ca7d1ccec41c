"""Verification metrics from pair distances: "same person" is predicted when the distance is below a threshold.

All functions take numpy arrays: ``d`` distances and ``same`` booleans, one per pair.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


def distances(a: np.ndarray, b: np.ndarray, metric: str = "sqeuclidean") -> np.ndarray:
    """Row-wise distances: ``sqeuclidean`` ‖a−b‖² (0..4 for unit vectors) or ``cosine`` 1 − cos(a, b)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "sqeuclidean":
        return ((a - b) ** 2).sum(1)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1).clip(1e-12)
        nb = np.linalg.norm(b, axis=1).clip(1e-12)
        return 1.0 - (a * b).sum(1) / (na * nb)
    raise ValueError(f"metric must be 'sqeuclidean' or 'cosine'; received '{metric}'")


def accuracy_at(d: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((d < threshold) == same).mean()) if len(d) else 0.0


def best_threshold(d: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs: midpoints between consecutive sorted distances
    (and beyond both ends) are all the distinct decisions; ties go to the smallest such threshold."""
    u = np.unique(d)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]]) if len(u) else np.array([0.0])
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], same[order].astype(np.int64)
    # correct(t) = #same with d < t + #different with d >= t, for every candidate at once
    below = np.searchsorted(ds, candidates, side="left")
    same_below = np.concatenate([[0], np.cumsum(ss)])[below]
    diff_total = len(ss) - ss.sum()
    diff_below = below - same_below
    correct = same_below + (diff_total - diff_below)
    return float(candidates[int(np.argmax(correct))])


def roc_curve(d: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false accept rate, true accept rate) as the threshold sweeps every distance, from (0, 0) to (1, 1)."""
    order = np.argsort(d, kind="stable")
    ds, ss = d[order], same[order].astype(bool)
    tp, fp = np.cumsum(ss), np.cumsum(~ss)
    last = np.r_[ds[1:] != ds[:-1], True]  # one point per distinct distance (ties, infinite ones too, together)
    tpr = np.r_[0.0, tp[last] / max(ss.sum(), 1)]
    fpr = np.r_[0.0, fp[last] / max((~ss).sum(), 1)]
    return fpr, tpr


def roc_auc(d: np.ndarray, same: np.ndarray) -> float:
    fpr, tpr = roc_curve(d, same)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def eer(d: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate: where the false accept rate equals the false reject rate (linear interpolation)."""
    fpr, tpr = roc_curve(d, same)
    fnr = 1 - tpr
    diff = fpr - fnr
    i = int(np.argmax(diff >= 0))  # first point where FAR >= FRR
    if i == 0:
        return float(fpr[0])
    x0, x1 = diff[i - 1], diff[i]
    t = x0 / (x0 - x1) if x1 != x0 else 0.0
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tar_at_far(d: np.ndarray, same: np.ndarray, far: float) -> float:
    """Highest true accept rate whose false accept rate does not exceed ``far``."""
    fpr, tpr = roc_curve(d, same)
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


@dataclass
class VerificationReport:
    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar_at_far_1e2: float
    tar_at_far_1e3: float
    threshold: float
    pairs: int
    metric: str
    protocol: str
    fold_accuracies: list[float] = field(default_factory=list)
    fold_thresholds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        acc = f"{self.accuracy:.4f}" + (f" ± {self.accuracy_std:.4f}" if self.fold_accuracies else "")
        return [f"protocol: {self.protocol} ({self.pairs} pairs, {self.metric} distance)",
                f"accuracy: {acc}", f"threshold: {self.threshold:.4f}", f"ROC AUC: {self.auc:.4f}",
                f"EER: {self.eer:.4f}", f"TAR @ FAR 1e-2: {self.tar_at_far_1e2:.4f}",
                f"TAR @ FAR 1e-3: {self.tar_at_far_1e3:.4f}"]


def _curve_metrics(d, same) -> dict:
    return {"auc": roc_auc(d, same), "eer": eer(d, same), "tar_at_far_1e2": tar_at_far(d, same, 1e-2),
            "tar_at_far_1e3": tar_at_far(d, same, 1e-3)}


def evaluate_folds(d: np.ndarray, same: np.ndarray, folds: np.ndarray, metric: str, protocol: str) -> VerificationReport:
    """k-fold protocol (LFW View 2): for each fold, the threshold is chosen on the other folds and tested on it;
    accuracy is the mean ± population std over folds. Curve metrics use all pairs."""
    accs, ths = [], []
    for f in np.unique(folds):
        test = folds == f
        t = best_threshold(d[~test], same[~test])
        accs.append(accuracy_at(d[test], same[test], t))
        ths.append(t)
    return VerificationReport(float(np.mean(accs)), float(np.std(accs)), threshold=float(np.median(ths)),
                              pairs=len(d), metric=metric, protocol=protocol, fold_accuracies=accs,
                              fold_thresholds=ths, **_curve_metrics(d, same))


def evaluate_with_threshold(d: np.ndarray, same: np.ndarray, threshold: float, metric: str,
                            protocol: str) -> VerificationReport:
    """A fixed threshold (e.g. chosen on View 1's training pairs) applied to these pairs."""
    return VerificationReport(accuracy_at(d, same, threshold), 0.0, threshold=threshold, pairs=len(d),
                              metric=metric, protocol=protocol, **_curve_metrics(d, same))
