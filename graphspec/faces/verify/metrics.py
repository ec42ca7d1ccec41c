"""Verification metrics from pair distances: "same person" is predicted when the distance is below a threshold.

All functions take numpy arrays: ``d`` distances and ``same`` booleans, one per pair. The decision metrics
themselves (best threshold, ROC, AUC, EER, TAR at FAR) are the framework's (:mod:`graphspec.train.evaluation`),
which also scores identities set aside during training; this module adds distances and LFW's protocols.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ...train.evaluation import accuracy_at, best_threshold, eer, roc_auc, roc_curve, tar_at_far

__all__ = ["distances", "accuracy_at", "best_threshold", "roc_curve", "roc_auc", "eer", "tar_at_far",
           "VerificationReport", "evaluate_folds", "evaluate_with_threshold"]


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
