"""The sequence and transformer vertex types, each against torch or a hand-written formula: layer_norm,
self_attention (DL4J's SelfAttentionLayer), permute, position_embedding, class_token, time_step and cnn_loss
(DL4J's CnnLossLayer); parameter counts, MACs, error messages, a backward pass and ONNX export.

Sequences are [size, T] per example (features first, time last, DL4J's NCW); the nets below make them from a
feed_forward input and a reshape vertex.
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
    return {"version": 1, "name": "attention", "seed": 3, "inputs": inputs, "vertices": vertices,
            "outputs": list(outputs)}


def _sequence_doc(vertex: dict, size: int, steps: int) -> dict:
    """A net whose input x [size·T] is reshaped to the sequence seq [size, T] and fed to the vertex v."""
    vertices = {"seq": {"type": "reshape", "shape": [size, steps], "inputs": ["x"]}, "v": {**vertex, "inputs": ["seq"]}}
    return _doc(vertices, ["v"], {"x": {"type": "feed_forward", "size": size * steps}})


def _on_sequence(vertex: dict, size: int, steps: int):
    """(net, run): ``run(x)`` feeds a sequence batch [N, size, T] through the vertex."""
    net = graphspec.build(_sequence_doc(vertex, size, steps))
    return net, lambda x: net(x.reshape(len(x), -1))


def _image_doc(vertex: dict, shape) -> dict:
    c, h, w = shape
    return _doc({"v": {**vertex, "inputs": ["x"]}}, ["v"],
                {"x": {"type": "convolutional", "channels": c, "height": h, "width": w}})


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _message(doc) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(doc)
    return e.value.problems[0].message


def _params(doc) -> int:
    return graphspec.summarize(doc).total


def _randomise(module: nn.Module, seed: int = 1) -> None:
    """Non-trivial values for every parameter (biases and gammas start at 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


# --- self_attention ---------------------------------------------------------------------------------------------


def test_self_attention_with_bias_is_torch_multihead_attention():
    embed, heads, steps = 8, 2, 5
    net, run = _on_sequence({"type": "self_attention", "n_heads": heads, "out": embed, "bias": True}, embed, steps)
    ours = net.get_submodule("v")
    _randomise(ours)
    mha = nn.MultiheadAttention(embed, heads, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(ours.in_proj_weight)
        mha.in_proj_bias.copy_(ours.in_proj_bias)
        mha.out_proj.weight.copy_(ours.out_proj_weight)
        mha.out_proj.bias.copy_(ours.out_proj_bias)
    x = _randn(3, embed, steps)
    rows = x.transpose(1, 2)  # torch's [N, T, E]
    want = mha(rows, rows, rows, need_weights=False)[0].transpose(1, 2)
    torch.testing.assert_close(run(x), want, rtol=1e-5, atol=1e-5)
    assert _params(_sequence_doc({"type": "self_attention", "n_heads": heads, "out": embed, "bias": True},
                                 embed, steps)) == sum(p.numel() for p in mha.parameters()) == 4 * 8 * 8 + 4 * 8


def _dl4j_attention(x, wq, wk, wv, wo):
    """SEMANTICS-VISION.md §8.1, per example and head, in float64: scores[Tk, Tq] = kᵀq / sqrt(d), softmax over the
    keys, out[dv, Tq] = v · weights; heads concatenated head-major, then Wo [E, nOut]."""
    out = []
    for example in x.double():
        per_head = []
        for h in range(wq.shape[0]):
            q, k, v = wq[h] @ example, wk[h] @ example, wv[h] @ example  # [head_size, T]
            weights = torch.softmax(k.T @ q / math.sqrt(q.shape[0]), dim=0)  # [Tk, Tq], over the keys
            per_head.append(v @ weights)
        out.append(wo.T @ torch.cat(per_head, 0))  # [nOut, T]
    return torch.stack(out)


def test_self_attention_without_bias_is_dl4j_formula_with_n_in_unlike_embed():
    n_in, heads, head_size, n_out, steps = 5, 2, 3, 4, 6
    net, run = _on_sequence({"type": "SelfAttentionLayer", "n_heads": heads, "head_size": head_size, "out": n_out},
                            n_in, steps)
    m = net.get_submodule("v")
    assert m.in_proj_bias is None and m.out_proj_bias is None  # DL4J has no biases
    e = heads * head_size
    w = m.in_proj_weight.detach().double()
    wq, wk, wv = (w[i * e:(i + 1) * e].reshape(heads, head_size, n_in) for i in range(3))  # DL4J's [H, hs, nIn]
    wo = m.out_proj_weight.detach().double().T  # DL4J's Wo [E, nOut]
    x = _randn(3, n_in, steps)
    y = run(x)
    assert y.shape == (3, n_out, steps)
    torch.testing.assert_close(y.double(), _dl4j_attention(x, wq, wk, wv, wo), rtol=1e-5, atol=1e-6)
    summary = graphspec.summarize(_sequence_doc({"type": "self_attention", "n_heads": heads, "head_size": head_size,
                                                 "out": n_out}, n_in, steps))
    row = summary.rows[-1]
    assert row.params == 3 * e * n_in + n_out * e
    assert row.macs == steps * n_in * 3 * e + steps * e * n_out + 2 * steps * steps * e


def test_self_attention_without_projection_attends_over_the_raw_input():
    size, steps = 4, 5
    doc = _sequence_doc({"type": "self_attention", "n_heads": 1, "project_input": False}, size, steps)
    net = graphspec.build(doc)
    assert not list(net.parameters()) and _params(doc) == 0
    x = _randn(2, size, steps)
    y = net(x.reshape(2, -1))
    for example, got in zip(x.double(), y.double()):
        weights = torch.softmax(example.T @ example / math.sqrt(size), dim=0)  # scale 1/sqrt(nIn)
        torch.testing.assert_close(got, example @ weights, rtol=1e-5, atol=1e-6)
    assert graphspec.summarize(doc).rows[-1].macs == 2 * steps * steps * size


def test_self_attention_is_initialised_with_its_own_xavier_and_dl4j_fans():
    n_in, heads, n_out = 64, 4, 64  # E = 64, head_size 16
    doc = _sequence_doc({"type": "self_attention", "n_heads": heads, "out": n_out, "bias": True}, n_in, 2)
    doc["defaults"] = {"weight_init": "zero"}  # not applied, as in DL4J (SameDiff layers keep their own)
    m = graphspec.build(doc).get_submodule("v")
    # Wq/Wk/Wv: fanIn E, fanOut nOut; Wo: fanIn nIn, fanOut head_size (SEMANTICS-VISION.md §8.5)
    assert m.in_proj_weight.std().item() == pytest.approx(math.sqrt(2 / (64 + 64)), rel=0.05)
    assert m.out_proj_weight.std().item() == pytest.approx(math.sqrt(2 / (64 + 16)), rel=0.05)
    assert not m.in_proj_bias.any() and not m.out_proj_bias.any()
    doc["vertices"]["v"]["weight_init"] = "zero"  # the vertex's own weight_init is
    assert not graphspec.build(doc).get_submodule("v").in_proj_weight.any()


@pytest.mark.parametrize("vertex, message", [
    ({"n_heads": 3, "out": 8}, "'out' (8) is not divisible by 'n_heads' (3); set 'head_size'"),
    ({"n_heads": 2}, "'out' is required with 'project_input: true' (the projected output's size)"),
    ({"n_heads": 2, "project_input": False}, "without 'project_input' the input attends to itself in one head, "
                                             "with no parameters: set 'n_heads: 1', or 'project_input: true'"),
    ({"n_heads": 1, "project_input": False, "bias": True}, "without 'project_input' the input attends to itself "
                                                           "in one head, with no parameters: set no 'bias', or "
                                                           "'project_input: true'"),
    ({"n_heads": 1, "project_input": False, "out": 3}, "'out' is 3 but the input has 8 features; remove 'out' to "
                                                       "infer it or fix the input; input shapes: seq [8, 5]"),
    ({"n_heads": 2, "out": 8, "in": 9}, "'in' is 9 but the input has 8 features; remove 'in' to infer it or fix "
                                        "the input; input shapes: seq [8, 5]"),
])
def test_self_attention_parameter_errors(vertex, message):
    assert _message(_sequence_doc({"type": "self_attention", **vertex}, 8, 5)) == message


def test_self_attention_on_an_image_names_the_sequence_it_expects():
    doc = _image_doc({"type": "self_attention", "n_heads": 1, "out": 2}, (2, 3, 3))
    assert _message(doc) == ("expected a sequence [size, T] (features first, time last); received [2, 3, 3] "
                             "(reshape an image [C, H, W] to [C, H·W] to read its pixels as time steps); input "
                             "shapes: x [2, 3, 3]")
    doc = _doc({"v": {"type": "self_attention", "n_heads": 1, "out": 2, "inputs": ["x"]}}, ["v"],
               {"x": {"type": "feed_forward", "size": 4}})
    assert _message(doc) == ("expected a sequence [size, T] (features first, time last); received [4]; input "
                             "shapes: x [4]")


# --- layer_norm ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_on_features_is_nn_layer_norm(bias):
    doc = _doc({"v": {"type": "layer_norm", "eps": 1e-3, "bias": bias, "inputs": ["x"]}}, ["v"],
               {"x": {"type": "feed_forward", "size": 6}})
    net = graphspec.build(doc)
    ln = nn.LayerNorm(6, eps=1e-3, bias=bias)
    _randomise(net)
    ln.load_state_dict({k.removeprefix("v."): t for k, t in net.state_dict().items()})
    x = _randn(4, 6)
    torch.testing.assert_close(net(x), ln(x))
    assert _params(doc) == sum(p.numel() for p in ln.parameters()) == 6 * (1 + bias)


def test_layer_norm_on_a_sequence_normalises_each_time_step():
    size, steps = 8, 5
    net, run = _on_sequence({"type": "layer_norm"}, size, steps)
    _randomise(net)
    ln = nn.LayerNorm(size)  # eps 1e-5, torch's default
    ln.load_state_dict({k.removeprefix("v."): t for k, t in net.state_dict().items()})
    x = _randn(3, size, steps) * 3 + 1
    torch.testing.assert_close(run(x), ln(x.transpose(1, 2)).transpose(1, 2))
    assert graphspec.summarize(_sequence_doc({"type": "layer_norm"}, size, steps)).rows[-1].macs == 3 * size * steps


def test_layer_norm_on_an_image_is_channels_last_layer_norm():
    net = graphspec.build(_image_doc({"type": "LayerNormalization"}, (4, 3, 5)))
    _randomise(net)
    ln = nn.LayerNorm(4)
    ln.load_state_dict({k.removeprefix("v."): t for k, t in net.state_dict().items()})
    x = _randn(2, 4, 3, 5)
    torch.testing.assert_close(net(x), ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))  # ConvNeXt's LayerNorm2d
    fresh = graphspec.build(_image_doc({"type": "layer_norm"}, (4, 3, 5))).get_submodule("v")
    assert torch.equal(fresh.weight, torch.ones(4)) and torch.equal(fresh.bias, torch.zeros(4))


# --- permute, position_embedding, class_token, time_step ---------------------------------------------------------


def test_permute_is_torch_permute_one_based():
    _, run = _on_sequence({"type": "permute", "dims": [2, 1]}, 3, 4)
    x = _randn(2, 3, 4)
    assert torch.equal(run(x), x.permute(0, 2, 1))
    net = graphspec.build(_image_doc({"type": "PermuteVertex", "dims": [2, 3, 1]}, (2, 3, 4)))
    x = _randn(2, 2, 3, 4)
    assert torch.equal(net(x), x.permute(0, 2, 3, 1))
    assert net.graphspec.analysis.shapes["v"] == (3, 4, 2)
    assert _message(_sequence_doc({"type": "permute", "dims": [0, 1]}, 3, 4)) == (
        "'dims' must be a permutation of 1..2 (the input's per-example dimensions, 1-based like Keras); received "
        "[0, 1]; input shapes: seq [3, 4]")


def test_position_embedding_adds_a_learned_tensor():
    size, steps = 64, 32
    doc = _sequence_doc({"type": "position_embedding"}, size, steps)
    net = graphspec.build(doc)
    weight = net.get_submodule("v").weight
    assert weight.shape == (size, steps)
    assert weight.std().item() == pytest.approx(0.02, rel=0.1)  # ViT's init
    x = _randn(2, size, steps)
    assert torch.equal(net(x.reshape(2, -1)), x + weight)
    rows = graphspec.summarize(doc).rows
    assert rows[-1].params == size * steps and rows[-1].macs == size * steps
    wide = graphspec.build(_sequence_doc({"type": "position_embedding", "std": 1.0}, size, steps))
    assert wide.get_submodule("v").weight.std().item() == pytest.approx(1.0, rel=0.1)
    assert _message(_image_doc({"type": "position_embedding"}, (2, 3, 3))).startswith(
        "expected a sequence [size, T] (features first, time last); received [2, 3, 3]")


def test_class_token_is_prepended_and_time_step_picks_it_back():
    size, steps = 3, 4
    doc = _doc({"seq": {"type": "reshape", "shape": [size, steps], "inputs": ["x"]},
                "tokens": {"type": "class_token", "inputs": ["seq"]},
                "cls": {"type": "time_step", "index": 0, "inputs": ["tokens"]},
                "last": {"type": "TimeStepVertex", "index": -1, "inputs": ["tokens"]}},
               ["tokens", "cls", "last"], {"x": {"type": "feed_forward", "size": size * steps}})
    net = graphspec.build(doc)
    token = net.get_submodule("tokens").weight
    assert torch.equal(token, torch.zeros(size))  # torchvision's ViT starts it at zero
    _randomise(net)
    x = _randn(2, size, steps)
    y = net(x.reshape(2, -1))
    assert y["tokens"].shape == (2, size, steps + 1)
    assert torch.equal(y["tokens"], torch.cat([token.view(1, size, 1).expand(2, -1, -1), x], dim=2))
    assert torch.equal(y["cls"], token.expand(2, -1))
    assert torch.equal(y["last"], x[:, :, -1])
    assert net.graphspec.analysis.shapes["cls"] == (size,)
    assert [(r.name, r.params) for r in graphspec.summarize(doc).rows] == [("seq", 0), ("tokens", size), ("cls", 0),
                                                                           ("last", 0)]
    assert _message(_sequence_doc({"type": "time_step", "index": 4}, size, steps)) == (
        "'index' must be in -4..3 for a sequence of 4 time steps; received 4; input shapes: seq [3, 4]")


# --- cnn_loss -----------------------------------------------------------------------------------------------------


def _cnn_loss(vertex: dict, shape=(3, 2, 4)):
    net = graphspec.build(_image_doc({"type": "cnn_loss", **vertex}, shape))
    (head,) = heads_of(net)
    return net, head


def test_cnn_loss_mcxent_is_cross_entropy_summed_over_pixels():
    net, head = _cnn_loss({})
    logits, labels = _randn(5, 3, 2, 4), torch.randint(0, 3, (5, 2, 4), generator=torch.Generator().manual_seed(2))
    want = F.cross_entropy(logits, labels, reduction="none").sum((1, 2))
    torch.testing.assert_close(head.loss(logits, labels), want)
    one_hot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # the same targets as arrays [N, C, H, W]
    torch.testing.assert_close(head.loss(logits, one_hot), want)
    torch.testing.assert_close(net(logits), torch.softmax(logits, dim=1))  # softmax over the channels
    check_targets([head], labels, net.graphspec.analysis.shapes)
    check_targets([head], one_hot, net.graphspec.analysis.shapes)


def test_cnn_loss_mse_is_the_per_example_sum_of_dl4j_per_pixel_mse():
    net, head = _cnn_loss({"loss": "mse"})
    out, target = _randn(2, 3, 2, 4), _randn(2, 3, 2, 4, seed=1)
    per_pixel = ((target - out) ** 2).mean(1)  # DL4J's LossMSE: the mean over the channels
    torch.testing.assert_close(head.loss(out, target), per_pixel.sum((1, 2)))
    assert torch.equal(net(out), out)  # identity unless the loss needs probabilities
    _, head = _cnn_loss({"loss": "l2", "activation": "tanh"})
    torch.testing.assert_close(head.loss(out, target), ((target - out.tanh()) ** 2).sum((1, 2, 3)))


def test_cnn_loss_trains_with_dl4j_score_and_refuses_wrong_targets():
    net = graphspec.build(_doc({"c": {"type": "conv", "out": 3, "kernel": 1, "activation": "identity",
                                      "inputs": ["x"]},
                                "v": {"type": "CnnLossLayer", "inputs": ["c"]}}, ["v"],
                               {"x": {"type": "convolutional", "channels": 2, "height": 3, "width": 3}}))
    x, y = _randn(4, 2, 3, 3), torch.randint(0, 3, (4, 3, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = F.cross_entropy(net.get_submodule("c")(x), y, reduction="sum").item() / 4  # DL4J: Σ pixels / mb
    score = TorchStep(net, torch.optim.SGD(net.parameters(), lr=0.1))(x, y)
    assert score == pytest.approx(want, rel=1e-5)
    heads, shapes = heads_of(net), net.graphspec.analysis.shapes
    with pytest.raises(GraphspecError) as e:
        check_targets(heads, y[:, 0, 0], shapes)
    assert str(e.value) == "the target of 'v' is an integer array of shape [N]; class indices are [N, 3, 3]"
    with pytest.raises(GraphspecError) as e:
        check_targets(heads, y + 1, shapes)
    assert str(e.value) == "the target of 'v' holds class indices 1..3; the output layer has 3 classes (0..2)"


def test_cnn_loss_needs_an_image():
    doc = _doc({"v": {"type": "cnn_loss", "inputs": ["x"]}}, ["v"], {"x": {"type": "feed_forward", "size": 4}})
    assert _message(doc) == ("expected an image output [channels, height, width]; received [4]; input shapes: "
                             "x [4]")


# --- a small vision transformer: backward and ONNX --------------------------------------------------------------


def _vit_doc() -> dict:
    """Patches (a 2x2 convolution, stride 2) as tokens, a class token, position embeddings, one pre-norm attention
    block, the class token's features to a dense head; plus a per-pixel loss head and the other types' shapes."""
    vertices = {
        "patches": {"type": "conv", "out": 8, "kernel": 2, "stride": 2, "activation": "identity", "inputs": ["x"]},
        "tokens": {"type": "reshape", "shape": [8, 4], "inputs": ["patches"]},
        "with-cls": {"type": "class_token", "inputs": ["tokens"]},
        "positions": {"type": "position_embedding", "inputs": ["with-cls"]},
        "norm": {"type": "layer_norm", "inputs": ["positions"]},
        "attention": {"type": "self_attention", "n_heads": 2, "out": 8, "bias": True, "inputs": ["norm"]},
        "residual": {"type": "elementwise", "op": "add", "inputs": ["positions", "attention"]},
        "plain": {"type": "self_attention", "n_heads": 1, "project_input": False, "inputs": ["residual"]},
        "cls": {"type": "time_step", "index": 0, "inputs": ["plain"]},
        "cls-norm": {"type": "layer_norm", "inputs": ["cls"]},
        "head": {"type": "dense", "out": 3, "activation": "identity", "inputs": ["cls-norm"]},
        "time-major": {"type": "permute", "dims": [2, 1], "inputs": ["plain"]},
        "pixels": {"type": "layer_norm", "bias": False, "inputs": ["patches"]},
        "segment": {"type": "cnn_loss", "inputs": ["pixels"]},
    }
    return _doc(vertices, ["head", "time-major", "segment"],
                {"x": {"type": "convolutional", "channels": 3, "height": 4, "width": 4}})


def test_backward_reaches_every_parameter():
    net = graphspec.build(_vit_doc())
    _randomise(net)
    x = _randn(2, 3, 4, 4).requires_grad_()
    y = net(x)
    (y["head"].square().sum() + y["time-major"].sin().sum() + (y["segment"] * _randn(2, 8, 2, 2)).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from graphspec.export import export
    net = graphspec.build(_vit_doc())
    _randomise(net)
    path = tmp_path / "vit.onnx"
    report = export(net, path, check=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net.eval()
    for batch in (2, 1):  # the batch dimension is dynamic
        x = _randn(batch, 3, 4, 4, seed=batch)
        with torch.no_grad():
            want = net(x)
        got = session.run(None, {"x": x.numpy()})
        for name, value in zip(["head", "time-major", "segment"], got):
            torch.testing.assert_close(torch.from_numpy(value), want[name], rtol=1e-3, atol=1e-4)
    assert report.nodes == len(_node_names(path))
    owners = {n.split("/")[0] for n in _node_names(path)}
    assert {"with-cls", "positions", "norm", "attention", "plain", "cls", "time-major", "segment"} <= owners


def _node_names(path) -> list[str]:
    import onnx
    return [n.name for n in onnx.load(str(path)).graph.node]
