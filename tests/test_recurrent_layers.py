"""The recurrent layer types, each against torch or a hand-written formula: lstm (DL4J's LSTM), graves_lstm
(GravesLSTM, peepholes), simple_rnn (SimpleRnn), gru (an extension) and their `bidirectional` modes; forward and
backward, parameter counts, MACs, DL4J's initialisation, masks, error messages and ONNX export.

Sequences are [size, T] per example (features first, time last, DL4J's NCW): a `recurrent` input. torch's
modules run batch-first [N, T, size], hence the transposes below.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import graphspec
from graphspec import SpecError, load_spec

N_IN, N_OUT, STEPS = 3, 4, 6


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors on a shared machine: one thread."""


def _doc(vertex: dict, size: int = N_IN, steps: int = STEPS, inputs: dict | None = None) -> dict:
    inputs = inputs or {"x": {"type": "recurrent", "size": size, "length": steps}}
    return {"version": 1, "name": "recurrent", "seed": 3, "inputs": inputs,
            "vertices": {"v": {**vertex, "inputs": ["x"]}}, "outputs": ["v"]}


def _layer(vertex: dict, size: int = N_IN, steps: int = STEPS) -> nn.Module:
    return graphspec.build(_doc(vertex, size, steps)).get_submodule("v")


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _randomise(module: nn.Module, seed: int = 1) -> None:
    """Non-trivial values for every parameter (biases start at 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _message(doc) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(doc)
    return e.value.problems[0].message


# --- the same as torch's modules, with the weights mapped -----------------------------------------------------------


TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "simple_rnn": nn.RNN}
# ours -> torch's per direction: DL4J's one bias is torch's bias_ih, with bias_hh zero (SEMANTICS-SEQUENCES.md §3.3)
TORCH_NAMES = {"weight_ih": "weight_ih_l0", "weight_hh": "weight_hh_l0", "bias": "bias_ih_l0",
               "bias_ih": "bias_ih_l0", "bias_hh": "bias_hh_l0"}


def _torch_twin(ours: nn.Module, type_name: str, **options) -> nn.Module:
    """torch's module computing what ``ours`` computes, its weights copied from ours."""
    twin = TORCH[type_name](ours.n_in, ours.n_out, batch_first=True, bidirectional=ours.bidirectional is not None,
                            **options)
    with torch.no_grad():
        for name, t in twin.named_parameters():
            t.zero_()  # bias_hh stays 0 where ours has one bias
        for name, t in ours.named_parameters():
            base, suffix = name.removesuffix("_reverse"), "_reverse" if name.endswith("_reverse") else ""
            twin.get_parameter(TORCH_NAMES[base] + suffix).copy_(t)
    return twin


def _batch_first(run, x):
    """torch's batch-first module on our [N, size, T]: [N, width, T]."""
    return run(x.transpose(1, 2))[0].transpose(1, 2)


def _grads(y, tensors):
    weights = torch.linspace(-1.0, 2.0, y.numel()).reshape(y.shape)  # every output counts differently
    return torch.autograd.grad((y * weights).sum(), tensors)


CASES = [("lstm", {}, {}), ("gru", {}, {}), ("simple_rnn", {}, {"nonlinearity": "tanh"}),
         ("simple_rnn", {"activation": "relu"}, {"nonlinearity": "relu"})]


@pytest.mark.parametrize("bidirectional", [None, "concat"])
@pytest.mark.parametrize("type_name, params, options", CASES, ids=["lstm", "gru", "simple_rnn-tanh", "simple_rnn-relu"])
def test_forward_and_gradients_equal_torch_with_weights_mapped(type_name, params, options, bidirectional):
    extra = {"bidirectional": bidirectional} if bidirectional else {}
    ours = _layer({"type": type_name, "out": N_OUT, **params, **extra})
    _randomise(ours)
    twin = _torch_twin(ours, type_name, **options)
    assert ours.fusable()  # the default activations run torch's fused kernel
    x = _randn(2, N_IN, STEPS).requires_grad_()
    ones = torch.ones(2, STEPS)
    for y in (ours(x), ours(x, mask=ones)):  # the fused kernel, then the step loop (any mask runs it)
        want = _batch_first(twin, x)
        assert y.shape == (2, N_OUT * (2 if bidirectional else 1), STEPS)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
        got_grads = _grads(y, [x, *ours.parameters()])
        want_grads = _grads(want, [x] + [twin.get_parameter(TORCH_NAMES[n.removesuffix("_reverse")] +
                                                            ("_reverse" if n.endswith("_reverse") else ""))
                                         for n, _ in ours.named_parameters()])
        for got, expected in zip(got_grads, want_grads):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("type_name, options", [("lstm", {}), ("gru", {}), ("simple_rnn", {})])
def test_parameter_counts_are_dl4j_s_and_torch_s_without_its_redundant_bias(type_name, options):
    for extra in ({}, {"bidirectional": "concat"}):
        doc = _doc({"type": type_name, "out": N_OUT, **extra})
        ours = graphspec.build(doc).get_submodule("v")
        twin = _torch_twin(ours, type_name, **options)
        directions = 2 if extra else 1
        gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[type_name]
        redundant = 0 if type_name == "gru" else directions * gates * N_OUT  # torch's bias_hh, zero for DL4J's layers
        total = graphspec.summarize(doc).total
        assert total == sum(p.numel() for p in twin.parameters()) - redundant
        if type_name != "gru":  # DL4J's count: gates·n·(nIn + n + 1) per direction (§3.1, §5.1)
            assert total == directions * gates * N_OUT * (N_IN + N_OUT + 1)


# --- DL4J's formulas in DL4J's layout -------------------------------------------------------------------------------


DL4J_BLOCK_OF_TORCH = (3, 1, 0, 2)  # torch's gates (i, f, g, o) are DL4J's blocks 3, 1, 0, 2 (§3.3)


def _dl4j_columns(torch_rows: torch.Tensor) -> torch.Tensor:
    """torch's [4n, k] (or [4n]) gate rows as DL4J's [k, 4n] (or [4n]) columns in DL4J's block order."""
    blocks = torch_rows.chunk(4, dim=0)
    ordered = [blocks[DL4J_BLOCK_OF_TORCH.index(k)] for k in range(4)]
    return torch.cat(ordered, dim=0).T if torch_rows.dim() == 2 else torch.cat(ordered)


def _dl4j_lstm(x, W, RW, b, act, gate, peepholes: bool):
    """SEMANTICS-SEQUENCES.md §3.2 (and §4.1 with peepholes), literally: z = x_t·W + h·RW[:, :4n] + b, blocks
    0: g = act, 1: f, 2: o, 3: i (gate activation); RW's columns 4n, 4n+1, 4n+2 are the forget, output and input
    peepholes."""
    n = RW.shape[0]
    h = c = x.new_zeros(x.shape[0], n)
    out = []
    for t in range(x.shape[2]):
        z = x[:, :, t] @ W + h @ RW[:, :4 * n] + b
        block = [z[:, k * n:(k + 1) * n] for k in range(4)]
        if peepholes:
            block[1] = block[1] + c * RW[:, 4 * n]
            block[3] = block[3] + c * RW[:, 4 * n + 2]
        f, i = gate(block[1]), gate(block[3])
        c = f * c + i * act(block[0])
        o = gate(block[2] + (c * RW[:, 4 * n + 1] if peepholes else 0))
        h = o * act(c)
        out.append(h)
    return torch.stack(out, dim=2)


def _softsign(x):
    return x / (1 + x.abs())


def _dl4j_hard_sigmoid(x):
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)  # ND4J's, not torch's (§3.3)


@pytest.mark.parametrize("type_name, params, act, gate", [
    ("lstm", {"activation": "softsign", "gate_activation": "hardsigmoid"}, _softsign, _dl4j_hard_sigmoid),
    ("graves_lstm", {}, torch.tanh, torch.sigmoid),
    ("graves_lstm", {"activation": "softsign"}, _softsign, torch.sigmoid),
], ids=["lstm-softsign-hardsigmoid", "graves_lstm", "graves_lstm-softsign"])
def test_lstm_and_graves_lstm_are_dl4j_formulas_in_dl4j_layout(type_name, params, act, gate):
    ours = _layer({"type": type_name, "out": N_OUT, **params}).double()
    _randomise(ours)
    assert not ours.fusable()
    peepholes = type_name == "graves_lstm"
    W = _dl4j_columns(ours.weight_ih.detach()).requires_grad_()  # [nIn, 4n]
    recurrent = [_dl4j_columns(ours.weight_hh.detach())] + ([ours.peephole.detach().T] if peepholes else [])
    RW = torch.cat(recurrent, dim=1).requires_grad_()  # [n, 4n] or [n, 4n + 3]
    b = _dl4j_columns(ours.bias.detach()).requires_grad_()
    x = _randn(2, N_IN, STEPS, dtype=torch.float64).requires_grad_()
    y, want = ours(x), _dl4j_lstm(x, W, RW, b, act, gate, peepholes)
    torch.testing.assert_close(y, want)
    gx, g_ih, g_hh, g_b, *g_peep = _grads(y, [x, *ours.parameters()])
    wx, gW, gRW, gb = _grads(want, [x, W, RW, b])
    torch.testing.assert_close(gx, wx)
    torch.testing.assert_close(_dl4j_columns(g_ih), gW)
    torch.testing.assert_close(_dl4j_columns(g_hh), gRW[:, :4 * N_OUT])
    torch.testing.assert_close(_dl4j_columns(g_b), gb)
    if peepholes:
        torch.testing.assert_close(g_peep[0].T, gRW[:, 4 * N_OUT:])
    assert graphspec.summarize(_doc({"type": type_name, "out": N_OUT})).total == \
        4 * N_OUT * N_IN + N_OUT * (4 * N_OUT + 3 * peepholes) + 4 * N_OUT  # §4.1's count


def test_simple_rnn_with_another_activation_is_dl4j_formula():
    ours = _layer({"type": "SimpleRnn", "out": N_OUT, "activation": "sigmoid"}).double()  # DL4J's default φ
    _randomise(ours)
    assert not ours.fusable()
    x = _randn(2, N_IN, STEPS, dtype=torch.float64)
    W, RW, b = ours.weight_ih.detach().T, ours.weight_hh.detach().T, ours.bias.detach()  # DL4J's [nIn, n], [n, n]
    h, want = x.new_zeros(2, N_OUT), []
    for t in range(STEPS):  # §5.1: h_t = φ(x_t·W + h_{t-1}·RW + b)
        h = torch.sigmoid(x[:, :, t] @ W + h @ RW + b)
        want.append(h)
    torch.testing.assert_close(ours(x), torch.stack(want, dim=2))


def test_gru_with_other_activations_is_torch_s_formula():
    ours = _layer({"type": "gru", "out": N_OUT, "activation": "softsign", "gate_activation": "hardsigmoid"}).double()
    _randomise(ours)
    x = _randn(2, N_IN, STEPS, dtype=torch.float64)
    w_ir, w_iz, w_in = ours.weight_ih.detach().chunk(3)
    w_hr, w_hz, w_hn = ours.weight_hh.detach().chunk(3)
    b_ir, b_iz, b_in = ours.bias_ih.detach().chunk(3)
    b_hr, b_hz, b_hn = ours.bias_hh.detach().chunk(3)
    h, want = x.new_zeros(2, N_OUT), []
    for t in range(STEPS):  # torch's nn.GRU equations
        xt = x[:, :, t]
        r = _dl4j_hard_sigmoid(xt @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        z = _dl4j_hard_sigmoid(xt @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        n = _softsign(xt @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
        h = (1 - z) * n + z * h
        want.append(h)
    torch.testing.assert_close(ours(x), torch.stack(want, dim=2))


# --- bidirectional ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ["lstm", "graves_lstm", "simple_rnn", "gru"])
def test_bidirectional_modes_combine_the_directions_of_concat(type_name):
    concat = _layer({"type": type_name, "out": N_OUT, "bidirectional": "concat"})
    _randomise(concat)
    x = _randn(2, N_IN, STEPS)
    forward, backward = concat(x).chunk(2, dim=1)  # the forward direction's features first (§5.3)
    single = _layer({"type": type_name, "out": N_OUT})
    single.load_state_dict({k: t for k, t in concat.state_dict().items() if not k.endswith("_reverse")})
    torch.testing.assert_close(forward, single(x))
    reverse = {k.removesuffix("_reverse"): t for k, t in concat.state_dict().items() if k.endswith("_reverse")}
    single.load_state_dict(reverse)  # the backward direction is the forward one on the time-reversed input
    torch.testing.assert_close(backward, single(x.flip(2)).flip(2))
    formulas = {"add": forward + backward, "mul": forward * backward, "average": 0.5 * (forward + backward)}
    for mode, want in formulas.items():
        combined = _layer({"type": type_name, "out": N_OUT, "bidirectional": mode})
        combined.load_state_dict(concat.state_dict())
        torch.testing.assert_close(combined(x), want)


# --- masks -----------------------------------------------------------------------------------------------------------


MASKED = [("lstm", {}), ("lstm", {"bidirectional": "concat"}), ("lstm", {"activation": "softsign"}),
          ("graves_lstm", {"bidirectional": "add"}), ("simple_rnn", {"bidirectional": "average"}),
          ("simple_rnn", {"activation": "relu"}), ("gru", {"bidirectional": "mul"})]


@pytest.mark.parametrize("padding", ["trailing", "leading"])
@pytest.mark.parametrize("type_name, params", MASKED, ids=[f"{t}-{'-'.join(map(str, p.values())) or 'plain'}"
                                                           for t, p in MASKED])
def test_masked_padding_changes_no_output_or_gradient_of_the_real_steps(type_name, params, padding):
    lengths, steps = [5, 3, 1], 7  # every example padded, by 2 to 6 steps
    layer = _layer({"type": type_name, "out": N_OUT, **params}, steps=steps)
    _randomise(layer)
    alone = [_randn(1, N_IN, n, seed=10 + i).requires_grad_() for i, n in enumerate(lengths)]
    x = _randn(len(lengths), N_IN, steps, seed=99)  # the padding is noise, not zeros: it must be ignored
    mask = torch.zeros(len(lengths), steps)
    real = []
    for i, n in enumerate(lengths):
        start = 0 if padding == "trailing" else steps - n
        real.append(slice(start, start + n))
        x[i, :, real[i]] = alone[i][0].detach()
        mask[i, real[i]] = 1
    x.requires_grad_()
    y = layer(x, mask=mask)
    params_ = list(layer.parameters())
    weights = [_randn(1, y.shape[1], n, seed=20 + i) for i, n in enumerate(lengths)]  # a loss on the real steps
    batch_loss = sum((y[i:i + 1, :, real[i]] * weights[i]).sum() for i in range(len(lengths)))
    batch_grads = torch.autograd.grad(batch_loss, [x, *params_])
    summed = [torch.zeros_like(p) for p in params_]
    for i, seq in enumerate(alone):
        y_alone = layer(seq)  # unpadded, no mask: the fused kernel where there is one
        torch.testing.assert_close(y[i:i + 1, :, real[i]], y_alone, rtol=1e-5, atol=1e-6)
        outside = torch.ones(steps, dtype=torch.bool)
        outside[real[i]] = False
        assert not y[i][:, outside].any()  # padded steps output zeros
        seq_grad, *param_grads = torch.autograd.grad((y_alone * weights[i]).sum(), [seq, *params_])
        torch.testing.assert_close(batch_grads[0][i:i + 1, :, real[i]], seq_grad, rtol=1e-5, atol=1e-6)
        assert not batch_grads[0][i][:, outside].any()  # nothing flows into the padding
        summed = [s + g for s, g in zip(summed, param_grads)]
    for got, want in zip(batch_grads[1:], summed):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_masked_step_in_the_middle_resets_the_state_as_dl4j_does():
    layer = _layer({"type": "lstm", "out": N_OUT})
    _randomise(layer)
    x = _randn(1, N_IN, STEPS)
    mask = torch.ones(1, STEPS)
    mask[0, 2] = 0
    y = layer(x, mask=mask)
    # §2.3: h and c are zeroed at the masked step, so the steps after it are a fresh sequence
    torch.testing.assert_close(y[:, :, :2], layer(x[:, :, :2]))
    assert not y[:, :, 2].any()
    torch.testing.assert_close(y[:, :, 3:], layer(x[:, :, 3:]))


def test_a_mask_of_the_wrong_shape_is_refused():
    layer = _layer({"type": "gru", "out": N_OUT})
    with pytest.raises(ValueError) as e:
        layer(_randn(2, N_IN, STEPS), mask=torch.ones(2, STEPS + 1))
    assert str(e.value) == (f"expected a mask [N, T] = [2, {STEPS}] (1: a real step, 0: padding) for a sequence "
                            f"[2, {N_IN}, {STEPS}]; received [2, {STEPS + 1}]")


# --- initialisation (DL4J's defaults, SEMANTICS-SEQUENCES.md §3.4, §12.1) -------------------------------------------


def test_lstm_init_forget_gate_bias_dl4j_fans_and_recurrent_scheme():
    n_in, n = 64, 96
    doc = _doc({"type": "LSTM", "out": n}, size=n_in, steps=2)
    doc["defaults"] = {"bias_init": 5.0, "activation": "relu"}  # DL4J ignores biasInit; tanh is ours, not inherited
    layer = graphspec.build(doc).get_submodule("v")
    assert layer.activation == "tanh" and layer.gate_activation == "sigmoid"
    i, f, g, o = layer.bias.detach().chunk(4)  # torch's gate order
    assert torch.equal(f, torch.ones(n)) and not torch.cat([i, g, o]).any()
    std = math.sqrt(2 / (n_in + 2 * n))  # xavier with fanIn n, fanOut nIn + n, for W and RW alike
    assert layer.weight_ih.std().item() == pytest.approx(std, rel=0.05)
    assert layer.weight_hh.std().item() == pytest.approx(std, rel=0.05)
    doc["vertices"]["v"].update({"forget_gate_bias_init": 2.5, "bias_init": 0.5, "weight_init_recurrent": "zero"})
    layer = graphspec.build(doc).get_submodule("v")
    i, f, g, o = layer.bias.detach().chunk(4)
    assert torch.equal(f, torch.full((n,), 2.5)) and torch.equal(torch.cat([i, g, o]), torch.full((3 * n,), 0.5))
    assert not layer.weight_hh.any() and layer.weight_ih.std().item() == pytest.approx(std, rel=0.05)


def test_graves_lstm_peepholes_are_initialised_like_the_recurrent_weights():
    layer = _layer({"type": "graves_lstm", "out": 128, "bidirectional": "concat"}, size=64, steps=2)
    std = math.sqrt(2 / (64 + 2 * 128))
    for suffix in ("", "_reverse"):
        assert getattr(layer, "peephole" + suffix).std().item() == pytest.approx(std, rel=0.1)
        assert getattr(layer, "bias" + suffix)[128:256].eq(1).all()


def test_simple_rnn_and_gru_init():
    rnn = _layer({"type": "simple_rnn", "out": 96}, size=32, steps=2)
    assert rnn.weight_ih.std().item() == pytest.approx(math.sqrt(2 / (32 + 96)), rel=0.05)  # (nIn, n), §5.1
    assert rnn.weight_hh.std().item() == pytest.approx(math.sqrt(2 / (96 + 96)), rel=0.05)  # (n, n)
    assert not rnn.bias.any()
    gru = _layer({"type": "gru", "out": 8, "bias_init": 0.25})
    assert torch.equal(gru.bias_ih, torch.full((24,), 0.25)) and not gru.bias_hh.any()


# --- MACs, errors ----------------------------------------------------------------------------------------------------


def test_macs_count_every_weight_once_per_step_and_direction():
    def macs(vertex):
        return graphspec.summarize(_doc(vertex)).rows[-1].macs

    lstm = STEPS * 4 * N_OUT * (N_IN + N_OUT)
    assert macs({"type": "lstm", "out": N_OUT}) == lstm == 6 * 4 * 4 * 7
    assert macs({"type": "lstm", "out": N_OUT, "bidirectional": "concat"}) == 2 * lstm
    assert macs({"type": "lstm", "out": N_OUT, "bidirectional": "average"}) == 2 * lstm + 2 * N_OUT * STEPS
    assert macs({"type": "graves_lstm", "out": N_OUT}) == lstm + STEPS * 3 * N_OUT  # the peepholes
    assert macs({"type": "gru", "out": N_OUT, "bidirectional": "add"}) == 2 * lstm * 3 // 4 + N_OUT * STEPS
    assert macs({"type": "simple_rnn", "out": N_OUT}) == lstm // 4


@pytest.mark.parametrize("vertex, inputs, message", [
    ({"type": "lstm", "out": 2}, {"x": {"type": "feed_forward", "size": 4}},
     "expected a sequence [size, T] (features first, time last); received [4]; input shapes: x [4]"),
    ({"type": "gru", "out": 2}, {"x": {"type": "convolutional", "channels": 2, "height": 3, "width": 3}},
     "expected a sequence [size, T] (features first, time last); received [2, 3, 3] (reshape an image [C, H, W] to "
     "[C, H·W] to read its pixels as time steps); input shapes: x [2, 3, 3]"),
    ({"type": "simple_rnn", "out": 2, "in": 9}, None,
     f"'in' is 9 but the input has {N_IN} features; remove 'in' to infer it or fix the input; input shapes: "
     f"x [{N_IN}, {STEPS}]"),
    ({"type": "lstm", "out": 2, "bidirectional": "sum"}, None,
     "'bidirectional': expected 'concat', 'add', 'mul' or 'average'; received 'sum'"),
    ({"type": "graves_lstm"}, None, "missing required key 'out'"),
])
def test_error_messages(vertex, inputs, message):
    assert _message(_doc(vertex, inputs=inputs)) == message


def test_simple_rnn_has_no_gate_activation():
    assert _message(_doc({"type": "simple_rnn", "out": 2, "gate_activation": "sigmoid"})).startswith(
        "unknown key 'gate_activation' (did you mean 'activation'?)")


# --- ONNX ------------------------------------------------------------------------------------------------------------


def test_onnx_export_of_a_stacked_lstm_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from graphspec.export import export
    doc = {"version": 1, "name": "lstm-onnx", "seed": 5,
           "inputs": {"x": {"type": "recurrent", "size": N_IN, "length": STEPS}},
           "vertices": {"both": {"type": "lstm", "out": N_OUT, "bidirectional": "concat", "inputs": ["x"]},
                        "last": {"type": "lstm", "out": 2, "inputs": ["both"]}},
           "outputs": ["last"]}
    net = graphspec.build(doc).eval()
    _randomise(net)
    path = tmp_path / "lstm.onnx"
    report = export(net, path, check=False)
    assert report.ops["LSTM"] == 2
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (3, 1):  # the batch dimension is dynamic
        x = _randn(batch, N_IN, STEPS, seed=batch)
        with torch.no_grad():
            want = net(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        assert got.shape == want.shape and abs(got - want).max() < 1e-5
