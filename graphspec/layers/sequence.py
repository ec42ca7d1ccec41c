"""Built-in vertex types for sequences (DL4J's recurrent-network layers other than the RNNs themselves): embeddings
of class indices, 1-D convolution and pooling over time, the per-step output and loss layers, and the RNN vertices
(last time step, duplicate to a time series, reverse a time series).

A sequence is ``[size, T]`` per example, features first and time last (DL4J's NCW); a spec input
``{type: recurrent, size: S, length: T}`` gives ``[S, T]``. Section numbers (§) refer to SEMANTICS-SEQUENCES.md.
Masks (``[N, T]``, 1 = real step) are taken by every module as ``forward(x, mask=None)``; see
:mod:`.sequence_modules`.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import GraphspecError
from . import sequence_modules as S
from .attention import CnnLossParams, _need_sequence, cnn_loss_activation
from .base import (ActivationName, Inferred, NonNegative, ParamShape, Params, Positive, ShapeError,
                   Size, VertexType, WeightInitName, builtin)
from .losses import per_example
from .types import (LAYER_KEYS, DenseParams, LossName, NoParams, PoolingParams, _check_given, _fmt, _prod,
                    window_geometry)
from .weight_init import init_


# --- embeddings (§6) ---------------------------------------------------------------------------------------------


class EmbeddingParams(Params):
    # the number of classes (DL4J's nIn). Not `in`: graphspec's `in` is always inferred from the input's shape and
    # only checked when given, and an index input [1] says nothing about how many classes there are
    num_embeddings: Size
    out: Size
    bias: bool = True  # DL4J 0.9.x's EmbeddingLayer always has one (1.0.0-beta's JSON default too, §6.1)
    activation: ActivationName
    weight_init: WeightInitName
    bias_init: float


class EmbeddingSequenceParams(EmbeddingParams):
    bias: bool = False  # EmbeddingSequenceLayer exists from 1.0.0-beta on, whose builder has no bias (§6.2)


def _need_indices(shape, sequence_only: bool) -> Optional[int]:
    """The T of a sequence of indices [1, T], or None for one index [1]; else a ShapeError naming the inputs that
    hold class indices."""
    if len(shape) == 2 and shape[0] == 1:
        return shape[1]
    if len(shape) == 1 and shape[0] == 1 and not sequence_only:
        return None
    wanted = ("a sequence of class indices [1, T] (a recurrent input of size 1)" if sequence_only else
              "class indices: one per example [1] (a feed_forward input of size 1) or one per time step [1, T] "
              "(a recurrent input of size 1)")
    raise ShapeError(f"expected {wanted}; received {_fmt(shape)}")


class _EmbeddingLike(VertexType):
    n_in_is_parameter = True  # nIn is `num_embeddings`, the class count, not read from the input
    uses = LAYER_KEYS
    weight_params, bias_params = ("weight",), ("bias",)
    sequence_only = False

    def infer(self, p, in_shapes):
        steps = _need_indices(in_shapes[0], self.sequence_only)
        out_shape = (p.out,) if steps is None else (p.out, steps)
        return Inferred(out_shape, p.num_embeddings, p.out)

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (p.num_embeddings, p.out), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return 0  # a row lookup (data movement); the bias and activation are not counted, as for dense

    def build(self, p, inf):
        return S.Embedding(p.num_embeddings, p.out, p.bias, p.activation)

    def init(self, module, p, inf, generator):
        init_(module.weight, p.weight_init, p.num_embeddings, p.out, generator)  # DL4J's fans (nIn, nOut), §6.1
        if module.bias is not None:
            module.bias.data.fill_(p.bias_init)


@builtin
class EmbeddingLayer(_EmbeddingLike):
    name, dl4j = "embedding", "EmbeddingLayer"
    Params = EmbeddingParams
    doc = ("Looks up row `index` of a learned [num_embeddings, out] table, plus a bias, then the activation: class "
           "indices [1] (a feed_forward input of size 1) give [out]; indices [1, T] give [out, T], one lookup per time "
           "step (DL4J's RnnToFeedForward/FeedForwardToRnn preprocessors around it). Indices stored as floats are "
           "truncated; one outside 0..num_embeddings-1 is an error.")


@builtin
class EmbeddingSequenceLayer(_EmbeddingLike):
    name, dl4j = "embedding_sequence", "EmbeddingSequenceLayer"
    Params = EmbeddingSequenceParams
    sequence_only = True
    doc = ("An embedding of a sequence of class indices [1, T] (a recurrent input of size 1) -> [out, T]; no bias by "
           "default (DL4J 1.0.0-beta's builder). Masked steps give 0.")


# --- 1-D convolution and pooling (§7) ----------------------------------------------------------------------------


Conv1dMode = Literal["same", "truncate", "strict", "causal"]


def _time_geometry(t: int, k: int, s: int, p: int, d: int, mode: str) -> dict:
    """T' (``steps``) and the paddings (``pads``: before, after) for DL4J's convolution modes (§7.2), and whether
    output step t is input step t, so that the mask stays as it is (``keeps_mask``, §7.4). `causal` pads (k-1)·d
    before and none after: T' = ceil(T/s), and step t reads no input after t."""
    keeps_mask = mode in ("same", "causal") and s == 1
    if mode == "causal":
        return {"steps": math.ceil(t / s), "pads": ((k - 1) * d, 0), "keeps_mask": keeps_mask}
    out, before, after = window_geometry(t, k, s, p, d, mode)
    if out < 1:
        raise ShapeError(f"output would have {out} time steps; the input's {t} are too few", key="kernel")
    return {"steps": out, "pads": (before, after), "keeps_mask": keeps_mask}


class Conv1dParams(Params):
    """DL4J Convolution1DLayer's keys and builder defaults (kernel 5, stride 1, padding 0), §7.1."""

    out: Size
    in_: Optional[Size] = Field(None, alias="in")
    kernel: Positive = 5
    stride: Positive = 1
    padding: NonNegative = 0
    dilation: Positive = 1
    bias: bool = True
    activation: ActivationName
    weight_init: WeightInitName
    bias_init: float
    convolution_mode: Conv1dMode  # `causal`: DL4J 1.0.0-beta6+ (§7.2)


@builtin
class Convolution1DLayer(VertexType):
    name, dl4j = "conv1d", "Convolution1DLayer"
    Params = Conv1dParams
    weight_params, bias_params = ("weight",), ("bias",)
    uses = LAYER_KEYS + ("convolution_mode",)
    doc = ("1-D convolution over time, [in, T] -> [out, T'], weight [out, in, k]; `convolution_mode` as conv's "
           "(`same`: T' = ceil(T/s), extra padding after; `padding` is then ignored) plus `causal` (DL4J "
           "1.0.0-beta6+): (k-1)·dilation steps of padding before, none after. Masked output steps are 0.")

    def infer(self, p, in_shapes):
        n_in, t = _need_sequence(in_shapes[0])
        _check_given(p.in_, n_in, "in", "features")
        geometry = _time_geometry(t, p.kernel, p.stride, p.padding, p.dilation, p.convolution_mode)
        return Inferred((p.out, geometry.pop("steps")), n_in, p.out, geometry)

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (p.out, inf.n_in, p.kernel), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return _prod(inf.out_shape) * inf.n_in * p.kernel

    def output_overwritable(self, p):
        return p.activation == "identity"  # as conv: the backward needs the input, not the output

    def build(self, p, inf):
        return S.Conv1d(inf.n_in, p.out, p.kernel, p.stride, p.dilation, inf.info["pads"], p.bias, p.activation,
                        inf.info["keeps_mask"])

    def init(self, module, p, inf, generator):
        # DL4J's fans (§12.1): fanIn in·k, fanOut out·k/s
        init_(module.weight, p.weight_init, inf.n_in * p.kernel, p.out * p.kernel / p.stride, generator)
        if module.bias is not None:
            module.bias.data.fill_(p.bias_init)


class Pool1dParams(PoolingParams):
    """DL4J Subsampling1DLayer's keys and builder defaults (max, kernel 2, stride 1, padding 0), §7.3."""

    kernel: Positive = 2
    stride: Positive = 1
    padding: NonNegative = 0


@builtin
class Subsampling1DLayer(VertexType):
    name, dl4j = "subsampling1d", "Subsampling1DLayer"
    Params = Pool1dParams
    uses = ("convolution_mode",)
    width_follows_input = True
    doc = ("Pooling over time (max, avg, sum, pnorm), [C, T] -> [C, T']; padded steps read 0 as in `subsampling`, "
           "avg divides by k. Masked output steps are 0.")

    def infer(self, p, in_shapes):
        c, t = _need_sequence(in_shapes[0])
        geometry = _time_geometry(t, p.kernel, p.stride, p.padding, 1, p.convolution_mode)
        return Inferred((c, geometry.pop("steps")), info=geometry)

    def macs(self, p, inf):
        return _prod(inf.out_shape) * p.kernel  # each output combines a kernel window

    def build(self, p, inf):
        return S.Subsampling1d(p.pooling, p.kernel, p.stride, inf.info["pads"], p.pnorm, inf.info["keeps_mask"])


# --- per-step output and loss layers (§8) ------------------------------------------------------------------------


def _step_mask(mask: torch.Tensor, n: int, steps: int) -> torch.Tensor:
    if tuple(mask.shape) != (n, steps):
        raise GraphspecError(f"a per-step loss reads a mask [N, T] = [{n}, {steps}] (1 = real step); received "
                             f"{_fmt(mask.shape)} (per-output masks [N, out, T] are not supported)")
    return mask


def per_step_loss(loss: str, activation: str, z: torch.Tensor, target: torch.Tensor,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ_t m_t·ℓ_t per example ([N]) from the pre-activations ``z [N, K, T]``: ℓ_t is the output-layer loss of step
    t's K values (mse: DL4J's mean over them), m_t the mask (1 without one). Summed over the batch and divided by N
    this is DL4J's score Σ m·ℓ / mb (§8.3): not divided by T nor by the number of real steps. Targets: class indices
    ``[N, T]`` or values ``[N, K, T]``."""
    n, k, steps = z.shape
    if not target.is_floating_point() and loss in ("mcxent", "negativeloglikelihood") and activation == "softmax":
        per_step = F.cross_entropy(z, target.long(), reduction="none")  # [N, T], no one-hot copy
    else:
        labels = target.long().reshape(-1) if not target.is_floating_point() else \
            target.transpose(1, 2).reshape(-1, k)
        per_step = per_example(loss, activation, z.transpose(1, 2).reshape(-1, k), labels).view(n, steps)
    if mask is not None:
        per_step = per_step * _step_mask(mask, n, steps).to(per_step.dtype)
    return per_step.sum(1)


class RnnOutputParams(DenseParams):
    loss: LossName = "mcxent"


@builtin
class RnnOutputLayer(VertexType):
    name, dl4j = "rnn_output", "RnnOutputLayer"
    Params = RnnOutputParams
    uses = LAYER_KEYS
    weight_params, bias_params = ("weight",), ("bias",)
    loss_head = True
    per_position = True  # its class-index targets are [N, T], one per time step (train/steps.py check_targets)
    doc = ("A dense layer at every time step, [in, T] -> [out, T], trained with `loss` at every step; an example's "
           "loss is the sum over its (real) steps. Targets: class indices [N, T] or values [N, out, T].")

    def infer(self, p, in_shapes):
        n_in, t = _need_sequence(in_shapes[0])
        _check_given(p.in_, n_in, "in", "features per time step")
        return Inferred((p.out, t), n_in, p.out)

    def param_shapes(self, p, inf):
        shapes = [ParamShape("weight", (p.out, inf.n_in), True)]
        return shapes + ([ParamShape("bias", (p.out,), True)] if p.bias else [])

    def macs(self, p, inf):
        return inf.n_in * p.out * inf.out_shape[1]

    def build(self, p, inf):
        return S.RnnOutput(inf.n_in, p.out, p.bias, p.activation, p.loss)

    def init(self, module, p, inf, generator):
        init_(module.weight, p.weight_init, inf.n_in, p.out, generator)  # DL4J's fans (nIn, nOut), §12.1
        if module.bias is not None:
            module.bias.data.fill_(p.bias_init)

    def training_loss(self, p, module, x, target, mask=None):
        """Per example Σ_t m_t·ℓ_t of the activated logits (see :func:`per_step_loss`)."""
        return per_step_loss(p.loss, p.activation, module.logits(x), target, mask)


class RnnLossParams(CnnLossParams):
    """cnn_loss's keys: `loss`, and `activation` (along the features at every step; default by loss)."""


@builtin
class RnnLossLayer(VertexType):
    name, dl4j = "rnn_loss", "RnnLossLayer"
    Params = RnnLossParams
    loss_head = True
    width_follows_input = True
    per_position = True  # its class-index targets are [N, T], one per time step
    doc = ("A loss at every time step of a sequence output [size, T], without weights (DL4J's RnnLossLayer): the "
           "`activation` runs along the features (softmax for mcxent by default); an example's loss is the sum over "
           "its (real) steps. Targets: class indices [N, T] or values [N, size, T].")

    def infer(self, p, in_shapes):
        _need_sequence(in_shapes[0])
        return Inferred(in_shapes[0])

    def macs(self, p, inf):
        return 0  # the activation

    def build(self, p, inf):
        return S.RnnLoss(cnn_loss_activation(p))

    def training_loss(self, p, module, x, target, mask=None):
        return per_step_loss(p.loss, cnn_loss_activation(p), x, target, mask)


# --- RNN vertices (§9) ---------------------------------------------------------------------------------------------


@builtin
class LastTimeStepVertex(VertexType):
    name, dl4j, kind = "last_time_step", "LastTimeStepVertex", "vertex"
    Params = NoParams
    width_follows_input = True
    doc = ("Each example's last time step, [size, T] -> [size]: with a mask, its last real step (DL4J reads the mask "
           "of a named network input; here the mask its input carries).")

    def infer(self, p, in_shapes):
        size, _ = _need_sequence(in_shapes[0])
        return Inferred((size,))

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return S.LastTimeStep()


@builtin
class DuplicateToTimeSeriesVertex(VertexType):
    name, dl4j, kind = "duplicate_to_time_series", "DuplicateToTimeSeriesVertex", "vertex"
    Params = NoParams
    arity = (2, 2)
    width_follows_input = True
    doc = ("Repeats a vector [size] (the first input) at every time step of a sequence [S, T] (the second input, read "
           "for its length and mask only): [size, T]. DL4J names the sequence as a network input; here it is an input.")

    def infer(self, p, in_shapes):
        vector, reference = in_shapes
        if len(vector) != 1:
            raise ShapeError(f"the first input is the vector [size] to repeat; received {_fmt(vector)}", key="inputs")
        if len(reference) != 2:
            raise ShapeError(f"the second input is the sequence [size, T] whose length the output takes; received "
                             f"{_fmt(reference)}", key="inputs")
        return Inferred((vector[0], reference[1]))

    def macs(self, p, inf):
        return 0  # data movement

    def build(self, p, inf):
        return S.DuplicateToTimeSeries()


@builtin
class ReverseTimeSeriesVertex(VertexType):
    name, dl4j, kind = "reverse_time_series", "ReverseTimeSeriesVertex", "vertex"
    Params = NoParams
    width_follows_input = True
    doc = ("Reverses a sequence in time, [size, T] -> [size, T]; with a mask, each example's real steps only, in "
           "place of its real steps, and masked steps are 0.")

    def infer(self, p, in_shapes):
        _need_sequence(in_shapes[0])
        return Inferred(in_shapes[0])

    def macs(self, p, inf):
        return 0

    def build(self, p, inf):
        return S.ReverseTimeSeries()
