"""Built-in recurrent layer types: DL4J's LSTM, GravesLSTM (peepholes) and SimpleRnn, and a GRU (an extension), each
with one direction or two (DL4J's Bidirectional wrapper, here the key ``bidirectional``).

A sequence is ``[size, T]`` per example: features first, time last, DL4J's NCW layout (SEMANTICS-SEQUENCES.md §1.1);
each layer maps ``[n_in, T]`` to ``[out, T]`` (``[2·out, T]`` when two directions are concatenated). Parameters are
in torch's layout (:mod:`graphspec.layers.recurrent_modules` documents the mapping to DL4J's W, RW and b).
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

from pydantic import Field

from . import recurrent_modules as R
from .attention import _need_sequence
from .base import ActivationName, Inferred, ParamShape, Params, Size, VertexType, WeightInitName, builtin
from .types import _check_given
from .weight_init import init_

#: DL4J Bidirectional's modes (SEMANTICS-SEQUENCES.md §5.3); MACs per output value of combining the directions.
COMBINE_MACS = {None: 0, "concat": 0, "add": 1, "mul": 1, "average": 2}


def _with_reverse(*names: str) -> tuple[str, ...]:
    """Parameter names of both directions (the backward one's end in ``_reverse``)."""
    return names + tuple(n + R.DIRECTIONS[1] for n in names)


class RecurrentParams(Params):
    out: Size
    in_: Optional[Size] = Field(None, alias="in")
    # DL4J's recurrent layers inherit the global activation (sigmoid); its examples all set tanh, which the fused
    # kernels need (SEMANTICS-SEQUENCES.md §3.4): tanh is graphspec's default, not taken from `defaults`
    activation: ActivationName = "tanh"
    weight_init: WeightInitName
    weight_init_recurrent: Optional[WeightInitName] = None  # DL4J's weightInitRecurrent; default: weight_init
    # DL4J ignores the global biasInit for recurrent layers (their biases start at 0, §3.4, §5.1): not inherited
    bias_init: float = 0.0
    bidirectional: Optional[Literal["concat", "add", "mul", "average"]] = None


class GatedParams(RecurrentParams):
    gate_activation: ActivationName = "sigmoid"


class LSTMParams(GatedParams):
    forget_gate_bias_init: float = 1.0  # DL4J's forgetGateBiasInit


class _Recurrent(VertexType):
    """What the recurrent types share: shape rules, parameter shapes from the module, MACs and initialisation."""

    Module: ClassVar[type[R.Recurrent]]
    uses = ("weight_init",)
    weight_params, bias_params = _with_reverse("weight_ih", "weight_hh"), _with_reverse("bias")
    counts = ("steps",)

    def infer(self, p, in_shapes):
        n_in, steps = _need_sequence(in_shapes[0])
        _check_given(p.in_, n_in, "in", "features")
        width = p.out * (2 if p.bidirectional == "concat" else 1)
        return Inferred((width, steps), n_in, width, {"steps": steps})

    def param_shapes(self, p, inf):
        one = self.Module.shapes(inf.n_in, p.out)
        return [ParamShape(name + suffix, shape, True) for suffix in self._suffixes(p) for name, shape in one.items()]

    def macs(self, p, inf):
        # every weight multiplies once per step and direction (the input and recurrent matrix products, the
        # peepholes); biases, activations and the gates' element-wise products are not counted, as for dense
        weights = sum(math.prod(shape) for name, shape in self.Module.shapes(inf.n_in, p.out).items()
                      if name in self.weight_params)
        steps = inf.info["steps"]
        return steps * (len(self._suffixes(p)) * weights + COMBINE_MACS[p.bidirectional] * p.out)

    def build(self, p, inf):
        return self.Module(inf.n_in, p.out, p.bidirectional, p.activation, p.gate_activation)

    def init(self, module, p, inf, generator):
        inputs, recurrent = self.fans(inf.n_in, p.out)
        for suffix in self._suffixes(p):
            init_(getattr(module, "weight_ih" + suffix), p.weight_init, *inputs, generator)
            init_(getattr(module, "weight_hh" + suffix), p.weight_init_recurrent or p.weight_init, *recurrent,
                  generator)
            self.init_biases(module, p, suffix)

    def fans(self, n_in: int, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(fan_in, fan_out) of the input and of the recurrent weights: DL4J's LSTM uses (n, n_in + n) for both
        (SEMANTICS-SEQUENCES.md §3.4, §12.1)."""
        return (n, n_in + n), (n, n_in + n)

    def init_biases(self, module, p, suffix: str) -> None:
        getattr(module, "bias" + suffix).data.fill_(p.bias_init)

    @staticmethod
    def _suffixes(p) -> tuple[str, ...]:
        return R.DIRECTIONS if p.bidirectional else R.DIRECTIONS[:1]


_BIDIRECTIONAL_DOC = (" `bidirectional: concat|add|mul|average` adds a backward direction (DL4J's Bidirectional "
                      "wrapper; parameters `*_reverse`), combined as DL4J's modes: concat gives [2·out, T]. A mask "
                      "[N, T] zeroes padded steps' outputs and state (DL4J's masked LSTM), so padding never changes "
                      "a real step.")


@builtin
class LSTMLayer(_Recurrent):
    name, dl4j = "lstm", "LSTM"
    Params = LSTMParams
    Module = R.LSTM
    doc = ("LSTM without peepholes, [in, T] -> [out, T] (DL4J's LSTM): parameters as torch's nn.LSTM (gates i, f, g, "
           "o; one bias, DL4J's b), `activation` (tanh) for the candidate and cell output, `gate_activation` "
           "(sigmoid), forget-gate bias `forget_gate_bias_init` (1), other biases `bias_init` (0); torch's fused "
           "kernel with the default activations." + _BIDIRECTIONAL_DOC)

    def init_biases(self, module, p, suffix):
        bias = getattr(module, "bias" + suffix).data
        bias.fill_(p.bias_init)
        bias[p.out:2 * p.out] = p.forget_gate_bias_init  # torch's gate order (i, f, g, o): the second block


@builtin
class GravesLSTMLayer(LSTMLayer):
    name, dl4j = "graves_lstm", "GravesLSTM"
    Module = R.GravesLSTM
    weight_params = _with_reverse("weight_ih", "weight_hh", "peephole")
    doc = ("LSTM with peepholes, [in, T] -> [out, T] (DL4J's GravesLSTM): `lstm`'s parameters plus `peephole` [3, "
           "out] (to the forget, output and input gates, DL4J's order), initialised like the recurrent weights; "
           "always a step loop. DL4J's GravesBidirectionalLSTM is `bidirectional: add`." + _BIDIRECTIONAL_DOC)

    def init(self, module, p, inf, generator):
        super().init(module, p, inf, generator)
        _, recurrent = self.fans(inf.n_in, p.out)
        for suffix in self._suffixes(p):  # DL4J's last three columns of RW: the recurrent scheme and fans
            init_(getattr(module, "peephole" + suffix), p.weight_init_recurrent or p.weight_init, *recurrent,
                  generator)


@builtin
class SimpleRnnLayer(_Recurrent):
    name, dl4j = "simple_rnn", "SimpleRnn"
    Params = RecurrentParams
    Module = R.SimpleRnn
    doc = ("Fully connected recurrence h_t = activation(W x_t + R h_{t-1} + b), [in, T] -> [out, T] (DL4J's "
           "SimpleRnn): parameters as torch's nn.RNN with one bias; torch's fused kernel for tanh and relu."
           + _BIDIRECTIONAL_DOC)

    def build(self, p, inf):
        return self.Module(inf.n_in, p.out, p.bidirectional, p.activation)

    def fans(self, n_in, n):
        return (n_in, n), (n, n)  # DL4J's SimpleRnn: W (nIn, nOut), RW (nOut, nOut) (§5.1)


@builtin
class GRULayer(_Recurrent):
    name, dl4j = "gru", "GRU"  # not in DL4J (SEMANTICS-SEQUENCES.md §5.2): an extension
    Params = GatedParams
    Module = R.GRU
    bias_params = _with_reverse("bias_ih", "bias_hh")
    doc = ("Gated recurrent unit, [in, T] -> [out, T], exactly torch's nn.GRU (gates r, z, n; both of torch's "
           "biases, `bias_init` on bias_ih) with `activation` (tanh) and `gate_activation` (sigmoid); initialised "
           "like DL4J's LSTM (not in DL4J)." + _BIDIRECTIONAL_DOC)

    def init_biases(self, module, p, suffix):
        getattr(module, "bias_ih" + suffix).data.fill_(p.bias_init)
        getattr(module, "bias_hh" + suffix).data.zero_()
