"""Built-in vertex types: DL4J 0.9.x layers and graph vertices.

Each class is one registry entry: its parameters, its static rules and its torch factory, side by side.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field, model_validator

from .base import (BUILTINS, ActivationName, ConvolutionMode, Inferred, NonNegativePair, ParamShape,  # noqa: F401
                   Params, PositivePair, ShapeError, Size, VertexType, WeightInitName, builtin)
from . import modules as M
from .losses import contrastive, per_example, triplet_given, triplet_semi_hard
from .weight_init import init_

LAYER_KEYS = ("activation", "weight_init", "bias_init")


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _need_rank3(shape, what: str = "a convolutional input [channels, height, width]"):
    if len(shape) != 3:
        raise ShapeError(f"expected {what}; received {_fmt(shape)}")
    return shape


def _check_given(given: Optional[int], inferred: int, key: str, what: str) -> None:
    if given is not None and given != inferred:
        raise ShapeError(f"'{key}' is {given} but the input has {inferred} {what}; "
                         f"remove '{key}' to infer it or fix the input", key=key)


def _prod(shape) -> int:
    return math.prod(shape)


# --- geometry -----------------------------------------------------------------------------------------------


def window_geometry(n: int, k: int, s: int, p: int, d: int, mode: str) -> tuple[int, int, int]:
    """(out, pad_before, pad_after) along one spatial dim for DL4J's convolution modes."""
    if mode == "same":
        return M.same_pads(n, k, s, d)
    k_eff = k + (k - 1) * (d - 1)
    if k_eff > n + 2 * p:
        raise ShapeError(f"kernel {k_eff} is larger than the input {n} plus padding {2 * p} "
                         f"(convolution_mode '{mode}')", key="kernel")
    if mode == "strict" and (n - k_eff + 2 * p) % s:
        raise ShapeError(f"convolution_mode 'strict': (input {n} - kernel {k_eff} + 2·padding {p}) = "
                         f"{n - k_eff + 2 * p} is not divisible by stride {s}; use 'truncate' or 'same'",
                         key="stride")
    return (n + 2 * p - k_eff) // s + 1, p, p


def spatial(p, shape) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Output (H, W) and F.pad-ordered pads (left, right, top, bottom) for a conv/pool params object."""
    _, h, w = shape
    dil = getattr(p, "dilation", (1, 1))
    oh, top, bottom = window_geometry(h, p.kernel[0], p.stride[0], p.padding[0], dil[0], p.convolution_mode)
    ow, left, right = window_geometry(w, p.kernel[1], p.stride[1], p.padding[1], dil[1], p.convolution_mode)
    if oh < 1 or ow < 1:
        raise ShapeError(f"output would be {oh}x{ow}; the input {h}x{w} is too small", key="kernel")
    return (oh, ow), (left, right, top, bottom)


# --- layers -------------------------------------------------------------------------------------------------


def _check_groups(groups: int, n_in: int, n_out: int) -> None:
    """A grouped convolution splits both the input and the output channels into ``groups`` equal parts."""
    if n_in % groups:
        raise ShapeError(f"'groups' ({groups}) must divide the input's channels; received {n_in} channels",
                         key="groups")
    if n_out % groups:
        raise ShapeError(f"'groups' ({groups}) must divide 'out'; received out={n_out}", key="groups")


class WindowParams(Params):
    """The keys every DL4J convolution layer shares, with ConvolutionLayer's builder defaults (conv, deconv,
    depthwise and separable convolution)."""

    in_: Optional[Size] = Field(None, alias="in")
    kernel: PositivePair = (5, 5)
    stride: PositivePair = (1, 1)
    padding: NonNegativePair = (0, 0)
    dilation: PositivePair = (1, 1)
    bias: bool = True
    activation: ActivationName
    weight_init: WeightInitName
    bias_init: float
    convolution_mode: ConvolutionMode


class ConvParams(WindowParams):
    out: Size
    groups: Size = 1  # not in DL4J: channels split into groups convolved separately (SEMANTICS-VISION.md §6)


@builtin
class Convolution(VertexType):
    name, dl4j = "conv", "ConvolutionLayer"
    Params = ConvParams
    weight_params, bias_params = ("weight",), ("bias",)
    uses = LAYER_KEYS + ("convolution_mode",)
    doc = ("2-D convolution; `same` mode pads like DL4J (extra pixel bottom/right), `padding` is then ignored. "
           "`groups` (extension, not in DL4J) convolves groups of channels separately.")

    def infer(self, p, in_shapes):
        c = _need_rank3(in_shapes[0])[0]
        _check_given(p.in_, c, "in", "channels")
        _check_groups(p.groups, c, p.out)
        (oh, ow), pads = spatial(p, in_shapes[0])
        return Inferred((p.out, oh, ow), c, p.out, {"pads": pads})

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (p.out, inf.n_in // p.groups, *p.kernel), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return _prod(inf.out_shape) * (inf.n_in // p.groups) * p.kernel[0] * p.kernel[1]

    def output_overwritable(self, p):
        return p.activation == "identity"  # the convolution's backward needs its input, not its output

    def build(self, p, inf):
        return M.Conv2d(inf.n_in, p.out, p.kernel, p.stride, p.dilation, inf.info["pads"], p.bias, p.activation,
                        p.groups)

    def init(self, module, p, inf, generator):
        area = p.kernel[0] * p.kernel[1]
        # DL4J's fans (SEMANTICS-VISION §12.2): fanIn in·kH·kW, fanOut out·kH·kW/(sH·sW); a group of a grouped
        # convolution reads in/groups channels and feeds out/groups
        fan_out = p.out // p.groups * area / (p.stride[0] * p.stride[1])
        init_(module.weight, p.weight_init, inf.n_in // p.groups * area, fan_out, generator)
        if module.bias is not None:
            module.bias.data.fill_(p.bias_init)


class PoolingParams(Params):
    """The pooling kind of DL4J's subsampling layers (2-D and 1-D); `pnorm` needs its p."""

    pooling: Literal["max", "avg", "sum", "pnorm"] = "max"
    pnorm: int = Field(0, ge=0, le=64)
    convolution_mode: ConvolutionMode

    @model_validator(mode="after")
    def _pnorm(self):
        if self.pooling == "pnorm" and self.pnorm <= 0:
            raise ValueError("pooling 'pnorm' needs 'pnorm' > 0 (p-norm must be greater than zero)")
        return self


class PoolParams(PoolingParams):
    kernel: PositivePair = (1, 1)
    stride: PositivePair = (2, 2)
    padding: NonNegativePair = (0, 0)
    eps: float = 1e-8


@builtin
class Subsampling(VertexType):
    name, dl4j = "subsampling", "SubsamplingLayer"
    Params = PoolParams
    uses = ("convolution_mode",)
    width_follows_input = True
    doc = "Pooling (max, avg, sum, pnorm); padded positions read 0 as in DL4J's CPU kernel, avg divides by k·k."

    def infer(self, p, in_shapes):
        c = _need_rank3(in_shapes[0])[0]
        (oh, ow), pads = spatial(p, in_shapes[0])
        return Inferred((c, oh, ow), info={"pads": pads})

    def macs(self, p, inf):
        return _prod(inf.out_shape) * p.kernel[0] * p.kernel[1]  # each output combines a kernel window

    def build(self, p, inf):
        return M.Subsampling(p.pooling, p.kernel, p.stride, inf.info["pads"], p.pnorm)


class BNParams(Params):
    in_: Optional[Size] = Field(None, alias="in")
    out: Optional[Size] = None
    decay: float = Field(0.9, ge=0.0, le=1.0)
    eps: float = Field(1e-5, gt=0.0)
    lock_gamma_beta: bool = False
    gamma: float = 1.0
    beta: float = 0.0
    minibatch: bool = True


@builtin
class BatchNormalization(VertexType):
    name, dl4j = "batchnorm", "BatchNormalization"
    Params = BNParams
    width_follows_input = batch_statistics = True
    doc = "Batch normalisation with DL4J's running statistics (eps folded into the variance, none at inference)."

    def infer(self, p, in_shapes):
        c = in_shapes[0][0]
        _check_given(p.in_, c, "in", "channels" if len(in_shapes[0]) == 3 else "features")
        _check_given(p.out, c, "out", "channels" if len(in_shapes[0]) == 3 else "features")
        return Inferred(in_shapes[0], c, c)

    def param_shapes(self, p, inf):
        c = inf.n_in
        learned = [] if p.lock_gamma_beta else [ParamShape("weight", (c,), True), ParamShape("bias", (c,), True)]
        return learned + [ParamShape("running_mean", (c,), False), ParamShape("running_var", (c,), False)]

    def macs(self, p, inf):
        return _prod(inf.out_shape)  # one scale-and-shift per value at inference

    def output_overwritable(self, p):
        return True  # the backward pass recomputes from its input and statistics

    def build(self, p, inf):
        return M.BatchNorm(inf.n_in, p.decay, p.eps, p.lock_gamma_beta, p.gamma, p.beta, p.minibatch)


class ActParams(Params):
    activation: ActivationName


@builtin
class ActivationLayer(VertexType):
    name, dl4j = "activation", "ActivationLayer"
    Params = ActParams
    uses = ("activation",)
    width_follows_input = True
    computes_in_place = True
    doc = "Applies an activation function element-wise."

    def macs(self, p, inf):
        return 0  # element-wise functions are not multiply-accumulates

    def build(self, p, inf):
        return M.Activation(p.activation)


class LRNParams(Params):
    k: float = 2.0
    # the window spans n channels; a window wider than any layer's channels (Size's 10^8) only pads with zeros, and
    # a huge one overflows torch's padding arithmetic (n = 2^63 once reached F.pad as a negative padding)
    n: float = Field(5.0, ge=1.0, le=100_000_000)
    alpha: float = 1e-4
    beta: float = 0.75


@builtin
class LocalResponseNormalization(VertexType):
    name, dl4j = "lrn", "LocalResponseNormalization"
    Params = LRNParams
    width_follows_input = True
    doc = "Cross-channel LRN, DL4J formula: alpha is not divided by n; window 2·floor(n/2)+1."

    def infer(self, p, in_shapes):
        return Inferred(_need_rank3(in_shapes[0]))

    def macs(self, p, inf):
        return _prod(inf.out_shape) * (2 * int(p.n // 2) + 1)  # a sum of squares over the channel window

    def build(self, p, inf):
        return M.lrn_module(p.k, p.n, p.alpha, p.beta)


class DenseParams(Params):
    out: Size
    in_: Optional[Size] = Field(None, alias="in")
    bias: bool = True
    activation: ActivationName
    weight_init: WeightInitName
    bias_init: float


class _DenseLike(VertexType):
    uses = LAYER_KEYS
    weight_params, bias_params = ("weight",), ("bias",)

    def infer(self, p, in_shapes):
        n = _prod(in_shapes[0])  # a convolutional input is flattened (DL4J CnnToFeedForwardPreProcessor)
        _check_given(p.in_, n, "in", "features" + (" after flattening" if len(in_shapes[0]) > 1 else ""))
        return Inferred((p.out,), n, p.out, {"flatten": len(in_shapes[0]) > 1})

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (p.out, inf.n_in), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return inf.n_in * p.out

    def init(self, module, p, inf, generator):
        init_(module.weight, p.weight_init, inf.n_in, p.out, generator)
        if module.bias is not None:
            module.bias.data.fill_(p.bias_init)


@builtin
class DenseLayer(_DenseLike):
    name, dl4j = "dense", "DenseLayer"
    Params = DenseParams
    doc = ("Fully connected layer; a convolutional input is flattened automatically, a sequence [size, T] is "
           "transformed at every time step (DL4J's RnnToFeedForwardPreProcessor): [out, T].")

    def infer(self, p, in_shapes):
        if len(in_shapes[0]) != 2:
            return super().infer(p, in_shapes)
        size, steps = in_shapes[0]
        _check_given(p.in_, size, "in", "features per time step")
        return Inferred((p.out, steps), size, p.out, {"per_step": True})

    def macs(self, p, inf):
        return super().macs(p, inf) * (inf.out_shape[1] if inf.info.get("per_step") else 1)

    def output_overwritable(self, p):
        return p.activation == "identity"  # as for conv: the backward needs the input, not the output

    def build(self, p, inf):
        return M.Dense(inf.n_in, p.out, p.bias, p.activation, per_step=inf.info.get("per_step", False))


LossName = Literal["mcxent", "negativeloglikelihood", "xent", "mse", "squared_loss", "l1", "l2",
                   "mean_absolute_error", "cosine_proximity", "hinge", "squared_hinge", "kl_divergence"]


class OutputParams(DenseParams):
    loss: LossName = "mcxent"
    head: Literal["linear", "cosine"] = "linear"
    scale: float = Field(1.0, gt=0.0)  # cosine head: logits = scale · cos
    margin: float = Field(0.0, ge=0.0, lt=1.0)  # cosine head: additive margin on the target logit in training
    # training targets (1 - ε)·one_hot + ε/K (Szegedy et al. 2016; Keras' and torch's label_smoothing)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _cosine(self):
        if self.head == "cosine" and self.bias:
            raise ValueError("a cosine head has no bias; set 'bias: false'")
        if self.head == "linear" and (self.margin or self.scale != 1.0):
            raise ValueError("'scale' and 'margin' apply to 'head: cosine' only")
        if self.label_smoothing and self.loss not in ("mcxent", "negativeloglikelihood"):
            raise ValueError(f"'label_smoothing' applies to the mcxent and negativeloglikelihood losses only, "
                             f"not '{self.loss}'")
        return self


class _OutputLike(_DenseLike):
    loss_head = True

    def training_loss(self, p, module, x, target):
        z = module.logits(x, target if target.dim() == 1 else None)  # a cosine head's margin needs class indices
        return per_example(module.loss, module.activation, z, target, module.label_smoothing)


@builtin
class OutputLayer(_OutputLike):
    name, dl4j = "output", "OutputLayer"
    Params = OutputParams
    doc = "Dense layer whose activated output is a network prediction, trained with `loss`."

    def build(self, p, inf):
        return M.Output(inf.n_in, p.out, p.bias, p.activation, p.loss, p.head, p.scale, p.margin, p.label_smoothing)


class CenterLossParams(OutputParams):
    alpha: float = Field(0.05, ge=0.0)
    lambda_: float = Field(2e-4, alias="lambda", ge=0.0)
    gradient_check: bool = False


@builtin
class CenterLossOutputLayer(_OutputLike):
    name, dl4j = "center_loss_output", "CenterLossOutputLayer"
    center_loss = True
    Params = CenterLossParams
    doc = "Output layer with center loss: per-class centers of its input (state updated by rule, not gradient)."

    def param_shapes(self, p, inf):
        return super().param_shapes(p, inf) + [ParamShape("centers", (p.out, inf.n_in), False)]

    def build(self, p, inf):
        return M.CenterLossOutput(inf.n_in, p.out, p.bias, p.activation, p.loss, p.alpha, p.lambda_,
                                  p.gradient_check, p.head, p.scale, p.margin, p.label_smoothing)


class LossParams(Params):
    loss: Literal[LossName, "contrastive", "triplet"]  # type: ignore[valid-type]
    activation: ActivationName = "identity"  # applied to the input, in training and at inference
    margin: Optional[float] = Field(None, gt=0.0)  # contrastive (default 1.0) and triplet (default 0.2)
    # triplet: `semi_hard` mines triplets in the batch from class labels; `none` reads given triplets, the anchor,
    # positive and negative embeddings merged side by side ([3·D]), and needs no target
    mining: Literal["semi_hard", "none"] = "semi_hard"

    @model_validator(mode="after")
    def _margin(self):
        if self.margin is not None and self.loss not in ("contrastive", "triplet"):
            raise ValueError(f"'margin' applies to the contrastive and triplet losses, not '{self.loss}'")
        if self.mining != "semi_hard" and self.loss != "triplet":
            raise ValueError(f"'mining' applies to the triplet loss, not '{self.loss}'")
        return self


DEFAULT_MARGIN = {"contrastive": 1.0, "triplet": 0.2}


@builtin
class LossLayer(VertexType):
    name, dl4j = "loss", "LossLayer"
    loss_head = True
    width_follows_input = True
    Params = LossParams
    doc = ("A loss on its input, without weights (DL4J's LossLayer): any output-layer loss, or `contrastive` on a "
           "distance [1] against same (1) / different (0), or `triplet` on embeddings against class labels "
           "(FaceNet's online semi-hard mining in the batch).")

    def infer(self, p, in_shapes):
        if p.loss == "contrastive" and tuple(in_shapes[0]) != (1,):
            raise ShapeError(f"the contrastive loss reads a distance, [1] per example; received "
                             f"{_fmt(in_shapes[0])} (an l2_distance vertex gives one)", key="loss")
        if p.loss == "triplet" and p.mining == "none" and (len(in_shapes[0]) != 1 or in_shapes[0][0] % 3):
            raise ShapeError(f"given triplets are read as anchor, positive and negative embeddings merged side by "
                             f"side, [3·D]; received {_fmt(in_shapes[0])}", key="mining")
        return Inferred(in_shapes[0])

    def macs(self, p, inf):
        return 0  # the activation

    def build(self, p, inf):
        return M.Activation(p.activation)

    def training_loss(self, p, module, x, target):
        if p.loss == "contrastive":
            return contrastive(module(x), target, p.margin or DEFAULT_MARGIN["contrastive"])
        if p.loss == "triplet" and p.mining == "none":
            return triplet_given(module(x), p.margin or DEFAULT_MARGIN["triplet"])
        if p.loss == "triplet":
            return triplet_semi_hard(module(x), target, p.margin or DEFAULT_MARGIN["triplet"])
        if target.is_floating_point():  # values of the output's shape, e.g. an image [N, C, H, W] (autoencoders)
            target = target.flatten(1)
        return per_example(p.loss, p.activation, x.flatten(1), target)


class DropoutParams(Params):
    rate: float = Field(0.5, ge=0.0, lt=1.0, description="probability of dropping (DL4J dropOut(x) retains x)")


@builtin
class DropoutLayer(VertexType):
    name, dl4j = "dropout", "DropoutLayer"
    Params = DropoutParams
    width_follows_input = True
    doc = "Inverted dropout in training mode, identity in inference."

    def macs(self, p, inf):
        return 0  # the identity at inference

    def build(self, p, inf):
        return M.Dropout(p.rate)


class GlobalPoolParams(Params):
    pooling: Literal["max", "avg", "sum", "pnorm"] = "max"
    pnorm: int = Field(2, ge=1, le=64)
    collapse: bool = True


@builtin
class GlobalPoolingLayer(VertexType):
    name, dl4j = "global_pool", "GlobalPoolingLayer"
    Params = GlobalPoolParams
    width_follows_input = True
    counts = ("values",)
    doc = ("Pools over all spatial positions of an image, or all time steps of a sequence (DL4J's RNN pooling; a "
           "transformer's mean pooling of its tokens); `collapse` gives [C] instead of [C, 1, 1] or [C, 1].")

    def infer(self, p, in_shapes):
        shape = in_shapes[0]
        if len(shape) not in (2, 3):
            raise ShapeError(f"expected an image [channels, height, width] or a sequence [size, T]; received "
                             f"{_fmt(shape)}")
        c = shape[0]
        return Inferred((c,) if p.collapse else (c,) + (1,) * (len(shape) - 1), info={"values": _prod(shape)})

    def macs(self, p, inf):
        return inf.info["values"]  # every input value is combined once

    def build(self, p, inf):
        return M.GlobalPooling(p.pooling, p.pnorm, p.collapse)


# --- graph vertices -----------------------------------------------------------------------------------------


class NoParams(Params):
    pass


def _same_shapes(in_shapes):
    """The one shape every input has (else a ShapeError listing them)."""
    if len({tuple(s) for s in in_shapes}) > 1:
        raise ShapeError("inputs must have identical shapes; received " + ", ".join(_fmt(s) for s in in_shapes),
                         key="inputs")
    return in_shapes[0]


def _same_rank(in_shapes):
    ranks = {len(s) for s in in_shapes}
    if len(ranks) > 1:
        raise ShapeError("all inputs must have the same rank; received "
                         + ", ".join(_fmt(s) for s in in_shapes))


class MergeParams(Params):
    axis: int = Field(1, ge=-8, le=8, description="the dimension to concatenate along, counting the batch as 0 "
                                                  "(1: channels/features, DL4J's default; -1: the last)")


def _axis(axis: int, rank: int) -> int:
    """A batch-inclusive dimension index (negative from the end) for tensors of ``rank`` dims, never the batch."""
    a = axis + rank if axis < 0 else axis
    if not 1 <= a < rank:
        raise ShapeError(f"'axis' must be in 1..{rank - 1} or -{rank - 1}..-1 for inputs of rank {rank} (the batch, "
                         f"dimension 0, cannot be merged); received {axis}", key="axis")
    return a


@builtin
class MergeVertex(VertexType):
    name, dl4j, kind = "merge", "MergeVertex", "vertex"
    Params = MergeParams
    arity = (1, None)
    width_follows_input = True
    merges_masks = True
    doc = "Concatenates its inputs along `axis` (channels/features by default), in the order listed."

    def infer(self, p, in_shapes):
        _same_rank(in_shapes)
        d = _axis(p.axis, len(in_shapes[0]) + 1) - 1  # per-example index
        rest = {tuple(s[:d]) + tuple(s[d + 1:]) for s in in_shapes}
        if len(rest) > 1:
            what = "the first (spatial sizes differ)" if d == 0 else f"dimension {d + 1}, the one merged"
            raise ShapeError(f"inputs must agree on every dimension but {what}; "
                             "received " + ", ".join(_fmt(s) for s in in_shapes), key="inputs")
        shape = list(in_shapes[0])
        shape[d] = sum(s[d] for s in in_shapes)
        return Inferred(tuple(shape), info={"axis": d + 1})

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        return M.Merge(inf.info["axis"])


class ElementWiseParams(Params):
    op: Literal["add", "subtract", "product", "average", "max", "min", "divide"]  # min, divide: not in DL4J 0.9


@builtin
class ElementWiseVertex(VertexType):
    name, dl4j, kind = "elementwise", "ElementWiseVertex", "vertex"
    Params = ElementWiseParams
    arity = (1, None)
    width_follows_input = True
    merges_masks = True
    doc = ("Element-wise add, subtract and divide (exactly two inputs), product, average, max or min of same-shape "
           "inputs.")

    def infer(self, p, in_shapes):
        if p.op in ("subtract", "divide") and len(in_shapes) != 2:
            raise ShapeError(f"op '{p.op}' needs exactly 2 inputs; received {len(in_shapes)}", key="inputs")
        return Inferred(_same_shapes(in_shapes), info={"inputs": len(in_shapes)})

    def macs(self, p, inf):
        combined = inf.info["inputs"] - 1 + (p.op == "average")  # n-1 combinations; average also divides
        return _prod(inf.out_shape) * combined

    def output_overwritable(self, p):
        return True  # pairwise +, -, ×, /, min, max: their backward reads the inputs, never the output

    def build(self, p, inf):
        return M.ElementWise(p.op)


class L2NormParams(Params):
    dims: Optional[list[int]] = None
    eps: float = Field(1e-8, gt=0.0)


@builtin
class L2NormalizeVertex(VertexType):
    name, dl4j, kind = "l2_normalize", "L2NormalizeVertex", "vertex"
    Params = L2NormParams
    width_follows_input = True
    doc = "x / max(||x||, eps) per example, over `dims` (default: all but the batch dimension)."

    def infer(self, p, in_shapes):
        rank = len(in_shapes[0]) + 1
        for d in p.dims or ():
            if not 1 <= d < rank:
                raise ShapeError(f"'dims' entries must be in 1..{rank - 1} for an input of rank {rank}; "
                                 f"received {d}", key="dims")
        return Inferred(in_shapes[0])

    def macs(self, p, inf):
        return 2 * _prod(inf.out_shape)  # a sum of squares, then one scaling per value

    def build(self, p, inf):
        return M.L2Normalize(p.dims, p.eps)


class SubsetParams(Params):
    start: int = Field(alias="from", ge=0)
    end: int = Field(alias="to", ge=0)


@builtin
class SubsetVertex(VertexType):
    name, dl4j, kind = "subset", "SubsetVertex", "vertex"
    Params = SubsetParams
    doc = "Channels/features `from`..`to` (inclusive) along dimension 1."

    def infer(self, p, in_shapes):
        n = in_shapes[0][0]
        if not p.start <= p.end < n:
            raise ShapeError(f"expected 0 <= from <= to < {n} (the input's size); received from={p.start}, "
                             f"to={p.end}", key="to")
        return Inferred((p.end - p.start + 1, *in_shapes[0][1:]))

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return M.Subset(p.start, p.end)


class ScaleParams(Params):
    factor: float


@builtin
class ScaleVertex(VertexType):
    name, dl4j, kind = "scale", "ScaleVertex", "vertex"
    Params = ScaleParams
    width_follows_input = True
    doc = "y = factor · x."

    def macs(self, p, inf):
        return _prod(inf.out_shape)

    def build(self, p, inf):
        return M.Scale(p.factor)


class ShiftParams(Params):
    amount: float


@builtin
class ShiftVertex(VertexType):
    name, dl4j, kind = "shift", "ShiftVertex", "vertex"
    Params = ShiftParams
    width_follows_input = True
    doc = "y = x + amount."

    def macs(self, p, inf):
        return _prod(inf.out_shape)

    def build(self, p, inf):
        return M.Shift(p.amount)


class ReshapeParams(Params):
    shape: list[int] = Field(min_length=1, max_length=8)


@builtin
class ReshapeVertex(VertexType):
    name, dl4j, kind = "reshape", "ReshapeVertex", "vertex"
    Params = ReshapeParams
    doc = "Reshape each example (C-order) to `shape` (without the batch dimension; one entry may be -1)."

    def infer(self, p, in_shapes):
        n = _prod(in_shapes[0])
        shape = list(p.shape)
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ShapeError(f"'shape' entries must be positive, with at most one -1; received {shape}", key="shape")
        known = _prod(d for d in shape if d != -1)
        if -1 in shape:
            if n % known:
                raise ShapeError(f"cannot reshape {_fmt(in_shapes[0])} ({n} values) to {shape}", key="shape")
            shape[shape.index(-1)] = n // known
        if _prod(shape) != n:
            raise ShapeError(f"cannot reshape {_fmt(in_shapes[0])} ({n} values) to {_fmt(shape)} "
                             f"({_prod(shape)} values)", key="shape")
        return Inferred(tuple(shape))

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return M.Reshape(inf.out_shape)


class EpsParams(Params):
    eps: float = Field(1e-8, gt=0.0)


class _PairScore(VertexType):
    """One number per example from two same-shape inputs."""

    kind = "vertex"
    Params = EpsParams
    arity = (2, 2)
    counts = ("values",)

    def infer(self, p, in_shapes):
        return Inferred((1,), info={"values": _prod(_same_shapes(in_shapes))})


@builtin
class L2Vertex(_PairScore):
    name, dl4j = "l2_distance", "L2Vertex"
    doc = "Per-example Euclidean distance between two same-shape inputs: [1]."

    def macs(self, p, inf):
        return inf.info["values"]  # one squared difference accumulated per value

    def build(self, p, inf):
        return M.L2Distance(p.eps)


@builtin
class CosineSimilarityVertex(_PairScore):
    name, dl4j = "cosine_similarity", "CosineSimilarityVertex"  # not in DL4J: an extension
    doc = "Per-example cosine similarity of two same-shape inputs over all their values: [1] (not in DL4J)."

    def macs(self, p, inf):
        return 3 * inf.info["values"]  # the dot product and the two squared norms

    def build(self, p, inf):
        return M.CosineSimilarity(p.eps)


@builtin
class IdentityVertex(VertexType):
    name, dl4j, kind = "identity", "IdentityVertex", "vertex"  # not in DL4J: an extension
    Params = NoParams
    width_follows_input = True
    doc = "Passes its input through unchanged: a named point in the graph (to cut at, share, or feed several)."

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return M.Identity()


class PreprocessorParams(Params):
    preprocessor: Literal["cnn_to_feed_forward", "feed_forward_to_cnn", "rnn_to_feed_forward", "feed_forward_to_rnn",
                          "rnn_to_cnn", "cnn_to_rnn"]
    channels: Optional[Size] = None  # feed_forward_to_cnn, rnn_to_cnn: the image shape to unflatten to
    height: Optional[Size] = None
    width: Optional[Size] = None
    # the T of the sequences: the network's batch changes by T between rows and sequences, and a batch multiple is
    # known before the input's shape (SEMANTICS-SEQUENCES.md §10)
    length: Optional[Size] = None

    @model_validator(mode="after")
    def _shape(self):
        # what each preprocessor needs besides its input: an image shape to unflatten to, the T its rows regroup into
        needs = {"cnn_to_feed_forward": (), "feed_forward_to_cnn": ("channels", "height", "width"),
                 "rnn_to_feed_forward": ("length",), "feed_forward_to_rnn": ("length",),
                 "rnn_to_cnn": ("channels", "height", "width", "length"), "cnn_to_rnn": ("length",)}[self.preprocessor]
        given = [k for k in ("channels", "height", "width", "length") if getattr(self, k) is not None]
        image = [k for k in ("channels", "height", "width") if k in needs]
        if image and any(k not in given for k in image):
            raise ValueError(f"'{self.preprocessor}' needs 'channels', 'height' and 'width'")
        if "length" in needs and "length" not in given:
            raise ValueError(f"'{self.preprocessor}' needs 'length': the number of time steps T (its rows are "
                             f"example i at step t, row t·N + i, as DL4J orders them)")
        extra = [k for k in given if k not in needs]
        if extra:
            where = "the shape comes from its input" if not needs else "it takes " + ", ".join(f"'{k}'" for k in needs)
            raise ValueError(f"'{self.preprocessor}' takes no '{extra[0]}': {where}")
        return self


@builtin
class PreprocessorVertex(VertexType):
    name, dl4j, kind = "preprocessor", "PreprocessorVertex", "vertex"
    Params = PreprocessorParams
    doc = ("DL4J's preprocessors as a vertex: `cnn_to_feed_forward` flattens [C, H, W] to [C·H·W] (C order), "
           "`feed_forward_to_cnn` unflattens to [channels, height, width]; `rnn_to_feed_forward` and `rnn_to_cnn` turn "
           "a sequence [F, T] into T rows [F] (or images) per example, row t·N + i, and `feed_forward_to_rnn` and "
           "`cnn_to_rnn` regroup such rows into sequences [F, length] (the batch changes by T, as DL4J's).")

    def infer(self, p, in_shapes):
        shape = in_shapes[0]
        if p.preprocessor == "cnn_to_feed_forward":
            return Inferred((_prod(_need_rank3(shape)),))
        if p.preprocessor in ("rnn_to_feed_forward", "rnn_to_cnn"):
            return self._rows_of_sequence(p, shape)
        if p.preprocessor == "cnn_to_rnn":
            return Inferred((_prod(_need_rank3(shape)), p.length))
        if p.preprocessor == "feed_forward_to_rnn":
            if len(shape) != 1:
                raise ShapeError(f"expected rows of features [F]; received {_fmt(shape)}", key="preprocessor")
            return Inferred((shape[0], p.length))
        image = (p.channels, p.height, p.width)
        if len(shape) != 1 or shape[0] != _prod(image):
            raise ShapeError(f"expected [{_prod(image)}] features to unflatten to {_fmt(image)}; received "
                             f"{_fmt(shape)}", key="preprocessor")
        return Inferred(image)

    def _rows_of_sequence(self, p, shape):
        if len(shape) != 2:
            raise ShapeError(f"expected a sequence [size, T]; received {_fmt(shape)}", key="preprocessor")
        if shape[1] != p.length:
            raise ShapeError(f"'length' is {p.length} but the input has {shape[1]} time steps", key="length")
        if p.preprocessor == "rnn_to_feed_forward":
            return Inferred((shape[0],))
        image = (p.channels, p.height, p.width)
        if shape[0] != _prod(image):
            raise ShapeError(f"expected [{_prod(image)}, T] features to unflatten to {_fmt(image)} at every step; "
                             f"received {_fmt(shape)}", key="preprocessor")
        return Inferred(image)

    def batch(self, p, in_batches):
        batch = in_batches[0]
        if p.preprocessor in ("rnn_to_feed_forward", "rnn_to_cnn"):
            return batch * p.length  # T rows per example
        if p.preprocessor in ("feed_forward_to_rnn", "cnn_to_rnn"):
            if (batch / p.length).denominator != 1:
                raise ShapeError(f"'{p.preprocessor}' regroups T = {p.length} rows per example into a sequence, but "
                                 f"its input has {batch}× the network's batch (the rows of an rnn_to_feed_forward or "
                                 f"rnn_to_cnn of length {p.length} have {p.length}×)", key="length")
            return batch / p.length
        return batch

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        if p.preprocessor == "cnn_to_feed_forward":
            return M.Flatten()
        if p.preprocessor == "feed_forward_to_cnn":
            return M.Unflatten(inf.out_shape)
        from . import sequence_modules as S  # the sequence preprocessors live beside the other sequence modules
        if p.preprocessor in ("rnn_to_feed_forward", "rnn_to_cnn"):
            return S.RnnToRows(inf.out_shape if p.preprocessor == "rnn_to_cnn" else None)
        return S.RowsToRnn(p.length)


@builtin
class StackVertex(VertexType):
    name, dl4j, kind = "stack", "StackVertex", "vertex"
    Params = NoParams
    arity = (1, None)
    width_follows_input = True
    doc = ("Stacks same-shape inputs along the batch dimension (k inputs of N examples: k·N examples), so one "
           "branch runs them as one batch; `unstack` takes them apart.")

    def infer(self, p, in_shapes):
        return Inferred(_same_shapes(in_shapes))

    def batch(self, p, in_batches):
        return super().batch(p, in_batches) * len(in_batches)

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return M.Stack()


class UnstackParams(Params):
    index: int = Field(alias="from", ge=0)
    count: Size = Field(alias="stack_size")

    @model_validator(mode="after")
    def _index(self):
        if self.index >= self.count:
            raise ValueError(f"'from' must be below 'stack_size' ({self.count}); received {self.index}")
        return self


@builtin
class UnstackVertex(VertexType):
    name, dl4j, kind = "unstack", "UnstackVertex", "vertex"
    Params = UnstackParams
    width_follows_input = True
    doc = "The `from`-th of `stack_size` equal slices along the batch dimension (undoes `stack`)."

    def batch(self, p, in_batches):
        return in_batches[0] / p.count

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return M.Unstack(p.index, p.count)


@builtin
class PoolHelperVertex(VertexType):
    name, dl4j, kind = "pool_helper", "PoolHelperVertex", "vertex"
    Params = NoParams
    width_follows_input = True
    doc = "Drops the first row and column of a convolutional input."

    def macs(self, p, inf):
        return 0

    def infer(self, p, in_shapes):
        c, h, w = _need_rank3(in_shapes[0])
        if h < 2 or w < 2:
            raise ShapeError(f"needs at least 2x2 spatially; received {_fmt(in_shapes[0])}")
        return Inferred((c, h - 1, w - 1))

    def build(self, p, inf):
        return M.PoolHelper()
