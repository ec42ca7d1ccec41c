"""Inference rewrites (graphspec.inference): each batch norm folded into the convolution before it gives the
unfolded network's outputs within 1e-5, the folded weights are torch's own fusion formula (with DL4J's zero eps),
the model keeps its weights, and whatever cannot fold is left to run as it was; an activation moved after the max
pool that reads it gives the same bits; a module the graph calls at several places (``shares``) is never
rewritten."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights

import graphspec
from graphspec.compiler import subgraph
from graphspec.execution import Execution
from graphspec.inference import activations_after_max_pools, fold_batch_norms, rewrite_for_inference

SPEC = """
version: 1
name: fold
seed: 3
defaults: {activation: identity, convolution_mode: same}
inputs:
  x: {type: convolutional, channels: 3, height: 10, width: 10}
vertices:
  plain: {type: conv, inputs: [x], kernel: 3, out: 6, bias: false}
  plain_bn: {type: batchnorm, inputs: [plain]}
  plain_act: {type: activation, inputs: [plain_bn], activation: relu}
  biased: {type: conv, inputs: [plain_act], kernel: 3, stride: 2, out: 5}
  biased_bn: {type: batchnorm, inputs: [biased]}
  activated: {type: conv, inputs: [biased_bn], kernel: 1, out: 4, activation: relu}
  activated_bn: {type: batchnorm, inputs: [activated]}
  shared: {type: conv, inputs: [activated_bn], kernel: 1, out: 4}
  shared_bn: {type: batchnorm, inputs: [shared]}
  both: {type: merge, inputs: [shared, shared_bn]}
  last: {type: conv, inputs: [both], kernel: 1, out: 3}
  out: {type: batchnorm, inputs: [last]}
outputs: [out]
"""


def _model():
    model = graphspec.build(SPEC)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # statistics and affine parameters far from the identity, so a wrong fold shows
        for m in model.modules():
            if hasattr(m, "inference_affine"):
                n = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) * 3 + 0.1)
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


def _batch_norms(net) -> list[str]:
    return [n.target for n in net.graph.nodes if n.op == "call_module" and hasattr(net.get_submodule(n.target),
                                                                                   "inference_affine")]


def test_batch_norms_after_a_convolution_read_by_them_alone_fold_and_the_outputs_stay():
    model = _model()
    x = torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    folded = fold_batch_norms(model)
    # plain, biased and last fold; 'activated' applies its relu before the norm; 'shared' is read by the merge too
    assert _batch_norms(folded) == ["activated_bn", "shared_bn"]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_channels_last_folds_keep_the_layout_and_the_outputs():
    model = _model().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 10, 10).contiguous(memory_format=torch.channels_last)
    folded = fold_batch_norms(model)
    assert folded.get_submodule("biased").weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_folded_weights_are_torchs_fusion_formula_with_dl4js_zero_eps():
    model = _model()
    folded = fold_batch_norms(model)
    for conv_name, norm_name in [("plain", "plain_bn"), ("biased", "biased_bn"), ("last", "out")]:
        conv, norm = model.get_submodule(conv_name), model.get_submodule(norm_name)
        weight, bias = fuse_conv_bn_weights(conv.weight.detach(), None if conv.bias is None else conv.bias.detach(),
                                            norm.running_mean, norm.running_var, 0.0, norm.weight.detach(),
                                            norm.bias.detach())
        torch.testing.assert_close(folded.get_submodule(conv_name).weight, weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(folded.get_submodule(conv_name).bias, bias, rtol=1e-6, atol=1e-6)


def test_the_model_keeps_its_own_weights_and_modules():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert folded.get_submodule("plain") is not model.get_submodule("plain")
    assert folded.get_submodule("activated") is model.get_submodule("activated")  # unfolded modules are shared
    assert len(_batch_norms(model)) == 5


def test_what_cannot_fold_runs_as_before():
    model = _model()
    with torch.no_grad():
        model.get_submodule("plain_bn").running_var[2] = 0.0  # no finite scale
    model.get_submodule("biased").register_forward_hook(lambda *a: None)  # a hook sees the unfolded output
    model.get_submodule("last").train()
    model.get_submodule("out").train()  # batch statistics: not an affine map
    assert _batch_norms(fold_batch_norms(model)) == ["plain_bn", "biased_bn", "activated_bn", "shared_bn", "out"]


def test_embed_rows_with_and_without_the_fold_agree():
    from graphspec.faces.data.synthetic import synthetic_faces
    from graphspec.faces.embed import embed, image_files
    files = image_files([synthetic_faces(identities=3, images=3)])
    rows = {rewrite: embed(graphspec.load("nn4small2-lfw"), files,
                           execution=Execution(rewrite=rewrite, aligned=True))[0] for rewrite in (False, True)}
    assert rows[True].shape == (9, 128)
    torch.testing.assert_close(torch.from_numpy(rows[True]), torch.from_numpy(rows[False]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_shipped_networks_embedding_is_unchanged_by_the_fold(precision):
    model = graphspec.load("nn4small2-lfw").eval()
    net = subgraph(model, ["embeddings"], needed_inputs_only=True)
    x = torch.rand(8, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    ex = Execution(precision=precision, rewrite=False)
    with torch.no_grad(), ex.context():
        plain = ex.prepare(model, net)(ex.input(x))["embeddings"].float()
        folded = fold_batch_norms(net)(ex.input(x))["embeddings"].float()
    assert len(_batch_norms(net)) > 30 and _batch_norms(fold_batch_norms(net)) == []
    tol = 1e-5 if precision == "fp32" else 3e-2  # bf16: rounding of the folded weights, as bf16 rounds anyway
    torch.testing.assert_close(folded, plain, rtol=tol, atol=tol)


POOLS = """
version: 1
name: pools
seed: 5
defaults: {activation: identity}
inputs:
  x: {type: convolutional, channels: 3, height: 11, width: 11}
vertices:
  conv: {type: conv, inputs: [x], kernel: 3, out: 8, convolution_mode: same}
  relu: {type: activation, inputs: [conv], activation: relu}
  pool: {type: subsampling, inputs: [relu], pooling: max, kernel: 3, stride: 2, convolution_mode: same}
  leaky: {type: activation, inputs: [pool], activation: leakyrelu}
  pool2: {type: subsampling, inputs: [leaky], pooling: max, kernel: 2, stride: 1, padding: 1}
  tanh: {type: activation, inputs: [pool2], activation: tanh}
  pool3: {type: subsampling, inputs: [tanh], pooling: max, kernel: 2, stride: 1}
  relu2: {type: activation, inputs: [pool3], activation: relu}
  avg: {type: subsampling, inputs: [relu2], pooling: avg, kernel: 2, stride: 1}
  relu3: {type: activation, inputs: [avg], activation: relu}
  read_twice: {type: subsampling, inputs: [relu3], pooling: max, kernel: 2, stride: 1}
  other: {type: activation, inputs: [relu3], activation: identity}
outputs: [read_twice, other, pool]
"""


def _order(net) -> list[str]:
    return [n.target for n in net.graph.nodes if n.op == "call_module"]


def test_activations_move_after_the_max_pool_that_reads_them_alone_with_the_same_bits():
    model = graphspec.build(POOLS).eval()
    x = torch.randn(4, 3, 11, 11, generator=torch.Generator().manual_seed(1)) * 3
    moved = activations_after_max_pools(model)
    # relu and leakyrelu move (padded pools included: f(0) = 0); tanh is not exact enough to promise the same bits;
    # 'avg' is not a max; relu3 has two readers
    assert _order(moved) == ["conv", "pool", "relu", "pool2", "leaky", "tanh", "pool3", "relu2", "avg", "relu3",
                             "read_twice", "other"]
    with torch.no_grad():
        for layout in (torch.contiguous_format, torch.channels_last):
            ours, theirs = moved(x.contiguous(memory_format=layout)), model(x.contiguous(memory_format=layout))
            assert ours.keys() == theirs.keys()  # 'pool', a network output, now names the moved relu's result
            assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_moved_activation_is_a_copy_the_model_keeps_its_own():
    model = graphspec.build(POOLS).eval()
    moved = activations_after_max_pools(model)
    assert moved.get_submodule("relu") is not model.get_submodule("relu")
    assert moved.get_submodule("relu").inplace  # it alone reads the pool's fresh output
    assert moved.get_submodule("tanh") is model.get_submodule("tanh")
    assert _order(model)[:3] == ["conv", "relu", "pool"]


def test_hooked_modules_stay_where_they_are():
    model = graphspec.build(POOLS).eval()
    model.get_submodule("relu").register_forward_hook(lambda *a: None)
    model.get_submodule("pool2").register_forward_pre_hook(lambda *a: None)
    assert _order(activations_after_max_pools(model))[:6] == ["conv", "relu", "pool", "leaky", "pool2", "tanh"]


SHARED = """
version: 1
name: shared
seed: 4
defaults: {activation: identity}
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  conv: {type: conv, inputs: [x], kernel: 3, out: 3, convolution_mode: same}
  norm: {type: batchnorm, inputs: [conv]}
  again: {inputs: [norm], shares: conv}
  act: {type: activation, inputs: [again], activation: relu}
  pool: {type: subsampling, inputs: [act], pooling: max, kernel: 2, stride: 2}
  act_again: {inputs: [pool], shares: act}
  pool_again: {type: subsampling, inputs: [act_again], pooling: max, kernel: 2, stride: 2}
outputs: [pool_again]
"""


def test_modules_called_at_several_places_are_not_rewritten():
    """Folding 'norm' into the shared convolution would change what 'again' computes with it; a shared activation
    moved after one pool would move at both places through one module."""
    model = graphspec.build(SHARED).eval()
    with torch.no_grad():
        norm = model.get_submodule("norm")
        norm.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.25, 1.5]))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    rewritten = rewrite_for_inference(model)
    assert _order(rewritten) == _order(model)
    with torch.no_grad():
        assert torch.equal(rewritten(x), model(x))


def test_the_shipped_networks_first_relu_runs_after_its_pool():
    model = graphspec.load("nn4small2-lfw").eval()
    net = subgraph(model, ["embeddings"], needed_inputs_only=True)
    rewritten = rewrite_for_inference(net)
    order = _order(rewritten)
    assert order.index("stem-activation1") == order.index("stem-pool1") + 1
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert torch.equal(rewritten(x)["embeddings"], fold_batch_norms(net)(x)["embeddings"])
