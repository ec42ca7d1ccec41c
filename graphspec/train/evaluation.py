"""Classification evaluation as DL4J's ``Evaluation`` reports it: accuracy; macro precision averaged over the
classes that were predicted at least once (tp+fp > 0) and macro recall over the classes that occur (tp+fn > 0) —
classes where the value is undefined are left out, as DL4J does; F1 = 2PR/(P+R) of those macro values."""
from __future__ import annotations

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
    L2-normalised rows; ROC AUC (the probability that a different pair is farther than a same pair, ties half),
    the equal error rate, and the accuracy at the best threshold on these pairs (optimistic, like a threshold
    chosen on the test pairs)."""
    import numpy as np
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
    d = ((x[i[chosen]] - x[j[chosen]]) ** 2).sum(1).numpy()
    y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return {"verification_auc": _auc(d[y], d[~y]), **_threshold_scores(d, y), "pairs": int(len(d))}


def _auc(same, different) -> float:
    """P(different > same) + ½·P(equal) over all (same, different) pairs of pairs (Mann–Whitney U)."""
    import numpy as np
    ordered = np.sort(different)
    above = len(ordered) - np.searchsorted(ordered, same, side="right")
    ties = np.searchsorted(ordered, same, side="right") - np.searchsorted(ordered, same, side="left")
    return float((above.sum() + 0.5 * ties.sum()) / (len(same) * len(different)))


def _threshold_scores(d, same) -> dict[str, float]:
    """Best accuracy over the thresholds "same when d <= t" at every observed distance, and the equal error rate."""
    import numpy as np
    order = np.argsort(d, kind="stable")
    s, ordered = same[order], d[order]
    ends = np.r_[np.flatnonzero(np.diff(ordered)), len(d) - 1]  # tied distances are accepted together
    accepted_same = np.cumsum(s)[ends]  # same pairs at or below each threshold
    accepted_diff = np.cumsum(~s)[ends]
    n_same, n_diff = s.sum(), (~s).sum()
    correct = accepted_same + (n_diff - accepted_diff)
    frr, far = 1 - accepted_same / n_same, accepted_diff / n_diff
    k = int(np.argmin(np.abs(far - frr)))
    return {"verification_accuracy": float(max(correct.max(), n_diff) / len(d)), "eer": float((far[k] + frr[k]) / 2)}
