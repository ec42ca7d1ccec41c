"""Numeric semantics of single vertices against formulas and independent numpy references.

SEMANTICS.md Appendix C items 1-4 (Same padding, pooling, LRN, batch normalisation) plus L2 normalisation and the
Truncate / Strict convolution modes. Every expectation here is computed from the DL4J formula (numpy loops in
float64), never from graphspec itself.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import graphspec
from graphspec.layers import modules as M

# --- helpers ------------------------------------------------------------------------------------------------


def one_vertex_net(vertex: dict, channels: int, height: int, width: int, mode: str = "same"):
    """Build a one-vertex graph ``x -> v`` from YAML text."""
    doc = {"version": 1, "name": "t",
           "defaults": {"activation": "identity", "convolution_mode": mode},
           "inputs": {"x": {"type": "convolutional", "channels": channels, "height": height, "width": width}},
           "vertices": {"v": {**vertex, "inputs": ["x"]}},
           "outputs": ["v"]}
    net = graphspec.build(yaml.safe_dump(doc, sort_keys=False), seed=0)
    return net, net.get_submodule("v")


def window_ref(x: np.ndarray, k: int, s: int, top: int, left: int, out_h: int, out_w: int, reduce):
    """Pooling-like loop reference: window (k x k) at (o*s - top, o*s - left); outside the input reads 0.

    ``reduce(values)`` gets the k*k values of one channel window (zeros included) and returns a number.
    """
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w))
    for b in range(n):
        for ch in range(c):
            for i in range(out_h):
                for j in range(out_w):
                    vals = []
                    for di in range(k):
                        for dj in range(k):
                            r, q = i * s - top + di, j * s - left + dj
                            vals.append(x[b, ch, r, q] if 0 <= r < h and 0 <= q < w else 0.0)
                    out[b, ch, i, j] = reduce(np.array(vals))
    return out


def conv_ref(x: np.ndarray, w: np.ndarray, bias: np.ndarray, s: int, top: int, left: int, out_h: int, out_w: int):
    """Cross-correlation loop reference; reads 0 outside the input (DL4J CPU im2col)."""
    n, c, h, wid = x.shape
    o, _, k, _ = w.shape
    out = np.zeros((n, o, out_h, out_w)) + bias[None, :, None, None]
    for di in range(k):
        for dj in range(k):
            for i in range(out_h):
                r = i * s - top + di
                if not 0 <= r < h:
                    continue
                for j in range(out_w):
                    q = j * s - left + dj
                    if 0 <= q < wid:
                        # out[b, o] += sum_c w[o, c, di, dj] * x[b, c, r, q]
                        out[:, :, i, j] += x[:, :, r, q] @ w[:, :, di, dj].T
    return out


def set_conv(module, rng: np.random.Generator):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(rng.standard_normal(tuple(module.weight.shape))))
        module.bias.copy_(torch.from_numpy(rng.standard_normal(tuple(module.bias.shape))))
    return module.weight.detach().double().numpy(), module.bias.detach().double().numpy()


def close(actual: torch.Tensor, expected: np.ndarray, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(actual.detach().double().numpy(), expected, rtol=rtol, atol=atol)


# --- 1. Same padding ----------------------------------------------------------------------------------------

# (n, k, s, top, bottom) — the Same-mode paddings that occur in the tutorial, SEMANTICS.md §1.2 table.
SAME_TABLE = [
    (96, 7, 2, 2, 3),   # stem-cnn1
    (48, 3, 2, 0, 1),   # stem-pool1
    (24, 3, 1, 1, 1),   # inception-2-cnn2
    (24, 3, 2, 0, 1),   # inception-2-pool1
    (12, 3, 1, 1, 1),   # 3x3 stride-1 conv / pool
    (6, 3, 1, 1, 1),
    (3, 3, 1, 1, 1),
    (12, 5, 1, 2, 2),   # 5x5 stride-1 conv
    (6, 5, 1, 2, 2),
    (12, 3, 2, 0, 1),   # 3c-3x3, 3c-2-5x5 (3x3!), 3c-pool
    (6, 3, 2, 0, 1),    # 4e-3x3, 4e-2-5x5, 4e-pool
    (3, 3, 3, 0, 0),    # avgpool
    (96, 1, 1, 0, 0),   # 1x1 convs
    (12, 1, 1, 0, 0),
]


@pytest.mark.parametrize("n,k,s,top,bottom", SAME_TABLE)
def test_same_mode_pads_formula(n, k, s, top, bottom):
    out, before, after = M.same_pads(n, k, s)
    assert out == math.ceil(n / s)
    assert (before, after) == (top, bottom)
    assert before + after == max((out - 1) * s + k - n, 0)


def test_same_mode_negative_total_padding_is_clamped():
    # k=1, s=2, n even: P = -1 -> no padding at all (a negative F.pad would crop)
    assert M.same_pads(6, 1, 2) == (3, 0, 0)


@pytest.mark.parametrize("n,k,s,top,bottom", [t for t in SAME_TABLE if t[0] <= 48 or t[1] == 7])
def test_same_mode_conv_matches_zero_reading_loop(n, k, s, top, bottom):
    # 'padding: 3' is ignored in Same mode (DL4J ignores the explicit padding)
    net, conv = one_vertex_net({"type": "conv", "kernel": k, "stride": s, "out": 3, "padding": 3}, 2, n, n)
    rng = np.random.default_rng(n * 100 + k * 10 + s)
    w, b = set_conv(conv, rng)
    x = rng.standard_normal((2, 2, n, n))
    y = net(torch.from_numpy(x).float())
    out = math.ceil(n / s)
    assert tuple(y.shape) == (2, 3, out, out)
    expected = conv_ref(x, w, b, s, top, top, out, out)
    close(y, expected, rtol=1e-4, atol=1e-4)
    if s == 2:
        # PyTorch's symmetric padding=k//2 gives the same size but windows start one pixel earlier
        naive = F.conv2d(torch.from_numpy(x).float(), conv.weight, conv.bias, stride=s, padding=k // 2)
        assert naive.shape == y.shape
        assert (naive - y).abs().max().item() > 0.1


def test_same_mode_asymmetric_pads_in_module():
    net, conv = one_vertex_net({"type": "conv", "kernel": 7, "stride": 2, "out": 4}, 3, 96, 96)
    assert conv.pads == (2, 3, 2, 3)  # F.pad order (left, right, top, bottom)


# --- Truncate and Strict ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,s,p", [(10, 3, 2, 0), (10, 3, 2, 1), (11, 4, 3, 0), (9, 5, 1, 2), (7, 7, 1, 0)])
def test_truncate_mode_shape_and_values(n, k, s, p):
    net, conv = one_vertex_net({"type": "conv", "kernel": k, "stride": s, "padding": p, "out": 2}, 2, n, n,
                               mode="truncate")
    rng = np.random.default_rng(n + k + s + p)
    w, b = set_conv(conv, rng)
    x = rng.standard_normal((1, 2, n, n))
    y = net(torch.from_numpy(x).float())
    out = (n + 2 * p - k) // s + 1  # floor: inputs at the end that do not fill a window are dropped
    assert tuple(y.shape) == (1, 2, out, out)
    close(y, conv_ref(x, w, b, s, p, p, out, out), rtol=1e-4, atol=1e-4)


def test_truncate_kernel_larger_than_input_is_an_error():
    with pytest.raises(graphspec.SpecError, match="larger than the input"):
        one_vertex_net({"type": "conv", "kernel": 5, "stride": 1, "out": 2}, 1, 4, 4, mode="truncate")


@pytest.mark.parametrize("n,k,s,p,ok", [(11, 3, 2, 0, True), (10, 3, 2, 0, False), (10, 3, 2, 1, False),
                                        (9, 3, 2, 1, True), (12, 4, 4, 0, True), (13, 4, 4, 0, False)])
def test_strict_mode(n, k, s, p, ok):
    vertex = {"type": "conv", "kernel": k, "stride": s, "padding": p, "out": 2}
    if ok:
        net, _ = one_vertex_net(vertex, 1, n, n, mode="strict")
        assert tuple(net(torch.zeros(1, 1, n, n)).shape) == (1, 2, (n - k + 2 * p) // s + 1,
                                                            (n - k + 2 * p) // s + 1)
    else:
        with pytest.raises(graphspec.SpecError, match="strict"):
            one_vertex_net(vertex, 1, n, n, mode="strict")


def test_strict_mode_applies_to_pooling_too():
    with pytest.raises(graphspec.SpecError, match="divisible"):
        one_vertex_net({"type": "subsampling", "pooling": "max", "kernel": 3, "stride": 2}, 1, 10, 10, mode="strict")


# --- 2. Pooling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k,s,top,bottom", [(48, 3, 2, 0, 1), (24, 3, 2, 0, 1), (12, 3, 1, 1, 1),
                                              (6, 3, 2, 0, 1), (3, 3, 1, 1, 1)])
def test_max_pool_reads_zero_outside_on_signed_input(n, k, s, top, bottom):
    net, _ = one_vertex_net({"type": "subsampling", "pooling": "max", "kernel": k, "stride": s, "padding": 1},
                            3, n, n)
    rng = np.random.default_rng(n + s)
    x = rng.standard_normal((2, 3, n, n)) - 0.5  # mostly negative: padded zeros win at the border
    y = net(torch.from_numpy(x).float())
    out = math.ceil(n / s)
    expected = window_ref(x, k, s, top, top, out, out, np.max)
    close(y, expected, rtol=0, atol=1e-6)
    # -inf padding (PyTorch's max_pool2d convention) differs on signed inputs
    neg_inf = F.max_pool2d(F.pad(torch.from_numpy(x), (top, bottom, top, bottom), value=-math.inf), k, s)
    assert (neg_inf - y.double()).abs().max().item() > 0.1


def test_max_pool_all_negative_input_border_is_zero():
    net, _ = one_vertex_net({"type": "subsampling", "pooling": "max", "kernel": 3, "stride": 1}, 1, 4, 4)
    y = net(-torch.ones(1, 1, 4, 4) - torch.arange(16.0).view(1, 1, 4, 4))
    # border windows touch the padding -> 0 (a -inf padding would give -1, -2, ...); the 4 inner windows don't
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1:3, 1:3] = torch.tensor([[-1.0, -2.0], [-5.0, -6.0]])
    assert torch.equal(y, expected)


def test_avg_pool_divides_by_full_window_including_padding():
    net, _ = one_vertex_net({"type": "subsampling", "pooling": "avg", "kernel": 3, "stride": 1}, 1, 5, 5)
    y = net(torch.ones(1, 1, 5, 5))[0, 0]
    assert y[0, 0].item() == pytest.approx(4 / 9)  # corner: 4 real pixels / 9
    assert y[0, 2].item() == pytest.approx(6 / 9)  # edge
    assert y[2, 2].item() == pytest.approx(1.0)


@pytest.mark.parametrize("n,k,s,top", [(12, 3, 2, 0), (3, 3, 3, 0), (7, 3, 1, 1)])
def test_avg_pool_matches_loop(n, k, s, top):
    net, _ = one_vertex_net({"type": "subsampling", "pooling": "avg", "kernel": k, "stride": s}, 2, n, n)
    x = np.random.default_rng(n).standard_normal((2, 2, n, n))
    out = math.ceil(n / s)
    close(net(torch.from_numpy(x).float()), window_ref(x, k, s, top, top, out, out, lambda v: v.sum() / (k * k)))


@pytest.mark.parametrize("p", [1, 2, 3, 4])
@pytest.mark.parametrize("n,s,top", [(6, 1, 1), (7, 2, 1), (6, 2, 0)])
def test_pnorm_pool_uses_absolute_values(p, n, s, top):
    net, _ = one_vertex_net({"type": "subsampling", "pooling": "pnorm", "pnorm": p, "kernel": 3, "stride": s},
                            2, n, n)
    x = np.random.default_rng(p * 10 + n).standard_normal((2, 2, n, n))  # signed input
    out = math.ceil(n / s)
    expected = window_ref(x, 3, s, top, top, out, out, lambda v: (np.abs(v) ** p).sum() ** (1.0 / p))
    close(net(torch.from_numpy(x).float()), expected, rtol=1e-5, atol=1e-5)


def test_pnorm_requires_positive_p():
    with pytest.raises(graphspec.SpecError, match="pnorm"):
        one_vertex_net({"type": "subsampling", "pooling": "pnorm", "pnorm": 0, "kernel": 3, "stride": 1}, 1, 4, 4)


# --- 3. Local response normalisation ------------------------------------------------------------------------


def lrn_ref(x: np.ndarray, k: float, n: float, alpha: float, beta: float) -> np.ndarray:
    """DL4J CPU: b_c = a_c (k + alpha * sum_{j=max(0,c-half)}^{min(C-1,c+half)} a_j^2)^-beta, half = floor(n/2)."""
    half = int(n) // 2
    c = x.shape[1]
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c - 1, ch + half)
        s = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] * (k + alpha * s) ** (-beta)
    return out


@pytest.mark.parametrize("k,n,alpha,beta", [(1.0, 5, 1e-4, 0.75), (2.0, 5, 1e-4, 0.75), (1.0, 3, 1e-3, 0.5),
                                            (1.0, 4, 1e-4, 0.75), (1.0, 6, 2e-4, 0.75)])
def test_lrn_matches_dl4j_formula(k, n, alpha, beta):
    net, _ = one_vertex_net({"type": "lrn", "k": k, "n": n, "alpha": alpha, "beta": beta}, 9, 4, 4)
    x = np.random.default_rng(int(n)).standard_normal((2, 9, 4, 4)) * 40  # large enough for LRN to matter
    y = net(torch.from_numpy(x).float())
    expected = lrn_ref(x, k, n, alpha, beta)
    assert np.abs(expected - x).max() > 1.0  # the test input is actually normalised
    close(y, expected, rtol=1e-5, atol=1e-4)


def test_lrn_even_n_uses_window_n_plus_1():
    x = np.random.default_rng(3).standard_normal((1, 8, 3, 3)) * 50
    net4, _ = one_vertex_net({"type": "lrn", "k": 1, "n": 4, "alpha": 1e-4, "beta": 0.75}, 8, 3, 3)
    net5, _ = one_vertex_net({"type": "lrn", "k": 1, "n": 5, "alpha": 1e-4, "beta": 0.75}, 8, 3, 3)
    xt = torch.from_numpy(x).float()
    torch.testing.assert_close(net4(xt), net5(xt))  # n=4 -> 2*floor(4/2)+1 = 5 channels, alpha not divided
    # a 4-channel window would be different
    half_lo, half_hi = 2, 1  # torch-style even window [c-2, c+1]
    ref4 = np.empty_like(x)
    for ch in range(8):
        s = (x[:, max(0, ch - half_lo):min(8, ch + half_hi + 1)] ** 2).sum(axis=1)
        ref4[:, ch] = x[:, ch] * (1 + 1e-4 * s) ** -0.75
    assert np.abs(net4(xt).double().numpy() - ref4).max() > 1e-3


def test_lrn_alpha_is_not_divided_by_n():
    x = torch.randn(1, 7, 3, 3, generator=torch.Generator().manual_seed(0)) * 40
    net, _ = one_vertex_net({"type": "lrn", "k": 1, "n": 5, "alpha": 1e-4, "beta": 0.75}, 7, 3, 3)
    torch.testing.assert_close(net(x), torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=1.0)(x))
    assert (net(x) - torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)(x)).abs().max() > 0.5


def test_lrn_backward_is_the_exact_gradient():
    """Decision (SEMANTICS §2): graphspec backpropagates the exact LRN gradient (autograd), not DL4J's
    approximation. Checked against central differences of the float64 numpy DL4J formula."""
    _, lrn = one_vertex_net({"type": "lrn", "k": 1, "n": 5, "alpha": 1e-2, "beta": 0.75}, 6, 2, 2)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 6, 2, 2)) * 5
    g = rng.standard_normal((1, 6, 2, 2))
    xt = torch.from_numpy(x).requires_grad_(True)
    (lrn(xt) * torch.from_numpy(g)).sum().backward()
    num = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = ((lrn_ref(xp, 1, 5, 1e-2, 0.75) - lrn_ref(xm, 1, 5, 1e-2, 0.75)) * g).sum() / (2 * h)
    np.testing.assert_allclose(xt.grad.numpy(), num, rtol=1e-5, atol=1e-7)


# --- 4. Batch normalisation ---------------------------------------------------------------------------------


def bn_net(channels=3, h=4, w=5, **params):
    return one_vertex_net({"type": "batchnorm", **params}, channels, h, w)


def test_batchnorm_running_stats_after_one_training_step():
    net, bn = bn_net()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 4, 5)) * 3 + np.array([1.0, -2.0, 5.0])[None, :, None, None]
    net.train()
    y = net(torch.from_numpy(x).float())
    mu = x.mean(axis=(0, 2, 3))
    var_b = x.var(axis=(0, 2, 3))  # biased: divide by N*H*W
    eps = 1e-5
    close(bn.running_mean, 0.1 * mu, rtol=1e-5, atol=1e-6)
    close(bn.running_var, 0.9 * 1.0 + 0.1 * (var_b + eps), rtol=1e-5, atol=1e-6)
    # the training output uses the batch statistics with eps
    close(y, (x - mu[None, :, None, None]) / np.sqrt(var_b + eps)[None, :, None, None], rtol=1e-4, atol=1e-4)


def test_batchnorm_running_stats_two_steps_and_decay():
    net, bn = bn_net(decay=0.5)
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((4, 3, 4, 5)) + 2, rng.standard_normal((4, 3, 4, 5)) * 0.5
    net.train()
    net(torch.from_numpy(x1).float())
    net(torch.from_numpy(x2).float())
    mean, var = np.zeros(3), np.ones(3)
    for x in (x1, x2):
        mean = 0.5 * mean + 0.5 * x.mean(axis=(0, 2, 3))
        var = 0.5 * var + 0.5 * (x.var(axis=(0, 2, 3)) + 1e-5)
    close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    close(bn.running_var, var, rtol=1e-5, atol=1e-6)


def test_batchnorm_not_minibatch_assigns_running_stats():
    net, bn = bn_net(minibatch=False)
    x = np.random.default_rng(2).standard_normal((4, 3, 4, 5)) * 2 + 1
    net.train()
    net(torch.from_numpy(x).float())
    close(bn.running_mean, x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    close(bn.running_var, x.var(axis=(0, 2, 3)) + 1e-5, rtol=1e-5, atol=1e-6)


def test_batchnorm_eval_uses_no_eps():
    net, bn = bn_net()
    rng = np.random.default_rng(3)
    mean = np.array([0.5, -1.0, 2.0])
    var = np.array([1e-4, 4e-5, 2.0])  # small: adding eps=1e-5 would change sqrt by up to 12%
    gamma, beta = np.array([1.5, -0.5, 2.0]), np.array([0.1, 0.2, -0.3])
    with torch.no_grad():
        bn.running_mean.copy_(torch.from_numpy(mean))
        bn.running_var.copy_(torch.from_numpy(var))
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    net.eval()
    x = rng.standard_normal((2, 3, 4, 5)) * 0.01
    y = net(torch.from_numpy(x).float())
    b = lambda a: a[None, :, None, None]  # noqa: E731
    close(y, b(gamma) * (x - b(mean)) / np.sqrt(b(var)) + b(beta), rtol=1e-4, atol=1e-5)
    with_eps = b(gamma) * (x - b(mean)) / np.sqrt(b(var) + 1e-5) + b(beta)
    assert np.abs(y.detach().double().numpy() - with_eps).max() > 1e-3
    # eval mode must not touch the running statistics
    close(bn.running_var, var, rtol=1e-6, atol=0)


def test_batchnorm_feed_forward_input_stats_over_batch():
    doc = {"version": 1, "name": "t", "inputs": {"x": {"type": "feed_forward", "size": 4}},
           "vertices": {"v": {"type": "batchnorm", "inputs": ["x"]}}, "outputs": ["v"]}
    net = graphspec.build(yaml.safe_dump(doc))
    x = np.random.default_rng(4).standard_normal((8, 4)) * 2 + 3
    net.train()
    net(torch.from_numpy(x).float())
    close(net.v.running_mean, 0.1 * x.mean(axis=0), rtol=1e-5, atol=1e-6)
    close(net.v.running_var, 0.9 + 0.1 * (x.var(axis=0) + 1e-5), rtol=1e-5, atol=1e-6)


def test_batchnorm_training_backward_is_exact():
    _, bn = bn_net()
    bn.train()
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((4, 3, 4, 5))).float().requires_grad_(True)
    g = torch.from_numpy(rng.standard_normal((4, 3, 4, 5))).float()
    (bn(x) * g).sum().backward()
    # reference: normalisation with biased batch variance and eps, differentiated by autograd in float64
    xd = x.detach().double().requires_grad_(True)
    mu = xd.mean(dim=(0, 2, 3), keepdim=True)
    var = ((xd - mu) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    ((xd - mu) / torch.sqrt(var + 1e-5) * g.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-4, atol=1e-5)


# --- L2 normalisation ---------------------------------------------------------------------------------------


def l2_net(shape_in, eps, dims=None):
    vertex = {"type": "l2_normalize", "eps": eps, **({"dims": dims} if dims else {})}
    inputs = ({"x": {"type": "feed_forward", "size": shape_in[0]}} if len(shape_in) == 1 else
              {"x": {"type": "convolutional", "channels": shape_in[0], "height": shape_in[1], "width": shape_in[2]}})
    doc = {"version": 1, "name": "t", "inputs": inputs, "vertices": {"v": {**vertex, "inputs": ["x"]}},
           "outputs": ["v"]}
    return graphspec.build(yaml.safe_dump(doc))


def test_l2_normalize_rank2_and_eps_clamp():
    net = l2_net((5,), 1e-6)
    x = np.random.default_rng(6).standard_normal((3, 5))
    x[2] *= 1e-8  # norm ~2e-8 < eps: divided by eps, not by the norm
    y = net(torch.from_numpy(x)).numpy()
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(y, x / np.maximum(norms, 1e-6), rtol=1e-10, atol=0)
    assert np.linalg.norm(y[2]) < 0.1
    np.testing.assert_allclose(np.linalg.norm(y[:2], axis=1), 1.0, rtol=1e-12)


def test_l2_normalize_rank4_default_all_dims_but_batch():
    net = l2_net((2, 3, 3), 1e-8)
    x = np.random.default_rng(7).standard_normal((2, 2, 3, 3))
    norms = np.sqrt((x ** 2).sum(axis=(1, 2, 3), keepdims=True))
    np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), x / norms, rtol=1e-10)


def test_l2_normalize_rank4_selected_dims():
    net = l2_net((2, 3, 3), 1e-8, dims=[1])
    x = np.random.default_rng(8).standard_normal((2, 2, 3, 3))
    norms = np.sqrt((x ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), x / norms, rtol=1e-10)
