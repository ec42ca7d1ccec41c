"""Pooling with DL4J's zero padding done implicitly (graphspec.layers.modules.Subsampling): torch's own padding
and ceil mode, a divisor override for sums and averages, and max(·, 0) on the border outputs of a max — the same
outputs and gradients as padding the input with zeros explicitly, for every pooling, geometry and memory format."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from graphspec.layers.modules import Subsampling

PADS = [(0, 0, 0, 0), (0, 1, 0, 1), (1, 1, 1, 1), (1, 2, 1, 2), (2, 2, 2, 2), (0, 2, 1, 0), (1, 0, 0, 1)]
GEOMETRIES = [(n, k, s, pads) for n, k, s, pads in itertools.product((5, 6, 7, 12, 13), (2, 3, 5), (1, 2, 3), PADS)
              if n + min(pads) >= k]


def _explicit(m: Subsampling, x: torch.Tensor) -> torch.Tensor:
    return m._explicit(F.pad(x, m.pads))


@pytest.mark.parametrize("pooling, p", [("max", 2), ("avg", 2), ("sum", 2), ("pnorm", 2), ("pnorm", 3)])
def test_implicit_padding_equals_an_explicit_zero_pad(pooling, p):
    implicit = 0
    for n, k, s, pads in GEOMETRIES:
        m = Subsampling(pooling, (k, k), (s, s), pads, p)
        x = torch.randn(2, 3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n * k + s),
                        requires_grad=True)  # signed: a max over padding must read DL4J's 0, not -inf
        want, got = _explicit(m, x), m(x)
        g = torch.randn(want.shape, dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0],
                                   rtol=0, atol=1e-12)
        implicit += m._implicit((n, n)) is not None
    assert implicit > len(GEOMETRIES) // 2  # most geometries take the implicit path; the rest pad explicitly


def test_nn4small2s_pools_pad_implicitly_in_channels_last():
    for n, pads in ((48, (0, 1, 0, 1)), (24, (0, 1, 0, 1)), (12, (1, 1, 1, 1))):
        m = Subsampling("max", (3, 3), (2, 2) if n > 12 else (1, 1), pads)
        assert m._implicit((n, n)) is not None
        x = torch.randn(4, 8, n, n).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(m(x), _explicit(m, x), rtol=0, atol=0)


def test_all_negative_windows_at_the_border_read_dl4js_zero():
    m = Subsampling("max", (3, 3), (2, 2), (0, 1, 0, 1))
    y = m(-torch.ones(1, 1, 4, 4))
    assert y.tolist() == [[[[-1.0, 0.0], [0.0, 0.0]]]]


@pytest.mark.parametrize("n, k, s, pads", [(1, 3, 1, (1, 1, 1, 1)), (2, 3, 2, (1, 1, 1, 1)), (1, 2, 1, (1, 0, 1, 0))])
def test_outputs_whose_every_window_touches_the_padding(n, k, s, pads):
    m = Subsampling("max", (k, k), (s, s), pads)
    x = -torch.rand(1, 2, n, n) - 1
    torch.testing.assert_close(m(x), _explicit(m, x), rtol=0, atol=0)


def test_without_autograd_the_border_clamp_in_place_gives_the_same_bits():
    """Training clamps every output against a floor tensor (autograd would copy the gradient for each in-place
    slice); without autograd the border slices are clamped in place. Both, for every geometry and layout."""
    for (n, k, s, pads), layout in itertools.product(GEOMETRIES, (torch.contiguous_format, torch.channels_last)):
        m = Subsampling("max", (k, k), (s, s), pads)
        x = torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(n + k + s)).contiguous(memory_format=layout)
        trained = m(x.clone().requires_grad_())
        with torch.no_grad():
            inferred = m(x)
        assert torch.equal(inferred, trained.detach()), (n, k, s, pads)
