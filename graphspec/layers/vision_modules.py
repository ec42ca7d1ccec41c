"""The torch modules behind the vision types (:mod:`graphspec.layers.vision`). As in :mod:`.modules`, shapes,
paddings and crops are computed statically by the registry entries and passed in; ``forward`` does no bookkeeping.
Section numbers refer to SEMANTICS-VISION.md."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import Pads, _act, padded_conv2d

Crops = tuple[int, int, int, int]  # (left, right, top, bottom) removed from an output; negative: zeros added


class Upsampling(nn.Module):
    """DL4J Upsampling2D: each pixel repeated ``size`` times (nearest); ``bilinear`` is an extension with torch's
    and Keras' half-pixel centres (align_corners=False)."""

    def __init__(self, size: tuple[int, int], interpolation: str):
        super().__init__()
        self.size, self.interpolation = tuple(size), interpolation

    def forward(self, x):
        scale = (float(self.size[0]), float(self.size[1]))
        if self.interpolation == "nearest":
            return F.interpolate(x, scale_factor=scale, mode="nearest")
        return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)

    def extra_repr(self):
        return f"size={self.size}, {self.interpolation}"


class Deconv2d(nn.Module):
    """DL4J Deconvolution2D: the transposed convolution (weight [in, out, kH, kW], no kernel flip), whose full output
    (length s(n-1)+k_e per dim) is cropped by ``crops``. Truncate crops ``padding`` on both sides; Same crops
    trunc((k_e - s)/2) before and the rest after, which is negative (a row of zeros added) when k_e < s - 1 (§3.3).
    The bias is added after cropping, so added rows hold the bias as in DL4J's op."""

    def __init__(self, n_in: int, n_out: int, kernel, stride, dilation, crops: Crops, bias: bool, activation: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out, *kernel))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.stride, self.dilation, self.crops = tuple(stride), tuple(dilation), tuple(crops)
        left, right, top, bottom = crops
        # conv_transpose2d's own padding crops symmetrically; what is left over is cropped (or zero-padded) after
        self._padding = (max(min(top, bottom), 0), max(min(left, right), 0))
        ph, pw = self._padding
        self._rest = (pw - left, pw - right, ph - top, ph - bottom)  # F.pad amounts: negative crops
        self._act = _act(activation)
        self.activation = activation

    def forward(self, x):
        if not any(self._rest):
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self._padding, 0, 1, self.dilation)
        else:
            y = F.conv_transpose2d(x, self.weight, None, self.stride, self._padding, 0, 1, self.dilation)
            y = F.pad(y, self._rest)
            if self.bias is not None:
                y = y + self.bias.view(1, -1, 1, 1)
        return y if self._act is None else self._act(y)

    def extra_repr(self):
        i, o, kh, kw = self.weight.shape
        return (f"{i}, {o}, kernel=({kh}, {kw}), stride={self.stride}, crops(l,r,t,b)={self.crops}, "
                f"activation={self.activation}")


class ZeroPadding(nn.Module):
    """DL4J ZeroPaddingLayer; ``pads`` in F.pad's order (left, right, top, bottom), DL4J's is top-first (§4.1)."""

    def __init__(self, pads: Pads):
        super().__init__()
        self.pads = tuple(pads)

    def forward(self, x):
        return F.pad(x, self.pads)

    def extra_repr(self):
        return f"pads(l,r,t,b)={self.pads}"


class Cropping(nn.Module):
    """DL4J Cropping2D: the slice [top : H-bottom, left : W-right] (end indices, so that a 0 crop works)."""

    def __init__(self, top: int, bottom_end: int, left: int, right_end: int):
        super().__init__()
        self.rows, self.cols = (top, bottom_end), (left, right_end)

    def forward(self, x):
        return x[:, :, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]]

    def extra_repr(self):
        return f"rows {self.rows[0]}:{self.rows[1]}, columns {self.cols[0]}:{self.cols[1]}"


class SpaceToDepth(nn.Module):
    """DL4J SpaceToDepthLayer, TensorFlow's channel order: input channel c of pixel (oh·B + bh, ow·B + bw) goes to
    output channel (bh·B + bw)·C + c. torch's pixel_unshuffle puts it at c·B² + bh·B + bw instead (§4.3)."""

    def __init__(self, block: int, in_shape: tuple[int, int, int]):
        super().__init__()
        self.block, self.in_shape = block, tuple(in_shape)

    def forward(self, x):
        b, (c, h, w) = self.block, self.in_shape
        blocks = x.reshape(-1, c, h // b, b, w // b, b)  # [N, c, oh, bh, ow, bw]
        return blocks.permute(0, 3, 5, 1, 2, 4).reshape(-1, b * b * c, h // b, w // b)

    def extra_repr(self):
        return f"block_size={self.block}, TF channel order"


class DepthToSpace(nn.Module):
    """The exact inverse of :class:`SpaceToDepth` (TensorFlow's depth_to_space order, §4.3); not a DL4J layer."""

    def __init__(self, block: int, in_shape: tuple[int, int, int]):
        super().__init__()
        self.block, self.in_shape = block, tuple(in_shape)

    def forward(self, x):
        b, (c, h, w) = self.block, self.in_shape
        c_out = c // (b * b)
        parts = x.reshape(-1, b, b, c_out, h, w)  # [N, bh, bw, c, h, w]
        return parts.permute(0, 3, 4, 1, 5, 2).reshape(-1, c_out, h * b, w * b)

    def extra_repr(self):
        return f"block_size={self.block}, TF channel order"


class SeparableConv2d(nn.Module):
    """DL4J SeparableConvolution2D (§5.2): a depthwise convolution without bias (intermediate channel c·m + j), a 1×1
    pointwise convolution, then the bias, then the activation. Weights in torch layout: ``depthwise_weight``
    [in·m, 1, kH, kW] (DL4J's W [m, in, kH, kW] permuted), ``pointwise_weight`` [out, in·m, 1, 1] (DL4J's pW)."""

    def __init__(self, n_in: int, n_out: int, multiplier: int, kernel, stride, dilation, pads: Pads, bias: bool,
                 activation: str):
        super().__init__()
        self.depthwise_weight = nn.Parameter(torch.empty(n_in * multiplier, 1, *kernel))
        self.pointwise_weight = nn.Parameter(torch.empty(n_out, n_in * multiplier, 1, 1))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.groups, self.stride, self.dilation, self.pads = n_in, tuple(stride), tuple(dilation), tuple(pads)
        self._act = _act(activation)
        self.activation = activation

    def forward(self, x):
        y = padded_conv2d(x, self.depthwise_weight, None, self.stride, self.dilation, self.pads, self.groups)
        y = F.conv2d(y, self.pointwise_weight, self.bias)
        return y if self._act is None else self._act(y)

    def extra_repr(self):
        mid, _, kh, kw = self.depthwise_weight.shape
        return (f"{self.groups}, {self.pointwise_weight.shape[0]}, multiplier={mid // self.groups}, "
                f"kernel=({kh}, {kw}), stride={self.stride}, pads(l,r,t,b)={self.pads}, activation={self.activation}")
