"""Classification evaluation as DL4J's ``Evaluation`` reports it: accuracy and macro-averaged precision, recall
and F1 (averaged over the classes that occur in the labels or the predictions)."""
from __future__ import annotations

import torch


def classification_metrics(predicted: torch.Tensor, actual: torch.Tensor, n_classes: int) -> dict[str, float]:
    predicted, actual = predicted.long(), actual.long()
    tp = torch.bincount(actual[predicted == actual], minlength=n_classes).double()
    pred_count = torch.bincount(predicted, minlength=n_classes).double()
    true_count = torch.bincount(actual, minlength=n_classes).double()
    seen = (pred_count + true_count) > 0
    precision = torch.where(pred_count > 0, tp / pred_count.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(true_count > 0, tp / true_count.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    n = max(int(seen.sum()), 1)
    return {"accuracy": float((predicted == actual).double().mean()) if len(actual) else 0.0,
            "precision": float(precision[seen].sum() / n), "recall": float(recall[seen].sum() / n),
            "f1": float(f1[seen].sum() / n), "examples": int(len(actual))}
