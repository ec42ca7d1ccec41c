"""Built-in vertex types for token sequences and transformers: layer normalisation, self-attention, permute,
learned position embeddings, class tokens, picking one time step, and the per-position (CNN) loss layer.

A sequence is ``[size, T]`` per example: features first, time last, DL4J's NCW layout (SEMANTICS-VISION.md §0.1).
A reshape of a convolution's ``[C, H, W]`` to ``[C, H·W]`` reads its pixels as time steps (a ViT's patch tokens).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from . import attention_modules as A
from . import modules as M
from .base import (ActivationName, Inferred, ParamShape, Params, Positive, ShapeError, Size, VertexType,
                   WeightInitName, builtin)
from .losses import per_example
from .types import LossName, NoParams, _check_given, _fmt, _need_rank3, _prod
from .weight_init import init_


def _need_sequence(shape) -> tuple[int, int]:
    """The ``(size, T)`` of a sequence input, else a ShapeError that says how to make one."""
    if len(shape) != 2:
        hint = " (reshape an image [C, H, W] to [C, H·W] to read its pixels as time steps)" if len(shape) == 3 else ""
        raise ShapeError(f"expected a sequence [size, T] (features first, time last); received {_fmt(shape)}{hint}")
    return shape[0], shape[1]


# --- layer normalisation ------------------------------------------------------------------------------------


class LayerNormParams(Params):
    eps: float = Field(1e-5, gt=0.0)  # torch's default; DL4J's dense layer norm has none (SEMANTICS-VISION §7)
    bias: bool = True


@builtin
class LayerNormalization(VertexType):
    name, dl4j = "layer_norm", "LayerNormalization"  # not in DL4J: an extension
    Params = LayerNormParams
    width_follows_input = True
    doc = ("Layer normalisation over the channels/features at every position (each time step, each pixel), with "
           "per-channel gamma and beta: torch's nn.LayerNorm(C) channels-last, as in ViT and ConvNeXt (not in DL4J).")

    def infer(self, p, in_shapes):
        c = in_shapes[0][0]
        return Inferred(in_shapes[0], c, c)

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (inf.n_in,), True)]
        return shapes + ([ParamShape("bias", (inf.n_in,), True)] if p.bias else [])

    def macs(self, p, inf):
        return 3 * _prod(inf.out_shape)  # the mean, the variance, then one scale-and-shift per value

    def output_overwritable(self, p):
        return False  # its backward needs its normalised output

    def build(self, p, inf):
        return A.LayerNorm(inf.n_in, p.eps, p.bias)

    def init(self, module, p, inf, generator):
        module.weight.data.fill_(1.0)
        if module.bias is not None:
            module.bias.data.zero_()


# --- self-attention -----------------------------------------------------------------------------------------


class SelfAttentionParams(Params):
    n_heads: Positive
    head_size: Optional[Size] = None  # default: out / n_heads
    out: Optional[Size] = None  # required with projection; without, the input's size
    in_: Optional[Size] = Field(None, alias="in")
    project_input: bool = True
    # DL4J's attention has no biases; `true` adds torch nn.MultiheadAttention's (an extension, e.g. for ViT)
    bias: bool = False
    # DL4J's SameDiff layers keep their own weightInit (XAVIER): the spec's `defaults` do not apply (§8.5)
    weight_init: WeightInitName = "xavier"

    @model_validator(mode="after")
    def _heads(self):
        if not self.project_input:
            given = [k for k in ("head_size", "bias") if getattr(self, k) not in (None, False)]
            if self.n_heads != 1 or given:
                what = "'n_heads: 1'" if self.n_heads != 1 else f"no '{given[0]}'"
                raise ValueError(f"without 'project_input' the input attends to itself in one head, with no "
                                 f"parameters: set {what}, or 'project_input: true'")
            return self
        if self.out is None:
            raise ValueError("'out' is required with 'project_input: true' (the projected output's size)")
        if self.head_size is None and self.out % self.n_heads:
            raise ValueError(f"'out' ({self.out}) is not divisible by 'n_heads' ({self.n_heads}); set 'head_size'")
        return self


@builtin
class SelfAttentionLayer(VertexType):
    name, dl4j = "self_attention", "SelfAttentionLayer"
    Params = SelfAttentionParams
    weight_params, bias_params = ("in_proj_weight", "out_proj_weight"), ("in_proj_bias", "out_proj_bias")
    doc = ("Multi-head scaled dot-product self-attention over a sequence [in, T] -> [out, T] (DL4J's "
           "SelfAttentionLayer; parameters packed as torch's nn.MultiheadAttention). `bias: true` (not in DL4J) "
           "adds torch's projection biases. Initialised with its own `weight_init` (xavier), as in DL4J, not the "
           "spec's defaults.")

    def infer(self, p, in_shapes):
        n_in, t = _need_sequence(in_shapes[0])
        _check_given(p.in_, n_in, "in", "features")
        if not p.project_input:
            _check_given(p.out, n_in, "out", "features")
            return Inferred((n_in, t), n_in, n_in, {"embed": n_in, "head_size": n_in, "steps": t})
        head_size = p.head_size or p.out // p.n_heads
        return Inferred((p.out, t), n_in, p.out, {"embed": p.n_heads * head_size, "head_size": head_size, "steps": t})

    def param_shapes(self, p, inf):
        if not p.project_input:
            return []
        e = inf.info["embed"]
        biases = [ParamShape("in_proj_bias", (3 * e,), True), ParamShape("out_proj_bias", (inf.n_out,), True)]
        return [ParamShape("in_proj_weight", (3 * e, inf.n_in), True),
                ParamShape("out_proj_weight", (inf.n_out, e), True)] + (biases if p.bias else [])

    def macs(self, p, inf):
        t, e = inf.info["steps"], inf.info["embed"]
        attention = 2 * t * t * e  # the scores q·k, then the weighted sum of the values
        if not p.project_input:
            return attention
        return t * inf.n_in * 3 * e + t * e * inf.n_out + attention

    def build(self, p, inf):
        return A.SelfAttention(inf.n_in, inf.n_out, p.n_heads, inf.info["head_size"], p.project_input, p.bias)

    def init(self, module, p, inf, generator):
        if not p.project_input:
            return
        # DL4J's fans (SEMANTICS-VISION §8.5; they look swapped, but are what DL4J passes): Wq/Wk/Wv
        # (E, nOut), Wo (nIn, head_size)
        init_(module.in_proj_weight, p.weight_init, inf.info["embed"], inf.n_out, generator)
        init_(module.out_proj_weight, p.weight_init, inf.n_in, inf.info["head_size"], generator)
        for bias in (module.in_proj_bias, module.out_proj_bias):
            if bias is not None:
                bias.data.zero_()


# --- sequence plumbing --------------------------------------------------------------------------------------


class PermuteParams(Params):
    dims: list[int] = Field(min_length=1, max_length=8,
                            description="a permutation of the per-example dimensions, 1-based like Keras")


@builtin
class PermuteVertex(VertexType):
    name, dl4j, kind = "permute", "PermuteVertex", "vertex"  # not in DL4J: Keras' Permute
    Params = PermuteParams
    doc = ("Reorders the per-example dimensions: `dims` 1-based like Keras' Permute ([2, 1] turns [size, T] into "
           "[T, size]); the batch stays first (not in DL4J).")

    def infer(self, p, in_shapes):
        rank = len(in_shapes[0])
        if sorted(p.dims) != list(range(1, rank + 1)):
            raise ShapeError(f"'dims' must be a permutation of 1..{rank} (the input's per-example dimensions, "
                             f"1-based like Keras); received {p.dims}", key="dims")
        return Inferred(tuple(in_shapes[0][d - 1] for d in p.dims))

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        return A.Permute(p.dims)


class PositionEmbeddingParams(Params):
    std: float = Field(0.02, gt=0.0)  # ViT's initialisation: normal, std 0.02


@builtin
class PositionEmbedding(VertexType):
    name, dl4j = "position_embedding", "PositionEmbedding"  # not in DL4J (SEMANTICS-VISION §8.6): an extension
    Params = PositionEmbeddingParams
    width_follows_input = True
    doc = ("Adds a learned [size, T] tensor to a sequence: one embedding per position (ViT's; not in DL4J), "
           "initialised normal with `std`.")

    def infer(self, p, in_shapes):
        _need_sequence(in_shapes[0])
        return Inferred(in_shapes[0])

    def param_shapes(self, p, inf):
        return [ParamShape("weight", tuple(inf.out_shape), True)]

    def macs(self, p, inf):
        return _prod(inf.out_shape)  # one addition per value

    def build(self, p, inf):
        return A.PositionEmbedding(inf.out_shape)

    def init(self, module, p, inf, generator):
        with torch.no_grad():
            module.weight.normal_(0.0, p.std, generator=generator)


@builtin
class ClassToken(VertexType):
    name, dl4j = "class_token", "ClassToken"  # not in DL4J: an extension
    Params = NoParams
    width_follows_input = True
    doc = ("Prepends a learned token at time step 0 of a sequence, [size, T] -> [size, T+1] (ViT's class token, "
           "initialised to zeros; not in DL4J); `time_step` with `index: 0` picks it back.")

    def infer(self, p, in_shapes):
        size, t = _need_sequence(in_shapes[0])
        return Inferred((size, t + 1))

    def param_shapes(self, p, inf):
        return [ParamShape("weight", (inf.out_shape[0],), True)]

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        return A.ClassToken(inf.out_shape[0])

    def init(self, module, p, inf, generator):
        module.weight.data.zero_()  # torchvision's ViT


class TimeStepParams(Params):
    index: int = Field(ge=-100_000_000, le=100_000_000, description="the time step; negative counts from the end "
                                                                    "(-1: the last)")


@builtin
class TimeStepVertex(VertexType):
    name, dl4j, kind = "time_step", "TimeStepVertex", "vertex"  # not in DL4J: an extension
    Params = TimeStepParams
    width_follows_input = True
    doc = ("One time step of a sequence, [size, T] -> [size]: `index` 0 is the first (a class token), -1 the last "
           "(not in DL4J).")

    def infer(self, p, in_shapes):
        size, t = _need_sequence(in_shapes[0])
        if not -t <= p.index < t:
            raise ShapeError(f"'index' must be in {-t}..{t - 1} for a sequence of {t} time steps; received "
                             f"{p.index}", key="index")
        return Inferred((size,))

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return A.TimeStep(p.index)


# --- the per-position loss ----------------------------------------------------------------------------------


#: The activation a cnn_loss applies when the spec gives none: the one its loss expects probabilities from.
CNN_LOSS_ACTIVATION = {"mcxent": "softmax", "negativeloglikelihood": "softmax", "xent": "sigmoid"}


class CnnLossParams(Params):
    loss: LossName = "mcxent"
    # per pixel along the channels; default by loss (CNN_LOSS_ACTIVATION), else identity
    activation: Optional[ActivationName] = None


def cnn_loss_activation(p) -> str:
    return p.activation or CNN_LOSS_ACTIVATION.get(p.loss, "identity")


@builtin
class CnnLossLayer(VertexType):
    name, dl4j = "cnn_loss", "CnnLossLayer"
    loss_head = True
    width_follows_input = True
    per_position = True  # its class-index targets are [N, H, W], one per pixel (train/steps.py check_targets)
    Params = CnnLossParams
    doc = ("A loss at every pixel of an image output [C, H, W], without weights (DL4J's CnnLossLayer): the "
           "`activation` runs along the channels (softmax for mcxent by default); an example's loss is the sum "
           "over its pixels. Targets: class indices [N, H, W] or values [N, C, H, W].")

    def infer(self, p, in_shapes):
        _need_rank3(in_shapes[0], "an image output [channels, height, width]")
        return Inferred(in_shapes[0])

    def macs(self, p, inf):
        return 0  # the activation

    def build(self, p, inf):
        return M.Activation(cnn_loss_activation(p))

    def training_loss(self, p, module, x, target):
        activation, channels = cnn_loss_activation(p), x.shape[1]
        if not target.is_floating_point():
            target = target.long()
            if p.loss in ("mcxent", "negativeloglikelihood") and activation == "softmax":
                return F.cross_entropy(x, target, reduction="none").sum((1, 2))  # no one-hot [N·H·W, C] copy
            labels = target.reshape(-1)
        else:
            labels = target.movedim(1, -1).reshape(-1, channels)
        pixels = x.movedim(1, -1).reshape(-1, channels)  # one row per pixel: losses and activation see channels
        return per_example(p.loss, activation, pixels, labels).reshape(len(x), -1).sum(1)

