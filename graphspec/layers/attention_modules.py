"""The torch modules behind the sequence and transformer vertex types (:mod:`graphspec.layers.attention`).

Sequences are ``[N, size, T]``: features first, time last (DL4J's NCW layout). torch's own building blocks
(``F.layer_norm``, ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``) want the features last, so each
module transposes to time-major rows, calls the fused kernel and transposes back. The transposes are views: the
outputs stay time-major in memory (logically ``[N, size, T]``, like torch's channels-last images), so the next
module that wants time-major rows reads them without a copy, and element-wise residual additions keep that layout.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """Normalises over the channels (dim 1) at every position: ``nn.LayerNorm(C)`` applied channels-last."""

    def __init__(self, channels: int, eps: float, bias: bool):
        super().__init__()
        self.channels, self.eps = channels, eps
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None

    def forward(self, x):
        if x.dim() == 2:  # [N, F]: the channels are already last
            return F.layer_norm(x, (self.channels,), self.weight, self.bias, self.eps)
        # torch normalises the last dimension; moving the channels there is a view, and F.layer_norm copies only
        # when that view is not contiguous (a sequence that came from attention already is, time-major)
        y = F.layer_norm(x.movedim(1, -1), (self.channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)

    def extra_repr(self):
        return f"{self.channels}, eps={self.eps}, bias={self.bias is not None}"


class SelfAttention(nn.Module):
    """DL4J SelfAttentionLayer on ``[N, n_in, T]``: multi-head scaled dot-product attention, queries = keys = values
    = the input, giving ``[N, n_out, T]``.

    Parameters are packed as torch's ``nn.MultiheadAttention`` packs them: ``in_proj_weight [3E, n_in]`` (the q, k
    and v projections stacked, each head-major: row ``h·head_size + j``), ``out_proj_weight [n_out, E]``, and the
    optional biases. Without projection there are no parameters and one head attends over the raw input.
    """

    def __init__(self, n_in: int, n_out: int, n_heads: int, head_size: int, project: bool, bias: bool):
        super().__init__()
        self.n_heads, self.head_size = n_heads, head_size
        embed = n_heads * head_size
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed, n_in)) if project else None
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed)) if project and bias else None
        self.out_proj_weight = nn.Parameter(torch.empty(n_out, embed)) if project else None
        self.out_proj_bias = nn.Parameter(torch.empty(n_out)) if project and bias else None

    def forward(self, x):
        rows = x.transpose(1, 2)  # [N, T, n_in]: one row per time step, what the torch kernels expect
        if self.in_proj_weight is None:
            heads = rows.unsqueeze(1)  # one head, [N, 1, T, n_in]: ONNX export converts only 4-D attention
            return F.scaled_dot_product_attention(heads, heads, heads).squeeze(1).transpose(1, 2)  # 1/sqrt(n_in)
        n, t = rows.shape[0], rows.shape[1]
        qkv = F.linear(rows, self.in_proj_weight, self.in_proj_bias).view(n, t, 3, self.n_heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, heads, T, head_size]
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_size), as DL4J and torch
        y = y.transpose(1, 2).reshape(n, t, self.n_heads * self.head_size)  # heads concatenated, head-major
        return F.linear(y, self.out_proj_weight, self.out_proj_bias).transpose(1, 2)

    def extra_repr(self):
        if self.in_proj_weight is None:
            return "no projection"
        n_out, n_in = self.out_proj_weight.shape[0], self.in_proj_weight.shape[1]
        return (f"{n_in}, {n_out}, heads={self.n_heads}, head_size={self.head_size}, "
                f"bias={self.in_proj_bias is not None}")


class Permute(nn.Module):
    """Keras Permute: reorders the per-example dimensions (``dims`` 1-based, the batch stays first)."""

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(0, *self.dims)

    def extra_repr(self):
        return str(list(self.dims))


class PositionEmbedding(nn.Module):
    """A learned tensor of the input's per-example shape, added to every example."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(*shape))

    def forward(self, x):
        return x + self.weight


class ClassToken(nn.Module):
    """Prepends a learned token at time step 0: ``[N, size, T]`` -> ``[N, size, T + 1]``."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))

    def forward(self, x):
        token = self.weight.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)  # x's dtype under autocast
        # Concatenating time-major rows costs the same copy and leaves the sequence time-major in memory (a
        # transposed view), which layer_norm and self_attention then read without copying again.
        return torch.cat([token, x.transpose(1, 2)], dim=1).transpose(1, 2)


class TimeStep(nn.Module):
    """One time step of a sequence: ``[N, size, T]`` -> ``[N, size]`` (``index`` -1 is the last)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[:, :, self.index]

    def extra_repr(self):
        return str(self.index)
