"""Inference rewrites (graphspec.inference): each batch norm folded into the convolution before it gives the
unfolded network's outputs within 1e-5, the folded weights are torch's own fusion formula (with DL4J's zero eps),
the model keeps its weights, and whatever cannot fold is left to run as it was."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_weights

import graphspec
from graphspec.compiler import subgraph
from graphspec.execution import Execution
from graphspec.inference import fold_batch_norms

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
    rows = {fold: embed(graphspec.load("nn4small2-lfw"), files, execution=Execution(fold=fold, aligned=True))[0]
            for fold in (False, True)}
    assert rows[True].shape == (9, 128)
    torch.testing.assert_close(torch.from_numpy(rows[True]), torch.from_numpy(rows[False]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_shipped_networks_embedding_is_unchanged_by_the_fold(precision):
    model = graphspec.load("nn4small2-lfw").eval()
    net = subgraph(model, ["embeddings"], needed_inputs_only=True)
    x = torch.rand(8, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    ex = Execution(precision=precision, fold=False)
    with torch.no_grad(), ex.context():
        plain = ex.prepare(model, net)(ex.input(x))["embeddings"].float()
        folded = fold_batch_norms(net)(ex.input(x))["embeddings"].float()
    assert len(_batch_norms(net)) > 30 and _batch_norms(fold_batch_norms(net)) == []
    tol = 1e-5 if precision == "fp32" else 3e-2  # bf16: rounding of the folded weights, as bf16 rounds anyway
    torch.testing.assert_close(folded, plain, rtol=tol, atol=tol)
