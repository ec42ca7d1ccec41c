"""The torch modules behind the sequence types (:mod:`graphspec.layers.sequence`): embeddings, 1-D convolution and
pooling, the per-step output layer, the RNN vertices and the RNN preprocessors. Section numbers (§) refer to
SEMANTICS-SEQUENCES.md.

Sequences are ``[N, size, T]`` (DL4J's NCW). A mask is ``[N, T]``, 1 for a real step and 0 for padding. Every
module takes it as ``forward(x, mask=None)``, applies DL4J's rule for its type when given (§2.2), and says with
``output_mask(mask)`` which mask its output carries (the column "mask it emits" of §2.2), for the network to pass
on. As in :mod:`.modules`, shapes and paddings are computed statically by the registry entries and passed in.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import GraphspecError
from .modules import Activation, Dense, _act


def _may_check_values() -> bool:
    """Whether checks on tensor values may run: not while torch.export, torch.compile or a trace records the graph,
    which cannot record a Python branch on values (the exported graph then has no check, like any ONNX Gather)."""
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def _vertex_of(module: nn.Module) -> str | None:
    """The vertex name under which the running network holds ``module``, for an error message: modules are built
    before the compiler registers them under their vertex's name, so it is looked up by identity in the calling
    ``fx.GraphModule`` (None when the module is called on its own)."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.fx.GraphModule):
            for name, child in owner.named_children():
                if child is module:
                    return name
        frame = frame.f_back
    return None


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A 0/1 (or bool) mask in ``like``'s dtype, so that it can multiply activations."""
    return mask.to(like.dtype)


class _ZeroGradient(torch.autograd.Function):
    """``y`` unchanged, with a zero gradient for ``source``."""

    @staticmethod
    def forward(ctx, y, source):
        ctx.source = (source.shape, source.dtype, source.device)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, device = ctx.source
        return grad, torch.zeros(shape, dtype=dtype, device=device)


def zero_gradient_to(y: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``y``, tied to an input it reads only for its indices or its length, so that a backward pass gives that input
    a zero gradient (what DL4J's backward gives it: nothing) rather than none. A no-op at inference and in export."""
    if torch.is_grad_enabled() and source.requires_grad:
        return _ZeroGradient.apply(y, source)
    return y


# --- embeddings (§6) ---------------------------------------------------------------------------------------------


class Embedding(nn.Module):
    """DL4J EmbeddingLayer and EmbeddingSequenceLayer: ``φ(W[index] + b)`` with ``W [num_embeddings, out]``, the
    layout of DL4J's W and of torch's ``nn.Embedding.weight`` (no transpose).

    Indices ``[N, 1]`` give ``[N, out]``; a sequence of indices ``[N, 1, T]`` gives ``[N, out, T]``. Indices stored as
    floats are truncated toward zero, as DL4J reads them (``getInt``); integer tensors are used as they are.
    """

    def __init__(self, num_embeddings: int, n_out: int, bias: bool, activation: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, n_out))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.activation = activation
        self._act = _act(activation)

    def forward(self, x, mask=None):
        index = self._indices(x)
        rows = F.embedding(index, self.weight)  # [N, out] or [N, T, out]
        if self.bias is not None:
            rows = rows + self.bias
        y = rows.transpose(1, 2) if x.dim() == 3 else rows  # features first: the activation's softmax runs over them
        if self._act is not None:
            y = self._act(y)
        if mask is not None and x.dim() == 3:  # DL4J zeroes the masked rows (§2.2; EmbeddingSequence beta2+)
            y = y * _as_mask(mask, y).unsqueeze(1)
        return zero_gradient_to(y, x)

    def _indices(self, x: torch.Tensor) -> torch.Tensor:
        index = x[:, 0].long()  # [N] or [N, T]; .long() truncates floats toward zero, as Java's int cast
        if _may_check_values() and index.numel():
            low, high = int(index.min()), int(index.max())
            classes = self.weight.shape[0]
            if low < 0 or high >= classes:
                raise GraphspecError(f"embedding indices must be in 0..{classes - 1} (num_embeddings {classes}); "
                                     f"received indices {low}..{high}", vertex=_vertex_of(self))
        return index

    def output_mask(self, mask):
        return mask

    def extra_repr(self):
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, activation={self.activation}"


# --- 1-D convolution and pooling (§7) ----------------------------------------------------------------------------


class _Window1d(nn.Module):
    """What the 1-D convolution and pooling share: DL4J's paddings (``pads`` = (before, after)), and masks as DL4J
    beta2+ (§7.4): an output step is real when any input step in its window is real (max-pooling of the mask with
    the layer's own window), except that a layer whose output step t is input step t (same or causal mode, stride 1)
    keeps the mask as it is; padded input steps are zeroed first, so that padding values never reach a real step."""

    def _init_window(self, kernel: int, stride: int, dilation: int, pads: tuple[int, int], keeps_mask: bool):
        self.kernel, self.stride, self.dilation, self.pads = kernel, stride, dilation, tuple(pads)
        self.keeps_mask = keeps_mask

    def _masked_input(self, x, mask):
        return x if mask is None else x * _as_mask(mask, x).unsqueeze(1)

    def _masked_output(self, y, mask):
        return y if mask is None else y * self.output_mask(mask).to(y.dtype).unsqueeze(1)

    def output_mask(self, mask):
        if self.keeps_mask:
            return mask
        m = F.pad(mask.float().unsqueeze(1), self.pads)  # steps outside the input are padding: 0
        return F.max_pool1d(m, self.kernel, self.stride, 0, self.dilation).squeeze(1)


class Conv1d(_Window1d):
    """DL4J Convolution1DLayer: ``F.conv1d`` with DL4J's paddings (Same's extra step after; Causal all before);
    weight ``[out, in, k]``, DL4J's ``W [out, in, k, 1]`` without its last axis (§7.1)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int],
                 bias: bool, activation: str, keeps_mask: bool = False):
        super().__init__()
        self._init_window(kernel, stride, dilation, pads, keeps_mask)
        self.weight = nn.Parameter(torch.empty(n_out, n_in, kernel))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.activation = activation
        self._act = _act(activation)

    def forward(self, x, mask=None):
        x = self._masked_input(x, mask)
        before, after = self.pads
        if before == after:  # symmetric: conv1d pads itself, without a copy
            y = F.conv1d(x, self.weight, self.bias, self.stride, before, self.dilation)
        else:
            y = F.conv1d(F.pad(x, self.pads), self.weight, self.bias, self.stride, 0, self.dilation)
        if self._act is not None:
            y = self._act(y)
        return self._masked_output(y, mask)

    def extra_repr(self):
        o, i, k = self.weight.shape
        return (f"{i}, {o}, kernel={k}, stride={self.stride}, dilation={self.dilation}, pads={self.pads}, "
                f"activation={self.activation}")


class Subsampling1d(_Window1d):
    """DL4J Subsampling1DLayer: pooling over time; padded steps read 0 (also for MAX), AVG divides by k (§7.3)."""

    def __init__(self, pooling: str, kernel: int, stride: int, pads: tuple[int, int], pnorm: int,
                 keeps_mask: bool = False):
        super().__init__()
        self._init_window(kernel, stride, 1, pads, keeps_mask)
        self.pooling, self.pnorm = pooling, pnorm

    def forward(self, x, mask=None):
        x = self._masked_input(x, mask)
        y = self._pool(F.pad(x, self.pads) if any(self.pads) else x)
        return self._masked_output(y, mask)

    def _pool(self, x):
        k, s = self.kernel, self.stride
        if self.pooling == "max":
            return F.max_pool1d(x, k, s)
        if self.pooling == "avg":
            return F.avg_pool1d(x, k, s)
        if self.pooling == "sum":
            return F.avg_pool1d(x, k, s) * k
        return F.lp_pool1d(x.abs() if self.pnorm % 2 else x, float(self.pnorm), k, s)  # |x|^p needs |x| for odd p

    def extra_repr(self):
        extra = f", p={self.pnorm}" if self.pooling == "pnorm" else ""
        return f"{self.pooling}, kernel={self.kernel}, stride={self.stride}, pads={self.pads}{extra}"


# --- per-step output and loss (§8) -------------------------------------------------------------------------------


class RnnOutput(Dense):
    """DL4J RnnOutputLayer: a dense layer at every time step, ``[N, in, T]`` -> ``[N, out, T]``; the loss is applied
    by training code. A mask given at inference multiplies the activations (DL4J's label mask, §8.1)."""

    def __init__(self, n_in: int, n_out: int, bias: bool, activation: str, loss: str):
        super().__init__(n_in, n_out, bias, activation, per_step=True)
        self.loss = loss

    def logits(self, x):
        """The pre-activations ``[N, out, T]``."""
        return F.linear(x.transpose(1, 2), self.weight, self.bias).transpose(1, 2)

    def forward(self, x, mask=None):
        y = super().forward(x)
        return y if mask is None else y * _as_mask(mask, y).unsqueeze(1)

    def output_mask(self, mask):
        return None  # DL4J's output layers emit no mask

    def extra_repr(self):
        return super().extra_repr() + f", loss={self.loss}"


class RnnLoss(Activation):
    """DL4J RnnLossLayer: its activation only; it does not mask its activations (§8.2)."""

    def forward(self, x, mask=None):
        return super().forward(x)

    def output_mask(self, mask):
        return None


# --- RNN vertices (§9) ---------------------------------------------------------------------------------------------


class LastTimeStep(nn.Module):
    """DL4J LastTimeStepVertex: ``[N, size, T]`` -> ``[N, size]``, each example's last step whose mask is not 0
    (step T-1 without a mask; step 0 for an example without any real step, as DL4J's argmax rule gives)."""

    def forward(self, x, mask=None):
        if mask is None:
            return x[:, :, -1]
        steps = torch.arange(x.shape[2], device=x.device)
        last = torch.where(mask != 0, steps, torch.zeros_like(steps)).amax(1)  # [N]
        return x.gather(2, last.view(-1, 1, 1).expand(-1, x.shape[1], 1)).squeeze(2)

    def output_mask(self, mask):
        return None


class DuplicateToTimeSeries(nn.Module):
    """DL4J DuplicateToTimeSeriesVertex: ``x [N, size]`` repeated at every step of ``reference [N, S, T]``:
    ``[N, size, T]`` (a view; the backward sums over time). The reference is read for its length only."""

    def forward(self, x, reference, mask=None):
        y = x.unsqueeze(2).expand(-1, -1, reference.shape[2])
        return zero_gradient_to(y, reference)

    def output_mask(self, reference_mask):
        return reference_mask  # DL4J: the mask of the reference input (§9.2)


class ReverseTimeSeries(nn.Module):
    """DL4J ReverseTimeSeriesVertex: ``out[:, :, t] = x[:, :, T-1-t]``; with a mask, each example's real steps are
    reversed among themselves, into the real positions, and masked positions are 0 (§9.3)."""

    def forward(self, x, mask=None):
        if mask is None:
            return x.flip(2)
        real = mask != 0
        # the positions of each example's real steps, in order (then its masked ones): a stable sort on "masked"
        positions = torch.sort((~real).to(torch.int8), dim=1, stable=True).indices
        rank = real.long().cumsum(1) - 1  # a real step's index among its example's real steps
        source_rank = (real.sum(1, keepdim=True) - 1 - rank).clamp(min=0)
        source = positions.gather(1, source_rank)  # [N, T]: the step each output step reads
        y = x.gather(2, source.unsqueeze(1).expand(-1, x.shape[1], -1))
        return y * _as_mask(real, y).unsqueeze(1)

    def output_mask(self, mask):
        return mask


# --- RNN preprocessors (§10): rows are time-major, row t·N + i is example i at step t -------------------------------


class RnnToRows(nn.Module):
    """DL4J RnnToFeedForwardPreProcessor (``shape`` None) and RnnToCnnPreProcessor (``shape`` [c, h, w]):
    ``[N, F, T]`` -> ``[T·N, F]`` or ``[T·N, c, h, w]``."""

    def __init__(self, shape: tuple[int, ...] | None = None):
        super().__init__()
        self.shape = tuple(shape) if shape else None

    def forward(self, x, mask=None):
        steps, n = x.shape[2], x.shape[0]
        rows = x.permute(2, 0, 1).reshape(steps * n, x.shape[1])
        return rows if self.shape is None else rows.reshape(steps * n, *self.shape)

    def output_mask(self, mask):
        return mask.transpose(0, 1).reshape(-1, 1)  # [T·N, 1], DL4J's row mask

    def extra_repr(self):
        return "" if self.shape is None else str(list(self.shape))


class RowsToRnn(nn.Module):
    """DL4J FeedForwardToRnnPreProcessor and CnnToRnnPreProcessor: rows ``[T·N, F]`` (or ``[T·N, c, h, w]``,
    flattened in C order) -> ``[N, F, T]``, for ``length`` T."""

    def __init__(self, length: int):
        super().__init__()
        self.length = length

    def forward(self, x, mask=None):
        n = x.shape[0] // self.length
        return x.reshape(self.length, n, -1).permute(1, 2, 0)

    def output_mask(self, mask):
        return mask.reshape(self.length, -1).transpose(0, 1)  # [T·N] or [T·N, 1] -> [N, T]

    def extra_repr(self):
        return f"length={self.length}"
