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
