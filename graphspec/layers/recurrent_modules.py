"""The torch modules behind the recurrent layer types (:mod:`graphspec.layers.recurrent`): DL4J's LSTM, GravesLSTM
(peepholes) and SimpleRnn, and a GRU, each with one direction or two (DL4J's Bidirectional).

Sequences are ``[N, size, T]``: features first, time last (DL4J's NCW). torch's recurrent kernels want time-major
rows ``[T, N, size]``; each module permutes to them (a view), runs, and permutes back (a view again). The output
therefore stays time-major in memory, so a stacked recurrent layer reads it without a copy.

Parameters are kept in torch's layout and gate order (``weight_ih [G·n, n_in]``, ``weight_hh [G·n, n]``), one set per
direction; the backward direction's names end in ``_reverse``. With the default activations the fused kernels that
``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` call run the whole sequence (cuDNN on a GPU); other activations, GravesLSTM's
peepholes and every masked call run an explicit loop over the time steps.

Masks ``[N, T]`` (1: a real step, 0: padding) follow DL4J's masked LSTM (SEMANTICS-SEQUENCES.md §2.3): after each
step the state is multiplied by the step's mask, so a padded step outputs zeros and the next step starts from a
zero state. Padding before or after an example's real steps therefore never changes them, in either direction.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import activations

#: The name suffix of each direction's parameters: forward, then backward (torch's ``_reverse``).
DIRECTIONS = ("", "_reverse")


def _function(name: str):
    """The activation called by the step loop (identity is ``None`` in the table, a function here)."""
    f = activations.get(name)
    return (lambda x: x) if f is None else f


def combine(mode: str, forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """DL4J Bidirectional's modes on time-major rows [T, N, n] (SEMANTICS-SEQUENCES.md §5.3)."""
    if mode == "concat":
        return torch.cat([forward, backward], dim=-1)  # features: the forward direction's first
    if mode == "add":
        return forward + backward
    if mode == "mul":
        return forward * backward
    return 0.5 * (forward + backward)  # average


def _mask_rows(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A mask [N, T] as time-major factors [T, N, 1] in x's dtype, after checking its shape."""
    n, t = x.shape[0], x.shape[2]
    if tuple(mask.shape) != (n, t):
        raise ValueError(f"expected a mask [N, T] = [{n}, {t}] (1: a real step, 0: padding) for a sequence "
                         f"{list(x.shape)}; received {list(mask.shape)}")
    return mask.to(x.dtype).t().unsqueeze(-1)


class Recurrent(nn.Module):
    """One or two directions of a recurrent layer on ``[N, n_in, T]``, giving ``[N, width, T]``.

    A subclass defines one direction's parameters (:meth:`shapes`), how the input enters every step at once
    (:meth:`_project`: one matrix product for the whole sequence), one step (:meth:`_step`), and, where torch has
    one, the fused kernel (:meth:`_fused`).
    """

    state_size: ClassVar[int] = 1  # tensors in the state: (h,), or (h, c) for an LSTM
    gated: ClassVar[bool] = True  # has gates, computed with ``gate_activation``
    # Carried state (truncated BPTT, stateful inference; SEMANTICS-SEQUENCES.md §11): with ``carry`` on, a forward
    # starts from the state the previous one ended with (zeros the first time and after ``reset_state()``) and
    # keeps its own final state, detached, so that no gradient crosses from one call to the next.
    carry: bool = False
    carried: tuple | None = None

    def __init__(self, n_in: int, n_out: int, bidirectional: str | None = None, activation: str = "tanh",
                 gate_activation: str = "sigmoid"):
        super().__init__()
        self.n_in, self.n_out, self.bidirectional = n_in, n_out, bidirectional
        self.activation, self.gate_activation = activation, gate_activation
        self._act, self._gate = _function(activation), _function(gate_activation)
        shapes = self.shapes(n_in, n_out)
        self._names = tuple(shapes)
        for suffix in self.suffixes:
            for name, shape in shapes.items():
                self.register_parameter(name + suffix, nn.Parameter(torch.empty(shape)))

    @classmethod
    def shapes(cls, n_in: int, n: int) -> dict[str, tuple[int, ...]]:
        """One direction's parameters, name -> shape, in the order the step functions unpack them."""
        raise NotImplementedError

    @property
    def suffixes(self) -> tuple[str, ...]:
        return DIRECTIONS if self.bidirectional else DIRECTIONS[:1]

    def direction(self, suffix: str) -> list[torch.Tensor]:
        """One direction's parameters (``suffix`` from :data:`DIRECTIONS`), in the order of :meth:`shapes`."""
        return [getattr(self, name + suffix) for name in self._names]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.permute(2, 0, 1)  # [T, N, n_in], a view
        start = self._start(rows)
        if mask is None and self.fusable():
            y, end = self._fused(rows, start)  # [T, N, directions·n], the directions concatenated
            if self.bidirectional not in (None, "concat"):
                y = combine(self.bidirectional, *y.chunk(2, dim=-1))
        else:
            factors = None if mask is None else _mask_rows(mask, x)
            runs = [self._loop(rows, factors, suffix, suffix != "", start) for suffix in self.suffixes]
            end = runs[0][1]
            y = runs[0][0] if len(runs) == 1 else combine(self.bidirectional, *(r[0] for r in runs))
        if self.carry:
            self.carried = tuple(s.detach() for s in end)
        return y.permute(1, 2, 0)  # [N, width, T], still time-major in memory

    def set_carry(self, on: bool) -> None:
        """Carry the state from one forward to the next (on) or start every forward from zeros (off); either way
        the carried state is dropped."""
        if on and self.bidirectional:
            raise ValueError("a bidirectional layer cannot carry its state from one part of a sequence to the next "
                             "(its backward direction reads the sequence's end first); DL4J refuses it too")
        self.carry, self.carried = on, None

    def reset_state(self) -> None:
        self.carried = None

    def _start(self, rows: torch.Tensor) -> tuple:
        """The state before the first step: the carried one, or zeros."""
        if self.carry and self.carried is not None:
            if self.carried[0].shape[0] != rows.shape[1]:
                raise ValueError(f"the carried state is for a batch of {self.carried[0].shape[0]}; this batch has "
                                 f"{rows.shape[1]} (reset the state between batches of different sizes)")
            return self.carried
        return tuple(self._zero_state(rows) for _ in range(self.state_size))

    def _stacked(self, start: tuple) -> list:
        """The start state in torch's kernels' layout: [directions, N, n] per state tensor."""
        return [torch.stack([s] * len(self.suffixes)) for s in start]

    def fusable(self) -> bool:
        """Whether torch's fused kernel computes this layer (its activations are the kernel's)."""
        return False

    def _fused(self, rows: torch.Tensor, start: tuple) -> tuple[torch.Tensor, tuple]:
        """torch's kernel over every step from ``start``: ([T, N, directions·n], the first direction's final
        state)."""
        raise NotImplementedError

    def _fused_weights(self) -> list[torch.Tensor]:
        """torch's flat weight list: per direction (w_ih, w_hh, b_ih, b_hh)."""
        return [w for suffix in self.suffixes for w in self._torch_weights(self.direction(suffix))]

    @staticmethod
    def _torch_weights(w: list[torch.Tensor]) -> list[torch.Tensor]:
        # DL4J's layers have one bias; torch's kernels add two: the second is zero
        w_ih, w_hh, bias = w
        return [w_ih, w_hh, bias, torch.zeros_like(bias)]

    def _zero_state(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.new_zeros((rows.shape[1], self.n_out))

    def _loop(self, rows, factors, suffix: str, reverse: bool, state: tuple) -> tuple[torch.Tensor, tuple]:
        """One direction over every step from ``state``: ([T, N, n], the final state). ``factors`` [T, N, 1] is
        the mask, or None."""
        w = self.direction(suffix)
        projected = self._project(rows, w)  # the input's share of every step, in one matrix product
        outputs: list = [None] * len(rows)
        for t in (reversed(range(len(rows))) if reverse else range(len(rows))):
            state = self._step(projected[t], state, w)
            if factors is not None:  # §2.3: a padded step outputs 0, and the next step starts from 0
                state = tuple(s * factors[t] for s in state)
            outputs[t] = state[0]
        return torch.stack(outputs), state

    def _project(self, rows, w) -> torch.Tensor:
        return F.linear(rows, w[0], w[2])  # weight_ih and the (one) bias

    def _step(self, projected, state, w) -> tuple:
        raise NotImplementedError

    def extra_repr(self):
        gates = f", gate_activation={self.gate_activation}" if self.gated else ""
        both = f", bidirectional={self.bidirectional}" if self.bidirectional else ""
        return f"{self.n_in}, {self.n_out}, activation={self.activation}{gates}{both}"


class LSTM(Recurrent):
    """DL4J's LSTM without peepholes (SEMANTICS-SEQUENCES.md §3) in torch's layout: gate blocks (i, f, g, o) of
    ``weight_ih [4n, n_in]``, ``weight_hh [4n, n]`` and the one ``bias [4n]`` (DL4J's blocks 3, 1, 0, 2 of W, RW, b,
    transposed: §3.3). g and the cell output use ``activation``, i, f, o use ``gate_activation``."""

    state_size = 2

    @classmethod
    def shapes(cls, n_in, n):
        return {"weight_ih": (4 * n, n_in), "weight_hh": (4 * n, n), "bias": (4 * n,)}

    def fusable(self):
        return self.activation == "tanh" and self.gate_activation == "sigmoid"

    def _fused(self, rows, start):
        # what nn.LSTM.forward calls: (input, (h0, c0), weights, has_biases, layers, dropout, train, bidirectional,
        # batch_first)
        y, h, c = torch.lstm(rows, self._stacked(start), self._fused_weights(), True, 1, 0.0, self.training,
                             len(self.suffixes) == 2, False)
        return y, (h[0], c[0])

    def _step(self, projected, state, w):
        h, c = state
        i, f, g, o = (projected + F.linear(h, w[1])).chunk(4, dim=1)
        c = self._gate(f) * c + self._gate(i) * self._act(g)
        return self._gate(o) * self._act(c), c


class GravesLSTM(LSTM):
    """DL4J's GravesLSTM (SEMANTICS-SEQUENCES.md §4): the LSTM above plus per-unit peepholes ``peephole [3, n]``, rows
    in DL4J's order of RW's last three columns: forget gate (reads c_{t-1}), output gate (reads the new c_t), input
    gate (reads c_{t-1}). torch has no fused kernel for it."""

    @classmethod
    def shapes(cls, n_in, n):
        return {**super().shapes(n_in, n), "peephole": (3, n)}

    def fusable(self):
        return False

    def _step(self, projected, state, w):
        h, c = state
        to_forget, to_output, to_input = w[3]
        zi, zf, zg, zo = (projected + F.linear(h, w[1])).chunk(4, dim=1)
        forget, write = self._gate(zf + c * to_forget), self._gate(zi + c * to_input)
        c = forget * c + write * self._act(zg)
        return self._gate(zo + c * to_output) * self._act(c), c


class SimpleRnn(Recurrent):
    """DL4J's SimpleRnn (SEMANTICS-SEQUENCES.md §5.1): h_t = φ(W x_t + R h_{t-1} + b), ``weight_ih [n, n_in]``
    (DL4J's W transposed), ``weight_hh [n, n]`` (RW transposed), ``bias [n]``."""

    gated = False

    @classmethod
    def shapes(cls, n_in, n):
        return {"weight_ih": (n, n_in), "weight_hh": (n, n), "bias": (n,)}

    def fusable(self):
        return self.activation in ("tanh", "relu")

    def _fused(self, rows, start):
        kernel = torch.rnn_tanh if self.activation == "tanh" else torch.rnn_relu
        y, h = kernel(rows, self._stacked(start)[0], self._fused_weights(), True, 1, 0.0, self.training,
                      len(self.suffixes) == 2, False)
        return y, (h[0],)

    def _step(self, projected, state, w):
        return (self._act(projected + F.linear(state[0], w[1])),)


class GRU(Recurrent):
    """A GRU exactly as torch's ``nn.GRU`` (not in DL4J, SEMANTICS-SEQUENCES.md §5.2): gate blocks (r, z, n) of
    ``weight_ih [3n, n_in]``, ``weight_hh [3n, n]``, and both of torch's biases, since ``bias_hh``'s n block sits
    inside the reset product and is not redundant: n = φ(W_n x + b_in + r ⊙ (R_n h + b_hn)),
    h' = (1 − z) ⊙ n + z ⊙ h."""

    @classmethod
    def shapes(cls, n_in, n):
        return {"weight_ih": (3 * n, n_in), "weight_hh": (3 * n, n), "bias_ih": (3 * n,), "bias_hh": (3 * n,)}

    def fusable(self):
        return self.activation == "tanh" and self.gate_activation == "sigmoid"

    @staticmethod
    def _torch_weights(w):
        return list(w)  # already torch's four

    def _fused(self, rows, start):
        y, h = torch.gru(rows, self._stacked(start)[0], self._fused_weights(), True, 1, 0.0, self.training,
                         len(self.suffixes) == 2, False)
        return y, (h[0],)

    def _step(self, projected, state, w):
        h = state[0]
        xr, xz, xn = projected.chunk(3, dim=1)
        hr, hz, hn = F.linear(h, w[1], w[3]).chunk(3, dim=1)
        reset, keep = self._gate(xr + hr), self._gate(xz + hz)
        candidate = self._act(xn + reset * hn)
        return (candidate + keep * (h - candidate),)
