"""Classification evaluation as DL4J's ``Evaluation`` reports it: accuracy; macro precision averaged over the
classes that were predicted at least once (tp+fp > 0) and macro recall over the classes that occur (tp+fn > 0) —
classes where the value is undefined are left out, as DL4J does; F1 = 2PR/(P+R) of those macro values.

Also the decisions on pairs ("same" below a distance threshold: ROC, AUC, EER, best threshold), which face
verification (:mod:`graphspec.faces.verify`) and the verification of identities set aside in training share."""
from __future__ import annotations

import numpy as np
import torch


def head_metrics(head, output: torch.Tensor, features: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None = None) -> dict[str, float]:
    """What one trained output scores on held-out data: accuracy, precision, recall and F1 for a classifier (class
    indices as targets; for a per-step classifier [N, C, T] over every real time step, ``mask`` [N, T] telling
    which are real), mean squared and absolute error for values, the mean loss for a metric-learning loss."""
    if head.vertex is not None and not target.is_floating_point() and output.dim() == target.dim() + 1 \
            and output.shape[1] > 1:
        predicted = output.argmax(1)
        if output.dim() == 3:  # per step: every real step is one classified example
            keep = mask.bool() if mask is not None else torch.ones_like(target, dtype=torch.bool)
            predicted, target = predicted[keep], target[keep]
        return classification_metrics(predicted, target, output.shape[1])
    if target.is_floating_point() and target.shape == output.shape:
        diff = (output - target).flatten(1)
        return {"mse": float((diff ** 2).mean()), "mae": float(diff.abs().mean()), "examples": int(len(target))}
    return {"loss": float(head.loss(features.float(), target, mask).mean()), "examples": int(len(target))}


def classification_metrics(predicted: torch.Tensor, actual: torch.Tensor, n_classes: int) -> dict[str, float]:
    predicted, actual = predicted.long(), actual.long()
    tp = torch.bincount(actual[predicted == actual], minlength=n_classes).double()
    pred_count = torch.bincount(predicted, minlength=n_classes).double()
    true_count = torch.bincount(actual, minlength=n_classes).double()
    predicted_classes, actual_classes = pred_count > 0, true_count > 0
    precision = float((tp[predicted_classes] / pred_count[predicted_classes]).mean()) if predicted_classes.any() else 0.0
    recall = float((tp[actual_classes] / true_count[actual_classes]).mean()) if actual_classes.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"accuracy": float((predicted == actual).double().mean()) if len(actual) else 0.0,
            "precision": precision, "recall": recall, "f1": f1, "examples": int(len(actual))}


def verification_metrics(features: torch.Tensor, labels, pairs: int = 3000, seed: int = 0) -> dict[str, float]:
    """How well ``features`` tell held-out identities apart, as face verification measures it: up to ``pairs``
    same-class pairs and as many different-class pairs drawn at random (seeded), the squared L2 distance of the
    L2-normalised rows; ROC AUC, the equal error rate, and the accuracy at the best threshold on these pairs
    (optimistic, like a threshold chosen on the test pairs)."""
    x = torch.nn.functional.normalize(features.detach().float().flatten(1).cpu(), dim=1)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    if not same.any() or same.all():
        return {}
    pos = rng.permutation(np.flatnonzero(same))[:pairs]
    neg = rng.choice(np.flatnonzero(~same), size=min(len(pos), int((~same).sum())), replace=False)
    chosen = np.concatenate([pos, neg])
    d = ((x[i[chosen]] - x[j[chosen]]) ** 2).sum(1).double().numpy()
    y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return {"verification_auc": roc_auc(d, y), "verification_accuracy": accuracy_at(d, y, best_threshold(d, y)),
            "eer": eer(d, y), "pairs": int(len(d))}


# --- decisions on pairs: "same" when a distance is below a threshold (face verification, held-out identities) ---


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
