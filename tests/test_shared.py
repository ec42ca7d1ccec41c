"""Shared layers: one layer (or a whole block instance) applied at several places with one set of weights.

Each use computes with the same module: the state_dict and model file hold one tensor, the summary counts it
once, surgery, freezing and training treat the uses as one layer, and each use keeps its own name and activation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import graphspec
from graphspec import GraphBuilder, SpecError, load_spec
from graphspec.graph import SpecWarning
from graphspec.summary import summarize
from graphspec.train.steps import layers_of
from specs_tiny import SIAMESE

TOWERS = """
version: 1
name: towers
seed: 5
defaults: {activation: identity, weight_init: xavier}
blocks:
  tower:
    params: {width: 8}
    output: $name-out
    vertices:
      $name-fc: {type: dense, inputs: [$input], out: $width}
      $name-bn: {type: batchnorm, inputs: [$name-fc]}
      $name-act: {type: activation, inputs: [$name-bn], activation: relu}
      $name-out: {type: dense, inputs: [$name-act], out: 3}
inputs:
  a: {type: feed_forward, size: 5}
  b: {type: feed_forward, size: 5}
vertices:
  left: {block: tower, inputs: [a], width: 7}
  right: {shares: left, inputs: [b]}
  both: {type: merge, inputs: [left, right]}
outputs: [both]
"""


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_one_layer_two_places_one_tensor():
    net = graphspec.build(SIAMESE)
    assert list(net.state_dict()) == ["embed.weight", "embed.bias"]
    a, b = _x(3, 6), _x(3, 6, seed=1)
    layer = torch.nn.Linear(6, 4)
    layer.load_state_dict({"weight": net.state_dict()["embed.weight"], "bias": net.state_dict()["embed.bias"]})
    want = (torch.relu(layer(a)) - torch.relu(layer(b))).norm(dim=1, keepdim=True)
    torch.testing.assert_close(net(a, b), want)
    assert "embed_right = self.embed(right)" in net.code  # the use keeps its name; the module is the owner's


def test_summary_counts_shared_parameters_once_and_names_the_owner():
    s = summarize(SIAMESE)
    rows = {r.name: r for r in s.rows}
    assert rows["embed"].params == 6 * 4 + 4 and rows["embed-right"].params == 0
    assert rows["embed-right"].shares == "embed" and rows["embed-right"].n_in_out == "6*→4"
    assert s.total == 28 and s.macs == 2 * 24 + 4  # MACs are per use: the layer runs twice
    from graphspec.summary import render_markdown
    assert "| embed-right (dense) | right | 6*→4 | [4] | 0 | shares embed | 24 |" in render_markdown(s)


def test_round_trip_save_and_load_keep_the_tie(tmp_path):
    spec = load_spec(SIAMESE)
    assert spec.to_dict()["vertices"]["embed-right"] == {"shares": "embed", "inputs": ["right"]}
    assert load_spec(spec.to_yaml()) == spec
    net = graphspec.build(spec)
    graphspec.save(net, tmp_path / "s.safetensors")
    again = graphspec.load(tmp_path / "s.safetensors")
    assert list(again.state_dict()) == ["embed.weight", "embed.bias"]
    with torch.no_grad():
        again.get_submodule("embed").weight.mul_(2)  # one tensor: both uses see the change
    acts = graphspec.feed_forward(again, _x(2, 6), _x(2, 6))
    torch.testing.assert_close(acts["embed"], acts["embed-right"])


def test_feed_forward_gives_each_use_its_own_activation():
    net = graphspec.build(SIAMESE)
    a, b = _x(2, 6), _x(2, 6, seed=4)
    acts = graphspec.feed_forward(net, a, b, vertices=["embed", "embed-right"])
    layer = net.get_submodule("embed")
    torch.testing.assert_close(acts["embed"], layer(a))
    torch.testing.assert_close(acts["embed-right"], layer(b))


def test_a_block_instance_shares_every_layer_of_another():
    spec = load_spec(TOWERS)
    right = {n: v for n, v in spec.vertices.items() if v.group == ("right",)}
    assert {n: v.shares for n, v in right.items()} == {
        "right-fc": "left-fc", "right-bn": "left-bn", "right-act": "left-act", "right-out": "left-out"}
    assert spec.vertices["both"].inputs == ["left-out", "right-out"]
    net = graphspec.build(spec)
    assert sorted({k.split(".")[0] for k in net.state_dict()}) == ["left-bn", "left-fc", "left-out"]
    net.eval()
    a = _x(4, 5)
    out = net(a, a)
    torch.testing.assert_close(out[:, :3], out[:, 3:])  # the same tower on the same input
    assert summarize(spec).total == summarize(TOWERS.replace("  right: {shares: left, inputs: [b]}\n", "")
                                              .replace("[left, right]", "[left]")
                                              .replace("  b: {type: feed_forward, size: 5}\n", "")).total


def test_gradients_of_every_use_reach_the_one_weight():
    net = graphspec.build(SIAMESE)
    a, b = _x(5, 6), _x(5, 6, seed=2)
    net(a, b).sum().backward()
    w = net.get_submodule("embed").weight.detach().clone().requires_grad_(True)
    bias = net.get_submodule("embed").bias.detach().clone().requires_grad_(True)
    f = lambda x: torch.relu(x @ w.T + bias)  # noqa: E731
    (f(a) - f(b)).norm(dim=1).sum().backward()
    torch.testing.assert_close(net.get_submodule("embed").weight.grad, w.grad)
    assert [layer.name for layer in layers_of(net)] == ["embed"]  # trained once, through its owner


def test_a_training_step_moves_a_tied_layer_by_the_gradient_of_both_uses():
    """A layer applied twice in a row (tied weights, like an unrolled recurrence), one SGD step against torch."""
    from graphspec.train.steps import TorchStep
    spec = """
version: 1
name: tied
seed: 1
defaults: {activation: tanh, weight_init: xavier}
inputs:
  x: {type: feed_forward, size: 4}
vertices:
  step1: {type: dense, inputs: [x], out: 4}
  step2: {shares: step1, inputs: [step1]}
  head: {type: output, inputs: [step2], out: 3, activation: softmax, loss: mcxent}
outputs: [head]
"""
    net = graphspec.build(spec)
    x, y = _x(5, 4), torch.tensor([0, 1, 2, 0, 1])
    w, b = (net.get_submodule("step1").weight.detach().clone().requires_grad_(True),
            net.get_submodule("step1").bias.detach().clone().requires_grad_(True))
    hw, hb = (net.get_submodule("head").weight.detach().clone().requires_grad_(True),
              net.get_submodule("head").bias.detach().clone().requires_grad_(True))
    h = torch.tanh(torch.tanh(x @ w.T + b) @ w.T + b)
    torch.nn.functional.cross_entropy(h @ hw.T + hb, y).backward()
    TorchStep(net, torch.optim.SGD(net.parameters(), lr=0.5), None)(x, y, 5)
    torch.testing.assert_close(net.get_submodule("step1").weight, (w - 0.5 * w.grad).detach())
    assert list(net.state_dict()) == ["step1.weight", "step1.bias", "head.weight", "head.bias"]
    # DL4J's pipeline (sgd, lr 0.1 by default): summed loss, θ ← θ − lr·g/N, the shared weight updated once
    from graphspec.train.steps import DL4JStep
    dl4j = graphspec.build(spec)
    start = dl4j.get_submodule("step1").weight.detach().clone()
    DL4JStep(dl4j)(x, y, 5)
    torch.testing.assert_close(dl4j.get_submodule("step1").weight, (start - 0.1 * 5 * w.grad / 5).detach())


def test_errors_name_the_vertex_and_what_a_shared_layer_needs():
    mismatch = SIAMESE.replace("right: {type: feed_forward, size: 6}", "right: {type: feed_forward, size: 7}")
    with pytest.raises(SpecError) as e:
        load_spec(mismatch)
    (p,) = e.value.problems
    assert p.vertex == "embed-right" and p.message == (
        "shares 'embed', but its inputs would give the layer parameters weight [4, 7], bias [4] where 'embed' has "
        "weight [4, 6], bias [4]; every use of a shared layer needs inputs it fits the same way")
    cases = {
        "{shares: embed, inputs: [right], out: 5}": "'out' cannot be set on a vertex that shares 'embed': its type, "
        "parameters and training settings are those of 'embed' (a shared layer has one configuration)",
        "{shares: embedd, inputs: [right]}": "'shares': no vertex named 'embedd' (did you mean 'embed'?)",
        "{shares: left, inputs: [right]}": "'shares' names the network input 'left'; only a vertex has a layer to "
                                           "share",
        "{shares: [embed], inputs: [right]}": "'shares' must name the vertex whose layer this one uses; received "
                                              "['embed']",
    }
    for body, message in cases.items():
        with pytest.raises(SpecError) as e:
            load_spec(SIAMESE.replace("{shares: embed, inputs: [right]}", body))
        assert [q.message for q in e.value.problems] == [message], body
    circle = SIAMESE.replace("embed: {type: dense, inputs: [left], out: 4}", "embed: {shares: embed-right, "
                                                                            "inputs: [left]}")
    with pytest.raises(SpecError) as e:
        load_spec(circle)
    assert e.value.problems[0].message == ("'shares' goes round in a circle: embed -> embed-right -> embed; one "
                                           "vertex must own the layer")


def test_instance_sharing_errors():
    later = TOWERS.replace("  left: {block: tower, inputs: [a], width: 7}\n  right: {shares: left, inputs: [b]}",
                           "  right: {shares: left, inputs: [b]}\n  left: {block: tower, inputs: [a], width: 7}")
    with pytest.raises(SpecError) as e:
        load_spec(later)
    assert e.value.problems[0].message == ("'shares': block instance 'left' is defined after 'right'; define the "
                                           "instance it shares first")
    with pytest.raises(SpecError) as e:
        load_spec(TOWERS.replace("{shares: left, inputs: [b]}", "{shares: left, inputs: [b], width: 9}"))
    assert e.value.problems[0].message == ("'width' cannot be set on an instance that shares 'left': its block "
                                           "and arguments are those of that instance")


def test_surgery_removing_the_owner_keeps_the_other_use_and_its_weights():
    net = graphspec.build(SIAMESE)
    with pytest.warns(SpecWarning, match="network input is not used by any output"):  # 'left' has no use left
        new = (GraphBuilder(net).remove_vertex_and_connections("distance").remove_vertex_and_connections("embed")
               .set_outputs("embed-right").build())
    assert list(new.state_dict()) == ["embed-right.weight", "embed-right.bias"]
    torch.testing.assert_close(new.state_dict()["embed-right.weight"], net.state_dict()["embed.weight"])
    assert new.graphspec.surgery.kept == ["embed-right"]
    b = _x(2, 6)
    torch.testing.assert_close(new(_x(2, 6, seed=9), b), graphspec.feed_forward(net, b, b)["embed-right"])
    assert new.graphspec.spec.to_dict()["vertices"]["embed-right"] == {"type": "dense", "inputs": ["right"], "out": 4}


def test_surgery_n_out_replace_on_a_use_changes_the_layer_everywhere():
    net = graphspec.build(TOWERS)
    new = GraphBuilder(net).n_out_replace("right-fc", 9).build()
    assert new.get_submodule("left-fc").weight.shape == (9, 5)
    assert new.get_submodule("left-bn").running_mean.shape == (9,)  # the width flows through both uses
    assert new.get_submodule("left-out").weight.shape == (3, 9)
    assert new.graphspec.analysis.shapes["right-act"] == (9,)
    assert new.graphspec.surgery.reinitialised == ["left-fc", "left-bn", "left-out"]


def test_freezing_one_use_freezes_every_use():
    net = graphspec.build(TOWERS)
    new = GraphBuilder(net).set_feature_extractor("right-bn").build()
    assert {"left-fc", "left-bn", "right-fc", "right-bn"} <= new.graphspec.frozen
    assert not new.get_submodule("left-fc").weight.requires_grad
    assert new.get_submodule("left-out").weight.requires_grad
    rows = {r.name: r for r in graphspec.summarize(new).rows}
    assert rows["left-fc"].frozen and rows["right-fc"].frozen and not rows["right-out"].frozen


def test_draw_links_the_uses():
    from graphspec.draw import layout, to_dot, to_mermaid
    d = layout(load_spec(SIAMESE))
    assert d.shares == [("embed", "embed-right")]
    assert '"embed" -> "embed-right" [label="shares", style=dashed' in to_dot(d, "siamese")
    assert "n_embed -. shares .- n_embed_2d_right" in to_mermaid(d, "siamese")
    assert load_spec(TOWERS) and layout(load_spec(TOWERS), depth=0).shares == [("block:left", "block:right")]


def test_a_shared_activation_is_never_computed_in_place():
    spec = SIAMESE.replace("defaults: {activation: relu, weight_init: xavier}",
                           "defaults: {activation: identity, weight_init: xavier}")
    spec = spec.replace("  distance:", "  act: {type: activation, inputs: [embed], activation: relu}\n"
                                       "  act-right: {shares: act, inputs: [embed-right]}\n  distance:")
    spec = spec.replace("inputs: [embed, embed-right]}", "inputs: [act, act-right]}")
    net = graphspec.build(spec)
    assert not net.get_submodule("act").inplace


def test_stack_and_unstack_run_two_branches_as_one_batch_through_one_tower():
    """DL4J's route to a Siamese network: the same numbers as `shares`, with the weights of one tower."""
    stacked = SIAMESE.replace("""  embed: {type: dense, inputs: [left], out: 4}
  embed-right: {shares: embed, inputs: [right]}
  distance: {type: l2_distance, inputs: [embed, embed-right]}""", """  both: {type: stack, inputs: [left, right]}
  embed: {type: dense, inputs: [both], out: 4}
  embed-left: {type: unstack, inputs: [embed], from: 0, stack_size: 2}
  embed-right: {type: unstack, inputs: [embed], from: 1, stack_size: 2}
  distance: {type: l2_distance, inputs: [embed-left, embed-right]}""")
    a, b = _x(3, 6), _x(3, 6, seed=8)
    one, two = graphspec.build(stacked), graphspec.build(SIAMESE)
    two.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(a, b), two(a, b))
    assert graphspec.analyze(load_spec(stacked), warn=False).batch["embed"] == 2
    wrong = stacked.replace("inputs: [embed-left, embed-right]", "inputs: [embed, embed-right]")
    with pytest.raises(SpecError) as e:
        load_spec(wrong)
    assert e.value.problems[0].message.startswith("inputs have different batch sizes (2×, 1× the network's batch")


def test_onnx_export_of_a_shared_layer(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from graphspec.export import export
    net = graphspec.build(SIAMESE).eval()
    export(net, tmp_path / "s.onnx")
    session = ort.InferenceSession(str(tmp_path / "s.onnx"))
    a, b = _x(2, 6), _x(2, 6, seed=1)
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, (a.numpy(), b.numpy()))))[0]
    np.testing.assert_allclose(got, net(a, b).detach().numpy(), atol=1e-5)


# --- a whole part of the network, shared: `shares: END, from: START` ----------------------------------------------

CHAIN = """
version: 1
name: chain
seed: 2
defaults: {activation: relu, weight_init: xavier}
inputs:
  a: {type: feed_forward, size: 4}
  b: {type: feed_forward, size: 4}
vertices:
  h1: {type: dense, inputs: [a], out: 5}
  h2: {type: dense, inputs: [h1], out: 5}
  skip: {type: merge, inputs: [h1, h2]}
  emb: {type: dense, inputs: [skip], out: 3}
  twin: {shares: emb, from: a, inputs: [b]}
  both: {type: merge, inputs: [emb, twin]}
outputs: [both]
"""


def test_a_part_of_the_network_is_applied_again_with_its_layers():
    spec = load_spec(CHAIN)
    copies = {n: (v.shares, v.inputs) for n, v in spec.vertices.items() if v.group == ("twin",)}
    assert copies == {"twin-h1": ("h1", ["b"]), "twin-h2": ("h2", ["twin-h1"]),
                      "twin-skip": ("skip", ["twin-h1", "twin-h2"]), "twin-emb": ("emb", ["twin-skip"])}
    assert spec.vertices["both"].inputs == ["emb", "twin-emb"]
    assert load_spec(spec.to_yaml()) == spec
    net = graphspec.build(spec)
    a = _x(3, 4)
    out = net(a, a)
    torch.testing.assert_close(out[:, :3], out[:, 3:])
    assert summarize(spec).total == 25 + 30 + 33


def test_shared_part_errors():
    cases = {
        "{shares: emb, from: bb, inputs: [b]}": ("'from': no input or vertex named 'bb' (did you mean 'b'?)", "from"),
        "{shares: emb, from: b, inputs: [a]}": ("'emb' does not depend on 'from' ('b'): there is no part between "
                                                "them to share", "shares"),
        "{shares: emb, from: h2, inputs: [b]}": ("the part from 'h2' to 'emb' is not self-contained: 'skip' also "
                                                 "reads 'h1', which does not come from 'h2'", "shares"),
        "{shares: emb, from: a, inputs: [a, b]}": ("a vertex that shares the part from 'a' takes exactly 1 input "
                                                   "(what replaces 'a'); received 2", "inputs"),
    }
    for body, (message, key) in cases.items():
        with pytest.raises(SpecError) as e:
            load_spec(CHAIN.replace("{shares: emb, from: a, inputs: [b]}", body))
        problem = e.value.problems[0]
        assert problem.message == message and problem.path[-1] == key and problem.vertex == "twin", body


def test_the_siamese_nn4small2_has_the_snipped_tutorial_parameters_and_takes_its_weights():
    spec = load_spec("specs/siamese-nn4small2.yaml")
    assert summarize(spec).total == 3_579_440  # the tutorial network cut at its embeddings (DL4J counting)
    assert all(v.shares for v in spec.vertices.values() if v.group[:1] == ("second",))
    net = graphspec.build(spec).eval()
    report = graphspec.load_weights(net, "graphspec/faces/models/nn4small2-lfw.safetensors")
    assert not report.missing and not report.unexpected and not report.mismatched
    face = graphspec.open("nn4small2-lfw").eval()
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        distance, emb = net(x, x.flip(0)), face(x)
    torch.testing.assert_close(distance[:, 0], (emb - emb.flip(0)).norm(dim=1).expand(2), rtol=1e-4, atol=1e-5)
