"""LRN's channels-last fast path (graphspec.layers.modules.LocalResponseNorm): the same numbers as torch's
nn.LocalResponseNorm within 1e-6, forward and gradients, for every window size and channel count; NCHW inputs
take torch's own path, bit for bit."""
from __future__ import annotations

import pytest
import torch

from graphspec.layers.modules import lrn_module


def _pair(n, k=2.0, alpha=1e-4, beta=0.75):
    size = 2 * (int(n) // 2) + 1
    return lrn_module(k, n, alpha, beta), torch.nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)


@pytest.mark.parametrize("n, shape", [(5, (4, 64, 12, 12)), (3, (2, 16, 7, 5)), (4, (2, 3, 6, 6)), (5, (1, 2, 3, 3)),
                                      (1, (2, 8, 4, 4))])
def test_channels_last_lrn_equals_torchs_forward_and_backward(n, shape):
    ours, torchs = _pair(n, alpha=0.05)  # a large alpha, so the window sum matters
    x = (torch.randn(*shape, generator=torch.Generator().manual_seed(n)) * 4)
    a = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    b = x.clone().requires_grad_()
    ya, yb = ours(a), torchs(b)
    g = torch.randn(yb.shape, generator=torch.Generator().manual_seed(1))
    ya.backward(g)
    yb.backward(g)
    assert ya.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ya, yb, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)


def test_nchw_inputs_take_torchs_own_path_bit_for_bit():
    ours, torchs = _pair(5)
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(ours(x), torchs(x))


def test_bfloat16_channels_last_inputs_are_normalised_in_float32():
    ours, torchs = _pair(5, alpha=0.05)
    x = torch.randn(2, 32, 6, 6).contiguous(memory_format=torch.channels_last)
    y = ours(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), torchs(x.bfloat16().float()), rtol=1e-2, atol=1e-2)


def test_nn4small2_gives_the_same_embeddings_in_either_memory_format():
    import graphspec
    net = graphspec.build("specs/nn4small2.yaml").eval()
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        nchw = net(x)
        net.to(memory_format=torch.channels_last)
        nhwc = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("beta", [0.5, 0.6, 0.75, 1.0])
def test_every_exponent_gives_torchs_numbers(beta):
    # 0.75 and 0.5 take square roots instead of a general power; the others torch's pow
    ours, torchs = _pair(5, alpha=0.05, beta=beta)
    x = torch.randn(2, 24, 5, 5, generator=torch.Generator().manual_seed(3)) * 4
    a = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    b = x.clone().requires_grad_()
    ours(a).sum().backward()
    torchs(b).sum().backward()
    torch.testing.assert_close(ours(a.detach()), torchs(b.detach()), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size, channels", [(2, 5), (4, 8), (6, 3), (2, 2)])
def test_even_windows_take_the_mirrored_window_in_the_gradient(size, channels):
    """torch's window is size//2 before and (size-1)//2 after: not symmetric for even sizes (an ONNX LRN may have
    one), so the gradient needs the transposed window."""
    from graphspec.layers.modules import LocalResponseNorm
    ours = LocalResponseNorm(size, alpha=0.05 * size, beta=0.75, k=1.0)
    torchs = torch.nn.LocalResponseNorm(size, alpha=0.05 * size, beta=0.75, k=1.0)
    x = torch.randn(2, channels, 4, 4, generator=torch.Generator().manual_seed(size)) * 4
    a, b = x.contiguous(memory_format=torch.channels_last).requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, channels, 4, 4, generator=torch.Generator().manual_seed(7))
    ours(a).backward(g)
    torchs(b).backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)
