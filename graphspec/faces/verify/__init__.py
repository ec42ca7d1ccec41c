"""Face verification on pair protocols (LFW View 1 / View 2): metrics and the ``graphspec verify`` driver."""
from .metrics import (VerificationReport, accuracy_at, best_threshold, distances, eer, evaluate_folds,
                      evaluate_with_threshold, roc_curve, roc_auc, tar_at_far)

__all__ = ["distances", "best_threshold", "accuracy_at", "roc_curve", "roc_auc", "eer", "tar_at_far",
           "evaluate_folds", "evaluate_with_threshold", "VerificationReport"]
