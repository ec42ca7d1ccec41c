"""Training losses, per example: the output layers' (from the pre-activation ``z``, for numerical stability)
and the metric-learning losses of the `loss` layer (contrastive, triplet with semi-hard mining).

DL4J computes ``score = Σ_i ℓ_i`` over the minibatch (``average=false``) and divides by N later; the `pytorch`
semantics takes the mean. These functions return the per-example vector ℓ so both can use them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphspecError


def per_example(loss: str, activation: str, z: torch.Tensor, y: torch.Tensor,
                smoothing: float = 0.0) -> torch.Tensor:
    """ℓ_i for labels ``y`` (class indices [N] or one-hot/targets [N, K]); ``smoothing`` ε trains against
    ``(1 - ε)·target + ε/K``."""
    k = z.shape[1]
    target = F.one_hot(y, k).to(z.dtype) if y.dim() == 1 else y.to(z.dtype)
    if smoothing:
        target = target * (1 - smoothing) + smoothing / k
    if loss in ("mcxent", "negativeloglikelihood"):
        if activation == "softmax":
            return -(target * torch.log_softmax(z, dim=1)).sum(1)
        p = _act(activation, z).clamp_min(1e-10)
        return -(target * torch.log(p)).sum(1)
    p = _act(activation, z)
    if loss in ("mse", "squared_loss"):  # DL4J LossMSE: mean over the K outputs
        return ((target - p) ** 2).mean(1)
    if loss == "l2":
        return ((target - p) ** 2).sum(1)
    if loss in ("l1", "mean_absolute_error"):
        diff = (target - p).abs()
        return diff.sum(1) if loss == "l1" else diff.mean(1)
    if loss == "xent":
        p = p.clamp(1e-10, 1 - 1e-10)
        return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).sum(1)
    raise GraphspecError(f"loss '{loss}' is not supported for training yet; use mcxent, negativeloglikelihood, "
                         "mse, squared_loss, l1, l2, mean_absolute_error or xent")


def contrastive(distance: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell, Chopra and LeCun (2006): ℓ = ½·d² for a pair of the same class (``same`` = 1) and
    ½·max(0, margin − d)² for a different pair (``same`` = 0); ``distance`` is [N] or [N, 1]."""
    d = distance.reshape(len(distance))
    y = same.reshape(len(same)).to(d.dtype)
    return 0.5 * (y * d ** 2 + (1 - y) * torch.clamp(margin - d, min=0) ** 2)


def triplet_given(triples: torch.Tensor, margin: float) -> torch.Tensor:
    """The triplet loss on given triplets: ``triples`` is [N, 3·D], anchor, positive and negative embeddings side by
    side (a merge of the three); ℓ = max(0, ‖a − p‖² − ‖a − n‖² + margin)."""
    a, p, n = triples.flatten(1).chunk(3, dim=1)
    return torch.clamp(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + margin, min=0)


def triplet_semi_hard(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """FaceNet's triplet loss with online semi-hard mining in the batch (Schroff et al. 2015), per anchor.

    Distances are squared Euclidean. For every anchor a and positive p (same label, p ≠ a) the negative is the
    closest one farther than the positive (d(a,n) > d(a,p): semi-hard); when there is none, the farthest
    negative. ℓ_a is the mean over a's positives of max(0, d(a,p) − d(a,n) + margin), and 0 for an anchor without
    a positive or without any negative in the batch.
    """
    x = embeddings.flatten(1)
    d = torch.cdist(x, x).pow(2)
    same = labels.reshape(-1, 1) == labels.reshape(1, -1)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    positive, negative = same & ~eye, ~same
    inf = torch.finfo(d.dtype).max
    # for each (a, p): d(a, n) for every n, masked to the negatives
    d_an = d.unsqueeze(1).expand(-1, len(x), -1)  # [a, p, n]
    neg = negative.unsqueeze(1).expand_as(d_an)
    farther = neg & (d_an > d.unsqueeze(2))
    semi_hard = torch.where(farther, d_an, torch.full_like(d_an, inf)).min(dim=2).values
    hardest_far = torch.where(neg, d_an, torch.full_like(d_an, -inf)).max(dim=2).values
    chosen = torch.where(farther.any(dim=2), semi_hard, hardest_far)
    valid = positive & negative.any(dim=1, keepdim=True)  # a triplet exists for (a, p)
    hinge = torch.where(valid, torch.clamp(d - chosen + margin, min=0), torch.zeros_like(d))
    counts = positive.sum(dim=1)
    return hinge.sum(dim=1) / counts.clamp(min=1)


def _act(name: str, z: torch.Tensor) -> torch.Tensor:
    from ..layers import activations
    fn = activations.get(name)
    return z if fn is None else fn(z)
