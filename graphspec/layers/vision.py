"""Built-in vision vertex types beyond the tutorial's: upsampling, transposed, depthwise and separable
convolution, zero padding, cropping, space-to-depth and depth-to-space (DL4J 1.0 semantics, see docs/spec.md).

Each class is one registry entry, in the style of :mod:`graphspec.layers.types`; section numbers (§) refer to
SEMANTICS-VISION.md, which states the DL4J rules implemented here.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import PlainValidator, WithJsonSchema

from ..errors import shown
from .base import Inferred, ParamShape, Params, PositivePair, ShapeError, Size, VertexType, builtin
from . import modules as M
from . import vision_modules as VM
from .types import LAYER_KEYS, WindowParams, _check_given, _need_rank3, _prod, spatial
from .weight_init import init_


# --- parameter models -----------------------------------------------------------------------------------------


def _four_sides(value: Any) -> tuple[int, int, int, int]:
    """DL4J's 1/2/4-value rule (§4.1): p -> [p, p, p, p]; [h, w] -> [h, h, w, w]; [top, bottom, left, right]."""
    items = value if isinstance(value, (list, tuple)) else [value]
    ok = len(items) in (1, 2, 4) and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 1_000_000
                                         for v in items)
    if not ok:
        raise ValueError(f"expected a non-negative integer or a list of 1, 2 or 4 non-negative integers "
                         f"([top, bottom, left, right]); received {shown(value)}")
    if len(items) == 1:
        return (items[0],) * 4
    if len(items) == 2:
        return (items[0], items[0], items[1], items[1])
    return tuple(items)


FourSides = Annotated[tuple[int, int, int, int], PlainValidator(_four_sides),
                      WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                                                {"type": "array", "items": {"type": "integer", "minimum": 0},
                                                 "minItems": 1, "maxItems": 4}]})]


def _area(p) -> int:
    return p.kernel[0] * p.kernel[1]


def _strided_fan(channels: int, p) -> float:
    """DL4J's conv-family fanOut (§12.2): channels · kH · kW / (sH · sW)."""
    return channels * _area(p) / (p.stride[0] * p.stride[1])


def _fill_bias(module, p) -> None:
    if module.bias is not None:
        module.bias.data.fill_(p.bias_init)


# --- upsampling -------------------------------------------------------------------------------------------------


class UpsamplingParams(Params):
    size: PositivePair = (2, 2)
    interpolation: Literal["nearest", "bilinear"] = "nearest"


@builtin
class Upsampling2D(VertexType):
    name, dl4j = "upsampling", "Upsampling2D"
    Params = UpsamplingParams
    width_follows_input = True
    doc = ("Repeats each pixel `size` ([h, w]) times (nearest neighbour, DL4J's only mode; no parameters, no "
           "activation). `interpolation: bilinear` is an extension (half-pixel centres, align_corners=False as "
           "torch's and Keras' default).")

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        return Inferred((c, h * p.size[0], w * p.size[1]))

    def macs(self, p, inf):
        # nearest copies values; bilinear weighs 4 neighbours per output value
        return 0 if p.interpolation == "nearest" else 4 * _prod(inf.out_shape)

    def build(self, p, inf):
        return VM.Upsampling(p.size, p.interpolation)


# --- transposed convolution -------------------------------------------------------------------------------------


class DeconvParams(WindowParams):
    out: Size


def _trunc_half(v: int) -> int:
    """v / 2 rounded toward zero, as C++/Java integer division (Python's // rounds down)."""
    return v // 2 if v >= 0 else -((-v) // 2)


def deconv_geometry(n: int, k: int, s: int, p: int, d: int, mode: str) -> tuple[int, int, int]:
    """(out, crop_before, crop_after) of the full transposed output, length s(n-1)+k_e, along one dim (§1, §3.3).
    Truncate and Strict (identical, no divisibility check) crop ``p`` on both sides; Same gives s·n with
    trunc((k_e - s)/2) cropped before, which is -1 (a row of zeros added) for k_e = s - 2 (e.g. k=1, s=3)."""
    k_eff = k + (k - 1) * (d - 1)
    full = s * (n - 1) + k_eff
    if mode == "same":
        before = _trunc_half(k_eff - s)
        return s * n, before, full - s * n - before
    if full - 2 * p < 1:
        raise ShapeError(f"output would be {full - 2 * p}: stride {s}·(input {n} - 1) + kernel {k_eff} - "
                         f"2·padding {p} must be at least 1", key="padding")
    return full - 2 * p, p, p


@builtin
class Deconvolution2D(VertexType):
    name, dl4j = "deconv", "Deconvolution2D"
    Params = DeconvParams
    weight_params, bias_params = ("weight",), ("bias",)
    uses = LAYER_KEYS + ("convolution_mode",)
    doc = ("Transposed 2-D convolution, weight [in, out, kH, kW]. `truncate`/`strict`: s·(n-1) + k_e - 2p; `same`: "
           "s·n, `padding` ignored, DL4J beta6+ crop trunc((k_e - s)/2) before, the rest after (TF's SAME for "
           "k_e ≥ s).")

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        _check_given(p.in_, c, "in", "channels")
        dil = p.dilation
        oh, top, bottom = deconv_geometry(h, p.kernel[0], p.stride[0], p.padding[0], dil[0], p.convolution_mode)
        ow, left, right = deconv_geometry(w, p.kernel[1], p.stride[1], p.padding[1], dil[1], p.convolution_mode)
        return Inferred((p.out, oh, ow), c, p.out, {"crops": (left, right, top, bottom), "in_values": c * h * w})

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (inf.n_in, p.out, *p.kernel), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return inf.info["in_values"] * p.out * _area(p)  # every input value meets every output channel's kernel

    def output_overwritable(self, p):
        return p.activation == "identity"  # as conv: the backward needs the input, not the output

    def build(self, p, inf):
        return VM.Deconv2d(inf.n_in, p.out, p.kernel, p.stride, p.dilation, inf.info["crops"], p.bias,
                           p.activation)

    def init(self, module, p, inf, generator):
        init_(module.weight, p.weight_init, inf.n_in * _area(p), _strided_fan(p.out, p), generator)
        _fill_bias(module, p)


# --- zero padding and cropping ------------------------------------------------------------------------------------


class ZeroPaddingParams(Params):
    padding: FourSides


@builtin
class ZeroPaddingLayer(VertexType):
    name, dl4j = "zero_padding", "ZeroPaddingLayer"
    Params = ZeroPaddingParams
    width_follows_input = True
    doc = ("Adds zeros around the image: `padding` p (all four sides), [h, w] (= [h, h, w, w]) or "
           "[top, bottom, left, right] (DL4J's order, top first).")

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        top, bottom, left, right = p.padding
        return Inferred((c, h + top + bottom, w + left + right))

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        top, bottom, left, right = p.padding
        return VM.ZeroPadding((left, right, top, bottom))


class CroppingParams(Params):
    cropping: FourSides


@builtin
class Cropping2D(VertexType):
    name, dl4j = "cropping", "Cropping2D"
    Params = CroppingParams
    width_follows_input = True
    doc = ("Removes rows and columns at the borders: `cropping` p (all four sides), [h, w] (= [h, h, w, w]) or "
           "[top, bottom, left, right].")

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        top, bottom, left, right = p.cropping
        oh, ow = h - top - bottom, w - left - right
        if oh < 1 or ow < 1:
            raise ShapeError(f"cropping [top {top}, bottom {bottom}, left {left}, right {right}] leaves nothing of "
                             f"the {h}x{w} input (output would be {oh}x{ow})", key="cropping")
        return Inferred((c, oh, ow))

    def macs(self, p, inf):
        return 0  # a slice

    def build(self, p, inf):
        top, bottom, left, right = p.cropping
        return VM.Cropping(top, top + inf.out_shape[1], left, left + inf.out_shape[2])


# --- space to depth and back ----------------------------------------------------------------------------------------


class BlockParams(Params):
    block_size: Size


@builtin
class SpaceToDepthLayer(VertexType):
    name, dl4j = "space_to_depth", "SpaceToDepthLayer"
    Params = BlockParams
    width_follows_input = True
    doc = ("Moves each `block_size`×`block_size` block of pixels into channels: [C·B², H/B, W/B], TensorFlow's "
           "and DL4J's order (channel (bh·B + bw)·C + c), not torch's pixel_unshuffle.")

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        b = p.block_size
        if h % b or w % b:
            raise ShapeError(f"the input's height and width must be multiples of 'block_size' ({b}); received "
                             f"{h}x{w}", key="block_size")
        return Inferred((c * b * b, h // b, w // b), info={"in_shape": (c, h, w)})

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        return VM.SpaceToDepth(p.block_size, inf.info["in_shape"])


@builtin
class DepthToSpace(VertexType):
    name, dl4j = "depth_to_space", "DepthToSpace"  # not a DL4J layer (only a SameDiff op): an extension
    Params = BlockParams
    width_follows_input = True
    doc = ("The inverse of `space_to_depth` (extension, not a DL4J layer): [C, H, W] to [C/B², H·B, W·B], "
           "TensorFlow's depth_to_space order (input channel (bh·B + bw)·C/B² + c), not torch's pixel_shuffle.")

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        b = p.block_size
        if c % (b * b):
            raise ShapeError(f"the input's channels must be a multiple of 'block_size'² ({b * b}); received {c}",
                             key="block_size")
        return Inferred((c // (b * b), h * b, w * b), info={"in_shape": (c, h, w)})

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        return VM.DepthToSpace(p.block_size, inf.info["in_shape"])


# --- depthwise and separable convolution ------------------------------------------------------------------------


class DepthwiseParams(WindowParams):
    depth_multiplier: Size = 1
    out: Optional[Size] = None  # always in · depth_multiplier; checked when given


@builtin
class DepthwiseConvolution2D(VertexType):
    name, dl4j = "depthwise_conv", "DepthwiseConvolution2D"
    Params = DepthwiseParams
    width_follows_input = True  # out = in · depth_multiplier: a width changed upstream changes it
    weight_params, bias_params = ("weight",), ("bias",)
    uses = LAYER_KEYS + ("convolution_mode",)
    doc = ("Convolves each input channel with `depth_multiplier` m kernels of its own: out = in·m channels, "
           "channel c·m + j (DL4J's order); torch weight [in·m, 1, kH, kW].")

    def infer(self, p, in_shapes):
        c = _need_rank3(in_shapes[0])[0]
        _check_given(p.in_, c, "in", "channels")
        out = c * p.depth_multiplier
        if p.out is not None and p.out != out:
            raise ShapeError(f"'out' is {p.out} but a depthwise convolution gives in · depth_multiplier = {c} · "
                             f"{p.depth_multiplier} = {out} channels; remove 'out' or fix it", key="out")
        (oh, ow), pads = spatial(p, in_shapes[0])
        return Inferred((out, oh, ow), c, out, {"pads": pads})

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (inf.n_out, 1, *p.kernel), True)]
        return shapes + ([ParamShape("bias", (inf.n_out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return _prod(inf.out_shape) * _area(p)  # each output channel reads one input channel

    def output_overwritable(self, p):
        return p.activation == "identity"

    def build(self, p, inf):
        return M.Conv2d(inf.n_in, inf.n_out, p.kernel, p.stride, p.dilation, inf.info["pads"], p.bias, p.activation,
                        groups=inf.n_in)  # torch's group c owns outputs c·m … c·m+m-1: DL4J's order

    def init(self, module, p, inf, generator):
        fan_in = inf.n_in * _area(p)  # DL4J counts all input channels (§12.2), torch would count kH·kW
        init_(module.weight, p.weight_init, fan_in, _strided_fan(p.depth_multiplier, p), generator)
        _fill_bias(module, p)


class SeparableParams(WindowParams):
    out: Size
    depth_multiplier: Size = 1


@builtin
class SeparableConvolution2D(VertexType):
    name, dl4j = "separable_conv", "SeparableConvolution2D"
    Params = SeparableParams
    weight_params, bias_params = ("depthwise_weight", "pointwise_weight"), ("bias",)
    uses = LAYER_KEYS + ("convolution_mode",)
    doc = ("Depthwise convolution (`depth_multiplier` m, no bias) then a 1×1 pointwise convolution to `out`, then "
           "the bias and the activation; `depthwise_weight` [in·m, 1, kH, kW], `pointwise_weight` [out, in·m, 1, 1].")

    def infer(self, p, in_shapes):
        c = _need_rank3(in_shapes[0])[0]
        _check_given(p.in_, c, "in", "channels")
        (oh, ow), pads = spatial(p, in_shapes[0])
        return Inferred((p.out, oh, ow), c, p.out, {"pads": pads})

    def param_shapes(self, p, inf):
        mid = inf.n_in * p.depth_multiplier
        shapes = [ParamShape("depthwise_weight", (mid, 1, *p.kernel), True),
                  ParamShape("pointwise_weight", (p.out, mid, 1, 1), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        positions = inf.out_shape[1] * inf.out_shape[2]
        mid = inf.n_in * p.depth_multiplier
        return positions * mid * _area(p) + positions * mid * p.out  # depthwise, then pointwise

    def output_overwritable(self, p):
        return p.activation == "identity"

    def build(self, p, inf):
        return VM.SeparableConv2d(inf.n_in, p.out, p.depth_multiplier, p.kernel, p.stride, p.dilation,
                                  inf.info["pads"], p.bias, p.activation)

    def init(self, module, p, inf, generator):
        mid = inf.n_in * p.depth_multiplier
        init_(module.depthwise_weight, p.weight_init, inf.n_in * _area(p), _strided_fan(p.depth_multiplier, p),
              generator)
        init_(module.pointwise_weight, p.weight_init, mid, mid, generator)  # DL4J: fanOut = in·m, not out (§12.2)
        _fill_bias(module, p)
