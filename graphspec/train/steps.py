"""One training iteration under each semantics.

``dl4j`` reproduces DL4J 0.9.x's pipeline literally (SEMANTICS.md §5-6): minibatch-summed gradients, the center
update ΔC, per-layer gradient normalisation that includes ΔC, DL4J's updaters, l1/l2 added after the updater on
weights only, everything divided by N, ``θ ← θ − update``; score = (Σ ℓ_i + λ/2 Σ‖x−c‖² + Σ ½·l2‖W‖²) / N.

``pytorch`` is what a practitioner uses: mean-reduced losses, ``torch.optim`` optimizers with weight decay on
weights only, learning-rate schedules, and the center-loss paper's center rule ``c_j ← c_j − α·Δc_j``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..compiler import call, subgraph
from ..graph import MASK, fits
from ..errors import GraphspecError, did_you_mean
from ..registry import ShapeError, all_types, lookup
from .updaters import DL4JUpdater


@dataclass
class Head:
    """A loss being trained: the output whose target it reads (``name``), the vertex whose activation it takes
    (``input``), the module and registry entry that compute it, and its weight in the total loss."""

    name: str
    input: str
    module: torch.nn.Module
    entry: object
    cfg: object
    weight: float = 1.0
    vertex: object = None  # the spec's vertex, for a loss head written in the spec (None: from the recipe)

    @property
    def is_center(self) -> bool:
        return self.entry.center_loss

    def loss(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example losses; ``mask`` [N, T] (per-step losses only) zeroes the padded steps' terms."""
        if mask is None:
            return self.entry.training_loss(self.cfg, self.module, x, target)
        return self.entry.training_loss(self.cfg, self.module, x, target, mask=mask)


@dataclass
class Layer:
    """A vertex with trainable parameters and its per-layer training settings."""

    name: str
    params: dict[str, torch.nn.Parameter]
    vertex: object
    updaters: dict[str, DL4JUpdater] = field(default_factory=dict)


def heads_of(model, losses: dict | None = None) -> list[Head]:
    """The losses training optimises: every output that is a loss head in the spec, and every output the recipe's
    ``losses`` give a loss (``{output: {loss: triplet, margin: 0.2, weight: 1.0}}``); ``weight`` scales either."""
    spec, losses = model.graphspec.spec, dict(losses or {})
    heads = spec_heads(model, losses)
    heads += [_recipe_head(model, n, losses[n]) for n in spec.outputs
              if n in losses and losses[n].loss and not spec.vertices[n].entry.loss_head]
    if not heads:
        kinds = " or ".join(sorted(name for name, entry in all_types().items() if entry.loss_head))
        raise GraphspecError(f"cannot train '{spec.name}': none of its outputs ({', '.join(spec.outputs)}) is an "
                             f"output layer ({kinds}) with a loss; give one in the spec or in the recipe's 'losses'")
    return heads


def spec_heads(model, losses: dict | None = None) -> list[Head]:
    """The outputs that are loss heads in the spec (weights from the recipe's ``losses``)."""
    spec, losses = model.graphspec.spec, dict(losses or {})
    for name in losses:
        if name not in spec.outputs:
            raise GraphspecError(f"recipe 'losses': '{name}' is not an output of '{spec.name}'"
                                 f"{did_you_mean(name, spec.outputs)}; outputs: {', '.join(spec.outputs)}")
    heads = []
    for n in spec.outputs:
        v, given = spec.vertices[n], losses.get(n)
        if v.entry.loss_head:
            if given is not None and given.loss:
                raise GraphspecError(f"recipe 'losses': '{n}' has its own loss in the spec ({v.type}, {v.cfg.loss}); "
                                     "the recipe may set only its 'weight'")
            heads.append(Head(n, v.inputs[0], model.get_submodule(v.module), v.entry, v.cfg,
                              given.weight if given else 1.0, v))
    return heads


def _recipe_head(model, output: str, given) -> Head:
    """A `loss` layer on ``output``, from the recipe (the spec stays as it is)."""
    from pydantic import ValidationError
    entry = lookup("loss")
    settings = {k: v for k, v in given.model_dump().items() if k != "weight" and v is not None}
    try:
        cfg = entry.Params.model_validate(settings)
        inf = entry.infer(cfg, [model.graphspec.analysis.shapes[output]])
    except (ValidationError, ShapeError) as e:
        raise GraphspecError(f"recipe 'losses': '{output}': {e}") from e
    return Head(output, output, entry.build(cfg, inf), entry, cfg, given.weight)


def layers_of(model) -> list[Layer]:
    info = model.graphspec
    out = []
    for name in info.analysis.order:
        if name in info.frozen or info.spec.vertices[name].shares:
            continue  # a shared layer is trained once, through its owner, with the gradients of every use
        params = {k: p for k, p in model.get_submodule(name).named_parameters(recurse=False) if p.requires_grad}
        if params:
            out.append(Layer(name, params, info.spec.vertices[name]))
    return out


def center_delta(centers: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ctx=None,
                 divide: bool = True) -> torch.Tensor:
    """Σ_{i: y_i = j} (c_j − x_i) / (1 + n_j) for every class j (rows of absent classes are 0); sums and counts are
    taken over all ranks, so every rank applies the same update. ``divide=False`` omits the (1 + n_j)."""
    diff = torch.zeros_like(centers).index_add_(0, y, centers[y] - x)
    if not divide:
        return ctx.reduce_sum(diff) if ctx is not None else diff
    counts = torch.bincount(y, minlength=centers.shape[0]).to(centers.dtype)
    if ctx is not None and ctx.active:
        ctx.reduce_sum(diff)
        ctx.reduce_sum(counts)
    return diff / (1.0 + counts).unsqueeze(1)


def autocast(precision: str, device: str = "cpu"):
    """The forward pass's precision context: nothing for fp32, bfloat16 autocast for bf16, float16 for fp16 (CUDA;
    training scales its loss: :class:`TorchStep`). Backward and the updates run outside it, on float32 parameters,
    as torch.amp recommends."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class LossModule(torch.nn.Module):
    """The network up to its output layers plus their losses, as one module (what DDP wraps).

    ``forward(x, y)`` returns the *sum* over the examples of the data losses and center terms, and the detached
    inputs of the center-loss heads (for the center update). A per-step loss (rnn_output, rnn_loss) reads its
    output's label mask ``y["<output>_mask"]`` if the data has one, else the mask that reaches it from the inputs
    (DL4J's RnnLossLayer rule; DL4J's RnnOutputLayer would train on the padding instead — docs/training.md).
    """

    def __init__(self, model: torch.nn.Module, heads: list[Head]):
        super().__init__()
        self.trunk = subgraph(model, sorted({h.input for h in heads}), with_masks=True)
        self.head_modules = torch.nn.ModuleDict({h.name: h.module for h in heads})
        self._heads, self._spec = heads, model.graphspec.spec

    def forward(self, x, y):
        """``x``: the input tensor, a tuple in the spec's input order, or a dict by input name with masks;
        ``y``: the target, or a dict of targets (and label masks) by output name."""
        feats, reached = call(self.trunk, self._spec, x)
        total = 0.0
        inputs = {}
        for h in self._heads:
            e, target = feats[h.input].float(), target_of(y, h.name)
            mask = label_mask(y, h.name, reached[h.input]) if h.entry.per_position else None
            with torch.autocast(e.device.type, enabled=False):  # heads, losses and centers stay float32
                total = total + h.weight * h.loss(e, target, mask).sum()
                if h.is_center:
                    e, c = torch.flatten(e, 1), h.module.centers
                    total = total + h.weight * h.module.lambda_ / 2 * ((e - c[target].detach()) ** 2).sum()
                    inputs[h.name] = e.detach()
        return total, inputs


def label_mask(y, name: str, reached):
    """The mask of output ``name``'s per-step loss: its label mask in the data, else the one that reached it."""
    given = y.get(name + MASK) if isinstance(y, dict) else None
    return given if given is not None else reached


def check_targets(heads: list[Head], y, shapes: dict) -> None:
    """Refuse, before any training, targets that do not fit their outputs (``shapes``: per example, None for a
    dimension that follows a variable sequence length): a missing target, class indices out of an output layer's
    range, values of another shape than the output, a contrastive target that is not 0/1."""
    for h in heads:
        t = target_of(y, h.name)
        loss = getattr(h.cfg, "loss", None)
        where = f"the target of '{h.name}'"
        # a per-position loss reads one class index per position: [N, H, W] for cnn_loss's [C, H, W] output, [N, T]
        # for rnn_output's and rnn_loss's [C, T]
        positions = tuple(shapes[h.name][1:]) if h.entry.per_position else ()
        wanted = ", ".join(["N", *map(_dim, positions)])
        if t.is_floating_point():
            want = (1,) if loss == "contrastive" else tuple(shapes[h.name])
            if loss != "contrastive" and not fits(t.shape[1:], want):
                raise GraphspecError(f"{where} is [N, {', '.join(map(str, t.shape[1:]))}] values; the output is "
                                     f"[{', '.join(map(_dim, want))}] per example (or give class indices [{wanted}])")
            continue
        if t.dim() != 1 + len(positions) or not fits(t.shape[1:], positions):
            received = ", ".join(["N", *map(str, t.shape[1:])])
            raise GraphspecError(f"{where} is an integer array of shape [{received}]; class indices are [{wanted}]")
        classes = h.module.weight.shape[0] if hasattr(h.module, "weight") else None
        classes = shapes[h.name][0] if positions else classes
        if classes is not None and len(t) and (int(t.min()) < 0 or int(t.max()) >= classes):
            raise GraphspecError(f"{where} holds class indices {int(t.min())}..{int(t.max())}; the output layer has "
                                 f"{classes} classes (0..{classes - 1})")
        if loss == "contrastive" and len(t) and not bool(((t == 0) | (t == 1)).all()):
            raise GraphspecError(f"{where} must be 1 (same) or 0 (different) for the contrastive loss; received "
                                 f"values {sorted(set(t.tolist()))[:5]}")


def _dim(d) -> str:
    return "T" if d is None else str(d)


def batch_size(x) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, tuple) else x
    return first.shape[0]


def target_of(y, name: str) -> torch.Tensor:
    """The target of output ``name``: from a dict of targets by name, or the one target of single-target data."""
    if not isinstance(y, dict):
        return y
    if name not in y:
        raise GraphspecError(f"the data has no target for the output '{name}' (it has: {', '.join(y) or 'none'})")
    return y[name]


def _loss_module(model, heads, ctx):
    module = LossModule(model, heads)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    used = {id(p) for p in module.parameters() if p.requires_grad}
    return ctx.wrap(module, find_unused=bool(trainable - used))


class DL4JStep:
    """DL4J 0.9.x's fit iteration."""

    def __init__(self, model, ctx=None, precision: str = "fp32", losses: dict | None = None):
        from .distributed import Context
        self.model, self.heads, self.layers = model, heads_of(model, losses), layers_of(model)
        self.ctx = ctx or Context()
        self.precision = precision
        self.loss = _loss_module(model, self.heads, self.ctx)
        for layer in self.layers:
            layer.updaters = {k: DL4JUpdater(layer.vertex.training.updater) for k in layer.params}
        self.iteration = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, n: int | None = None) -> float:
        """One iteration on this rank's share (x, y) of a global minibatch of ``n`` examples."""
        self.model.train()
        n = n or batch_size(x)
        for p in self.model.parameters():
            p.grad = None
        with autocast(self.precision, self.ctx.device):
            loss, inputs = self.loss(x, y)
        (loss * self.ctx.world).backward()  # DDP averages over ranks: this makes it the global sum
        total = self.ctx.reduce_sum(loss.detach().clone())
        score = (total + self._regularisation()) / n
        extra = {name: self._center_update(name, e, target_of(y, name)) for name, e in inputs.items()}
        with torch.no_grad():
            for layer in self.layers:
                self._apply(layer, extra.get(layer.name), n)
        self.iteration += 1
        return float(score)

    def _center_update(self, name, x, y):
        module = next(h for h in self.heads if h.name == name).module
        if module.gradient_check:  # DL4J's gradient-check mode: λ·α·Σ(c_j − x_i), no (1+n_j)
            return center_delta(module.centers, x, y, self.ctx, divide=False) * module.alpha * module.lambda_
        return center_delta(module.centers, x, y, self.ctx) * module.alpha

    def _regularisation(self) -> torch.Tensor:
        total = torch.zeros((), device=self.ctx.device)
        for layer in self.layers:
            t = layer.vertex.training
            for k in layer.vertex.entry.weight_params:
                if k in layer.params:
                    w = layer.params[k].detach()
                    total = total + 0.5 * t.l2 * (w * w).sum() + t.l1 * w.abs().sum()
            for k in layer.vertex.entry.bias_params:
                if k in layer.params:
                    b = layer.params[k].detach()
                    total = total + 0.5 * t.l2_bias * (b * b).sum() + t.l1_bias * b.abs().sum()
        return total

    def _apply(self, layer: Layer, center_delta_: torch.Tensor | None, n: int) -> None:
        grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in layer.params.items()}
        if center_delta_ is not None:
            grads["centers"] = center_delta_
        t = layer.vertex.training
        grads = normalise(grads, t.gradient_normalization, t.gradient_normalization_threshold)
        module = self.model.get_submodule(layer.name)
        for k, g in grads.items():
            if k == "centers":
                module.centers.sub_(g / n)  # NoOp updater, then /N
                continue
            p = layer.params[k]
            update = layer.updaters[k].update(g, self.iteration)
            if k in layer.vertex.entry.weight_params:
                update = update + t.l2 * p + t.l1 * torch.sign(p)
            elif k in layer.vertex.entry.bias_params:
                update = update + t.l2_bias * p + t.l1_bias * torch.sign(p)
            p.sub_(update / n)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for layer in self.layers:
            for k, u in layer.updaters.items():
                for sk, v in u.state.items():
                    out[f"{layer.name}.{k}.{sk}"] = v
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for layer in self.layers:
            for k, u in layer.updaters.items():
                prefix = f"{layer.name}.{k}."
                device = layer.params[k].device  # a checkpoint from another device continues here
                u.state = {key[len(prefix):]: v.to(device, copy=True) for key, v in state.items()
                           if key.startswith(prefix)}


def normalise(grads: dict[str, torch.Tensor], mode: str, threshold: float) -> dict[str, torch.Tensor]:
    """DL4J GradientNormalization for one layer's gradients (including the center update ΔC)."""
    if mode == "none":
        return grads
    if mode == "clip_element_wise_absolute_value":
        return {k: g.clamp(-threshold, threshold) for k, g in grads.items()}
    if mode.endswith("per_layer"):
        norm = torch.sqrt(sum((g * g).sum() for g in grads.values()))
        if mode.startswith("renormalize"):
            return {k: g / norm for k, g in grads.items()}
        scale = threshold / norm if norm > threshold else 1.0
        return {k: g * scale for k, g in grads.items()}
    out = {}
    for k, g in grads.items():  # per parameter type
        norm = g.norm()
        if mode.startswith("renormalize"):
            out[k] = g / norm
        else:
            out[k] = g * (threshold / norm) if norm > threshold else g
    return out


class TorchStep:
    """Standard PyTorch training: mean losses, a torch.optim optimizer, the paper's center rule."""

    def __init__(self, model, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None = None, ctx=None,
                 precision: str = "fp32", losses: dict | None = None):
        from .distributed import Context
        self.model, self.heads, self.optimizer = model, heads_of(model, losses), optimizer
        self.ctx = ctx or Context()
        self.precision = precision
        self.loss = _loss_module(model, self.heads, self.ctx)
        self.clip = clip_grad_norm
        # float16 gradients underflow: scale the loss (torch.amp's GradScaler); bf16 and fp32 need no scaling
        self.scaler = torch.amp.GradScaler(torch.device(self.ctx.device).type, enabled=precision == "fp16")
        self.iteration = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, n: int | None = None) -> float:
        """One iteration on this rank's share (x, y) of a global minibatch of ``n`` examples (mean losses)."""
        self.model.train()
        n = n or batch_size(x)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.precision, self.ctx.device):
            loss, inputs = self.loss(x, y)
        self.scaler.scale(loss * (self.ctx.world / n)).backward()  # averaged over ranks by DDP: the global mean
        if self.clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.clip)
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed (the scale is then lowered)
        self.scaler.update()
        with torch.no_grad():
            for name, e in inputs.items():
                module = next(h for h in self.heads if h.name == name).module
                module.centers.sub_(module.alpha * center_delta(module.centers, e, target_of(y, name), self.ctx))
        self.iteration += 1
        return float(self.ctx.reduce_sum(loss.detach().clone()) / n)

    def state_dict(self):
        state = self.optimizer.state_dict()
        return {**state, "grad_scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else state

    def load_state_dict(self, state):
        state = dict(state)
        scaler = state.pop("grad_scaler", None)
        self.optimizer.load_state_dict(state)  # torch moves the saved state to each parameter's device
        _match_layouts(self.optimizer)
        if scaler is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded state tensor its parameter's memory layout. A checkpoint stores tensors contiguous, but a
    channels-last model's weights are not, and torch's fused optimizers read state and parameter as one flat
    array (a contiguous moment against a channels-last weight mixes up its elements: resumed runs drifted)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on the weights of conv/dense/output layers only (not biases, BN or centers)."""
    info = model.graphspec
    decay, no_decay = [], []
    for name in info.analysis.order:
        if name in info.frozen or info.spec.vertices[name].shares:
            continue
        entry = info.spec.vertices[name].entry
        for k, p in model.get_submodule(name).named_parameters(recurse=False):
            if p.requires_grad:
                (decay if k in entry.weight_params else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fused_if_possible(kind: type, groups: list[dict], **settings) -> torch.optim.Optimizer:
    """``kind(groups, fused=True, **settings)`` where torch has a fused kernel for every parameter (floating-point
    tensors on the CPU or a GPU), else the default (for-each) implementation. Same arithmetic to rounding (within
    1.2e-7 after 10 AdamW steps), one kernel per step instead of a dozen per tensor: NN4.Small2's AdamW step takes
    3 ms instead of 12 on the CPU (BENCHMARKS.md)."""
    try:
        return kind(groups, fused=True, **settings)
    except (RuntimeError, ValueError, TypeError):  # an unsupported device or dtype: torch says so at construction
        return kind(groups, **settings)
