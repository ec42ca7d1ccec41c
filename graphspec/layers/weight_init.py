"""Weight initialisation schemes with DL4J's formulas (``WeightInitUtil``).

fan_in/fan_out follow DL4J: dense ``nIn``/``nOut``; convolution ``nIn·kH·kW`` and ``nOut·kH·kW``.
"""
from __future__ import annotations

import math

import torch


def _normal(std):
    return lambda t, g: t.normal_(0.0, std, generator=g)


def _uniform(bound):
    return lambda t, g: t.uniform_(-bound, bound, generator=g)


def scheme(name: str, fan_in: int, fan_out: int):
    """Return ``fill(tensor, generator)`` for a DL4J weight-init name."""
    fi, fo = max(fan_in, 1), max(fan_out, 1)
    table = {
        "zero": lambda t, g: t.zero_(),
        "ones": lambda t, g: t.fill_(1.0),
        "relu": _normal(math.sqrt(2.0 / fi)),
        "relu_uniform": _uniform(math.sqrt(6.0 / fi)),
        "xavier": _normal(math.sqrt(2.0 / (fi + fo))),
        "xavier_uniform": _uniform(math.sqrt(6.0 / (fi + fo))),
        "xavier_fan_in": _normal(math.sqrt(1.0 / fi)),
        "lecun_normal": _normal(math.sqrt(1.0 / fi)),
        "lecun_uniform": _uniform(math.sqrt(3.0 / fi)),
        "sigmoid_uniform": _uniform(4.0 * math.sqrt(6.0 / (fi + fo))),
        "normal": _normal(1.0 / math.sqrt(fi)),
        "uniform": _uniform(1.0 / math.sqrt(fi)),
    }
    return table[name]


WEIGHT_INITS = ("zero", "ones", "relu", "relu_uniform", "xavier", "xavier_uniform", "xavier_fan_in",
                "lecun_normal", "lecun_uniform", "sigmoid_uniform", "normal", "uniform")


def init_(tensor: torch.Tensor, name: str, fan_in: int, fan_out: int, generator=None) -> torch.Tensor:
    with torch.no_grad():
        scheme(name, fan_in, fan_out)(tensor, generator)
    return tensor
