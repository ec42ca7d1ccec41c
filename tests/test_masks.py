"""Masks through a compiled graph: a sequence input ``x`` gives the forward an optional ``x_mask`` [N, T]; padding a
batch with masked steps changes nothing for the real ones, whatever the graph between input and output."""
from __future__ import annotations

import torch

import graphspec

SPEC = {"version": 1, "name": "masked", "seed": 0, "defaults": {"activation": "identity"},
        "inputs": {"x": {"type": "recurrent", "size": 3, "length": 7}},
        "vertices": {"conv": {"type": "conv1d", "inputs": ["x"], "kernel": 3, "out": 4, "convolution_mode": "same"},
                     "lstm": {"type": "lstm", "inputs": ["conv"], "out": 5},
                     "back": {"type": "reverse_time_series", "inputs": ["lstm"]},
                     "gru": {"type": "gru", "inputs": ["back"], "out": 4, "bidirectional": "concat"},
                     "last": {"type": "last_time_step", "inputs": ["gru"]},
                     "out": {"type": "dense", "inputs": ["last"], "out": 2}},
        "outputs": ["out"]}


def _alone(net_for, sequence):
    """The network built for a sequence's own length, run on it unpadded (the same weights)."""
    d = {**SPEC, "inputs": {"x": {"type": "recurrent", "size": 3, "length": sequence.shape[1]}}}
    alone = graphspec.build(d)
    alone.load_state_dict(net_for.state_dict())
    return alone(sequence.unsqueeze(0))[0]


def test_padding_with_masked_steps_changes_nothing_for_the_real_ones():
    net = graphspec.build(SPEC).eval()
    lengths = [7, 4, 2]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 7, generator=g)  # the padded steps hold noise, not zeros
    mask = torch.tensor([[1.0] * n + [0.0] * (7 - n) for n in lengths])
    with torch.no_grad():
        padded = net(x, mask)
        alone = torch.stack([_alone(net, x[i, :, :n]) for i, n in enumerate(lengths)])
        unmasked = net(x)
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unmasked[1:], alone[1:], atol=1e-3)  # without the mask the padding does matter
    torch.testing.assert_close(net(x, x_mask=mask), padded)  # by keyword: the input's name + "_mask"


def test_a_graph_without_sequences_takes_no_mask_and_exports_as_before():
    import inspect
    net = graphspec.build("resnet18")
    assert list(inspect.signature(net.forward).parameters) == ["image"]
    assert list(inspect.signature(graphspec.build(SPEC).forward).parameters) == ["x", "x_mask"]


def test_a_merge_of_two_masked_sequences_carries_the_or_of_their_masks_and_none_without_both():
    from graphspec.compiler import subgraph
    spec = {"version": 1, "name": "two", "inputs": {"a": {"type": "recurrent", "size": 2},
                                                   "b": {"type": "recurrent", "size": 3}},
            "vertices": {"both": {"type": "merge", "inputs": ["a", "b"]},
                         "sum": {"type": "elementwise", "inputs": ["a", "a"], "op": "add"}},
            "outputs": ["both", "sum"]}
    net = graphspec.build(spec)
    trunk = subgraph(net, ["both", "sum"], with_masks=True)
    ma, mb = torch.tensor([[1.0, 1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    _, masks = trunk(torch.randn(1, 2, 4), torch.randn(1, 3, 4), ma, mb)
    torch.testing.assert_close(masks["both"], torch.tensor([[1.0, 1.0, 1.0, 0.0]]))  # DL4J's MergeVertex: OR
    torch.testing.assert_close(masks["sum"], ma)
    _, masks = trunk(torch.randn(1, 2, 4), torch.randn(1, 3, 4), a_mask=ma)
    assert masks["both"] is None  # one input without a mask: none (DL4J)
