"""The compiled nn4small2 spec against an independent hand-written PyTorch module and SEMANTICS.md Appendix A.

* numerics: same weights (BN running statistics, gammas/betas and biases randomised first), eval and train mode;
  in train mode the running statistics must follow DL4J (biased variance + eps folded in), checked against the
  batch statistics seen by the hand-written module;
* graph: vertex names, inputs, merge orders, output shapes, Same pads and parameter counts of Appendix A
  (parsed from ../shared/reference/SEMANTICS.md when present), plus hard-coded key facts;
* quirks of the tutorial (3x3 kernels named 5x5, bias init 0.2 only in FaceNetHelper convolutions);
* a seeded build is bit-for-bit reproducible.
"""
from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import graphspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import nn4small2_handwritten as hw  # noqa: E402
from conftest import reference  # noqa: E402

SPEC = ROOT / "specs" / "nn4small2.yaml"
SEMANTICS = reference("SEMANTICS.md")  # ../shared/reference beside the checkout
EPS = 1e-5

MERGES = {
    "inception-3a": (["inception-3a-transfer2-0", "inception-3a-transfer2-1", "inception-3a-transfer3",
                      "inception-3a-transfer4"], 256),
    "inception-3b": (["inception-3b-transfer2-0", "inception-3b-transfer2-1", "inception-3b-transfer3",
                      "inception-3b-transfer4"], 320),
    "inception-3c": (["3c-transfer2", "3c-2-transfer4", "3c-pool"], 640),
    "inception-4a": (["inception-4a-transfer2-0", "inception-4a-transfer2-1", "inception-4a-transfer3",
                      "inception-4a-transfer4"], 640),
    "inception-4e": (["4e-transfer2", "4e-2-transfer4", "4e-pool"], 1024),
    "inception-5a": (["5a-transfer1", "5a-transfer3", "5a-3-transfer4"], 736),
    "inception-5b": (["5b-transfer1", "5b-2-transfer3", "5b-3-transfer4"], 736),
}


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh():
    """A seeded build, untouched (initial values)."""
    return graphspec.build(SPEC, seed=123)


@pytest.fixture(scope="module")
def pair():
    """(graphspec module, hand-written module) with identical, randomised weights, both in eval mode."""
    g = graphspec.build(SPEC, seed=123)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, t in list(g.named_parameters()) + list(g.named_buffers()):
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
            elif name.endswith(".weight") and t.dim() == 1:  # BN gamma
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name == "lossLayer.centers":
                t.copy_(torch.randn(t.shape, generator=gen))
    h = hw.load_graphspec_state(hw.NN4Small2(), g.state_dict())
    return g.eval(), h.eval()


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(3)
    return torch.rand(4, 3, 96, 96, generator=gen) * 255  # LFW as the tutorial feeds it: 0..255, unscaled


def capture(module: torch.nn.Module, names):
    """Register forward hooks recording the output of each named submodule; returns (store, handles)."""
    store, handles = {}, []
    for n in names:
        handles.append(module.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: store.__setitem__(n, o.detach().clone())))
    return store, handles


def assert_close_rel(actual, expected, rtol=1e-5, what=""):
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * max(scale, 1e-30), f"{what}: max abs diff {err:.3g} vs scale {scale:.3g}"


# --- numerics vs the hand-written module ----------------------------------------------------------------------


def test_hand_written_state_mapping_is_complete(fresh):
    mapping = hw.graphspec_key_map()
    assert sorted(mapping.values()) == sorted(fresh.state_dict())
    own = {k for k in hw.NN4Small2().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(mapping) == own


def test_running_var_mapping_subtracts_eps(pair):
    g, h = pair
    torch.testing.assert_close(h.inc3a.b3.bn.running_var, g.get_submodule("inception-3a-batch2-0").running_var - EPS)
    torch.testing.assert_close(h.conv1.bn.running_var, g.get_submodule("stem-batch1").running_var - EPS)


def test_eval_outputs_match(pair, images):
    g, h = pair
    store, handles = capture(g, ["avgpool", "bottleneck", "embeddings"])
    try:
        with torch.no_grad():
            out_g = g(images)
            feats_h = h.features(images)
            emb_h = h.embed(images)
            out_h = h(images)
    finally:
        for hd in handles:
            hd.remove()
    assert out_g.shape == (4, 5749)
    assert_close_rel(store["avgpool"].flatten(1), feats_h, what="736-d pooled features")
    assert_close_rel(store["bottleneck"], h.bottleneck(feats_h), what="bottleneck")
    assert_close_rel(store["embeddings"], emb_h, what="embeddings")
    torch.testing.assert_close(emb_h.norm(dim=1), torch.ones(4))
    assert_close_rel(out_g, out_h, what="softmax")
    torch.testing.assert_close(out_g.sum(dim=1), torch.ones(4))
    # the comparison is meaningful: different images give clearly different embeddings
    assert (emb_h[0] - emb_h[1]).abs().max() > 1e-3


def test_eval_changes_if_a_weight_differs(pair, images):
    """Guard against a vacuous comparison: perturbing one BN statistic must change the output."""
    g, h = pair
    h2 = copy.deepcopy(h)
    with torch.no_grad():
        h2.inc4e.b.bn.running_mean += 0.5
        assert (h2.embed(images) - h.embed(images)).abs().max() > 1e-4


def test_train_mode_outputs_and_dl4j_running_stats(pair, images):
    g0, h0 = pair
    g, h = copy.deepcopy(g0).train(), copy.deepcopy(h0).train()
    pairs = hw.conv_bn_pairs()
    old = {bn: g.get_submodule(bn).running_var.clone() for _, bn in pairs.values()}
    old_mean = {bn: g.get_submodule(bn).running_mean.clone() for _, bn in pairs.values()}
    # the batch statistics DL4J uses: the input of every BN of the hand-written module, in float64
    seen, handles = {}, []
    for hand, (_, bn) in pairs.items():
        handles.append(h.get_submodule(f"{hand}.bn").register_forward_hook(
            lambda m, i, o, bn=bn: seen.__setitem__(bn, i[0].detach().double())))
    x = images[:3]
    try:
        with torch.no_grad():
            out_g, out_h = g(x), h(x)
    finally:
        for hd in handles:
            hd.remove()
    assert_close_rel(out_g, out_h, what="train-mode softmax")
    assert len(seen) == 37
    for hand, (_, bn) in pairs.items():
        a = seen[bn]
        mu = a.mean(dim=(0, 2, 3))
        var_biased = a.var(dim=(0, 2, 3), correction=0)
        var_unbiased = a.var(dim=(0, 2, 3), correction=1)
        gbn, hbn = g.get_submodule(bn), h.get_submodule(f"{hand}.bn")
        exp_mean = 0.9 * old_mean[bn].double() + 0.1 * mu
        exp_var = 0.9 * old[bn].double() + 0.1 * (var_biased + EPS)  # DL4J: eps folded into the stored variance
        torch.testing.assert_close(gbn.running_mean.double(), exp_mean, rtol=1e-5, atol=1e-6, msg=bn)
        torch.testing.assert_close(gbn.running_var.double(), exp_var, rtol=1e-5, atol=1e-6, msg=bn)
        # the hand-written nn.BatchNorm2d follows torch's convention from the same batch: identical in DL4J's sense
        torch.testing.assert_close(hbn.running_mean.double(), exp_mean, rtol=1e-5, atol=1e-6, msg=bn)
        torch.testing.assert_close(hbn.running_var.double(), 0.9 * (old[bn].double() - EPS) + 0.1 * var_unbiased,
                                   rtol=1e-5, atol=1e-6, msg=bn)
    # and after that step both give the same inference output again once converted the DL4J way
    g.eval()
    h.eval()
    with torch.no_grad():
        for hand, (_, bn) in pairs.items():
            h.get_submodule(f"{hand}.bn").running_var.copy_(g.get_submodule(bn).running_var - EPS)
        assert_close_rel(g(x), h(x), what="eval after a train step")


def test_train_step_gradients_match(pair, images):
    g0, h0 = pair
    g, h = copy.deepcopy(g0).train(), copy.deepcopy(h0).train()
    x = images[:3]
    r = torch.randn(3, 5749, generator=torch.Generator().manual_seed(5))
    (g(x) * r).sum().backward()
    (h(x) * r).sum().backward()
    gparams = dict(g.named_parameters())
    assert len(gparams) == sum(1 for _ in h.parameters())
    conv_biases = {f"{conv}.bias" for conv, _ in hw.conv_bn_pairs().values()}
    for hkey, gkey in hw.graphspec_key_map().items():
        if gkey not in gparams:
            continue  # buffers
        hg, gg = h.get_parameter(hkey).grad, gparams[gkey].grad
        assert gg is not None and hg is not None, gkey
        if gkey in conv_biases:
            # every convolution feeds a batchnorm, which cancels its bias: the true gradient is 0 (rounding noise)
            assert gg.abs().max() < 1e-7 and hg.abs().max() < 1e-7, gkey
        else:
            assert hg.abs().max() > 0, gkey
            assert_close_rel(gg, hg, rtol=1e-4, what=f"grad {gkey}")


def test_hand_written_shapes():
    h = hw.NN4Small2().eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert h(x).shape == (2, 5749)
        assert h.embed(x).shape == (2, 128)
        assert h.features(x).shape == (2, 736)


# --- graph structure: Appendix A --------------------------------------------------------------------------


KIND = {"conv": "conv", "bn": "batchnorm", "act": "activation", "pool": "subsampling", "lrn": "lrn",
        "merge": "merge", "dense": "dense", "l2norm": "l2_normalize", "centerloss": "center_loss_output"}
ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+\(([\d, ]+)\)\s+(?:pad\(t,b\)=\((\d+),(\d+)\)\s+)?(\d+)\s*$")


def appendix_a():
    if not SEMANTICS.is_file():
        pytest.skip(f"{SEMANTICS} not available")
    text = SEMANTICS.read_text(encoding="utf-8")
    start = text.index("## Appendix A")
    block = text[text.index("```", start) + 3:]
    block = block[:block.index("```")]
    rows, totals = {}, {}
    for line in block.strip().splitlines():
        m = ROW.match(line)
        if m:
            name, kind, inputs, shape, top, bottom, params = m.groups()
            rows[name] = {"kind": kind, "inputs": inputs.split(","),
                          "shape": tuple(int(d) for d in shape.replace(" ", "").split(",") if d),
                          "pads": (int(top), int(bottom)) if top is not None else None, "params": int(params)}
        elif line.startswith("TOTAL params"):
            totals["total"] = int(line.split(":")[1])
        elif line.startswith("n vertices"):
            totals["vertices"] = int(re.match(r"n vertices \(excl input\):\s*(\d+)", line).group(1))
    assert len(rows) > 100, "Appendix A block not parsed"
    return rows, totals


def test_appendix_a_vertices_inputs_shapes_pads_params(fresh):
    rows, totals = appendix_a()
    spec, analysis = fresh.graphspec.spec, fresh.graphspec.analysis
    assert list(rows) == [n for n in spec.vertices]  # same names in the same (insertion) order
    sd = fresh.state_dict()
    for name, row in rows.items():
        v = spec.vertices[name]
        assert v.type == KIND[row["kind"]], name
        assert v.inputs == row["inputs"], name
        assert analysis.shapes[name] == row["shape"], name
        if row["pads"] is not None:
            left, right, top, bottom = analysis.inference[name].info["pads"]
            assert (top, bottom) == row["pads"] == (left, right), name
        n_params = sum(t.numel() for k, t in sd.items() if k.rsplit(".", 1)[0] == name)
        assert n_params == row["params"], name
    assert totals["total"] == sum(t.numel() for t in sd.values())
    assert totals["vertices"] == len(spec.vertices)


def test_key_facts(fresh):
    spec, analysis = fresh.graphspec.spec, fresh.graphspec.analysis
    assert len(spec.vertices) == 133
    assert len(list(fresh.named_children())) == 133
    for merge, (inputs, channels) in MERGES.items():
        assert spec.vertices[merge].type == "merge"
        assert spec.vertices[merge].inputs == inputs, merge
        assert analysis.shapes[merge][0] == channels, merge
    assert sum(t.numel() for t in fresh.state_dict().values()) == 5_056_933
    assert sum(p.numel() for p in fresh.parameters() if p.requires_grad) == 4_311_749
    bn_stats = sum(t.numel() for k, t in fresh.state_dict().items() if k.endswith(("running_mean", "running_var")))
    assert bn_stats == 9_312
    assert fresh.get_buffer("lossLayer.centers").shape == (5749, 128)
    assert analysis.shapes["embeddings"] == (128,) and analysis.shapes["lossLayer"] == (5749,)
    assert spec.outputs == ["lossLayer"] and list(spec.inputs) == ["input1"]


def test_quirks_3x3_kernels_named_5x5(fresh):
    assert fresh.get_parameter("3c-2-5x5.weight").shape == (64, 32, 3, 3)
    assert fresh.get_parameter("4e-2-5x5.weight").shape == (128, 64, 3, 3)
    assert fresh.get_parameter("inception-3a-reduce1-1.weight").shape == (32, 16, 5, 5)  # the real 5x5


def test_bias_init_only_in_facenet_helper_convs(fresh):
    helper = ("inception-3a-", "inception-3b-", "inception-4a-")
    convs = [n for n, v in fresh.graphspec.spec.vertices.items() if v.type == "conv"]
    assert len(convs) == 37
    n_helper = 0
    for name in convs:
        bias = fresh.get_parameter(f"{name}.bias")
        expected = 0.2 if name.startswith(helper) else 0.0
        n_helper += name.startswith(helper)
        assert torch.equal(bias, torch.full_like(bias, expected)), name
    assert n_helper == 18
    assert torch.equal(fresh.get_parameter("inception-3a-cnn1-0.bias"), torch.full((96,), 0.2))
    assert torch.equal(fresh.get_parameter("stem-cnn1.bias"), torch.zeros(64))
    assert torch.equal(fresh.get_parameter("bottleneck.bias"), torch.zeros(128))
    assert torch.equal(fresh.get_parameter("lossLayer.bias"), torch.zeros(5749))


def test_initial_values_follow_dl4j(fresh):
    # WeightInit.RELU: N(0, 2/fanIn), fanIn = nIn*kH*kW
    for name, fan_in in (("stem-cnn1", 3 * 49), ("inception-4a-reduce2", 640), ("lossLayer", 128)):
        w = fresh.get_parameter(f"{name}.weight")
        assert w.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05), name
        assert abs(w.mean().item()) < 0.05 * math.sqrt(2.0 / fan_in) * 3, name
    bn = fresh.get_submodule("stem-batch1")
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    assert torch.equal(bn.running_mean, torch.zeros(64)) and torch.equal(bn.running_var, torch.ones(64))
    assert torch.count_nonzero(fresh.get_buffer("lossLayer.centers")) == 0


def test_seeded_build_is_bit_for_bit_reproducible(fresh):
    torch.manual_seed(999)  # the global RNG must not matter
    again = graphspec.build(SPEC, seed=123)
    a, b = fresh.state_dict(), again.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = graphspec.build(SPEC, seed=124).state_dict()
    assert not torch.equal(a["stem-cnn1.weight"], other["stem-cnn1.weight"])
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), again.eval()(x))
