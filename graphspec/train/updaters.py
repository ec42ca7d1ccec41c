"""DL4J 0.9.x updaters, applied literally (not through torch.optim) so that the `dl4j` semantics is exact.

Each updater turns a (normalised, minibatch-summed) gradient into an *update* that the pipeline later adds l1/l2
to, divides by N and subtracts from the parameter. State tensors live in a dict so checkpoints can save them.
"""
from __future__ import annotations

import math

import torch

from ..spec.model import Updater


class DL4JUpdater:
    """One updater per parameter tensor, with its state by name."""

    def __init__(self, config: Updater):
        self.config = config
        self.state: dict[str, torch.Tensor] = {}

    def update(self, g: torch.Tensor, iteration: int) -> torch.Tensor:
        kind = self.config.type
        return getattr(self, f"_{kind}")(g, iteration)

    def _noop(self, g, iteration):
        return g

    def _sgd(self, g, iteration):
        return self.config.lr * g

    def _adam(self, g, iteration):
        """m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; α_t = lr·√(1−β2^t)/(1−β1^t); update = α_t·m/(√v + ε)."""
        c = self.config
        b1 = 0.9 if c.beta1 is None else c.beta1
        b2 = 0.999 if c.beta2 is None else c.beta2
        eps = 1e-8 if c.eps is None else c.eps
        m = self.state.setdefault("m", torch.zeros_like(g))
        v = self.state.setdefault("v", torch.zeros_like(g))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        t = iteration + 1
        alpha = c.lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        if math.isnan(alpha) or alpha == 0:
            alpha = eps
        return alpha * m / (v.sqrt() + eps)

    _adamw = _adam  # DL4J 0.9 has no AdamW; decoupled decay is what its post-update l2 already does

    def _nesterovs(self, g, iteration):
        """DL4J Nesterovs: v ← μv − lr·g; update = μ·v_prev − (1+μ)·v (so θ − update = θ + (1+μ)v − μv_prev)."""
        mu = 0.9 if self.config.momentum is None else self.config.momentum
        v = self.state.setdefault("v", torch.zeros_like(g))
        v_prev = v.clone()
        v.mul_(mu).add_(g, alpha=-self.config.lr)
        return mu * v_prev - (1 + mu) * v

    def _rmsprop(self, g, iteration):
        rho = 0.95 if self.config.rho is None else self.config.rho
        eps = 1e-8 if self.config.eps is None else self.config.eps
        s = self.state.setdefault("s", torch.full_like(g, eps))
        s.mul_(rho).addcmul_(g, g, value=1 - rho)
        return self.config.lr * g / (s + eps).sqrt()

    def _adagrad(self, g, iteration):
        eps = 1e-6 if self.config.eps is None else self.config.eps
        h = self.state.setdefault("h", torch.zeros_like(g))
        h.addcmul_(g, g)
        return self.config.lr * g / (h.sqrt() + eps)

    def _adadelta(self, g, iteration):
        rho = 0.95 if self.config.rho is None else self.config.rho
        eps = 1e-6 if self.config.eps is None else self.config.eps
        msg = self.state.setdefault("msg", torch.zeros_like(g))
        msdx = self.state.setdefault("msdx", torch.zeros_like(g))
        msg.mul_(rho).addcmul_(g, g, value=1 - rho)
        update = g * (msdx + eps).sqrt() / (msg + eps).sqrt()
        msdx.mul_(rho).addcmul_(update, update, value=1 - rho)
        return update
