"""Activation functions by their DL4J names (lower case)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _hardsigmoid(x):  # DL4J: min(1, max(0, 0.2x + 0.5)), not PyTorch's x/6 + 1/2
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


ACTIVATIONS = {
    "identity": None,
    "relu": F.relu,
    "relu6": F.relu6,
    "leakyrelu": lambda x: F.leaky_relu(x, 0.01),  # DL4J's default alpha
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "hardtanh": F.hardtanh,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": _hardsigmoid,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "cube": lambda x: x * x * x,
    "abs": torch.abs,  # not in DL4J 0.9's Activation enum: |x|, e.g. after a subtract for |a - b|
    "softmax": lambda x: torch.softmax(x, dim=1),
}


def get(name: str):
    """The function for ``name``; ``None`` means identity (so callers can skip the call)."""
    return ACTIVATIONS[name]
