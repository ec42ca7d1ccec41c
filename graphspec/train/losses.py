"""Output-layer losses, per example, from the layer's pre-activation ``z`` (for numerical stability).

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


def _act(name: str, z: torch.Tensor) -> torch.Tensor:
    from ..layers import activations
    fn = activations.get(name)
    return z if fn is None else fn(z)
