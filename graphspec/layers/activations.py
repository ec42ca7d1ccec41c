"""Activation functions by their DL4J names (lower case)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _hardsigmoid(x):  # DL4J: min(1, max(0, 0.2x + 0.5)), not PyTorch's x/6 + 1/2
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def _gelu_sigmoid(x):  # DL4J's Activation.GELU: x·σ(1.702x), the sigmoid approximation (SEMANTICS-VISION §11)
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "identity": None,
    "relu": F.relu,
    "relu6": F.relu6,
    "leakyrelu": lambda x: F.leaky_relu(x, 0.01),  # DL4J's default alpha
    "elu": F.elu,
    "selu": F.selu,
    # `gelu` is the exact x·Φ(x) that torch, Keras and the papers (ViT, BERT) mean; DL4J's GELU is the sigmoid
    # approximation, available as `gelu_sigmoid` (max difference 0.02), and `gelu_tanh` is the tanh one.
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_sigmoid": _gelu_sigmoid,
    "swish": F.silu,
    "silu": F.silu,  # the same function as swish, by its torch/Keras name
    "hardswish": F.hardswish,  # x·relu6(x + 3)/6 (MobileNetV3); not in DL4J
    "mish": F.mish,  # x·tanh(softplus(x)), DL4J 1.0's MISH
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


# Activations that commute with a max: non-decreasing, f(0) = 0, and exact in floating point (comparisons and a
# product with a positive constant, whose rounding keeps the order), so max(f(x)) = f(max(x)) to the bit, over any
# window and with DL4J's zero padding (f(0) = 0). Inference applies them after a max pool that reads them alone: on
# the pooled tensor, a quarter of the elements for a stride-2 pool (graphspec.inference). tanh, elu & co. are
# non-decreasing too, but computed by approximations that need not keep the order of neighbouring values.
COMMUTE_WITH_MAX = frozenset({"relu", "relu6", "leakyrelu", "hardtanh"})


def get(name: str):
    """The function for ``name``; ``None`` means identity (so callers can skip the call)."""
    return ACTIVATIONS[name]
