"""Registry-wide tests: every registered vertex type is exercised by the same checks.

A newly registered type is picked up automatically by ``all_types()``; it must get an entry in ``EXAMPLES``
(``test_every_registered_type_has_an_example`` fails otherwise) and is then checked for: static shape vs real
forward shape (train and eval), parameter counts and state_dict keys vs its ``ParamShape`` list, YAML round trip
(equal spec, identical weights and outputs), in-channel inference, ``defaults`` inheritance and DL4J aliases.
"""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from graphspec import SpecError, build, load_spec
from graphspec.graph import analyze
from graphspec.registry import all_types, lookup

TYPES = all_types()
V = "v"  # the name of the vertex under test in every example spec

# type name -> list of cases. A case: id, the vertex's parameters, the shapes of its network inputs (one network
# input per vertex input, named x0, x1, ...), and for types with an `in` key the number of inputs it must infer.
EXAMPLES: dict[str, list[dict]] = {
    "conv": [
        dict(id="truncate", params={"out": 4, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0]},
             inputs=[(3, 9, 8)], n_in=3),
        dict(id="same-asymmetric", params={"out": 5, "kernel": 3, "stride": 2, "convolution_mode": "same"},
             inputs=[(2, 7, 6)], n_in=2),
        dict(id="dilated-nobias", params={"out": 2, "kernel": 3, "dilation": 2, "bias": False, "activation": "relu"},
             inputs=[(3, 9, 9)], n_in=3),
        dict(id="strict", params={"out": 3, "kernel": 3, "stride": 2, "convolution_mode": "strict"},
             inputs=[(1, 7, 9)], n_in=1),
        dict(id="same-dilated", params={"out": 2, "kernel": 3, "dilation": 2, "convolution_mode": "same"},
             inputs=[(2, 7, 6)], n_in=2),
    ],
    "subsampling": [
        dict(id="max-pad", params={"pooling": "max", "kernel": 3, "stride": 2, "padding": 1}, inputs=[(3, 8, 7)]),
        dict(id="avg-same", params={"pooling": "avg", "kernel": 3, "stride": 2, "convolution_mode": "same"},
             inputs=[(2, 8, 7)]),
        dict(id="sum", params={"pooling": "sum", "kernel": [2, 3], "stride": [2, 1]}, inputs=[(2, 6, 6)]),
        dict(id="pnorm3", params={"pooling": "pnorm", "pnorm": 3, "kernel": 3, "stride": 1}, inputs=[(2, 5, 5)]),
        dict(id="defaults", params={}, inputs=[(2, 6, 5)]),
        dict(id="same-clamped-pad", params={"kernel": 2, "stride": 3, "convolution_mode": "same"},
             inputs=[(1, 9, 10)]),
    ],
    "batchnorm": [
        dict(id="conv", params={}, inputs=[(4, 3, 3)], n_in=4),
        dict(id="ff", params={"decay": 0.5, "eps": 1e-3}, inputs=[(6,)], n_in=6),
        dict(id="locked", params={"lock_gamma_beta": True, "gamma": 2.0, "beta": -1.0}, inputs=[(3, 2, 2)], n_in=3),
    ],
    "activation": [
        dict(id="tanh-conv", params={"activation": "tanh"}, inputs=[(2, 3, 3)]),
        dict(id="softmax-ff", params={"activation": "softmax"}, inputs=[(5,)]),
    ],
    "lrn": [dict(id="n5", params={"k": 1, "n": 5, "alpha": 1e-4, "beta": 0.75}, inputs=[(7, 4, 4)]),
            dict(id="even-n", params={"n": 4}, inputs=[(6, 3, 3)])],
    "dense": [
        dict(id="ff", params={"out": 5, "activation": "relu"}, inputs=[(7,)], n_in=7),
        dict(id="flatten-conv", params={"out": 3, "bias": False}, inputs=[(3, 4, 5)], n_in=60),
    ],
    "output": [dict(id="softmax", params={"out": 4, "activation": "softmax", "loss": "mcxent"}, inputs=[(6,)], n_in=6),
               dict(id="flatten", params={"out": 2, "loss": "mse"}, inputs=[(2, 3, 3)], n_in=18)],
    "center_loss_output": [
        dict(id="ff", params={"out": 5, "activation": "softmax", "alpha": 0.9, "lambda": 1e-4, "loss": "squared_loss"},
             inputs=[(8,)], n_in=8),
        dict(id="nobias", params={"out": 3, "bias": False}, inputs=[(4,)], n_in=4),
    ],
    "dropout": [dict(id="half", params={"rate": 0.5}, inputs=[(3, 4, 4)]), dict(id="ff", params={}, inputs=[(9,)])],
    "global_pool": [
        dict(id="max-collapse", params={"pooling": "max"}, inputs=[(3, 4, 5)]),
        dict(id="avg-keep", params={"pooling": "avg", "collapse": False}, inputs=[(3, 4, 5)]),
        dict(id="pnorm", params={"pooling": "pnorm", "pnorm": 3}, inputs=[(2, 3, 3)]),
        dict(id="sequence-avg", params={"pooling": "avg"}, inputs=[(4, 6)]),
        dict(id="sequence-max-keep", params={"pooling": "max", "collapse": False}, inputs=[(4, 6)]),
    ],
    "merge": [
        dict(id="conv", params={}, inputs=[(3, 4, 4), (5, 4, 4), (1, 4, 4)]),
        dict(id="ff", params={}, inputs=[(3,), (4,)]),
        dict(id="single", params={}, inputs=[(2, 3, 3)]),
        dict(id="width-axis", params={"axis": -1}, inputs=[(2, 3, 4), (2, 3, 1)]),
        dict(id="height-axis", params={"axis": 2}, inputs=[(2, 3, 4), (2, 5, 4)]),
    ],
    "elementwise": [
        dict(id="add3", params={"op": "add"}, inputs=[(2, 3, 3)] * 3),
        dict(id="subtract", params={"op": "subtract"}, inputs=[(5,), (5,)]),
        dict(id="max", params={"op": "max"}, inputs=[(4,), (4,)]),
        dict(id="min3", params={"op": "min"}, inputs=[(4,)] * 3),
        dict(id="divide", params={"op": "divide"}, inputs=[(2, 2, 2), (2, 2, 2)]),
    ],
    "cosine_similarity": [dict(id="ff", params={}, inputs=[(5,), (5,)]),
                          dict(id="conv", params={"eps": 1e-6}, inputs=[(2, 3, 3), (2, 3, 3)])],
    "identity": [dict(id="conv", params={}, inputs=[(2, 3, 3)]), dict(id="ff", params={}, inputs=[(4,)])],
    "preprocessor": [dict(id="flatten", params={"preprocessor": "cnn_to_feed_forward"}, inputs=[(2, 3, 4)]),
                     dict(id="unflatten", params={"preprocessor": "feed_forward_to_cnn", "channels": 2, "height": 3,
                                                  "width": 2}, inputs=[(12,)]),
                     dict(id="rnn-rows", params={"preprocessor": "rnn_to_feed_forward", "length": 4}, inputs=[(3, 4)]),
                     dict(id="rnn-images", params={"preprocessor": "rnn_to_cnn", "channels": 2, "height": 2, "width": 1,
                                                   "length": 3}, inputs=[(4, 3)]),
                     dict(id="rows-rnn", params={"preprocessor": "feed_forward_to_rnn", "length": 1}, inputs=[(5,)]),
                     dict(id="images-rnn", params={"preprocessor": "cnn_to_rnn", "length": 1}, inputs=[(2, 2, 2)])],
    "stack": [dict(id="two", params={}, inputs=[(3,), (3,)]), dict(id="one-conv", params={}, inputs=[(2, 3, 3)])],
    "unstack": [dict(id="second", params={"from": 1, "stack_size": 2}, inputs=[(3,)])],
    "l2_normalize": [dict(id="ff", params={"eps": 1e-6}, inputs=[(5,)]),
                     dict(id="conv-dims", params={"dims": [2, 3]}, inputs=[(2, 3, 4)])],
    "subset": [dict(id="conv", params={"from": 1, "to": 2}, inputs=[(4, 3, 3)]),
               dict(id="ff", params={"from": 0, "to": 0}, inputs=[(6,)])],
    "scale": [dict(id="conv", params={"factor": 2.5}, inputs=[(2, 3, 3)])],
    "shift": [dict(id="ff", params={"amount": -1.5}, inputs=[(4,)])],
    "reshape": [dict(id="ff", params={"shape": [-1, 4]}, inputs=[(12,)]),
                dict(id="conv", params={"shape": [4, 6]}, inputs=[(2, 3, 4)])],
    "l2_distance": [dict(id="ff", params={}, inputs=[(5,), (5,)]),
                    dict(id="conv", params={"eps": 1e-6}, inputs=[(2, 3, 3), (2, 3, 3)])],
    "pool_helper": [dict(id="conv", params={}, inputs=[(3, 5, 6)])],
    "layer_norm": [dict(id="sequence", params={}, inputs=[(4, 5)]),
                   dict(id="image-nobias", params={"eps": 1e-3, "bias": False}, inputs=[(3, 2, 2)]),
                   dict(id="ff", params={}, inputs=[(6,)])],
    "self_attention": [
        dict(id="heads", params={"n_heads": 2, "out": 6}, inputs=[(4, 5)], n_in=4),
        dict(id="bias-head-size", params={"n_heads": 2, "head_size": 3, "out": 4, "bias": True}, inputs=[(5, 3)],
             n_in=5),
        dict(id="no-projection", params={"n_heads": 1, "project_input": False}, inputs=[(4, 5)], n_in=4),
    ],
    "permute": [dict(id="sequence", params={"dims": [2, 1]}, inputs=[(3, 4)]),
                dict(id="image", params={"dims": [2, 3, 1]}, inputs=[(2, 3, 4)])],
    "position_embedding": [dict(id="sequence", params={"std": 0.1}, inputs=[(3, 4)])],
    "class_token": [dict(id="sequence", params={}, inputs=[(3, 4)])],
    "time_step": [dict(id="first", params={"index": 0}, inputs=[(3, 4)]),
                  dict(id="last", params={"index": -1}, inputs=[(3, 4)])],
    "cnn_loss": [dict(id="mcxent", params={}, inputs=[(3, 2, 2)]),
                 dict(id="mse", params={"loss": "mse", "activation": "tanh"}, inputs=[(2, 3, 3)])],
    "loss": [dict(id="contrastive", params={"loss": "contrastive", "margin": 2.0}, inputs=[(1,)]),
             dict(id="triplet", params={"loss": "triplet"}, inputs=[(4,)]),
             dict(id="mse-sigmoid", params={"loss": "mse", "activation": "sigmoid"}, inputs=[(2, 3, 3)])],
    "upsampling": [dict(id="nearest", params={"size": [2, 3]}, inputs=[(2, 3, 4)]),
                   dict(id="bilinear", params={"interpolation": "bilinear"}, inputs=[(2, 3, 3)])],
    "deconv": [dict(id="same", params={"out": 3, "kernel": 3, "stride": 2, "convolution_mode": "same"},
                    inputs=[(2, 4, 5)], n_in=2),
               dict(id="same-negative-crop", params={"out": 2, "kernel": 1, "stride": 3, "convolution_mode": "same"},
                    inputs=[(2, 3, 3)], n_in=2),
               dict(id="truncate", params={"out": 2, "kernel": [3, 2], "stride": [2, 1], "padding": 1, "bias": False},
                    inputs=[(3, 4, 4)], n_in=3)],
    "zero_padding": [dict(id="four", params={"padding": [1, 2, 3, 4]}, inputs=[(2, 3, 3)])],
    "cropping": [dict(id="two", params={"cropping": [1, 2]}, inputs=[(2, 5, 6)])],
    "space_to_depth": [dict(id="b2", params={"block_size": 2}, inputs=[(3, 4, 6)])],
    "depth_to_space": [dict(id="b2", params={"block_size": 2}, inputs=[(8, 2, 3)])],
    "depthwise_conv": [dict(id="m2-same", params={"depth_multiplier": 2, "kernel": 3, "stride": 2,
                                                  "convolution_mode": "same"}, inputs=[(3, 5, 6)], n_in=3)],
    "separable_conv": [dict(id="m2", params={"out": 4, "depth_multiplier": 2, "kernel": 3}, inputs=[(3, 5, 5)],
                            n_in=3)],
    "lstm": [dict(id="fused", params={"out": 3}, inputs=[(4, 5)], n_in=4),
             dict(id="loop-concat", params={"out": 2, "activation": "softsign", "gate_activation": "hardsigmoid",
                                            "bidirectional": "concat"}, inputs=[(3, 4)], n_in=3)],
    "graves_lstm": [dict(id="one-way", params={"out": 3}, inputs=[(4, 5)], n_in=4),
                    dict(id="add", params={"out": 2, "bidirectional": "add", "forget_gate_bias_init": 0.5},
                         inputs=[(3, 4)], n_in=3)],
    "simple_rnn": [dict(id="tanh", params={"out": 3}, inputs=[(4, 5)], n_in=4),
                   dict(id="relu-concat", params={"out": 2, "activation": "relu", "bidirectional": "concat"},
                        inputs=[(3, 4)], n_in=3),
                   dict(id="sigmoid-mul", params={"out": 2, "activation": "sigmoid", "bidirectional": "mul"},
                        inputs=[(3, 4)], n_in=3)],
    "gru": [dict(id="fused", params={"out": 3}, inputs=[(4, 5)], n_in=4),
            dict(id="average", params={"out": 2, "bidirectional": "average"}, inputs=[(3, 4)], n_in=3)],
    "embedding": [dict(id="index", params={"num_embeddings": 3, "out": 4, "activation": "tanh"}, inputs=[(1,)]),
                  dict(id="steps-nobias", params={"num_embeddings": 2, "out": 3, "bias": False}, inputs=[(1, 1)])],
    # random normal inputs are valid indices (truncated toward zero: 0 or 1) only for one step per example
    "embedding_sequence": [dict(id="steps", params={"num_embeddings": 2, "out": 3, "activation": "identity"},
                                inputs=[(1, 1)])],
    "conv1d": [dict(id="truncate", params={"out": 3, "kernel": 3, "stride": 2, "padding": 1, "dilation": 2},
                    inputs=[(2, 9)], n_in=2),
               dict(id="same", params={"out": 2, "kernel": 4, "stride": 2, "convolution_mode": "same"}, inputs=[(3, 7)],
                    n_in=3),
               dict(id="causal-nobias", params={"out": 2, "kernel": 3, "convolution_mode": "causal", "bias": False},
                    inputs=[(2, 5)], n_in=2)],
    "subsampling1d": [dict(id="max-defaults", params={}, inputs=[(2, 5)]),
                      dict(id="avg-same", params={"pooling": "avg", "kernel": 3, "stride": 2,
                                                  "convolution_mode": "same"}, inputs=[(3, 7)]),
                      dict(id="pnorm", params={"pooling": "pnorm", "pnorm": 2, "kernel": 2, "stride": 2},
                           inputs=[(2, 6)])],
    "rnn_output": [dict(id="softmax", params={"out": 3, "activation": "softmax"}, inputs=[(4, 5)], n_in=4),
                   dict(id="mse-nobias", params={"out": 2, "loss": "mse", "bias": False}, inputs=[(3, 2)], n_in=3)],
    "rnn_loss": [dict(id="mcxent", params={}, inputs=[(3, 4)]),
                 dict(id="mse", params={"loss": "mse", "activation": "tanh"}, inputs=[(2, 3)])],
    "last_time_step": [dict(id="sequence", params={}, inputs=[(3, 4)])],
    "duplicate_to_time_series": [dict(id="vector-sequence", params={}, inputs=[(3,), (2, 4)])],
    "reverse_time_series": [dict(id="sequence", params={}, inputs=[(3, 4)])],
}


def _input_def(shape) -> dict:
    if len(shape) == 3:
        return {"type": "convolutional", "channels": shape[0], "height": shape[1], "width": shape[2]}
    if len(shape) == 2:
        return {"type": "recurrent", "size": shape[0], "length": shape[1]}
    assert len(shape) == 1
    return {"type": "feed_forward", "size": shape[0]}


def example_doc(type_name: str, case: dict, **override) -> dict:
    names = [f"x{i}" for i in range(len(case["inputs"]))]
    vertex = {"type": type_name, "inputs": names, **case["params"], **override}
    return {"version": 1, "name": f"example-{type_name}-{case['id']}", "seed": 11,
            "inputs": {n: _input_def(s) for n, s in zip(names, case["inputs"])},
            "vertices": {V: vertex}, "outputs": [V]}


def example_inputs(case: dict, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, *s, generator=g) for s in case["inputs"]]


# Known graphspec bugs, as (test, case id) -> reason; the case is marked xfail(strict=True) in that test only, so
# it fails loudly once the bug is fixed (then delete the entry).
KNOWN_BUGS: dict = {}


def _cases(test: str = ""):
    out = []
    for name in sorted(TYPES):
        cases = EXAMPLES.get(name) or [None]
        for case in cases:
            cid = f"{name}-{case['id']}" if case else f"{name}-MISSING"
            reason = KNOWN_BUGS.get((test, cid))
            raises = RuntimeError if test == "backward" else AssertionError
            marks = [pytest.mark.xfail(strict=True, raises=raises, reason=reason)] if reason else []
            out.append(pytest.param(name, case, id=cid, marks=marks))
    return out


CASES = _cases()


def _need(case, name):
    if case is None:
        pytest.fail(f"registered vertex type '{name}' has no example in tests/test_registry.py EXAMPLES")


def _has_field(entry, alias: str) -> bool:
    return any((f.alias or n) == alias for n, f in entry.Params.model_fields.items())


# --- coverage of the registry ----------------------------------------------------------------------------------


def test_every_registered_type_has_an_example():
    missing = sorted(set(TYPES) - set(EXAMPLES))
    assert not missing, f"registered types without an example in EXAMPLES: {missing}"
    stale = sorted(set(EXAMPLES) - set(TYPES))
    assert not stale, f"EXAMPLES names types that are not registered: {stale}"
    assert all(EXAMPLES[n] for n in TYPES)


def test_registry_is_not_trivially_small():
    # The DL4J layers/vertices the nn4small2 tutorial needs must be registered.
    for name in ("conv", "subsampling", "batchnorm", "activation", "lrn", "dense", "merge", "l2_normalize",
                 "center_loss_output"):
        assert name in TYPES


@pytest.mark.parametrize("name", sorted(TYPES))
def test_entry_is_consistent(name):
    entry = TYPES[name]
    assert entry.name == name
    assert entry.kind in ("input", "layer", "vertex")
    assert lookup(name) is entry
    lo, hi = entry.arity
    assert lo >= 1 and (hi is None or hi >= lo)
    for key in entry.uses:  # keys inherited from `defaults` must exist on both sides
        assert _has_field(entry, key), f"'{name}' uses '{key}' but its Params have no such field"


# --- static shapes vs the real forward ---------------------------------------------------------------------


@pytest.mark.parametrize("name,case", CASES)
def test_static_shape_equals_forward_shape(name, case):
    _need(case, name)
    module = build(example_doc(name, case))
    analysis = module.graphspec.analysis
    static, batch = analysis.shapes[V], 2 * analysis.batch[V]  # stack/unstack change the batch, statically known
    xs = example_inputs(case)
    for mode in ("train", "eval"):
        module.train(mode == "train")
        with torch.no_grad():
            y = module(*xs)
        assert tuple(y.shape) == (batch, *static), f"{mode} mode: forward {tuple(y.shape)} vs ({batch}, {static})"
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,case", _cases("backward"))
def test_train_mode_backward_reaches_inputs_and_trainable_params(name, case):
    _need(case, name)
    module = build(example_doc(name, case))
    module.train()
    xs = [x.requires_grad_() for x in example_inputs(case)]
    y = module(*xs)
    (y * torch.linspace(0.5, 1.5, y.numel()).reshape(y.shape)).sum().backward()
    for i, x in enumerate(xs):
        assert x.grad is not None and torch.isfinite(x.grad).all(), f"input {i}"
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def _window(n, k, s, p, d, mode):
    """Independent re-statement of DL4J's output size (SEMANTICS §1.2)."""
    ke = k + (k - 1) * (d - 1)
    return math.ceil(n / s) if mode == "same" else (n + 2 * p - ke) // s + 1


def test_conv_and_pool_static_shapes_follow_dl4j_formulas():
    # conv truncate: (9 + 2·1 - 3)//2 + 1 = 5, (8 - 2)//1 + 1 = 7
    spec = load_spec(example_doc("conv", EXAMPLES["conv"][0]))
    assert analyze(spec).shapes[V] == (4, _window(9, 3, 2, 1, 1, "truncate"), _window(8, 2, 1, 0, 1, "truncate"))
    assert analyze(spec).shapes[V] == (4, 5, 7)
    # same mode: ceil(7/2) = 4, ceil(6/2) = 3
    spec = load_spec(example_doc("conv", EXAMPLES["conv"][1]))
    assert analyze(spec).shapes[V] == (5, 4, 3)
    # dilation 2: effective kernel 5 -> 9 - 5 + 1 = 5
    spec = load_spec(example_doc("conv", EXAMPLES["conv"][2]))
    assert analyze(spec).shapes[V] == (2, _window(9, 3, 1, 0, 2, "truncate"), 5)
    # pooling with padding 1: (8 + 2 - 3)//2 + 1 = 4, (7 + 2 - 3)//2 + 1 = 4
    spec = load_spec(example_doc("subsampling", EXAMPLES["subsampling"][0]))
    assert analyze(spec).shapes[V] == (3, 4, 4)


# --- parameters: counts, trainability, state_dict keys ------------------------------------------------------


def _param_shapes(module):
    spec, analysis = module.graphspec.spec, module.graphspec.analysis
    v = spec.vertices[V]
    return v.entry.param_shapes(v.cfg, analysis.inference[V])


@pytest.mark.parametrize("name,case", _cases("state_dict"))
def test_param_counts_and_state_dict_keys(name, case):
    _need(case, name)
    module = build(example_doc(name, case))
    shapes = _param_shapes(module)
    sd = module.state_dict()
    # keys are <vertex>.<ParamShape.name>, nothing more, nothing less, with the declared shapes
    assert sorted(sd) == sorted(f"{V}.{p.name}" for p in shapes)
    for p in shapes:
        assert tuple(sd[f"{V}.{p.name}"].shape) == p.shape, p.name
    assert sum(p.numel for p in shapes) == sum(t.numel() for t in sd.values())
    trainable = {n: t for n, t in module.named_parameters() if t.requires_grad}
    assert sum(p.numel for p in shapes if p.trainable) == sum(t.numel() for t in trainable.values())
    assert sorted(trainable) == sorted(f"{V}.{p.name}" for p in shapes if p.trainable)


def test_param_counts_match_hand_formulas():
    # conv W [out, in, kh, kw] + b [out]; DL4J counts BN as 4·C (gamma, beta, mean, var); dense in·out + out
    cases = [("conv", EXAMPLES["conv"][0], 4 * 3 * 3 * 2 + 4),
             ("conv", EXAMPLES["conv"][2], 2 * 3 * 3 * 3),
             ("batchnorm", EXAMPLES["batchnorm"][0], 4 * 4),
             ("batchnorm", EXAMPLES["batchnorm"][2], 2 * 3),  # locked gamma/beta are not state
             ("dense", EXAMPLES["dense"][1], 60 * 3),
             ("center_loss_output", EXAMPLES["center_loss_output"][0], 8 * 5 + 5 + 5 * 8)]
    for name, case, expected in cases:
        module = build(example_doc(name, case))
        assert sum(p.numel for p in _param_shapes(module)) == expected, (name, case["id"])


def test_nn4small2_total_params_match_dl4j():
    # SEMANTICS §7: 5,056,933 in DL4J counting; running stats 9,312; centers 735,872.
    module = build("specs/nn4small2.yaml")
    spec, analysis = module.graphspec.spec, module.graphspec.analysis
    shapes = {n: spec.vertices[n].entry.param_shapes(spec.vertices[n].cfg, analysis.inference[n]) for n in spec.vertices}
    total = sum(p.numel for ps in shapes.values() for p in ps)
    assert total == 5_056_933
    assert total == sum(t.numel() for t in module.state_dict().values())
    untrained = sum(p.numel for ps in shapes.values() for p in ps if not p.trainable)
    assert untrained == 9_312 + 735_872
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == 5_056_933 - untrained


# --- YAML round trip ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,case", CASES)
def test_yaml_round_trip(name, case):
    _need(case, name)
    spec = load_spec(example_doc(name, case))
    text = spec.to_yaml()
    again = load_spec(text)
    assert again == spec
    assert again.to_yaml() == text
    assert again.vertices[V].cfg == spec.vertices[V].cfg
    m1, m2 = build(spec, seed=5), build(again, seed=5)
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    xs = example_inputs(case, seed=3)
    for mode in (False, True):
        m1.train(mode)
        m2.train(mode)
        torch.manual_seed(0)
        y1 = m1(*xs)
        torch.manual_seed(0)
        y2 = m2(*xs)
        assert torch.equal(y1, y2)


def test_seeded_build_is_reproducible_and_seed_matters():
    case = EXAMPLES["conv"][0]
    a, b, c = (build(example_doc("conv", case), seed=s) for s in (1, 1, 2))
    assert torch.equal(a.state_dict()[f"{V}.weight"], b.state_dict()[f"{V}.weight"])
    assert not torch.equal(a.state_dict()[f"{V}.weight"], c.state_dict()[f"{V}.weight"])


def test_nn4small2_yaml_round_trip():
    spec = load_spec("specs/nn4small2.yaml")
    again = load_spec(spec.to_yaml())
    assert again == spec
    assert list(again.vertices) == list(spec.vertices)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    m1, m2 = build(spec, seed=9), build(again, seed=9)
    m1.eval()
    m2.eval()
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))


# --- in-channel inference ---------------------------------------------------------------------------------------


IN_CASES = [pytest.param(n, id=n) for n in sorted(TYPES) if _has_field(TYPES[n], "in")]


def _line_of(text: str, needle: str) -> int:
    lines = text.splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if line.startswith(needle)]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def test_types_with_in_are_the_expected_ones():
    assert {p.values[0] for p in IN_CASES} >= {"conv", "batchnorm", "dense", "output", "center_loss_output"}


@pytest.mark.parametrize("name", IN_CASES)
def test_in_is_inferred_checked_and_errors_name_the_vertex(name, tmp_path):
    assert name in EXAMPLES, f"no example for '{name}'"
    case = EXAMPLES[name][0]
    assert "n_in" in case, f"example of '{name}' (it has an 'in' key) must state the expected n_in"
    n_in = case["n_in"]
    # omitted: inferred
    module = build(example_doc(name, case))
    inf = module.graphspec.analysis.inference[V]
    assert inf.n_in == n_in
    assert "in" not in module.graphspec.spec.vertices[V].params  # not written back into the user's params
    # given and right: accepted, same shapes
    spec = load_spec(example_doc(name, case, **{"in": n_in}))
    assert analyze(spec).inference[V].n_in == n_in
    assert analyze(spec).shapes[V] == module.graphspec.analysis.shapes[V]
    # given and wrong: an error naming the vertex, located at the 'in' key
    wrong = n_in + 1
    text = yaml.safe_dump(example_doc(name, case, **{"in": wrong}), sort_keys=False)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as ei:
        load_spec(str(path))
    problems = ei.value.problems
    assert len(problems) == 1
    p = problems[0]
    assert p.vertex == V
    assert p.message.startswith(f"'in' is {wrong} but the input has {n_in} ")
    assert "remove 'in' to infer it or fix the input" in p.message
    assert p.location.file == str(path)
    assert p.location.line == _line_of(text, "    in: ")
    assert str(ei.value).startswith(f"{path}:{p.location.line}:")
    assert f"vertex '{V}'" in str(ei.value)


def test_in_error_messages_exact():
    text = """\
version: 1
name: t
inputs:
  x: {type: convolutional, channels: 3, height: 4, width: 5}
vertices:
  c: {type: conv, inputs: [x], in: 8, out: 2, kernel: 1}
  d: {type: dense, inputs: [c], in: 39, out: 2}
outputs: [d]
"""
    with pytest.raises(SpecError) as ei:
        load_spec(text)
    p = ei.value.problems[0]
    line = text.splitlines().index("  c: {type: conv, inputs: [x], in: 8, out: 2, kernel: 1}") + 1
    col = text.splitlines()[line - 1].index("in:") + 1
    assert str(p) == (f"<string>:{line}:{col}: vertex 'c': 'in' is 8 but the input has 3 channels; remove 'in' to "
                      "infer it or fix the input; input shapes: x [3, 4, 5]")
    # fix the conv: the dense layer's flattened size 2·4·5 = 40 is checked next
    with pytest.raises(SpecError) as ei:
        load_spec(text.replace("in: 8", "in: 3"))
    p = ei.value.problems[0]
    line = text.splitlines().index("  d: {type: dense, inputs: [c], in: 39, out: 2}") + 1
    assert p.vertex == "d" and p.location.line == line
    assert p.message == ("'in' is 39 but the input has 40 features after flattening; remove 'in' to infer it or "
                         "fix the input; input shapes: c [2, 4, 5]")
    assert load_spec(text.replace("in: 8", "in: 3").replace("in: 39", "in: 40")).vertices["d"].cfg.in_ == 40


def test_batchnorm_out_is_checked_too():
    case = EXAMPLES["batchnorm"][0]
    with pytest.raises(SpecError) as ei:
        load_spec(example_doc("batchnorm", case, out=5))
    assert ei.value.problems[0].vertex == V
    assert ei.value.problems[0].message.startswith("'out' is 5 but the input has 4 channels")


# --- MACs ---------------------------------------------------------------------------------------------------


def _macs(doc):
    spec = load_spec(doc)
    a = analyze(spec)
    v = spec.vertices[V]
    return v.entry.macs(v.cfg, a.inference[V])


def test_conv_macs_equal_formula():
    # MACs = C_out · H_out · W_out · C_in · kH · kW
    assert _macs(example_doc("conv", EXAMPLES["conv"][0])) == 4 * 5 * 7 * 3 * 3 * 2
    assert _macs(example_doc("conv", EXAMPLES["conv"][1])) == 5 * math.ceil(7 / 2) * math.ceil(6 / 2) * 2 * 3 * 3
    assert _macs(example_doc("conv", EXAMPLES["conv"][2])) == 2 * 5 * 5 * 3 * 3 * 3  # dilation adds no MACs
    # nn4small2 stem: 7x7 s2 (same) 3 -> 64 on 96x96: 64·48·48·3·49
    spec = load_spec("specs/nn4small2.yaml")
    a = analyze(spec)
    v = spec.vertices["stem-cnn1"]
    assert v.entry.macs(v.cfg, a.inference["stem-cnn1"]) == 64 * 48 * 48 * 3 * 7 * 7


def test_dense_macs_equal_formula():
    assert _macs(example_doc("dense", EXAMPLES["dense"][0])) == 7 * 5
    assert _macs(example_doc("dense", EXAMPLES["dense"][1])) == (3 * 4 * 5) * 3
    assert _macs(example_doc("output", EXAMPLES["output"][0])) == 6 * 4


def _window_values(case, shape_out):
    p = case["params"]
    k = p.get("kernel", 1)
    kh, kw = (k, k) if isinstance(k, int) else k
    return math.prod(shape_out) * kh * kw


def _recurrent_macs(gates: int, peepholes: int = 0):
    """One MAC per weight per time step and direction: T·directions·(gates·n·(n_in + n) + peepholes·n), plus
    combining two directions (add, mul: 1 per output value, average 2; concat 0)."""
    def macs(case, out):
        (n_in, steps), p = case["inputs"][0], case["params"]
        n, mode = p["out"], p.get("bidirectional")
        combine = {"add": 1, "mul": 1, "average": 2}.get(mode, 0)
        return steps * ((2 if mode else 1) * (gates * n * (n_in + n) + peepholes * n) + combine * n)
    return macs


# MACs by hand for the types that are not linear algebra: windows count one per value combined, element-wise
# arithmetic one per value per extra input, data movement and activations 0 (docs/spec.md, 'MACs').
MACS_BY_HAND = {
    "subsampling": lambda case, out: _window_values(case, out),
    "batchnorm": lambda case, out: math.prod(case["inputs"][0]),
    "lrn": lambda case, out: math.prod(case["inputs"][0]) * (2 * (case["params"]["n"] // 2) + 1),
    "global_pool": lambda case, out: math.prod(case["inputs"][0]),
    "elementwise": lambda case, out: math.prod(out) * (len(case["inputs"]) - 1),
    "l2_normalize": lambda case, out: 2 * math.prod(out),
    "scale": lambda case, out: math.prod(out),
    "shift": lambda case, out: math.prod(out),
    "l2_distance": lambda case, out: math.prod(case["inputs"][0]),
    "cosine_similarity": lambda case, out: 3 * math.prod(case["inputs"][0]),
    "layer_norm": lambda case, out: 3 * math.prod(out),
    "position_embedding": lambda case, out: math.prod(out),
    "conv1d": lambda case, out: math.prod(out) * case["inputs"][0][0] * case["params"].get("kernel", 5),
    "subsampling1d": lambda case, out: math.prod(out) * case["params"].get("kernel", 2),
    "rnn_output": lambda case, out: case["inputs"][0][0] * math.prod(out),
    **{t: (lambda case, out: 0) for t in ("embedding", "embedding_sequence", "rnn_loss", "last_time_step",
                                          "duplicate_to_time_series", "reverse_time_series")},
    "lstm": _recurrent_macs(4),
    "graves_lstm": _recurrent_macs(4, peepholes=3),
    "simple_rnn": _recurrent_macs(1),
    "gru": _recurrent_macs(3),
    **{t: (lambda case, out: 0) for t in ("activation", "dropout", "merge", "subset", "reshape", "pool_helper",
                                          "identity", "preprocessor", "stack", "unstack", "loss", "permute",
                                          "class_token", "time_step", "cnn_loss")},
}


@pytest.mark.parametrize("name,case", CASES)
def test_every_builtin_type_knows_its_macs(name, case):
    _need(case, name)
    spec = load_spec(example_doc(name, case))
    inf = analyze(spec).inference[V]
    macs = spec.vertices[V].entry.macs(spec.vertices[V].cfg, inf)
    assert isinstance(macs, int) and macs >= 0  # never unknown (None) for a built-in type
    if name in MACS_BY_HAND:
        assert macs == MACS_BY_HAND[name](case, inf.out_shape)


def test_average_divides_once_more():
    case = dict(id="avg", params={"op": "average"}, inputs=[(3,), (3,)])
    assert _macs(example_doc("elementwise", case)) == 3 * 2


def test_nn4small2_total_macs_by_kind():
    from graphspec.summary import summarize
    s = summarize("specs/nn4small2.yaml")
    linear = sum(r.macs for r in s.rows if r.type in ("conv", "dense", "output", "center_loss_output"))
    assert linear == 205_296_256  # BENCHMARKS.md's FLOP figures: 2 × these MACs per image forward
    assert s.macs > linear and all(r.macs is not None for r in s.rows)


# --- defaults inheritance -----------------------------------------------------------------------------------------


_NON_DEFAULT = {"activation": "tanh", "weight_init": "uniform", "bias_init": 0.25, "convolution_mode": "same"}


@pytest.mark.parametrize("name,case", CASES)
def test_uses_keys_are_inherited_from_defaults(name, case):
    _need(case, name)
    entry = TYPES[name]
    if not entry.uses:
        # a type that does not use a defaults key must not be affected by it
        doc = example_doc(name, case)
        doc["defaults"] = {"activation": "tanh"}
        assert load_spec(doc).vertices[V].cfg == load_spec(example_doc(name, case)).vertices[V].cfg
        return
    for key in entry.uses:
        assert key in _NON_DEFAULT, f"add a non-default value for '{key}' to _NON_DEFAULT"
        params = {k: v for k, v in case["params"].items() if k != key}
        c = dict(case, params=params)
        doc = example_doc(name, c)
        doc["defaults"] = {key: _NON_DEFAULT[key]}
        assert getattr(load_spec(doc).vertices[V].cfg, key) == _NON_DEFAULT[key]
        # the vertex's own value wins over defaults
        own = "sigmoid" if key == "activation" else "zero" if key == "weight_init" else \
            -1.0 if key == "bias_init" else "truncate"
        doc = example_doc(name, c, **{key: own})
        doc["defaults"] = {key: _NON_DEFAULT[key]}
        spec = load_spec(doc)
        assert getattr(spec.vertices[V].cfg, key) == own
        assert spec.to_dict()["vertices"][V][key] == own  # written by the user: kept for the round trip


# --- names, aliases, unknown types --------------------------------------------------------------------------------


@pytest.mark.parametrize("name,case", CASES)
def test_dl4j_class_name_is_an_alias(name, case):
    _need(case, name)
    entry = TYPES[name]
    for alias in (entry.dl4j, entry.dl4j.lower()):
        doc = example_doc(name, case)
        doc["vertices"][V]["type"] = alias
        spec = load_spec(doc)
        assert spec.vertices[V].type == name
        assert spec.to_dict()["vertices"][V]["type"] == name
        assert spec == load_spec(example_doc(name, case))


def test_convolution_layer_alias_builds():
    text = """\
version: 1
name: alias
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  c: {type: ConvolutionLayer, inputs: [x], out: 4, kernel: 3}
  p: {type: SubsamplingLayer, inputs: [c], kernel: 2, stride: 2}
  d: {type: DenseLayer, inputs: [p], out: 2}
outputs: [d]
"""
    m = build(text)
    assert [m.graphspec.spec.vertices[n].type for n in "cpd"] == ["conv", "subsampling", "dense"]
    assert tuple(m(torch.zeros(2, 3, 8, 8)).shape) == (2, 2)
    assert m.graphspec.analysis.shapes["p"] == (4, 3, 3)


def test_unknown_type_did_you_mean(tmp_path):
    text = """\
version: 1
name: unknown
inputs:
  x: {type: feed_forward, size: 4}
vertices:
  h: {type: dense, inputs: [x], out: 3}
  o: {type: densee, inputs: [h], out: 2}
outputs: [o]
"""
    path = tmp_path / "u.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as ei:
        load_spec(str(path))
    assert len(ei.value.problems) == 1
    p = ei.value.problems[0]
    line = _line_of(text, "  o: ")
    col = text.splitlines()[line - 1].index("type:") + 1
    known = ", ".join(sorted(TYPES))
    assert p.vertex == "o"
    assert str(p) == f"{path}:{line}:{col}: vertex 'o': unknown vertex type 'densee' (did you mean 'dense'?); " \
                     f"known types: {known}"


def test_unknown_type_without_close_match():
    doc = example_doc("dense", EXAMPLES["dense"][0])
    doc["vertices"][V]["type"] = "qqqqqq"
    with pytest.raises(SpecError) as ei:
        load_spec(doc)
    assert ei.value.problems[0].message == (f"unknown vertex type 'qqqqqq'; known types: {', '.join(sorted(TYPES))} "
                                            "(a type from a plugin needs the plugin's package installed)")


def test_lookup_directly():
    assert lookup("ConvolutionLayer") is TYPES["conv"]
    assert lookup("batchnormalization") is TYPES["batchnorm"]
    with pytest.raises(KeyError) as ei:
        lookup("subsamplng")
    assert ei.value.args[0].startswith("unknown vertex type 'subsamplng' (did you mean 'subsampling'?)")


@pytest.mark.parametrize("name,case", CASES)
def test_unknown_parameter_is_rejected_with_location(name, case):
    _need(case, name)
    doc = example_doc(name, case, bogus_key=1)
    text = yaml.safe_dump(doc, sort_keys=False)
    with pytest.raises(SpecError) as ei:
        load_spec(text)
    p = ei.value.problems[0]
    assert p.vertex == V
    assert p.message.startswith("unknown key 'bogus_key'")
    assert p.location.line == _line_of(text, "    bogus_key:")


# --- the facts tools read from the registry (nothing outside it names a type) ------------------------------------


def test_width_following_types_are_those_without_their_own_width():
    follow = {name for name, entry in TYPES.items() if entry.width_follows_input}
    assert follow == {"batchnorm", "activation", "subsampling", "lrn", "dropout", "merge", "l2_normalize", "scale",
                      "shift", "global_pool", "pool_helper", "elementwise", "identity", "stack", "unstack", "loss",
                      "upsampling", "zero_padding", "cropping", "space_to_depth", "depth_to_space", "depthwise_conv",
                      "layer_norm", "position_embedding", "class_token", "time_step", "cnn_loss", "subsampling1d",
                      "rnn_loss", "last_time_step", "duplicate_to_time_series", "reverse_time_series"}
    # a width is either a parameter (the layers n_out_replace edits) or follows the inputs, never both — but for a
    # depthwise convolution, whose width is in · depth_multiplier: its weights follow the input like batch norm's
    assert follow & {name for name, entry in TYPES.items() if entry.weight_params} == {"depthwise_conv"}


def test_in_place_facts():
    def overwritable(type_name, **params):
        case = {"id": "x", "params": params, "inputs": [(3, 6, 6)]}
        v = load_spec(example_doc(type_name, case)).vertices[V]
        return v.entry.output_overwritable(v.cfg)

    assert {name for name, entry in TYPES.items() if entry.computes_in_place} == {"activation"}
    assert overwritable("conv", out=2, kernel=3, activation="identity") and overwritable("batchnorm")
    assert not overwritable("conv", out=2, kernel=3, activation="relu")  # its backward needs the relu's output
    assert overwritable("dense", out=2, activation="identity") and not overwritable("dense", out=2, activation="tanh")
    assert not overwritable("output", out=2, activation="identity", loss="mse")
    assert not overwritable("subsampling") and not overwritable("lrn")
    assert all(overwritable("elementwise", op=op) for op in ("add", "product", "max", "min", "average"))


def test_training_facts():
    assert {n for n, e in TYPES.items() if e.loss_head} == {"output", "center_loss_output", "loss", "cnn_loss",
                                                            "rnn_output", "rnn_loss"}
    assert {n for n, e in TYPES.items() if e.per_position} == {"cnn_loss", "rnn_output", "rnn_loss"}
    assert {n for n, e in TYPES.items() if e.n_in_is_parameter} == {"embedding", "embedding_sequence"}
    assert {n for n, e in TYPES.items() if e.center_loss} == {"center_loss_output"}
    assert {n for n, e in TYPES.items() if e.batch_statistics} == {"batchnorm"}
