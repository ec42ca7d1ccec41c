"""In-place activations: enabled only where nothing else reads the input, and invisible to users — forward hooks
and feed_forward still see every vertex's own output."""
from __future__ import annotations

from pathlib import Path

import torch

import graphspec

SPEC = Path(__file__).resolve().parents[1] / "specs" / "nn4small2.yaml"
TWO_READERS = """
version: 1
name: t
defaults: {activation: identity, convolution_mode: same}
inputs: {x: {type: convolutional, channels: 2, height: 4, width: 4}}
vertices:
  c: {type: conv, inputs: [x], kernel: 3, out: 3}
  a: {type: activation, inputs: [c], activation: relu}
  s: {type: elementwise, inputs: [a, c], op: add}
  c2: {type: conv, inputs: [x], kernel: 3, out: 3, activation: tanh}
  a2: {type: activation, inputs: [c2], activation: relu}
  m: {type: merge, inputs: [s, a2]}
outputs: [m]
"""


def _inplace(net):
    return {name for name, m in net.named_modules() if getattr(m, "inplace", False)}


def test_every_relu_after_a_conv_or_batchnorm_of_the_tutorial_is_in_place():
    net = graphspec.build(SPEC)
    spec = net.graphspec.spec
    expected = {n for n, v in spec.vertices.items() if v.type == "activation"}
    assert _inplace(net) == expected and len(expected) == 37


def test_not_in_place_when_the_input_has_another_reader_or_a_nonlinear_producer():
    net = graphspec.build(TWO_READERS, seed=0)
    assert _inplace(net) == set()  # 'c' is read twice; 'c2' applies tanh, whose backward needs its output
    x = torch.randn(2, 2, 4, 4)
    c = net.get_submodule("c")(x)
    torch.testing.assert_close(net(x)[:, :3], torch.relu(c) + c)


def test_hooks_and_feed_forward_see_the_values_before_the_activation():
    net = graphspec.build(SPEC).eval()
    x = torch.rand(2, 3, 96, 96) * 255
    seen = {}
    handle = net.get_submodule("stem-batch1").register_forward_hook(lambda m, i, o: seen.setdefault("bn", o))
    with torch.no_grad():
        out = net(x)
    handle.remove()
    assert (seen["bn"] < 0).any()  # batch-norm output keeps its negative values: the ReLU did not overwrite it
    acts = graphspec.feed_forward(net, x, vertices=["stem-batch1", "stem-activation1", "lossLayer"])
    assert (acts["stem-batch1"] < 0).any() and (acts["stem-activation1"] >= 0).all()
    torch.testing.assert_close(acts["stem-activation1"], torch.relu(acts["stem-batch1"]))
    torch.testing.assert_close(acts["lossLayer"], out)


def test_in_place_gives_the_same_gradients_as_out_of_place():
    from graphspec.layers.modules import no_inplace
    net = graphspec.build(SPEC).train()
    x = torch.rand(3, 3, 96, 96)
    grads = []
    for ctx in (no_inplace, None):
        net.zero_grad()
        with ctx() if ctx else torch.enable_grad():
            net(x).pow(2).sum().backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-7)


def test_a_relu_after_a_residual_add_is_in_place_with_the_same_gradients():
    """An element-wise vertex's backward reads its inputs, not its output: the ReLU after each residual add of a
    ResNet may overwrite the sum (as torchvision's ``out += identity; relu(out)``)."""
    from graphspec.layers.modules import no_inplace
    d = {"version": 1, "name": "res", "seed": 0, "defaults": {"activation": "identity", "convolution_mode": "same"},
         "inputs": {"x": {"type": "convolutional", "channels": 2, "height": 5, "width": 5}},
         "vertices": {"c": {"type": "conv", "inputs": ["x"], "kernel": 3, "out": 2},
                      "add": {"type": "elementwise", "op": "add", "inputs": ["c", "x"]},
                      "relu": {"type": "activation", "inputs": ["add"], "activation": "relu"},
                      "c2": {"type": "conv", "inputs": ["relu"], "kernel": 3, "out": 2}},
         "outputs": ["c2"]}
    net = graphspec.build(d).train()
    assert _inplace(net) == {"relu"}
    assert {n for n in _inplace(graphspec.build("resnet18")) if n.endswith("relu2")} == {
        f"layer{i}-{j}-relu2" for i in range(1, 5) for j in range(2)}
    x = torch.randn(3, 2, 5, 5, requires_grad=True)
    grads = []
    for ctx in (no_inplace, None):
        net.zero_grad()
        x.grad = None
        with ctx() if ctx else torch.enable_grad():
            net(x).pow(2).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
