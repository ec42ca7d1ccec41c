"""Every activation against its formula, written out here (not torch's function of the same name)."""
from __future__ import annotations

import math

import pytest
import torch

from graphspec.layers import activations

X = torch.linspace(-6, 6, 241, dtype=torch.float64)
PHI = 0.5 * (1 + torch.erf(X / math.sqrt(2)))
FORMULAS = {
    "identity": X,
    "relu": X.clamp_min(0),
    "relu6": X.clamp(0, 6),
    "leakyrelu": torch.where(X < 0, 0.01 * X, X),
    "elu": torch.where(X >= 0, X, torch.exp(X) - 1),
    "selu": 1.0507009873554805 * torch.where(X > 0, X, 1.6732632423543772 * (torch.exp(X) - 1)),
    "gelu": X * PHI,  # exact: x·Φ(x)
    "gelu_tanh": 0.5 * X * (1 + torch.tanh(math.sqrt(2 / math.pi) * (X + 0.044715 * X ** 3))),
    "gelu_sigmoid": X / (1 + torch.exp(-1.702 * X)),  # DL4J's Activation.GELU
    "swish": X / (1 + torch.exp(-X)),
    "silu": X / (1 + torch.exp(-X)),
    "hardswish": X * (X + 3).clamp(0, 6) / 6,
    "mish": X * torch.tanh(torch.log1p(torch.exp(X))),
    "tanh": (torch.exp(2 * X) - 1) / (torch.exp(2 * X) + 1),
    "hardtanh": X.clamp(-1, 1),
    "sigmoid": 1 / (1 + torch.exp(-X)),
    "hardsigmoid": (0.2 * X + 0.5).clamp(0, 1),  # DL4J's, not torch's x/6 + 1/2
    "softplus": torch.log1p(torch.exp(X)),
    "softsign": X / (1 + X.abs()),
    "cube": X ** 3,
    "abs": X.abs(),
}


def test_every_activation_has_a_formula_here():
    assert set(FORMULAS) | {"softmax"} == set(activations.ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_equals_its_formula(name):
    fn = activations.get(name)
    got = X.clone() if fn is None else fn(X.clone())
    torch.testing.assert_close(got, FORMULAS[name], rtol=1e-12, atol=1e-12)


def test_softmax_normalises_over_channels():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    expected = torch.exp(x) / torch.exp(x).sum(1, keepdim=True)
    torch.testing.assert_close(activations.get("softmax")(x), expected)


def test_the_three_gelus_differ_as_documented():
    assert (FORMULAS["gelu"] - FORMULAS["gelu_sigmoid"]).abs().max() == pytest.approx(0.0207, abs=5e-4)
    assert (FORMULAS["gelu"] - FORMULAS["gelu_tanh"]).abs().max() < 1e-3
