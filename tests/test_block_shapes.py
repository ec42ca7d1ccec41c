"""Blocks that read the inferred shapes of their inputs: one template for any width and any input size."""
from __future__ import annotations

import pytest
import torch

import graphspec
from graphspec import SpecError, load_spec

RESIDUAL = {  # project the shortcut only where the width or the resolution changes
    "params": {"out": "required", "stride": 1},
    "output": "$name-add",
    "vertices": {
        "$name-conv": {"type": "conv", "inputs": ["$input"], "kernel": 3, "stride": "$stride", "out": "$out"},
        "if channels != out or stride != 1": {
            "$name-proj": {"type": "conv", "inputs": ["$input"], "kernel": 1, "stride": "$stride", "out": "$out"}},
        "$name-add": {"type": "elementwise", "op": "add", "inputs": [
            "$name-conv", "${name + '-proj' if channels != out or stride != 1 else input}"]},
    },
}
HEAD = {  # pool the whole map, whatever its size
    "vertices": {"$name": {"type": "subsampling", "inputs": ["$input"], "pooling": "avg",
                           "kernel": "${[height, width]}", "stride": 1,
                           "convolution_mode": "truncate"}},
}


def _spec(size: int, blocks=None, vertices=None) -> dict:
    return {"version": 1, "name": "shapes", "defaults": {"activation": "identity", "convolution_mode": "same"},
            "inputs": {"x": {"type": "convolutional", "channels": 3, "height": size, "width": size}},
            "blocks": blocks or {"res": RESIDUAL, "head": HEAD},
            "vertices": vertices or {"a": {"block": "res", "inputs": ["x"], "out": 3},
                                     "b": {"block": "res", "inputs": ["a"], "out": 8, "stride": 2},
                                     "c": {"block": "res", "inputs": ["b"], "out": 8},
                                     "pool": {"block": "head", "inputs": ["c"]}},
            "outputs": ["pool"]}


@pytest.mark.parametrize("size", [8, 13])
def test_a_block_reads_its_inputs_channels_height_and_width(size):
    spec = load_spec(_spec(size))
    assert [n for n in spec.vertices if n.endswith("-proj")] == ["b-proj"]  # only where 3 -> 8 and stride 2
    assert spec.vertices["a-add"].inputs == ["a-conv", "x"]
    side = -(-size // 2)
    assert spec.vertices["pool"].cfg.kernel == (side, side)
    assert spec.analysis.shapes["pool"] == (8, 1, 1)
    x = torch.randn(2, 3, size, size)
    assert graphspec.build(spec)(x).shape == (2, 8, 1, 1)


def test_a_parameter_of_the_same_name_wins_over_the_inferred_shape():
    block = {"params": {"channels": 5}, "vertices": {"$name": {"type": "conv", "inputs": ["$input"], "kernel": 1,
                                                               "out": "$channels"}}}
    spec = load_spec(_spec(8, {"b": block}, {"v": {"block": "b", "inputs": ["x"]}}) | {"outputs": ["v"]})
    assert spec.analysis.shapes["v"] == (5, 8, 8)


def test_shapes_of_several_inputs_and_of_a_feed_forward_input():
    block = {"vertices": {"$name-m": {"type": "merge", "inputs": "$inputs"},
                          "$name": {"type": "dense", "inputs": ["$name-m"], "out": "${shapes[0][0] + shapes[1][0]}"}}}
    d = {"version": 1, "name": "ff", "defaults": {"activation": "identity"},
         "inputs": {"a": {"type": "feed_forward", "size": 3}, "b": {"type": "feed_forward", "size": 4}},
         "blocks": {"sum": block, "same": {"vertices": {"$name": {"type": "dense", "inputs": ["$input"],
                                                                  "out": "$channels"}}}},
         "vertices": {"v": {"block": "sum", "inputs": ["a", "b"]}, "w": {"block": "same", "inputs": ["v"]}},
         "outputs": ["w"]}
    spec = load_spec(d)
    assert spec.analysis.shapes["v"] == (7,) and spec.analysis.shapes["w"] == (7,)


def test_reading_the_shape_of_an_input_defined_later_is_an_error():
    vertices = {"p": {"block": "head", "inputs": ["late"]},
                "late": {"type": "conv", "inputs": ["x"], "kernel": 1, "out": 2}}
    with pytest.raises(SpecError) as e:
        load_spec(_spec(8, vertices=vertices) | {"outputs": ["p"]})
    assert e.value.problems[0].message == (
        "block 'head' reads the shape of its input 'late', which is not known here: the input must be defined "
        "before 'p' and be valid")
    assert e.value.problems[0].vertex == "p"


def test_reading_the_shape_of_an_invalid_input_is_one_more_error_not_a_crash():
    vertices = {"bad": {"type": "conv", "inputs": ["x"], "kernel": 1, "out": 0},
                "p": {"block": "head", "inputs": ["bad"]}}
    with pytest.raises(SpecError) as e:
        load_spec(_spec(8, vertices=vertices) | {"outputs": ["p"]})
    assert [p.message for p in e.value.problems] == [
        "block 'head' reads the shape of its input 'bad', which is not known here: 'bad' has a problem: 'out': "
        "input should be greater than or equal to 1; received 0"]


def test_a_block_that_reads_no_shape_does_not_need_its_input_defined_first():
    block = {"params": {"out": "required"}, "vertices": {"$name": {"type": "dense", "inputs": ["$input"],
                                                                   "out": "$out"}}}
    d = {"version": 1, "name": "late", "defaults": {"activation": "identity"},
         "inputs": {"x": {"type": "feed_forward", "size": 3}}, "blocks": {"d": block},
         "vertices": {"v": {"block": "d", "inputs": ["w"], "out": 2}, "w": {"type": "dense", "inputs": ["x"],
                                                                            "out": 4}},
         "outputs": ["v"]}
    assert load_spec(d).analysis.shapes["v"] == (2,)
