"""The sequence vertex types against torch.nn or hand-written formulas from SEMANTICS-SEQUENCES.md: embedding and
embedding_sequence (§6), conv1d and subsampling1d (§7), rnn_output and rnn_loss with their per-step loss
normalisation (§8), last_time_step, duplicate_to_time_series and reverse_time_series (§9), the RNN preprocessors
(§10); masks (a padded and masked batch changes nothing for the real steps), parameter counts, MACs, error
messages and ONNX export.

Sequences are [size, T] per example (features first, time last, DL4J's NCW), from `recurrent` inputs.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphspec
from graphspec import SpecError, load_spec
from graphspec.errors import GraphspecError
from graphspec.train.steps import TorchStep, check_targets, heads_of


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors on a shared machine: one thread."""


def _doc(vertices: dict, outputs, inputs: dict) -> dict:
    return {"version": 1, "name": "sequence", "seed": 3, "inputs": inputs, "vertices": vertices,
            "outputs": list(outputs)}


def _sequence_doc(vertex: dict, size: int, steps: int) -> dict:
    """A net whose recurrent input x [size, T] feeds the vertex v."""
    return _doc({"v": {**vertex, "inputs": ["x"]}}, ["v"], {"x": {"type": "recurrent", "size": size, "length": steps}})


def _on_sequence(vertex: dict, size: int, steps: int):
    net = graphspec.build(_sequence_doc(vertex, size, steps))
    return net, net.get_submodule("v")


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _indices(*shape, classes, seed=0):
    return torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(seed))


def _message(doc) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(doc)
    return e.value.problems[0].message


def _row(doc):
    return graphspec.summarize(doc).rows[-1]


def _randomise(module: nn.Module, seed: int = 1) -> None:
    """Non-trivial values for every parameter (biases start at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _padded(sequences: list[torch.Tensor], steps: int, fill: float = 7.0):
    """A batch [N, size, T] of sequences [size, L_i] padded at the end with ``fill`` (not 0: padding values must not
    matter), and its mask [N, T]."""
    x = torch.full((len(sequences), sequences[0].shape[0], steps), fill)
    mask = torch.zeros(len(sequences), steps)
    for i, s in enumerate(sequences):
        x[i, :, :s.shape[1]] = s
        mask[i, :s.shape[1]] = 1
    return x, mask


# --- embedding, embedding_sequence (§6) -----------------------------------------------------------------------------


def test_embedding_is_nn_embedding_plus_bias_then_the_activation():
    doc = _doc({"v": {"type": "embedding", "num_embeddings": 5, "out": 3, "activation": "tanh", "inputs": ["x"]}},
               ["v"], {"x": {"type": "feed_forward", "size": 1}})
    net = graphspec.build(doc)
    _randomise(net)
    ours = net.get_submodule("v")
    table = nn.Embedding(5, 3)
    table.weight.data.copy_(ours.weight)  # DL4J's W [nIn, nOut] is torch's layout: no transpose
    index = torch.tensor([4, 0, 2, 2])
    want = torch.tanh(table(index) + ours.bias)
    torch.testing.assert_close(net(index.float().unsqueeze(1)), want)
    torch.testing.assert_close(net(index.unsqueeze(1)), want)  # integer tensors too
    torch.testing.assert_close(net(index.float().unsqueeze(1) + 0.9), want)  # floats truncated, as DL4J's getInt
    row = _row(doc)
    assert row.params == 5 * 3 + 3 and row.macs == 0  # DL4J 0.9's EmbeddingLayer always has a bias
    assert (row.n_in, row.out_shape) == (5, (3,))


def test_embedding_sequence_is_a_lookup_per_step_without_bias_by_default():
    steps = 4
    net, ours = _on_sequence({"type": "embedding_sequence", "num_embeddings": 6, "out": 3, "activation": "identity"},
                             1, steps)
    assert ours.bias is None and _row(_sequence_doc({"type": "EmbeddingSequenceLayer", "num_embeddings": 6, "out": 3},
                                                    1, steps)).params == 6 * 3
    index = _indices(2, steps, classes=6)
    want = F.embedding(index, ours.weight).transpose(1, 2)  # [N, T, out] -> [N, out, T]
    torch.testing.assert_close(net(index.float().unsqueeze(1)), want)
    # `embedding` on the same sequence is the same lookup, with DL4J 0.9's bias
    net, ours = _on_sequence({"type": "embedding", "num_embeddings": 6, "out": 3, "activation": "softmax"}, 1, steps)
    _randomise(net)
    want = torch.softmax(F.embedding(index, ours.weight) + ours.bias, dim=2).transpose(1, 2)  # softmax over features
    torch.testing.assert_close(net(index.unsqueeze(1)), want)


def test_embedding_masked_steps_are_zero_and_change_nothing_else():
    _, ours = _on_sequence({"type": "embedding_sequence", "num_embeddings": 4, "out": 2, "bias": True,
                            "activation": "sigmoid"}, 1, 5)
    _randomise(ours)
    alone = [_indices(1, 3, classes=4, seed=1).float(), _indices(1, 5, classes=4, seed=2).float()]
    x, mask = _padded(alone, 5, fill=0.0)  # padding must be a valid index; 0 as DL4J's iterators pad
    y = ours(x, mask=mask)
    for i, s in enumerate(alone):
        length = s.shape[1]
        torch.testing.assert_close(y[i, :, :length], ours(s.unsqueeze(0))[0])
        assert not y[i, :, length:].any()


def test_embedding_is_initialised_with_dl4j_fans_and_the_bias_init():
    doc = _doc({"v": {"type": "embedding", "num_embeddings": 300, "out": 100, "bias_init": 0.5, "inputs": ["x"]}},
               ["v"], {"x": {"type": "feed_forward", "size": 1}})
    m = graphspec.build(doc).get_submodule("v")
    assert m.weight.std().item() == pytest.approx(math.sqrt(2 / (300 + 100)), rel=0.05)  # xavier: (nIn, nOut)
    assert torch.equal(m.bias, torch.full((100,), 0.5))


def test_an_index_out_of_range_names_the_vertex():
    doc = _doc({"words": {"type": "embedding", "num_embeddings": 5, "out": 2, "inputs": ["x"]}},
               ["words"], {"x": {"type": "feed_forward", "size": 1}})
    net = graphspec.build(doc)
    for bad, received in ((5.0, "0..5"), (-1.0, "-1..0")):
        with pytest.raises(GraphspecError) as e:
            net(torch.tensor([[0.0], [bad]]))
        assert str(e.value) == f"vertex 'words': embedding indices must be in 0..4 (num_embeddings 5); received " \
                               f"indices {received}"
        assert e.value.problem.vertex == "words"


@pytest.mark.parametrize("vertex, shape, message", [
    ({"type": "embedding"}, (3,), "expected class indices: one per example [1] (a feed_forward input of size 1) or "
                                  "one per time step [1, T] (a recurrent input of size 1); received [3]"),
    ({"type": "embedding_sequence"}, (1,), "expected a sequence of class indices [1, T] (a recurrent input of size 1); "
                                           "received [1]"),
    ({"type": "embedding_sequence"}, (2, 4), "expected a sequence of class indices [1, T] (a recurrent input of "
                                             "size 1); received [2, 4]"),
])
def test_embedding_input_errors(vertex, shape, message):
    kind = {"type": "recurrent", "size": shape[0], "length": shape[1]} if len(shape) == 2 else \
        {"type": "feed_forward", "size": shape[0]}
    doc = _doc({"v": {**vertex, "num_embeddings": 4, "out": 2, "inputs": ["x"]}}, ["v"], {"x": kind})
    assert _message(doc) == message + f"; input shapes: x {list(shape)}"


def test_embedding_needs_its_number_of_classes():
    doc = _doc({"v": {"type": "embedding", "out": 2, "inputs": ["x"]}}, ["v"], {"x": {"type": "feed_forward",
                                                                                       "size": 1}})
    assert _message(doc) == "missing required key 'num_embeddings'"


# --- conv1d, subsampling1d (§7) -------------------------------------------------------------------------------------


def _dl4j_same(t, k, s, d=1):
    """§7.2: T' = ceil(T/s), total padding (T'-1)s + k_e - T, the smaller half before."""
    k_eff = k + (k - 1) * (d - 1)
    out = math.ceil(t / s)
    total = max((out - 1) * s + k_eff - t, 0)
    return out, (total // 2, total - total // 2)


def _torch_conv(ours: nn.Module, bias=True) -> nn.Conv1d:
    o, i, k = ours.weight.shape
    conv = nn.Conv1d(i, o, k, bias=bias)
    conv.weight.data.copy_(ours.weight)
    if bias:
        conv.bias.data.copy_(ours.bias)
    return conv


def test_conv1d_truncate_is_nn_conv1d():
    vertex = {"type": "conv1d", "out": 4, "kernel": 3, "stride": 2, "padding": 1, "dilation": 2,
              "activation": "identity"}
    net, ours = _on_sequence(vertex, 3, 11)
    _randomise(net)
    conv = _torch_conv(ours)
    conv.stride, conv.padding, conv.dilation = (2,), (1,), (2,)
    x = _randn(2, 3, 11)
    torch.testing.assert_close(net(x), conv(x))
    steps = (11 + 2 - 5) // 2 + 1  # ⌊(T + 2p − k_e)/s⌋ + 1
    row = _row(_sequence_doc(vertex, 3, 11))
    assert row.out_shape == (4, steps) and row.params == 4 * 3 * 3 + 4
    assert row.macs == 4 * steps * 3 * 3  # output values · in · k


@pytest.mark.parametrize("steps, kernel, stride", [(7, 3, 2), (8, 4, 1), (5, 2, 3)])
def test_conv1d_same_pads_as_dl4j(steps, kernel, stride):
    vertex = {"type": "conv1d", "out": 2, "kernel": kernel, "stride": stride, "padding": 5,  # ignored in same mode
              "convolution_mode": "same", "activation": "relu"}
    net, ours = _on_sequence(vertex, 3, steps)
    _randomise(net)
    out, pads = _dl4j_same(steps, kernel, stride)
    x = _randn(2, 3, steps)
    want = torch.relu(F.conv1d(F.pad(x, pads), ours.weight, ours.bias, stride))
    assert want.shape[2] == out
    torch.testing.assert_close(net(x), want)


def test_conv1d_causal_pads_before_only_and_never_reads_ahead():
    vertex = {"type": "conv1d", "out": 2, "kernel": 3, "dilation": 2, "convolution_mode": "causal", "bias": False,
              "activation": "identity"}
    net, ours = _on_sequence(vertex, 2, 6)
    _randomise(net)
    x = _randn(1, 2, 6)
    y = net(x)
    torch.testing.assert_close(y, F.conv1d(F.pad(x, (4, 0)), ours.weight, None, 1, 0, 2))  # (k-1)·d before
    changed = x.clone()
    changed[:, :, 4:] += 1.0  # the future of step 3
    torch.testing.assert_close(net(changed)[:, :, :4], y[:, :, :4])
    strided, _ = _on_sequence({**vertex, "stride": 2}, 2, 7)
    assert strided.graphspec.analysis.shapes["v"] == (2, 4)  # ceil(T/s)


def test_conv1d_initialisation_uses_dl4j_fans():
    net, ours = _on_sequence({"type": "conv1d", "out": 64, "kernel": 4, "stride": 2, "bias_init": 0.25}, 48, 9)
    fan_in, fan_out = 48 * 4, 64 * 4 / 2  # in·k, out·k/s (§12.1)
    assert ours.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert torch.equal(ours.bias, torch.full((64,), 0.25))


def test_conv1d_masks_reduce_like_a_max_pool_and_padding_changes_no_real_step():
    vertex = {"type": "conv1d", "out": 3, "kernel": 3, "convolution_mode": "same", "activation": "tanh"}
    net, ours = _on_sequence(vertex, 2, 6)
    _randomise(net)
    alone = [_randn(2, 4, seed=1), _randn(2, 6, seed=2)]
    x, mask = _padded(alone, 6)
    y = ours(x, mask=mask)
    for i, s in enumerate(alone):
        length = s.shape[1]
        torch.testing.assert_close(y[i, :, :length], ours(s.unsqueeze(0))[0])  # same mode, stride 1: same windows
        assert not y[i, :, length:].any()
    # truncate, stride 2: an output step is real when its window holds a real step (§7.4)
    _, strided = _on_sequence({**vertex, "convolution_mode": "truncate", "stride": 2}, 2, 6)
    mask = torch.tensor([[1.0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    assert strided.output_mask(mask).tolist() == [[1, 1], [1, 1]]
    mask = torch.tensor([[1.0, 1, 0, 0, 0, 0]])
    assert strided.output_mask(mask).tolist() == [[1, 0]]  # windows [0, 2] and [2, 4]
    y = strided(_randn(1, 2, 6), mask=mask)
    assert y[0, :, 0].all() and not y[0, :, 1].any()


def test_conv1d_errors():
    strict = {"type": "conv1d", "out": 2, "kernel": 3, "stride": 2, "convolution_mode": "strict"}
    assert _message(_sequence_doc(strict, 3, 6)) == (
        "convolution_mode 'strict': (input 6 - kernel 3 + 2·padding 0) = 3 is not divisible by stride 2; use "
        "'truncate' or 'same'; input shapes: x [3, 6]")
    assert _message(_sequence_doc({"type": "conv1d", "out": 2, "kernel": 7}, 3, 6)) == (
        "kernel 7 is larger than the input 6 plus padding 0 (convolution_mode 'truncate'); input shapes: x [3, 6]")
    assert _message(_sequence_doc({"type": "conv1d", "out": 2, "in": 4}, 3, 6)) == (
        "'in' is 4 but the input has 3 features; remove 'in' to infer it or fix the input; input shapes: x [3, 6]")
    image = _doc({"v": {"type": "conv1d", "out": 2, "inputs": ["x"]}}, ["v"],
                 {"x": {"type": "convolutional", "channels": 2, "height": 3, "width": 3}})
    assert _message(image).startswith("expected a sequence [size, T] (features first, time last); received [2, 3, 3]")


@pytest.mark.parametrize("pooling, reference", [
    ("max", lambda x, k, s: F.max_pool1d(x, k, s)),
    ("avg", lambda x, k, s: F.avg_pool1d(x, k, s)),  # divides by k also where the window covers padding
    ("sum", lambda x, k, s: F.avg_pool1d(x, k, s) * k),
    ("pnorm", lambda x, k, s: F.lp_pool1d(x.abs(), 3.0, k, s)),
])
def test_subsampling1d_is_torch_pooling_with_dl4j_padding(pooling, reference):
    vertex = {"type": "subsampling1d", "pooling": pooling, "kernel": 3, "stride": 2, "convolution_mode": "same",
              **({"pnorm": 3} if pooling == "pnorm" else {})}
    net, _ = _on_sequence(vertex, 2, 8)
    x = _randn(2, 2, 8) - 2.0  # all-negative windows at the edges: padded steps read 0, also for max
    out, pads = _dl4j_same(8, 3, 2)
    torch.testing.assert_close(net(x), reference(F.pad(x, pads), 3, 2))
    row = _row(_sequence_doc(vertex, 2, 8))
    assert row.out_shape == (2, out) and row.macs == 2 * out * 3 and row.params == 0


def test_subsampling1d_defaults_and_masks():
    net, ours = _on_sequence({"type": "Subsampling1DLayer"}, 2, 5)  # max, kernel 2, stride 1 (§7.3)
    x = _randn(2, 2, 5)
    torch.testing.assert_close(net(x), F.max_pool1d(x, 2, 1))
    alone = [_randn(2, 3, seed=1), _randn(2, 5, seed=2)]
    x, mask = _padded(alone, 5)
    y = ours(x, mask=mask)
    torch.testing.assert_close(y[0, :, :2], ours(alone[0].unsqueeze(0))[0])  # windows inside the real steps
    assert not y[0, :, 3:].any() and y[0, :, 2].abs().sum() > 0  # window [2, 3] holds a real step
    assert _message(_sequence_doc({"type": "subsampling1d", "pooling": "pnorm"}, 2, 5)).startswith(
        "pooling 'pnorm' needs 'pnorm' > 0")


# --- rnn_output, rnn_loss (§8) --------------------------------------------------------------------------------------


def _rnn_output(vertex: dict, size=3, steps=5):
    net, ours = _on_sequence({"type": "rnn_output", **vertex}, size, steps)
    _randomise(net)
    (head,) = heads_of(net)
    return net, ours, head


def test_rnn_output_is_a_dense_layer_at_every_step():
    net, ours, _ = _rnn_output({"out": 4, "activation": "softmax"})
    linear = nn.Linear(3, 4)
    linear.load_state_dict({"weight": ours.weight, "bias": ours.bias})
    x = _randn(2, 3, 5)
    torch.testing.assert_close(net(x), torch.softmax(linear(x.transpose(1, 2)), dim=2).transpose(1, 2))
    row = _row(_sequence_doc({"type": "RnnOutputLayer", "out": 4}, 3, 5))
    assert row.params == 3 * 4 + 4 and row.macs == 3 * 4 * 5 and row.out_shape == (4, 5)
    mask = torch.tensor([[1.0, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    y = ours(x, mask=mask)  # DL4J multiplies the activations by a label mask given at inference
    assert not y[0, :, 2:].any() and torch.equal(y[1], net(x)[1])


def test_rnn_output_loss_is_the_per_example_sum_over_real_steps():
    _, ours, head = _rnn_output({"out": 4, "activation": "softmax"})
    x, labels = _randn(3, 3, 5), _indices(3, 5, classes=4)
    logits = ours.logits(x)
    per_step = torch.stack([torch.stack([-torch.log_softmax(logits[i, :, t], 0)[labels[i, t]] for t in range(5)])
                            for i in range(3)])  # ℓ[i, t], written out
    torch.testing.assert_close(head.loss(x, labels), per_step.sum(1))
    one_hot = F.one_hot(labels, 4).transpose(1, 2).float()  # the same targets as values [N, out, T]
    torch.testing.assert_close(head.loss(x, one_hot), per_step.sum(1))
    mask = torch.tensor([[1.0, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    masked = head.entry.training_loss(head.cfg, head.module, x, labels, mask=mask)
    torch.testing.assert_close(masked, (per_step * mask).sum(1))  # not divided by T nor by the real steps
    # a padded, masked example scores as the example alone
    alone = head.entry.training_loss(head.cfg, head.module, x[2:, :, :1], labels[2:, :1])
    torch.testing.assert_close(masked[2:], alone)


def test_rnn_output_mse_is_dl4j_mean_over_outputs_summed_over_steps():
    _, ours, head = _rnn_output({"out": 2, "activation": "tanh", "loss": "mse"})
    x, target = _randn(2, 3, 4), _randn(2, 2, 4, seed=5)
    want = ((target - torch.tanh(ours.logits(x))) ** 2).mean(1).sum(1)
    torch.testing.assert_close(head.loss(x, target), want)


def test_rnn_output_trains_with_dl4j_score_and_checks_its_targets():
    net, ours, _ = _rnn_output({"out": 3, "activation": "softmax"}, size=2, steps=4)
    x, y = _randn(5, 2, 4), _indices(5, 4, classes=3)
    with torch.no_grad():
        want = F.cross_entropy(ours.logits(x), y, reduction="sum").item() / 5  # DL4J: Σ steps and examples / mb
    assert TorchStep(net, torch.optim.SGD(net.parameters(), lr=0.1))(x, y) == pytest.approx(want, rel=1e-5)
    heads, shapes = heads_of(net), net.graphspec.analysis.shapes
    check_targets(heads, y, shapes)
    check_targets(heads, F.one_hot(y, 3).transpose(1, 2).float(), shapes)
    with pytest.raises(GraphspecError) as e:
        check_targets(heads, y[:, 0], shapes)
    assert str(e.value) == "the target of 'v' is an integer array of shape [N]; class indices are [N, 4]"
    with pytest.raises(GraphspecError) as e:
        check_targets(heads, y + 1, shapes)
    assert str(e.value) == "the target of 'v' holds class indices 1..3; the output layer has 3 classes (0..2)"
    with pytest.raises(GraphspecError) as e:
        check_targets(heads, _randn(5, 3), shapes)
    assert str(e.value) == ("the target of 'v' is [N, 3] values; the output is [3, 4] per example (or give class "
                            "indices [N, 4])")


def test_rnn_loss_activates_along_the_features_and_sums_over_steps():
    net = graphspec.build(_sequence_doc({"type": "rnn_loss"}, 3, 4))
    (head,) = heads_of(net)
    x, labels = _randn(2, 3, 4), _indices(2, 4, classes=3)
    torch.testing.assert_close(net(x), torch.softmax(x, dim=1))  # mcxent's default: softmax
    torch.testing.assert_close(head.loss(x, labels), F.cross_entropy(x, labels, reduction="none").sum(1))
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(head.entry.training_loss(head.cfg, head.module, x, labels, mask),
                               (F.cross_entropy(x, labels, reduction="none") * mask).sum(1))
    net = graphspec.build(_sequence_doc({"type": "RnnLossLayer", "loss": "l2"}, 3, 4))
    (head,) = heads_of(net)
    target = _randn(2, 3, 4, seed=4)
    assert torch.equal(net(x), x)  # identity unless the loss needs probabilities
    torch.testing.assert_close(head.loss(x, target), ((target - x) ** 2).sum((1, 2)))
    assert _row(_sequence_doc({"type": "rnn_loss"}, 3, 4)).params == 0
    with pytest.raises(GraphspecError) as e:
        head.entry.training_loss(head.cfg, head.module, x, target, torch.ones(2, 3, 4))
    assert str(e.value) == ("a per-step loss reads a mask [N, T] = [2, 4] (1 = real step); received [2, 3, 4] "
                            "(per-output masks [N, out, T] are not supported)")


def test_per_step_losses_need_sequences():
    doc = _doc({"v": {"type": "rnn_output", "out": 2, "inputs": ["x"]}}, ["v"], {"x": {"type": "feed_forward",
                                                                                        "size": 4}})
    assert _message(doc) == "expected a sequence [size, T] (features first, time last); received [4]; input shapes: " \
                            "x [4]"


# --- last_time_step, duplicate_to_time_series, reverse_time_series (§9) --------------------------------------------


def test_last_time_step_takes_each_examples_last_real_step():
    net, ours = _on_sequence({"type": "LastTimeStepVertex"}, 3, 5)
    x = _randn(3, 3, 5)
    assert torch.equal(net(x), x[:, :, -1])  # no mask: step T-1
    alone = [_randn(3, 2, seed=1), _randn(3, 5, seed=2), _randn(3, 4, seed=3)]
    x, mask = _padded(alone, 5)
    y = ours(x, mask=mask)
    for i, s in enumerate(alone):
        assert torch.equal(y[i], s[:, -1])
    mask = torch.tensor([[0.0, 1, 1, 0, 0]])  # leading padding too: the last real step
    assert torch.equal(ours(x[:1], mask=mask), x[:1, :, 2])
    assert torch.equal(ours(x[:1], mask=torch.zeros(1, 5)), x[:1, :, 0])  # none real: step 0, DL4J's argmax rule
    assert _row(_sequence_doc({"type": "last_time_step"}, 3, 5)).out_shape == (3,)


def test_duplicate_to_time_series_repeats_a_vector_over_the_reference_length():
    doc = _doc({"v": {"type": "DuplicateToTimeSeriesVertex", "inputs": ["vec", "seq"]}}, ["v"],
               {"vec": {"type": "feed_forward", "size": 3}, "seq": {"type": "recurrent", "size": 2, "length": 4}})
    net = graphspec.build(doc)
    vec, seq = _randn(2, 3).requires_grad_(), _randn(2, 2, 4, seed=1).requires_grad_()
    y = net(vec, seq)
    assert torch.equal(y, vec.unsqueeze(2).expand(2, 3, 4))
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(vec.grad, torch.full((2, 3), 0.0 + 1 + 2 + 3))  # the backward sums over time
    assert torch.equal(seq.grad, torch.zeros(2, 2, 4))  # read for its length only
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    assert net.get_submodule("v").output_mask(mask) is mask  # it carries the reference's mask (§9.2)
    assert _row(doc).out_shape == (3, 4) and _row(doc).macs == 0
    swapped = _doc({"v": {"type": "duplicate_to_time_series", "inputs": ["seq", "vec"]}}, ["v"], doc["inputs"])
    assert _message(swapped) == ("the first input is the vector [size] to repeat; received [2, 4]; input shapes: "
                                 "seq [2, 4], vec [3]")
    two_vectors = _doc({"v": {"type": "duplicate_to_time_series", "inputs": ["vec", "vec"]}}, ["v"], doc["inputs"])
    assert _message(two_vectors) == ("the second input is the sequence [size, T] whose length the output takes; "
                                     "received [3]; input shapes: vec [3], vec [3]")


def _dl4j_reverse(x, mask):
    """§9.3's two pointers, written out: the real steps from both ends swap, masked steps are 0."""
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        real = [t for t in range(x.shape[2]) if mask[i, t]]
        for position, source in zip(real, reversed(real)):
            out[i, :, position] = x[i, :, source]
    return out


def test_reverse_time_series_reverses_only_the_real_steps():
    net, ours = _on_sequence({"type": "reverse_time_series"}, 2, 6)
    x = _randn(3, 2, 6)
    assert torch.equal(net(x), x.flip(2))
    alone = [_randn(2, 4, seed=1), _randn(2, 6, seed=2), _randn(2, 1, seed=3)]
    padded, mask = _padded(alone, 6)
    y = ours(padded, mask=mask)
    for i, s in enumerate(alone):
        assert torch.equal(y[i, :, :s.shape[1]], s.flip(1)) and not y[i, :, s.shape[1]:].any()
    mask = torch.tensor([[0.0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])  # holes, none real, all
    assert torch.equal(ours(x, mask=mask), _dl4j_reverse(x, mask))


# --- preprocessors (§10) --------------------------------------------------------------------------------------------


def test_rnn_to_feed_forward_rows_are_time_major_and_feed_forward_to_rnn_undoes_it():
    doc = _doc({"rows": {"type": "preprocessor", "preprocessor": "rnn_to_feed_forward", "length": 4, "inputs": ["x"]},
                "dense": {"type": "dense", "out": 2, "activation": "identity", "inputs": ["rows"]},
                "seq": {"type": "preprocessor", "preprocessor": "feed_forward_to_rnn", "length": 4,
                        "inputs": ["dense"]}},
               ["rows", "seq"], {"x": {"type": "recurrent", "size": 3, "length": 4}})
    net = graphspec.build(doc)
    x = _randn(2, 3, 4)
    y = net(x)
    assert torch.equal(y["rows"], torch.stack([x[i, :, t] for t in range(4) for i in range(2)]))  # row t·N + i
    dense = net.get_submodule("dense")
    per_step = F.linear(x.transpose(1, 2), dense.weight, dense.bias).transpose(1, 2)
    torch.testing.assert_close(y["seq"], per_step)  # = a dense layer on the sequence
    a = net.graphspec.analysis
    assert (a.shapes["rows"], a.batch["rows"], a.shapes["seq"], a.batch["seq"]) == ((3,), 4, (2, 4), 1)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 0]])
    rows_mask = net.get_submodule("rows").output_mask(mask)
    assert rows_mask.flatten().tolist() == [1, 1, 1, 1, 0, 1, 0, 0]  # DL4J's [T·N, 1] mask, same order
    assert torch.equal(net.get_submodule("seq").output_mask(rows_mask), mask)


def test_rnn_to_cnn_and_cnn_to_rnn_run_a_convolution_on_every_frame():
    c, h, w, steps = 2, 3, 3, 4
    doc = _doc({"frames": {"type": "preprocessor", "preprocessor": "rnn_to_cnn", "channels": c, "height": h,
                           "width": w, "length": steps, "inputs": ["x"]},
                "conv": {"type": "conv", "out": 5, "kernel": 2, "activation": "relu", "inputs": ["frames"]},
                "seq": {"type": "preprocessor", "preprocessor": "cnn_to_rnn", "length": steps, "inputs": ["conv"]},
                "last": {"type": "last_time_step", "inputs": ["seq"]}},
               ["seq", "last"], {"x": {"type": "recurrent", "size": c * h * w, "length": steps}})
    net = graphspec.build(doc)
    x = _randn(3, c * h * w, steps)
    conv = net.get_submodule("conv")
    per_frame = torch.stack([conv(x[:, :, t].reshape(3, c, h, w)).flatten(1) for t in range(steps)], dim=2)
    y = net(x)
    torch.testing.assert_close(y["seq"], per_frame)
    torch.testing.assert_close(y["last"], per_frame[:, :, -1])
    assert net.graphspec.analysis.batch["conv"] == steps and net.graphspec.analysis.shapes["seq"] == (5 * 2 * 2, 4)


def _input_of(shape) -> dict:
    if len(shape) == 3:
        return {"type": "convolutional", "channels": shape[0], "height": shape[1], "width": shape[2]}
    if len(shape) == 2:
        return {"type": "recurrent", "size": shape[0], "length": shape[1]}
    return {"type": "feed_forward", "size": shape[0]}


def _preprocessor_doc(params: dict, inputs: dict) -> dict:
    return _doc({"v": {"type": "preprocessor", **params, "inputs": ["x"]}}, ["v"], {"x": inputs})


@pytest.mark.parametrize("params, x, message", [
    ({"preprocessor": "rnn_to_feed_forward"}, (3, 4),
     "'rnn_to_feed_forward' needs 'length': the number of time steps T (its rows are example i at step t, row t·N + i, "
     "as DL4J orders them)"),
    ({"preprocessor": "rnn_to_feed_forward", "length": 5}, (3, 4),
     "'length' is 5 but the input has 4 time steps; input shapes: x [3, 4]"),
    ({"preprocessor": "rnn_to_feed_forward", "length": 4, "width": 2}, (3, 4),
     "'rnn_to_feed_forward' takes no 'width': it takes 'length'"),
    ({"preprocessor": "rnn_to_cnn", "length": 4, "channels": 1, "height": 2, "width": 2}, (3, 4),
     "expected [4, T] features to unflatten to [1, 2, 2] at every step; received [3, 4]; input shapes: x [3, 4]"),
    ({"preprocessor": "rnn_to_cnn", "length": 4}, (3, 4), "'rnn_to_cnn' needs 'channels', 'height' and 'width'"),
    ({"preprocessor": "feed_forward_to_rnn", "length": 3}, (6,),
     "'feed_forward_to_rnn' regroups T = 3 rows per example into a sequence, but its input has 1× the network's batch "
     "(the rows of an rnn_to_feed_forward or rnn_to_cnn of length 3 have 3×); input shapes: x [6]"),
    ({"preprocessor": "cnn_to_feed_forward", "length": 3}, (2, 2, 2),
     "'cnn_to_feed_forward' takes no 'length': the shape comes from its input"),
])
def test_preprocessor_errors(params, x, message):
    assert _message(_preprocessor_doc(params, _input_of(x))) == message


# --- ONNX -----------------------------------------------------------------------------------------------------------


def _onnx_doc() -> dict:
    vertices = {
        "words": {"type": "embedding_sequence", "num_embeddings": 3, "out": 4, "activation": "identity",
                  "inputs": ["tokens"]},
        "conv": {"type": "conv1d", "out": 4, "kernel": 3, "convolution_mode": "same", "activation": "tanh",
                 "inputs": ["words"]},
        "pool": {"type": "subsampling1d", "pooling": "avg", "kernel": 2, "inputs": ["conv"]},
        "last": {"type": "last_time_step", "inputs": ["pool"]},
        "repeat": {"type": "duplicate_to_time_series", "inputs": ["last", "features"]},
        "both": {"type": "merge", "inputs": ["repeat", "features"]},
        "back": {"type": "reverse_time_series", "inputs": ["both"]},
        "out": {"type": "rnn_output", "out": 2, "activation": "softmax", "inputs": ["back"]},
    }
    return _doc(vertices, ["out"], {"tokens": {"type": "recurrent", "size": 1, "length": 5},
                                    "features": {"type": "recurrent", "size": 3, "length": 5}})


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from graphspec.export import export
    net = graphspec.build(_onnx_doc())
    _randomise(net)
    path = tmp_path / "sequence.onnx"
    export(net, path, check=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net.eval()
    for batch in (2, 1):  # the batch dimension is dynamic
        tokens, features = _indices(batch, 1, 5, classes=3, seed=batch).float(), _randn(batch, 3, 5, seed=batch)
        with torch.no_grad():
            want = net(tokens, features)
        (got,) = session.run(None, {"tokens": tokens.numpy(), "features": features.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)


def test_the_summary_does_not_mark_an_embeddings_class_count_as_inferred():
    from graphspec.summary import summarize
    d = {"version": 1, "name": "emb", "inputs": {"tokens": {"type": "recurrent", "size": 1, "length": 4}},
         "vertices": {"words": {"type": "embedding_sequence", "inputs": ["tokens"], "num_embeddings": 10, "out": 3},
                      "rnn": {"type": "lstm", "inputs": ["words"], "out": 2}},
         "outputs": ["rnn"]}
    rows = {r.name: r for r in summarize(d).rows}
    assert (rows["words"].n_in, rows["words"].in_inferred) == (10, False)
    assert (rows["rnn"].n_in, rows["rnn"].in_inferred) == (3, True)
