"""The plumbing vertices real graphs need, each against torch: merge along an axis, element-wise min and divide,
the abs activation, cosine similarity, identity, DL4J's preprocessors as vertices, stack and unstack."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import graphspec
from graphspec import SpecError, load_spec


def _net(vertex: dict, *shapes) -> torch.nn.Module:
    names = [f"x{i}" for i in range(len(shapes))]

    def input_def(s):
        if len(s) == 3:
            return {"type": "convolutional", "channels": s[0], "height": s[1], "width": s[2]}
        return {"type": "feed_forward", "size": s[0]}
    return graphspec.build({"version": 1, "name": "plumbing", "inputs": {n: input_def(s) for n, s in zip(names, shapes)},
                            "vertices": {"v": {**vertex, "inputs": names}}, "outputs": ["v"]})


def _xs(*shapes, batch=3):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, *s, generator=g) for s in shapes]


@pytest.mark.parametrize("axis,dim", [(1, 1), (2, 2), (3, 3), (-1, 3), (-2, 2)])
def test_merge_along_an_axis_is_torch_cat(axis, dim):
    shapes = [(2, 3, 4), (2, 3, 4)]
    net, xs = _net({"type": "merge", "axis": axis}, *shapes), _xs(*shapes)
    torch.testing.assert_close(net(*xs), torch.cat(xs, dim=dim), rtol=0, atol=0)


def test_merge_axis_errors():
    with pytest.raises(SpecError) as e:
        load_spec({"version": 1, "name": "m", "inputs": {"a": {"type": "feed_forward", "size": 3}},
                   "vertices": {"v": {"type": "merge", "inputs": ["a"], "axis": 2}}, "outputs": ["v"]})
    assert e.value.problems[0].message == ("'axis' must be in 1..1 or -1..-1 for inputs of rank 2 (the batch, "
                                           "dimension 0, cannot be merged); received 2; input shapes: a [3]")
    with pytest.raises(SpecError) as e:
        graphspec.load_spec({"version": 1, "name": "m", "inputs": {
            "a": {"type": "convolutional", "channels": 2, "height": 3, "width": 4},
            "b": {"type": "convolutional", "channels": 3, "height": 3, "width": 4}},
            "vertices": {"v": {"type": "merge", "inputs": ["a", "b"], "axis": -1}}, "outputs": ["v"]})
    assert e.value.problems[0].message.startswith("inputs must agree on every dimension but dimension 3, the one "
                                                  "merged; received [2, 3, 4], [3, 3, 4]")


@pytest.mark.parametrize("op,reference", [("min", lambda a, b, c: torch.minimum(torch.minimum(a, b), c)),
                                          ("max", lambda a, b, c: torch.maximum(torch.maximum(a, b), c))])
def test_elementwise_min_and_max(op, reference):
    xs = _xs((4,), (4,), (4,))
    torch.testing.assert_close(_net({"type": "elementwise", "op": op}, (4,), (4,), (4,))(*xs), reference(*xs))


def test_elementwise_divide_takes_exactly_two_inputs():
    a, b = _xs((2, 3, 3), (2, 3, 3))
    torch.testing.assert_close(_net({"type": "elementwise", "op": "divide"}, (2, 3, 3), (2, 3, 3))(a, b), a / b)
    with pytest.raises(SpecError) as e:
        _net({"type": "elementwise", "op": "divide"}, (3,), (3,), (3,))
    assert e.value.problems[0].message.startswith("op 'divide' needs exactly 2 inputs; received 3")


def test_abs_activation_makes_an_absolute_difference():
    a, b = _xs((5,), (5,))
    net = graphspec.build("""
version: 1
name: absdiff
inputs: {a: {type: feed_forward, size: 5}, b: {type: feed_forward, size: 5}}
vertices:
  diff: {type: elementwise, op: subtract, inputs: [a, b]}
  absdiff: {type: activation, activation: abs, inputs: [diff]}
outputs: [absdiff]
""")
    torch.testing.assert_close(net(a, b), (a - b).abs(), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)])
def test_cosine_similarity_is_torch_over_all_values(shape):
    a, b = _xs(shape, shape)
    got = _net({"type": "cosine_similarity"}, shape, shape)(a, b)
    assert got.shape == (3, 1)
    torch.testing.assert_close(got[:, 0], F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1))
    # by hand: a·b / (|a||b|)
    want = (a.flatten(1) * b.flatten(1)).sum(1) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1))
    torch.testing.assert_close(got[:, 0], want)


def test_identity_passes_through():
    (x,) = _xs((2, 3, 3))
    assert torch.equal(_net({"type": "identity"}, (2, 3, 3))(x), x)


def test_preprocessors_flatten_and_unflatten_in_c_order():
    (x,) = _xs((2, 3, 4))
    flat = _net({"type": "preprocessor", "preprocessor": "cnn_to_feed_forward"}, (2, 3, 4))(x)
    assert torch.equal(flat, x.reshape(3, 24))
    back = _net({"type": "PreprocessorVertex", "preprocessor": "feed_forward_to_cnn", "channels": 2, "height": 3,
                 "width": 4}, (24,))(flat)
    assert torch.equal(back, x)
    with pytest.raises(SpecError) as e:
        _net({"type": "preprocessor", "preprocessor": "feed_forward_to_cnn", "channels": 2, "height": 3,
              "width": 5}, (24,))
    assert e.value.problems[0].message.startswith("expected [30] features to unflatten to [2, 3, 5]; received [24]")
    with pytest.raises(SpecError) as e:
        _net({"type": "preprocessor", "preprocessor": "feed_forward_to_cnn", "channels": 2}, (24,))
    assert "'feed_forward_to_cnn' needs 'channels', 'height' and 'width'" in e.value.problems[0].message


def test_stack_then_unstack_is_the_identity_per_input():
    a, b, c = _xs((3,), (3,), (3,))
    stacked = _net({"type": "StackVertex"}, (3,), (3,), (3,))(a, b, c)
    assert torch.equal(stacked, torch.cat([a, b, c], 0))
    for i, want in enumerate((a, b, c)):
        got = _net({"type": "unstack", "from": i, "stack_size": 3}, (3,))(stacked)
        assert torch.equal(got, want)
    with pytest.raises(SpecError) as e:
        _net({"type": "unstack", "from": 3, "stack_size": 3}, (3,))
    assert "'from' must be below 'stack_size' (3); received 3" in e.value.problems[0].message


def test_dense_on_a_sequence_transforms_every_time_step():
    d = {"version": 1, "name": "steps", "defaults": {"activation": "identity"},
         "inputs": {"x": {"type": "feed_forward", "size": 12}},
         "vertices": {"seq": {"type": "reshape", "inputs": ["x"], "shape": [4, 3]},  # [size 4, T 3]
                      "d": {"type": "dense", "inputs": ["seq"], "out": 5}},
         "outputs": ["d"]}
    net, spec = graphspec.build(d), load_spec(d)
    assert spec.analysis.shapes["d"] == (5, 3)
    x = _xs((12,))[0]
    seq = x.reshape(3, 4, 3)
    expected = torch.stack([F.linear(seq[:, :, t], net.d.weight, net.d.bias) for t in range(3)], dim=2)
    torch.testing.assert_close(net(x), expected)
    summary = graphspec.summarize(spec)
    row = next(r for r in summary.rows if r.name == "d")
    assert (row.params, row.macs) == (4 * 5 + 5, 4 * 5 * 3)


@pytest.mark.parametrize("pooling,reference", [("avg", lambda s: s.mean(2)), ("max", lambda s: s.amax(2)),
                                               ("sum", lambda s: s.sum(2))])
def test_global_pool_over_the_time_steps_of_a_sequence(pooling, reference):
    d = {"version": 1, "name": "tokens", "inputs": {"x": {"type": "recurrent", "size": 4, "length": 5}},
         "vertices": {"pool": {"type": "global_pool", "inputs": ["x"], "pooling": pooling}}, "outputs": ["pool"]}
    seq = _xs((4, 5))[0]
    assert load_spec(d).analysis.shapes["pool"] == (4,)
    torch.testing.assert_close(graphspec.build(d)(seq), reference(seq))
