"""The torch modules behind each vertex type. Shapes and paddings are computed statically by the registry
entries (``types.py``) and passed in, so ``forward`` does no bookkeeping."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module  # global forward hooks also see outputs

from . import activations

Pads = tuple[int, int, int, int]  # (left, right, top, bottom), F.pad's order


def _act(name: str):
    return activations.get(name)


def padded_conv2d(x, weight, bias, stride, dilation, pads: Pads, groups: int = 1):
    """F.conv2d with DL4J's pads: symmetric ones go to conv2d itself (no copy); asymmetric ones (Same mode's extra
    bottom/right pixel) need an explicit zero pad first."""
    left, right, top, bottom = pads
    if left == right and top == bottom:
        return F.conv2d(x, weight, bias, stride, (top, left), dilation, groups)
    return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, dilation, groups)


class Conv2d(nn.Module):
    """Convolution with DL4J padding: asymmetric Same padding is an explicit zero pad before the convolution.
    ``groups`` > 1 (not in DL4J) convolves groups of channels separately; weight [out, in/groups, kH, kW]."""

    def __init__(self, n_in, n_out, kernel, stride, dilation, pads: Pads, bias: bool, activation: str,
                 groups: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in // groups, *kernel))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.stride, self.dilation, self.pads, self.groups = tuple(stride), tuple(dilation), tuple(pads), groups
        self._act = _act(activation)
        self.activation = activation

    def forward(self, x):
        y = padded_conv2d(x, self.weight, self.bias, self.stride, self.dilation, self.pads, self.groups)
        return y if self._act is None else self._act(y)

    def folded(self, scale: torch.Tensor, shift: torch.Tensor) -> "Conv2d | None":
        """A copy computing ``scale · conv(x) + shift`` per output channel — an affine map after this convolution
        (an inference batch norm) folded into its weights and bias — or None when this convolution applies an
        activation first. The copy has new weight and bias tensors (in the weight's memory layout and dtype, the
        products taken in float64); this module is left as it was."""
        if self._act is not None:
            return None
        scale, shift = _float64(scale), _float64(shift)
        weight = _float64(self.weight) * scale.view(-1, 1, 1, 1)
        bias = shift if self.bias is None else shift + _float64(self.bias) * scale
        like = dict(device=self.weight.device, dtype=self.weight.dtype)
        copy = _copy_module(self)
        copy.weight = nn.Parameter(weight.to(**like).contiguous(memory_format=_layout(self.weight)),
                                   requires_grad=False)
        copy.bias = nn.Parameter(bias.to(**like), requires_grad=False)
        return copy

    def extra_repr(self):
        o, i, kh, kw = self.weight.shape
        groups = f", groups={self.groups}" if self.groups > 1 else ""
        return (f"{i * self.groups}, {o}, kernel=({kh}, {kw}), stride={self.stride}, pads(l,r,t,b)={self.pads}"
                f"{groups}, activation={self.activation}")


def _copy_module(module: nn.Module) -> nn.Module:
    """A shallow copy with its own parameter, buffer and submodule tables (replacing a tensor in the copy leaves the
    original's alone) and no hooks."""
    import copy
    twin = copy.copy(module)
    for table in ("_parameters", "_buffers", "_modules"):
        twin.__dict__[table] = dict(module.__dict__[table])
    for name, hooks in hook_tables(module).items():
        twin.__dict__[name] = type(hooks)()
    return twin


def hook_tables(module: nn.Module) -> dict[str, dict]:
    """The module's tables of hooks by attribute name (forward, pre-forward, backward, state-dict, ...: torch adds
    kinds over versions, so they are found by name rather than listed)."""
    return {name: value for name, value in vars(module).items() if "hooks" in name and isinstance(value, dict)}


def _float64(t: torch.Tensor) -> torch.Tensor:
    """A detached float64 copy on the CPU (where every backend's tensors can go; MPS has no float64)."""
    return t.detach().to("cpu", torch.float64)


def _layout(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


class Subsampling(nn.Module):
    """DL4J pooling: every position outside the input reads 0 (also for MAX); AVG divides by kH·kW.

    DL4J's padding is a zero border around the input. Copying the input into a padded tensor (``F.pad``) costs a
    fill and a copy of the whole activation forward and again backward (~6% of an NN4.Small2 training step), so
    the pooling functions pad implicitly where they can: torch's pooling pads top/left symmetrically and
    ``ceil_mode`` adds the bottom/right remainder of Same mode; a sum with ``divisor_override`` treats padded
    positions as zeros, and a max ignores them, so the few border outputs whose window reaches into the padding
    are clamped at 0 afterwards — DL4J's zero. Where the geometry does not fit torch's (padding over half the kernel,
    another output size), and when tracing or exporting (ONNX has no divisor override), the explicit pad is kept."""

    def __init__(self, pooling: str, kernel, stride, pads: Pads, pnorm: int = 2):
        super().__init__()
        self.pooling, self.kernel, self.stride, self.pads, self.pnorm = pooling, tuple(kernel), tuple(stride), \
            tuple(pads), pnorm
        self._padded = any(pads)

    def forward(self, x):
        implicit = self._implicit(x.shape[-2:]) if self._padded else ((0, 0), False)
        if implicit is None or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self._explicit(F.pad(x, self.pads) if self._padded else x)
        y = self._pool(x, *implicit)
        return self._zero_floor_at_borders(y, x.shape[-2:]) if self.pooling == "max" and self._padded else y

    def _pool(self, x, padding, ceil_mode):
        """Pooling with torch's implicit padding: sums and averages by ``divisor_override`` (padded positions
        count as zeros, whatever part of a window ceil mode cuts off)."""
        k, s = self.kernel, self.stride
        if self.pooling == "max":
            return F.max_pool2d(x, k, s, padding, ceil_mode=ceil_mode)
        if self.pooling == "avg":
            return F.avg_pool2d(x, k, s, padding, ceil_mode, divisor_override=k[0] * k[1])
        if self.pooling == "sum":
            return F.avg_pool2d(x, k, s, padding, ceil_mode, divisor_override=1)
        p = float(self.pnorm)  # p-norm: (Σ|x|^p)^(1/p); |x| needed only for odd p; relu keeps the gradient at 0 finite
        powered = (x.abs() if self.pnorm % 2 else x).pow(p)
        return F.relu(F.avg_pool2d(powered, k, s, padding, ceil_mode, divisor_override=1)).pow(1.0 / p)

    def _explicit(self, x):
        """Pooling of an input already padded with zeros, in operators every exporter translates (torch's ONNX
        exporter drops ``divisor_override``: an AveragePool there divides by the window's size)."""
        k, s = self.kernel, self.stride
        if self.pooling == "max":
            return F.max_pool2d(x, k, s)
        if self.pooling == "avg":
            return F.avg_pool2d(x, k, s)
        if self.pooling == "sum":
            return F.avg_pool2d(x, k, s) * (k[0] * k[1])
        if self.pnorm % 2:  # |x|^p needs the absolute value only for odd p
            x = x.abs()
        return F.lp_pool2d(x, float(self.pnorm), k, s)

    def _implicit(self, size):
        """(padding, ceil_mode) for which torch's pooling has DL4J's windows over an input of ``size``, or None:
        the same first window (padding = top/left) and the same number of outputs in both dimensions."""
        left, right, top, bottom = self.pads
        dims = list(zip(size, self.kernel, self.stride, (top, left), (bottom, right)))
        if any(2 * before > k for _, k, _, before, _ in dims):
            return None  # torch pads at most half a kernel
        for ceil_mode in (False, True):
            if all(_torch_pool_size(n, k, s, before, ceil_mode) == (n + before + after - k) // s + 1
                   for n, k, s, before, after in dims):
                return (top, left), ceil_mode
        return None

    def commutes_with(self, activation: str) -> bool:
        """Whether this pooling gives the same result before or after ``activation`` (bit for bit): a max pool and an
        activation of :data:`~graphspec.layers.activations.COMMUTE_WITH_MAX`."""
        return self.pooling == "max" and activation in activations.COMMUTE_WITH_MAX

    def _zero_floor_at_borders(self, y, size):
        """DL4J's max reads 0 at padded positions: outputs whose window reaches into the padding are at least 0.
        Training: one clamp against an [oh, ow] floor (0 at those outputs, -inf elsewhere), since in-place clamps of
        border slices would make autograd copy the whole gradient once per slice; without autograd, the border
        slices are clamped in place (the rest of the tensor is not touched)."""
        in_place = not (torch.is_grad_enabled() and y.requires_grad)
        floor = None if in_place else y.new_full(y.shape[-2:], float("-inf"))
        for dim, n, k, s, before in ((0, size[0], self.kernel[0], self.stride[0], self.pads[2]),
                                     (1, size[1], self.kernel[1], self.stride[1], self.pads[0])):
            outputs = y.shape[y.dim() - 2 + dim]
            first_inside = min(-(-before // s), outputs)  # outputs before it start in the top/left padding
            last_inside = min((n + before - k) // s, outputs - 1)  # outputs after it end in the bottom/right padding
            for start, length in ((0, first_inside), (last_inside + 1, outputs - last_inside - 1)):
                if in_place:
                    y.narrow(y.dim() - 2 + dim, start, length).clamp_(min=0)
                else:
                    floor.narrow(dim, start, length).zero_()
        return y if in_place else torch.clamp(y, min=floor)

    def extra_repr(self):
        extra = f", p={self.pnorm}" if self.pooling == "pnorm" else ""
        return f"{self.pooling}, kernel={self.kernel}, stride={self.stride}, pads(l,r,t,b)={self.pads}{extra}"


def _torch_pool_size(n: int, k: int, s: int, pad: int, ceil_mode: bool) -> int:
    """torch's pooling output size (aten's pooling_output_shape): in ceil mode the last window must start inside
    the input or its left padding."""
    span = n + 2 * pad - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + pad:
        out -= 1
    return out


def lrn_module(k: float, n: float, alpha: float, beta: float) -> nn.LocalResponseNorm:
    """DL4J LRN as torch's: window 2·floor(n/2)+1 channels, and torch divides alpha by the window, DL4J does not."""
    size = 2 * (int(n) // 2) + 1
    return LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)


class LocalResponseNorm(nn.LocalResponseNorm):
    """torch's LRN, ``x / (k + alpha/size · Σ_window x²)^beta``, with a fast path for channels-last inputs.

    torch computes the window sum with a 3-D average pool over a [N, 1, C, H, W] view, which in NHWC memory walks
    the channels with a stride of W·H·C (LRN was 30% of NN4.Small2's channels-last forward). In NHWC the channels
    are the innermost, contiguous dimension, so a window sum is ``size`` shifted slices added together, and the
    gradient has a closed form with the same window sum (:class:`_ChannelsLastLRN`): the same terms, the same
    result within rounding (tests: 1e-6 forward and backward against torch's module). NCHW inputs, exports and
    other dtypes take torch's own path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() != 4 or x.dtype not in (torch.float32, torch.bfloat16) or x.is_contiguous()
                or not x.is_contiguous(memory_format=torch.channels_last) or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export()):
            return super().forward(x)
        return _ChannelsLastLRN.apply(x, self.size, self.alpha, self.beta, self.k)


def _inverse_power(d: torch.Tensor, beta: float) -> torch.Tensor:
    """d^-beta; for the usual LRN exponents with square roots, which CPUs compute several times faster than a
    general power (β = 0.75: d^-1/2 · d^-1/4)."""
    if beta == 0.75:
        r = d.rsqrt()
        return r.mul_(r.sqrt())
    if beta == 0.5:
        return d.rsqrt()
    return d.pow(-beta)


def _neighbour_slices(n: int, size: int, transposed: bool = False):
    """(destination, source) slices of the last dimension (length ``n``) that add each position's window
    neighbours to it: torch's window is size // 2 before and (size - 1) // 2 after, zero beyond the ends;
    ``transposed`` is its mirror image, which the gradient needs when the window is even."""
    before, after = size // 2, (size - 1) // 2
    if transposed:
        before, after = after, before
    for shift in range(-before, after + 1):
        if shift == 0 or abs(shift) >= n:
            continue
        yield (slice(0, n - shift), slice(shift, n)) if shift > 0 else (slice(-shift, n), slice(0, n + shift))


def _window_sum(t: torch.Tensor, size: int, transposed: bool = False) -> torch.Tensor:
    """Window sums along the last dimension, each neighbour added as an overlapping slice: nothing is padded or
    copied beyond the one output tensor."""
    out = t.clone()
    for dst, src in _neighbour_slices(t.shape[-1], size, transposed):
        out[..., dst] += t[..., src]
    return out


class _ChannelsLastLRN(torch.autograd.Function):
    """LRN on an NHWC tensor, in float32. With a = alpha/size, d = k + a·W(x²) and y = x·d^-β, the gradient is
    g·d^-β − 2aβ·x·Wᵀ(g·x·d^(−β−1)), W the window sum (Wᵀ = W for odd windows). Keeps x and d only."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        xl = x.permute(0, 2, 3, 1).float()  # [N, H, W, C]: contiguous for an NHWC tensor
        a = alpha / size  # d = k + a·x² of the channel itself, then + a·x² of each neighbour, in place: one pass each
        d = torch.addcmul(torch.tensor(k, dtype=xl.dtype), xl, xl, value=a)
        for dst, src in _neighbour_slices(xl.shape[-1], size):
            d[..., dst].addcmul_(xl[..., src], xl[..., src], value=a)
        ctx.save_for_backward(x, d)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return (xl * _inverse_power(d, beta)).to(x.dtype).permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, d = ctx.saved_tensors
        xl = x.permute(0, 2, 3, 1).float()
        gl = grad.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).float()
        direct = gl * _inverse_power(d, ctx.beta)  # g·d^-β
        inner = _window_sum((direct * xl).div_(d), ctx.size, transposed=True)
        dx = direct.addcmul_(xl, inner, value=-2 * ctx.alpha / ctx.size * ctx.beta)
        return dx.to(x.dtype).permute(0, 3, 1, 2), None, None, None, None


class BatchNorm(nn.Module):
    """DL4J batch normalisation.

    Training: batch statistics (biased variance) with eps, as torch. Running statistics follow DL4J:
    ``var_run <- decay·var_run + (1-decay)·(biased_var + eps)`` (eps folded in), and inference uses
    ``(x - mean_run) / sqrt(var_run)`` with no eps. With ``minibatch: false`` the running values are replaced.
    """

    def __init__(self, channels: int, decay: float, eps: float, lock_gamma_beta: bool, gamma: float, beta: float,
                 minibatch: bool = True):
        super().__init__()
        self.eps, self.decay, self.minibatch = eps, decay, minibatch
        if lock_gamma_beta:
            # fixed values, not state: DL4J has no gamma/beta parameters when they are locked
            self.register_buffer("weight", torch.full((channels,), float(gamma)), persistent=False)
            self.register_buffer("bias", torch.full((channels,), float(beta)), persistent=False)
        else:
            self.weight = nn.Parameter(torch.full((channels,), float(gamma)))
            self.bias = nn.Parameter(torch.full((channels,), float(beta)))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.sync = False  # distributed training: statistics over all ranks (set by the trainer)

    def forward(self, x, mask=None):
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, 0.0)
        momentum = (1.0 - self.decay) if self.minibatch else 1.0
        if mask is not None and x.dim() == 3:
            mask = mask.to(x.dtype).unsqueeze(1)  # [N, 1, T]
        else:
            mask = None
        if self.sync or mask is not None:
            return self._explicit_forward(x, momentum, mask)
        var = self.running_var.clone()  # torch updates this copy; autograd must not see the buffer change later
        count = x.numel() // x.shape[1]
        y = F.batch_norm(x, self.running_mean, var, self.weight, self.bias, True, momentum, self.eps)
        # torch blended the *unbiased* variance u: var = (1-m)·old + m·u. Recover u and re-blend DL4J's value.
        with torch.no_grad():
            old = self.running_var
            blended = var - (1.0 - momentum) * old  # = m·u
            old.copy_((1.0 - momentum) * old + blended * ((count - 1) / count) + momentum * self.eps)
        return y

    def inference_affine(self) -> "tuple[torch.Tensor, torch.Tensor] | None":
        """(scale, shift) per channel, in float64, with inference's ``y = scale · x + shift`` (DL4J's: no eps); None
        in training, or when a running variance is not positive and finite (no finite scale to fold)."""
        if self.training:
            return None
        var = _float64(self.running_var)
        if not bool(torch.isfinite(var).all() and (var > 0).all()):
            return None
        scale = _float64(self.weight) / var.sqrt()
        return scale, _float64(self.bias) - _float64(self.running_mean) * scale

    def _explicit_forward(self, x, momentum, mask=None):
        """Batch statistics written out: over the real steps only when a sequence's ``mask`` [N, 1, T] is given
        (a graphspec extension: padding then never changes a real step's output), and over every rank when
        ``sync`` is on (sums all-reduced with autograd, so gradients flow across ranks as in torch's
        SyncBatchNorm, which is CUDA-only). Running statistics as DL4J's."""
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        weighted = x if mask is None else x * mask
        count = x.new_tensor([x.numel() // c]) if mask is None else mask.sum().reshape(1)
        local = torch.cat([weighted.sum(dims), (weighted * x).sum(dims), count])
        stats = self._all_reduce(local) if self.sync else local
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean  # biased, as DL4J and torch normalise
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            self.running_mean.mul_(1.0 - momentum).add_(momentum * mean)
            self.running_var.mul_(1.0 - momentum).add_(momentum * (var + self.eps))
        return y

    @staticmethod
    def _all_reduce(local):
        import torch.distributed.nn.functional as dist_fn
        with warnings.catch_warnings():  # its replacement (_functional_collectives) is private; this one is stable
            warnings.simplefilter("ignore", FutureWarning)
            return dist_fn.all_reduce(local)

    def extra_repr(self):
        return f"{self.running_mean.numel()}, decay={self.decay}, eps={self.eps}"


# In-place versions of the activations that have one. The compiler enables them where nothing else reads the
# input (see compiler._inplace_activations); feed_forward switches them off so every activation stays distinct.
_INPLACE_FNS = {
    "relu": torch.relu_,
    "relu6": lambda x: F.hardtanh_(x, 0.0, 6.0),
    "leakyrelu": lambda x: F.leaky_relu_(x, 0.01),
    "hardtanh": F.hardtanh_,
}
_INPLACE_ENABLED = [True]


class no_inplace:
    """Context manager: activations compute out of place (their inputs stay readable afterwards)."""

    def __enter__(self):
        self._previous = _INPLACE_ENABLED[0]
        _INPLACE_ENABLED[0] = False

    def __exit__(self, *exc):
        _INPLACE_ENABLED[0] = self._previous


class Activation(nn.Module):
    def __init__(self, activation: str):
        super().__init__()
        self.activation = activation
        self._act = _act(activation)
        self.inplace = False  # set by the compiler when the input is this vertex's alone

    def set_inplace(self, producer: nn.Module) -> None:
        """Compute in place when safe: ``producer`` (the only reader of our input) keeps no hook on its output."""
        if self.activation in _INPLACE_FNS:
            self.inplace = True
            self.__dict__["_producer"] = producer  # a plain reference, not a submodule

    def _inplace_ok(self) -> bool:
        if not (self.inplace and _INPLACE_ENABLED[0]):
            return False
        producer = self.__dict__.get("_producer")
        hooked = producer is not None and bool(producer._forward_hooks)
        return not hooked and not _torch_module._global_forward_hooks

    def reading(self, producer: nn.Module) -> "Activation":
        """A copy of this activation for a rewritten graph in which it reads ``producer``'s output, its alone (an
        inference rewrite moved it after a max pool): computed in place, where the function has an in-place form."""
        twin = _copy_module(self)
        twin.inplace = False
        twin.__dict__.pop("_producer", None)
        twin.set_inplace(producer)
        return twin

    def forward(self, x):
        if self._act is None:
            return x
        if self._inplace_ok():
            return _INPLACE_FNS[self.activation](x)
        return self._act(x)

    def extra_repr(self):
        return self.activation + (", inplace" if self.inplace else "")


class Dense(nn.Module):
    """DL4J DenseLayer; a convolutional input is flattened in C-order first (CnnToFeedForwardPreProcessor), a
    sequence [N, size, T] is transformed at every time step (``per_step``; RnnToFeedForwardPreProcessor)."""

    def __init__(self, n_in: int, n_out: int, bias: bool, activation: str, per_step: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None
        self.activation = activation
        self._act = _act(activation)
        self.per_step = per_step

    def forward(self, x):
        if self.per_step:  # [N, size, T] -> [N, T, size] for the matrix product, and back
            y = F.linear(x.transpose(1, 2), self.weight, self.bias).transpose(1, 2)
        else:
            y = F.linear(torch.flatten(x, 1) if x.dim() > 2 else x, self.weight, self.bias)
        return y if self._act is None else self._act(y)

    def extra_repr(self):
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, activation={self.activation}"


class Output(Dense):
    """DL4J OutputLayer: forward gives the activated predictions; the loss is applied by training code.

    ``head: cosine`` (not in DL4J) uses ``scale · cos(x, w_k)`` as logits — a normalised-softmax head — and in
    training subtracts ``scale · margin`` from the target class's logit (CosFace's additive margin).
    """

    def __init__(self, n_in: int, n_out: int, bias: bool, activation: str, loss: str, head: str = "linear",
                 scale: float = 1.0, margin: float = 0.0, label_smoothing: float = 0.0):
        super().__init__(n_in, n_out, bias, activation)
        self.loss, self.head, self.scale, self.margin = loss, head, scale, margin
        self.label_smoothing = label_smoothing

    def logits(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() > 2:
            x = torch.flatten(x, 1)
        if self.head == "linear":
            return F.linear(x, self.weight, self.bias)
        cos = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))
        if target is not None and self.margin:
            cos = cos - self.margin * F.one_hot(target, cos.shape[1]).to(cos.dtype)
        return self.scale * cos

    def forward(self, x):
        z = self.logits(x)
        return z if self._act is None else self._act(z)

    def extra_repr(self):
        head = f", head=cosine(scale={self.scale}, margin={self.margin})" if self.head == "cosine" else ""
        smooth = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return super().extra_repr() + f", loss={self.loss}{head}{smooth}"


class CenterLossOutput(Output):
    """DL4J CenterLossOutputLayer: an output layer plus per-class centers (state, not trained by gradient)."""

    def __init__(self, n_in: int, n_out: int, bias: bool, activation: str, loss: str, alpha: float, lambda_: float,
                 gradient_check: bool, head: str = "linear", scale: float = 1.0, margin: float = 0.0,
                 label_smoothing: float = 0.0):
        super().__init__(n_in, n_out, bias, activation, loss, head, scale, margin, label_smoothing)
        self.alpha, self.lambda_, self.gradient_check = alpha, lambda_, gradient_check
        self.register_buffer("centers", torch.zeros(n_out, n_in))

    def extra_repr(self):
        return super().extra_repr() + f", alpha={self.alpha}, lambda={self.lambda_}"


class Dropout(nn.Module):
    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        return F.dropout(x, self.rate, self.training) if self.rate > 0 else x


class GlobalPooling(nn.Module):
    """Pooling over every position; over a sequence with a mask [N, T], over its real steps only, as DL4J's
    MaskedReductionUtil (SEMANTICS-SEQUENCES.md §12.3): sum and p-norm of x·m, the average divides by the number
    of real steps, the maximum skips the padded steps. An example without any real step is refused."""

    def __init__(self, pooling: str, pnorm: int, collapse: bool):
        super().__init__()
        self.pooling, self.pnorm, self.collapse = pooling, pnorm, collapse

    def forward(self, x, mask=None):
        if mask is not None and x.dim() == 3:
            return self._masked(x, mask)
        dims = tuple(range(2, x.dim()))
        if self.pooling == "max":
            y = x.amax(dim=dims, keepdim=True)
        elif self.pooling == "avg":
            y = x.mean(dim=dims, keepdim=True)
        elif self.pooling == "sum":
            y = x.sum(dim=dims, keepdim=True)
        else:
            y = x.abs().pow(self.pnorm).sum(dim=dims, keepdim=True).pow(1.0 / self.pnorm)
        return torch.flatten(y, 1) if self.collapse else y

    def _masked(self, x, mask):
        m = mask.to(x.dtype).unsqueeze(1)  # [N, 1, T]
        steps = m.sum(2, keepdim=True)
        if bool((steps == 0).any()):
            empty = int((steps.flatten() == 0).nonzero()[0])
            raise ValueError(f"global_pool over a masked sequence: example {empty} has no real time step (its mask "
                             "is all 0)")
        if self.pooling == "max":
            y = x.masked_fill(m == 0, float("-inf")).amax(2, keepdim=True)
        elif self.pooling == "avg":
            y = (x * m).sum(2, keepdim=True) / steps
        elif self.pooling == "sum":
            y = (x * m).sum(2, keepdim=True)
        else:
            y = (x * m).abs().pow(self.pnorm).sum(2, keepdim=True).pow(1.0 / self.pnorm)
        return torch.flatten(y, 1) if self.collapse else y

    def output_mask(self, mask):
        return None  # the time steps are reduced away


class Merge(nn.Module):
    """Concatenation along ``axis`` (dim 1, channels/features, by default), in the order the inputs are listed."""

    def __init__(self, axis: int = 1):
        super().__init__()
        self.axis = axis

    def forward(self, *xs):
        return xs[0] if len(xs) == 1 else torch.cat(xs, dim=self.axis)

    def extra_repr(self):
        return "" if self.axis == 1 else f"axis={self.axis}"


class ElementWise(nn.Module):
    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, *xs):
        if self.op == "subtract":
            return xs[0] - xs[1]
        if self.op == "divide":
            return xs[0] / xs[1]
        out = xs[0]
        for x in xs[1:]:
            if self.op in ("add", "average"):
                out = out + x
            elif self.op == "product":
                out = out * x
            elif self.op == "min":
                out = torch.minimum(out, x)
            else:
                out = torch.maximum(out, x)
        return out / len(xs) if self.op == "average" else out

    def extra_repr(self):
        return self.op


class L2Normalize(nn.Module):
    """``x / max(||x||_2, eps)`` per example over ``dims`` (default: every dim but the batch)."""

    def __init__(self, dims: Sequence[int] | None, eps: float):
        super().__init__()
        self.dims, self.eps = (tuple(dims) if dims else None), eps

    def forward(self, x):
        dims = self.dims or tuple(range(1, x.dim()))
        if len(dims) == 1:
            return F.normalize(x, 2.0, dims[0], self.eps)
        norm = torch.linalg.vector_norm(x, 2, dim=dims, keepdim=True)
        return x / norm.clamp_min(self.eps)

    def extra_repr(self):
        return f"dims={self.dims or 'all but batch'}, eps={self.eps}"


class Subset(nn.Module):
    """Features/channels ``start..end`` inclusive along dim 1 (DL4J SubsetVertex)."""

    def __init__(self, start: int, end: int):
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x):
        return x[:, self.start: self.end + 1]

    def extra_repr(self):
        return f"{self.start}..{self.end}"


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class Shift(nn.Module):
    def __init__(self, amount: float):
        super().__init__()
        self.amount = amount

    def forward(self, x):
        return x + self.amount


class Reshape(nn.Module):
    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return str(self.shape)


class L2Distance(nn.Module):
    """DL4J L2Vertex: per-example Euclidean distance of two inputs, shape [N, 1]."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, a, b):
        return torch.linalg.vector_norm((a - b).flatten(1), 2, dim=1, keepdim=True)


class CosineSimilarity(nn.Module):
    """Per-example cosine similarity of two inputs over all their values, shape [N, 1]:
    ``a·b / max(||a||·||b||, eps)`` (torch.nn.functional.cosine_similarity's definition)."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, a, b):
        return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=self.eps).unsqueeze(1)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Flatten(nn.Module):
    """DL4J CnnToFeedForwardPreProcessor: [N, C, H, W] -> [N, C·H·W] in C order."""

    def forward(self, x):
        return torch.flatten(x, 1)


class Unflatten(nn.Module):
    """DL4J FeedForwardToCnnPreProcessor: [N, C·H·W] -> [N, C, H, W] in C order."""

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return str(list(self.shape))


class Stack(nn.Module):
    """DL4J StackVertex: the inputs one after another along the batch dimension ([k·N, ...])."""

    def forward(self, *xs):
        return torch.cat(xs, dim=0)


class Unstack(nn.Module):
    """DL4J UnstackVertex(from, stackSize): the ``index``-th of ``count`` equal slices along the batch dimension."""

    def __init__(self, index: int, count: int):
        super().__init__()
        self.index, self.count = index, count

    def forward(self, x):
        n = x.shape[0] // self.count
        return x[self.index * n:(self.index + 1) * n]

    def extra_repr(self):
        return f"{self.index} of {self.count}"


class PoolHelper(nn.Module):
    """DL4J PoolHelperVertex: drops the first row and column (a Caffe-import fix)."""

    def forward(self, x):
        return x[:, :, 1:, 1:]


def same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int, int]:
    """DL4J Same mode along one dim: (out, pad_before, pad_after); extra pixel after, negatives clamped to 0."""
    k_eff = k + (k - 1) * (d - 1)
    out = math.ceil(n / s)
    total = (out - 1) * s + k_eff - n
    before = int(total / 2)  # Java integer division truncates toward zero
    after = total - before
    return out, max(before, 0), max(after, 0)
