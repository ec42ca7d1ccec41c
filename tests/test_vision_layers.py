"""The vision types (graphspec/layers/vision.py) and grouped convolution, against torch and against small numpy
references written from the DL4J formulas of SEMANTICS-VISION.md (never from graphspec itself): upsampling,
deconvolution (the beta6+ Same crop), zero padding, cropping, space-to-depth (TF order) and depth-to-space,
`conv` with `groups`, depthwise (channel c·m + j) and separable convolution (bias after the pointwise step)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphspec
from graphspec import SpecError
from graphspec.registry import lookup

# --- helpers ------------------------------------------------------------------------------------------------


def _doc(vertex: dict, shape=(2, 5, 5), mode: str = "truncate", **defaults) -> dict:
    c, h, w = shape
    return {"version": 1, "name": "vision", "seed": 3,
            "defaults": {"activation": "identity", "convolution_mode": mode, **defaults},
            "inputs": {"x": {"type": "convolutional", "channels": c, "height": h, "width": w}},
            "vertices": {"v": {**vertex, "inputs": ["x"]}}, "outputs": ["v"]}


def _net(vertex: dict, shape=(2, 5, 5), mode: str = "truncate", **defaults):
    """A one-vertex network ``x -> v`` in float64 (the references are float64 loops)."""
    return graphspec.build(_doc(vertex, shape, mode, **defaults)).double()


def _x(shape, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _randomize(net, seed: int = 1) -> dict:
    """Give every parameter (biases too, which init sets to 0) random values; returns them as numpy arrays."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return {k.split(".", 1)[1]: t.numpy().copy() for k, t in net.state_dict().items()}


def _close(got: torch.Tensor, want) -> None:
    """Equal up to float64 rounding; ``want`` a tensor or a numpy array."""
    got = got.detach()
    want = want.detach() if isinstance(want, torch.Tensor) else torch.from_numpy(np.asarray(want, dtype=np.float64))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def _message(vertex: dict, shape=(2, 5, 5)) -> str:
    with pytest.raises(SpecError) as e:
        graphspec.load_spec(_doc(vertex, shape))
    return e.value.problems[0].message


def _trunc_half(v: int) -> int:
    return int(v / 2)  # C++ integer division rounds toward zero


# --- upsampling -----------------------------------------------------------------------------------------------


def test_upsampling_nearest_repeats_pixels():
    x = _x((2, 3, 4))
    net = _net({"type": "upsampling", "size": [2, 3]}, (2, 3, 4))
    y = net(x)
    _close(y, np.repeat(np.repeat(x.numpy(), 2, axis=2), 3, axis=3))  # out[h, w] = in[h // 2, w // 3]
    _close(y, nn.Upsample(scale_factor=(2, 3), mode="nearest")(x))
    _close(_net({"type": "Upsampling2D"}, (2, 3, 4))(x), np.repeat(np.repeat(x.numpy(), 2, 2), 2, 3))  # size 2


def test_upsampling_bilinear_is_the_half_pixel_extension():
    x = _x((2, 3, 4))
    y = _net({"type": "upsampling", "size": 2, "interpolation": "bilinear"}, (2, 3, 4))(x)
    _close(y, F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    # half-pixel centres: output row 1 sits at source row 0.25 (3/4 of row 0, 1/4 of row 1), column 0 clamps to 0
    _close(y[:, :, 1, 0], 0.75 * x[:, :, 0, 0] + 0.25 * x[:, :, 1, 0])
    assert "extension" in lookup("upsampling").doc


# --- deconvolution ----------------------------------------------------------------------------------------------


def deconv_ref(x, w, b, s, d, crop_top, crop_left, out_h, out_w):
    """SEMANTICS-VISION.md §3.2: each input value scatters W[ic, oc, kh, kw]·x into the full output at
    (ih·s + kh·d, iw·s + kw·d), which is then read from (crop_top, crop_left); positions outside the full output
    are 0; the bias is added everywhere after. ``s`` and ``d`` are (height, width) pairs."""
    n, c_in, h, wid = x.shape
    _, c_out, kh_n, kw_n = w.shape
    out = np.zeros((n, c_out, out_h, out_w))
    for ih in range(h):
        for iw in range(wid):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    r, q = ih * s[0] - crop_top + kh * d[0], iw * s[1] - crop_left + kw * d[1]
                    if 0 <= r < out_h and 0 <= q < out_w:
                        out[:, :, r, q] += np.einsum("ni,io->no", x[:, :, ih, iw], w[:, :, kh, kw])
    return out + b[None, :, None, None]


@pytest.mark.parametrize("k,s", [(k, s) for k in range(1, 6) for s in range(1, 4)])
def test_deconv_same_crops_trunc_half_of_k_minus_s_before(k, s):
    n = 3
    net = _net({"type": "deconv", "out": 2, "kernel": k, "stride": s}, (2, n, n), mode="same")
    p, x = _randomize(net), _x((2, n, n))
    y = net(x)
    assert tuple(y.shape[1:]) == net.graphspec.analysis.shapes["v"] == (2, s * n, s * n)  # Same: s·n
    top = _trunc_half(k - s)  # -1 for k=1, s=3: the output moves down/right by one (trap 4)
    _close(y, deconv_ref(x.numpy(), p["weight"], p["bias"], (s, s), (1, 1), top, top, s * n, s * n))
    if top < 0:  # the first row and column lie outside the full output: the bias alone
        bias = torch.from_numpy(p["bias"]).view(1, 2, 1)
        _close(y[:, :, 0, :], bias.expand(2, 2, s * n))
        _close(y[:, :, :, 0], bias.expand(2, 2, s * n))


def test_deconv_same_with_dilation_and_non_square_kernel():
    net = _net({"type": "deconv", "out": 3, "kernel": [3, 2], "stride": [2, 3], "dilation": 2}, (2, 3, 4),
               mode="same")
    p, x = _randomize(net), _x((2, 3, 4))
    # k_e = 5 and 3: crop trunc((5-2)/2) = 1 rows, trunc((3-3)/2) = 0 columns
    _close(net(x), deconv_ref(x.numpy(), p["weight"], p["bias"], (2, 3), (2, 2), 1, 0, 6, 12))


def test_deconv_same_differs_from_the_common_torch_recipe_when_k_minus_s_is_odd():
    net = _net({"type": "deconv", "out": 2, "kernel": 3, "stride": 2}, (2, 4, 4), mode="same")
    p, x = _randomize(net), _x((2, 4, 4))
    recipe = nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1).double()
    with torch.no_grad():
        recipe.weight.copy_(torch.from_numpy(p["weight"]))
        recipe.bias.copy_(torch.from_numpy(p["bias"]))
    y, shifted = net(x), recipe(x)
    assert y.shape == shifted.shape and not torch.allclose(y, shifted)  # trap 3: one pixel off
    # DL4J crops 0 rows on top, 1 at the bottom; torch's recipe 1 on top, 0 at the bottom: shifted up/left by one
    _close(y[:, :, 1:, 1:], shifted[:, :, :-1, :-1])


@pytest.mark.parametrize("mode", ["truncate", "strict"])
def test_deconv_truncate_and_strict_are_conv_transpose2d(mode):
    vertex = {"type": "deconv", "out": 3, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2]}
    net = _net(vertex, (2, 4, 5), mode=mode)
    p, x = _randomize(net), _x((2, 4, 5))
    torch_deconv = nn.ConvTranspose2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)).double()
    with torch.no_grad():
        torch_deconv.weight.copy_(torch.from_numpy(p["weight"]))  # [in, out, kH, kW]: DL4J's layout, unchanged
        torch_deconv.bias.copy_(torch.from_numpy(p["bias"]))
    y = net(x)
    # s(n-1) + k_e - 2p: 2·3 + 3 - 2 = 7 rows, 1·4 + 3 - 0 = 7 columns
    assert tuple(y.shape[1:]) == net.graphspec.analysis.shapes["v"] == (3, 7, 7)
    _close(y, torch_deconv(x))
    _close(y, deconv_ref(x.numpy(), p["weight"], p["bias"], (2, 1), (1, 2), 1, 0, 7, 7))  # crops p = (1, 0)


def test_deconv_truncate_matches_the_scatter_reference():
    net = _net({"type": "deconv", "out": 2, "kernel": 3, "stride": 2, "padding": 1}, (3, 3, 4))
    p, x = _randomize(net), _x((3, 3, 4))
    _close(net(x), deconv_ref(x.numpy(), p["weight"], p["bias"], (2, 2), (1, 1), 1, 1, 5, 7))


# --- zero padding and cropping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("padding,sides", [(2, (2, 2, 2, 2)), ([1, 3], (1, 1, 3, 3)), ([1, 2, 3, 4], (1, 2, 3, 4))])
def test_zero_padding_takes_1_2_or_4_values_top_first(padding, sides):
    top, bottom, left, right = sides
    x = _x((2, 3, 4))
    y = _net({"type": "zero_padding", "padding": padding}, (2, 3, 4))(x)
    want = np.zeros((2, 2, 3 + top + bottom, 4 + left + right))
    want[:, :, top:top + 3, left:left + 4] = x.numpy()
    _close(y, want)
    _close(y, nn.ZeroPad2d((left, right, top, bottom))(x))  # torch's order: last dimension first


@pytest.mark.parametrize("cropping,sides", [(1, (1, 1, 1, 1)), ([2, 0], (2, 2, 0, 0)), ([0, 1, 2, 0], (0, 1, 2, 0))])
def test_cropping_takes_1_2_or_4_values(cropping, sides):
    top, bottom, left, right = sides
    x = _x((2, 6, 5))
    y = _net({"type": "cropping", "cropping": cropping}, (2, 6, 5))(x)
    _close(y, x.numpy()[:, :, top:6 - bottom, left:5 - right])


def test_padding_and_cropping_errors():
    assert _message({"type": "cropping", "cropping": [2, 3, 0, 0]}, (2, 5, 5)) == (
        "cropping [top 2, bottom 3, left 0, right 0] leaves nothing of the 5x5 input (output would be 0x5); "
        "input shapes: x [2, 5, 5]")
    assert _message({"type": "zero_padding", "padding": [1, 2, 3]}) == (
        "'padding': expected a non-negative integer or a list of 1, 2 or 4 non-negative integers "
        "([top, bottom, left, right]); received [1, 2, 3]")
    assert _message({"type": "cropping", "cropping": [1, -1]}) == (
        "'cropping': expected a non-negative integer or a list of 1, 2 or 4 non-negative integers "
        "([top, bottom, left, right]); received [1, -1]")


# --- space to depth and depth to space --------------------------------------------------------------------------


def space_to_depth_ref(x, b):
    """SEMANTICS-VISION.md §4.3 (TF order): out[(bh·B + bw)·C + c, oh, ow] = in[c, oh·B + bh, ow·B + bw]."""
    n, c, h, w = x.shape
    out = np.zeros((n, c * b * b, h // b, w // b))
    for ch in range(c):
        for bh in range(b):
            for bw in range(b):
                out[:, (bh * b + bw) * c + ch] = x[:, ch, bh::b, bw::b]
    return out


@pytest.mark.parametrize("b", [2, 3])
def test_space_to_depth_is_tf_order_not_pixel_unshuffle(b):
    shape = (3, 2 * b, 3 * b)
    x = _x(shape)
    y = _net({"type": "space_to_depth", "block_size": b}, shape)(x)
    assert tuple(y.shape[1:]) == (3 * b * b, 2, 3)
    _close(y, space_to_depth_ref(x.numpy(), b))
    assert not torch.allclose(y, F.pixel_unshuffle(x, b))  # torch's channel c·B² + bh·B + bw differs
    recipe = F.pixel_unshuffle(x, b).view(2, 3, b * b, 2, 3).transpose(1, 2).reshape(2, 3 * b * b, 2, 3)
    _close(y, recipe)  # SEMANTICS-VISION.md's exact mapping


def test_depth_to_space_is_the_exact_inverse_in_tf_order():
    b, x = 2, _x((8, 3, 2))
    y = _net({"type": "depth_to_space", "block_size": b}, (8, 3, 2))(x)
    want = np.zeros((2, 2, 6, 4))  # in[(bh·B + bw)·C + c, h, w] -> out[c, h·B + bh, w·B + bw]
    for ch in range(2):
        for bh in range(b):
            for bw in range(b):
                want[:, ch, bh::b, bw::b] = x.numpy()[:, (bh * b + bw) * 2 + ch]
    _close(y, want)
    assert not torch.allclose(y, F.pixel_shuffle(x, b))
    _close(_net({"type": "space_to_depth", "block_size": b}, (2, 6, 4))(y), x)  # round trip
    assert "extension" in lookup("DepthToSpace").doc


def test_space_to_depth_errors():
    assert _message({"type": "space_to_depth", "block_size": 2}, (3, 4, 5)) == (
        "the input's height and width must be multiples of 'block_size' (2); received 4x5; input shapes: x [3, 4, 5]")
    assert _message({"type": "depth_to_space", "block_size": 2}, (6, 2, 2)) == (
        "the input's channels must be a multiple of 'block_size'² (4); received 6; input shapes: x [6, 2, 2]")


# --- grouped convolution ----------------------------------------------------------------------------------------


def test_conv_groups_is_torch_grouped_conv():
    net = _net({"type": "conv", "out": 6, "kernel": 3, "stride": 2, "groups": 2}, (4, 7, 6), mode="same")
    p, x = _randomize(net), _x((4, 7, 6))
    assert p["weight"].shape == (6, 2, 3, 3)  # [out, in/groups, kH, kW]
    want = F.conv2d(F.pad(x, (0, 1, 1, 1)), torch.from_numpy(p["weight"]), torch.from_numpy(p["bias"]), 2,
                    groups=2)  # Same: ceil(7/2) = 4 rows with P = 2 (1 + 1), ceil(6/2) = 3 columns with P = 1 (0 + 1)
    _close(net(x), want)
    # group g reads input channels 2g, 2g+1 only: zeroing group 0's inputs leaves outputs 3..5 unchanged
    x0 = x.clone()
    x0[:, :2] = 0
    _close(net(x0)[:, 3:], net(x)[:, 3:])
    row = graphspec.summarize(_doc({"type": "conv", "out": 6, "kernel": 3, "stride": 2, "groups": 2}, (4, 7, 6),
                                   "same")).rows[-1]
    assert row.macs == 6 * 4 * 3 * (4 // 2) * 3 * 3  # output values · in/groups · kH · kW


def test_conv_groups_errors():
    assert _message({"type": "conv", "out": 6, "kernel": 1, "groups": 4}, (6, 3, 3)) == (
        "'groups' (4) must divide the input's channels; received 6 channels; input shapes: x [6, 3, 3]")
    assert _message({"type": "conv", "out": 6, "kernel": 1, "groups": 4}, (8, 3, 3)) == (
        "'groups' (4) must divide 'out'; received out=6; input shapes: x [8, 3, 3]")


# --- depthwise and separable convolution ------------------------------------------------------------------------


def depthwise_ref(x, w_dl4j, b, s, top, left, out_h, out_w, d=1):
    """SEMANTICS-VISION.md §5.1: DL4J's W [kH, kW, in, m]; output channel c·m + j reads input channel c only;
    reads outside the input are 0."""
    n, c_in, h, wid = x.shape
    kh_n, kw_n, _, m = w_dl4j.shape
    out = np.zeros((n, c_in * m, out_h, out_w))
    for c in range(c_in):
        for j in range(m):
            for i in range(out_h):
                for q in range(out_w):
                    acc = np.zeros(n)
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            r, t = i * s - top + kh * d, q * s - left + kw * d
                            if 0 <= r < h and 0 <= t < wid:
                                acc += w_dl4j[kh, kw, c, j] * x[:, c, r, t]
                    out[:, c * m + j, i, q] = acc + b[c * m + j]
    return out


@pytest.mark.parametrize("m", [1, 2])
def test_depthwise_channel_order_is_c_times_m_plus_j(m):
    # Same, stride 2 on 5x6: 3x3 output, pads top 1 / bottom 1, left 0 / right 1 (extra pixel right)
    net = _net({"type": "depthwise_conv", "depth_multiplier": m, "kernel": 3, "stride": 2}, (3, 5, 6), mode="same")
    p, x = _randomize(net), _x((3, 5, 6))
    assert p["weight"].shape == (3 * m, 1, 3, 3)
    w_dl4j = p["weight"].reshape(3, m, 3, 3).transpose(2, 3, 0, 1)  # torch -> DL4J [kH, kW, in, m]
    np.testing.assert_array_equal(  # SEMANTICS-VISION.md's conversion back gives torch's layout
        torch.from_numpy(w_dl4j).permute(2, 3, 0, 1).reshape(3 * m, 1, 3, 3).numpy(), p["weight"])
    y = net(x)
    assert tuple(y.shape[1:]) == net.graphspec.analysis.shapes["v"] == (3 * m, 3, 3)
    _close(y, depthwise_ref(x.numpy(), w_dl4j, p["bias"], 2, 1, 0, 3, 3))
    torch_dw = nn.Conv2d(3, 3 * m, 3, stride=2, groups=3).double()
    with torch.no_grad():
        torch_dw.weight.copy_(torch.from_numpy(p["weight"]))
        torch_dw.bias.copy_(torch.from_numpy(p["bias"]))
    _close(y, torch_dw(F.pad(x, (0, 1, 1, 1))))


def test_depthwise_out_is_checked():
    assert _message({"type": "depthwise_conv", "depth_multiplier": 2, "out": 5, "kernel": 1}, (3, 4, 4)) == (
        "'out' is 5 but a depthwise convolution gives in · depth_multiplier = 3 · 2 = 6 channels; remove 'out' or "
        "fix it; input shapes: x [3, 4, 4]")
    assert graphspec.load_spec(_doc({"type": "depthwise_conv", "depth_multiplier": 2, "out": 6, "kernel": 1},
                                    (3, 4, 4))).analysis.shapes["v"] == (6, 4, 4)


def test_separable_is_depthwise_then_pointwise_then_bias():
    net = _net({"type": "separable_conv", "out": 4, "depth_multiplier": 2, "kernel": 3, "dilation": 2,
                "activation": "relu"}, (3, 7, 7))
    p, x = _randomize(net), _x((3, 7, 7))
    assert p["depthwise_weight"].shape == (6, 1, 3, 3) and p["pointwise_weight"].shape == (4, 6, 1, 1)
    # DL4J's separable W is [m, in, kH, kW]; torch's depthwise weight is W.permute(1, 0, 2, 3).reshape(in·m, 1, ...)
    w_dl4j = p["depthwise_weight"].reshape(3, 2, 3, 3).transpose(1, 0, 2, 3)
    dw = torch.from_numpy(w_dl4j).permute(1, 0, 2, 3).reshape(6, 1, 3, 3)
    np.testing.assert_array_equal(dw.numpy(), p["depthwise_weight"])
    depthwise = F.conv2d(x, dw, None, dilation=2, groups=3)  # no bias here ...
    pointwise = F.conv2d(depthwise, torch.from_numpy(p["pointwise_weight"]))
    want = torch.relu(pointwise + torch.from_numpy(p["bias"]).view(1, 4, 1, 1))  # ... only after the pointwise step
    y = net(x)
    assert tuple(y.shape[1:]) == net.graphspec.analysis.shapes["v"] == (4, 3, 3)
    _close(y, want)
    # as a numpy reference: the depthwise loop with DL4J's separable W permuted to [kH, kW, in, m], no bias, then
    # the channel mix, then the bias
    mid = depthwise_ref(x.numpy(), w_dl4j.transpose(2, 3, 1, 0), np.zeros(6), 1, 0, 0, 3, 3, d=2)
    mixed = np.einsum("om,nmhw->nohw", p["pointwise_weight"][:, :, 0, 0], mid) + p["bias"][None, :, None, None]
    _close(y, np.maximum(mixed, 0))


def test_separable_weights_are_l1_l2_weights():
    entry = lookup("SeparableConvolution2D")
    assert entry.weight_params == ("depthwise_weight", "pointwise_weight") and entry.bias_params == ("bias",)
    assert lookup("depthwise_conv").weight_params == ("weight",) == lookup("deconv").weight_params
    for name in ("deconv", "depthwise_conv", "separable_conv"):
        assert lookup(name).uses == ("activation", "weight_init", "bias_init", "convolution_mode")
    for name in ("upsampling", "zero_padding", "cropping"):
        assert lookup(name).width_follows_input


# --- shapes, parameter counts, MACs for every type and mode -----------------------------------------------------


CASES = [
    ({"type": "upsampling", "size": [2, 3]}, "truncate", (2, 10, 18)),
    ({"type": "upsampling", "interpolation": "bilinear"}, "truncate", (2, 10, 12)),
    ({"type": "deconv", "out": 3, "kernel": 3, "stride": 2, "padding": 1}, "truncate", (3, 9, 11)),
    ({"type": "deconv", "out": 3, "kernel": 2, "stride": [1, 3]}, "strict", (3, 6, 17)),
    ({"type": "deconv", "out": 3, "kernel": 1, "stride": 3}, "same", (3, 15, 18)),
    ({"type": "zero_padding", "padding": [1, 0, 2, 3]}, "truncate", (2, 6, 11)),
    ({"type": "cropping", "cropping": [1, 2]}, "truncate", (2, 3, 2)),
    ({"type": "space_to_depth", "block_size": 2}, "truncate", None),
    ({"type": "depth_to_space", "block_size": 1}, "truncate", (2, 5, 6)),
    ({"type": "conv", "out": 4, "kernel": 3, "groups": 2}, "truncate", (4, 3, 4)),
    ({"type": "depthwise_conv", "depth_multiplier": 2, "kernel": 3, "stride": 2}, "same", (4, 3, 3)),
    ({"type": "depthwise_conv", "kernel": [3, 1], "stride": [2, 1]}, "strict", (2, 2, 6)),
    ({"type": "separable_conv", "out": 5, "kernel": 2, "stride": 2}, "truncate", (5, 2, 3)),
    ({"type": "separable_conv", "out": 5, "depth_multiplier": 3, "kernel": 3}, "same", (5, 5, 6)),
]


@pytest.mark.parametrize("vertex,mode,shape", CASES, ids=lambda c: str(c) if not isinstance(c, dict) else c["type"])
def test_static_shape_param_count_and_macs_agree_with_the_module(vertex, mode, shape):
    in_shape = (2, 6, 8) if vertex["type"] == "space_to_depth" else (2, 5, 6)
    doc = _doc(vertex, in_shape, mode)
    net = graphspec.build(doc)
    static = net.graphspec.analysis.shapes["v"]
    assert static == (shape or (8, 3, 4))
    for training in (True, False):
        net.train(training)
        assert tuple(net(torch.randn(3, *in_shape)).shape) == (3, *static)
    row = graphspec.summarize(doc).rows[-1]
    module = net.get_submodule("v")
    assert row.params == row.trainable == sum(t.numel() for t in module.parameters())
    assert [(p.name, p.shape) for p in row.param_shapes] == [(k, tuple(t.shape)) for k, t in module.named_parameters()]
    assert row.macs == _macs_by_hand(vertex, in_shape, static)


def _macs_by_hand(v: dict, in_shape, out_shape) -> int:
    """docs/_pending_vision.md's MACs rules."""
    values, k = math.prod(out_shape), v.get("kernel", 5)
    area = k * k if isinstance(k, int) else k[0] * k[1]
    t = v["type"]
    if t == "upsampling":
        return 4 * values if v.get("interpolation") == "bilinear" else 0
    if t == "deconv":
        return math.prod(in_shape) * v["out"] * area
    if t == "conv":
        return values * in_shape[0] // v["groups"] * area
    if t == "depthwise_conv":
        return values * area
    if t == "separable_conv":
        mid, positions = in_shape[0] * v.get("depth_multiplier", 1), out_shape[1] * out_shape[2]
        return positions * mid * area + positions * mid * v["out"]
    return 0  # padding, cropping, space/depth: data movement


def test_parameter_counts_by_hand():
    def total(vertex, shape=(4, 6, 6)):
        return graphspec.summarize(_doc(vertex, shape)).total
    assert total({"type": "deconv", "out": 3, "kernel": 2}) == 4 * 3 * 2 * 2 + 3
    assert total({"type": "conv", "out": 6, "kernel": 3, "groups": 2}) == 6 * 2 * 3 * 3 + 6
    assert total({"type": "depthwise_conv", "depth_multiplier": 3, "kernel": 3, "bias": False}) == 4 * 3 * 9
    assert total({"type": "separable_conv", "out": 5, "depth_multiplier": 2, "kernel": 3}) == 8 * 9 + 5 * 8 + 5
    assert total({"type": "zero_padding", "padding": 1}) == total({"type": "space_to_depth", "block_size": 2}) == 0


# --- initialisation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,variance", [
    ("xavier", lambda fan_in, fan_out: 2.0 / (fan_in + fan_out)),
    ("relu", lambda fan_in, fan_out: 2.0 / fan_in),
])
def test_depthwise_init_uses_dl4j_fans(scheme, variance):
    # SEMANTICS-VISION.md §12.2: fanIn = in·kH·kW (all input channels), fanOut = m·kH·kW / (sH·sW)
    c, m, k, s = 128, 4, 5, 2
    net = graphspec.build(_doc({"type": "depthwise_conv", "depth_multiplier": m, "kernel": k, "stride": s},
                               (c, 8, 8), weight_init=scheme))
    w = net.get_submodule("v").weight.detach().double()
    want = variance(c * k * k, m * k * k / (s * s))
    assert w.numel() == 12_800
    assert abs(w.mean()) < 3 * math.sqrt(want / w.numel())
    assert abs(w.var() / want - 1) < 0.05
    torch_fan_in = k * k  # what torch's own init would use for a grouped conv: a variance ~c times larger
    assert w.var() < variance(torch_fan_in, m * k * k) / 10


def test_separable_and_deconv_init_fans():
    c, m, out = 64, 2, 96
    net = graphspec.build(_doc({"type": "separable_conv", "out": out, "depth_multiplier": m, "kernel": 3},
                               (c, 5, 5), weight_init="xavier"))
    pointwise = net.get_submodule("v").pointwise_weight.detach().double()
    assert abs(pointwise.var() / (2.0 / (2 * c * m)) - 1) < 0.06  # fanIn = fanOut = in·m, not out (§12.2)
    net = graphspec.build(_doc({"type": "deconv", "out": 64, "kernel": 4, "stride": 2}, (64, 3, 3),
                               weight_init="xavier"))
    weight = net.get_submodule("v").weight.detach().double()
    assert abs(weight.var() / (2.0 / (64 * 16 + 64 * 16 / 4)) - 1) < 0.05  # fanOut = out·k² / s²


# --- a net of every type: backward and ONNX -----------------------------------------------------------------------


ALL_TYPES = {
    "version": 1, "name": "vision-all", "seed": 5,
    "defaults": {"activation": "tanh", "weight_init": "xavier", "bias_init": 0.1, "convolution_mode": "same"},
    "inputs": {"x": {"type": "convolutional", "channels": 2, "height": 6, "width": 6}},
    "vertices": {
        "pad": {"type": "zero_padding", "inputs": ["x"], "padding": [1, 0, 2, 1]},            # 2x7x9
        "crop": {"type": "cropping", "inputs": ["pad"], "cropping": [1, 0, 1, 0]},            # 2x6x8
        "group": {"type": "conv", "inputs": ["crop"], "out": 4, "kernel": 3, "groups": 2},   # 4x6x8
        "dw": {"type": "depthwise_conv", "inputs": ["group"], "depth_multiplier": 2, "kernel": 3, "stride": 2},
        "sep": {"type": "separable_conv", "inputs": ["dw"], "out": 4, "kernel": 3},          # 4x3x4
        "up": {"type": "upsampling", "inputs": ["sep"], "size": 2, "interpolation": "bilinear"},   # 4x6x8
        "s2d": {"type": "space_to_depth", "inputs": ["up"], "block_size": 2},                # 16x3x4
        "d2s": {"type": "depth_to_space", "inputs": ["s2d"], "block_size": 2},               # 4x6x8
        "deconv": {"type": "deconv", "inputs": ["d2s"], "out": 3, "kernel": 1, "stride": 3},  # 3x18x24, crop -1
        "deconv2": {"type": "deconv", "inputs": ["deconv"], "out": 2, "kernel": 3, "stride": 2, "padding": 1,
                    "convolution_mode": "truncate"},                                        # 2x35x47
        "near": {"type": "upsampling", "inputs": ["deconv2"], "size": [1, 2]},               # 2x35x94
    },
    "outputs": ["near"],
}


def test_backward_reaches_every_parameter_and_the_input():
    net = graphspec.build(ALL_TYPES)
    assert net.graphspec.analysis.shapes["near"] == (2, 35, 94)
    x = torch.randn(2, 2, 6, 6, requires_grad=True)
    net(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_onnx_export_of_every_type_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from graphspec.export import export
    net = graphspec.build(ALL_TYPES)
    path = tmp_path / "vision.onnx"
    report = export(net, path)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == want.shape == (3, 2, 35, 94)
    assert np.abs(got - want).max() < 1e-5
