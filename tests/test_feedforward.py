"""feed_forward: activations by vertex name like DL4J's ComputationGraph.feedForward (SEMANTICS §9): by default
the inputs, every layer and every output vertex (not merge / other non-output vertices); chosen vertices equal
the model's own forward; training mode updates BN statistics (DL4J formula, Appendix C item 4) and the model's
mode is restored."""
from __future__ import annotations

import pytest
import torch

from graphspec import GraphBuilder, GraphspecError, build, feed_forward

NN4 = "specs/nn4small2.yaml"

# DL4J implementation classes (SEMANTICS §8): these vertex types are layers in a ComputationGraph; merge and
# l2_normalize are plain GraphVertex implementations (MergeVertex, L2NormalizeVertex).
DL4J_LAYER_TYPES = {"conv", "batchnorm", "activation", "subsampling", "lrn", "dense", "center_loss_output"}
# Appendix C item 8: the seven merge totals 256, 320, 640, 640, 1024, 736, 736 -> seven merge vertices
N_MERGES = 7
BN_EPS = 1e-5  # DL4J BatchNormalization default eps (the tutorial sets none)
BN_DECAY = 0.9  # DL4J default decay


def capture_outputs(model, x) -> dict[str, torch.Tensor]:
    acts, handles = {}, []
    for name in model.graphspec.spec.vertices:
        def hook(module, args, out, name=name):
            acts[name] = out
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return acts, out


@pytest.fixture(scope="module")
def net():
    return build(NN4, seed=5).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 255.0


@pytest.fixture(scope="module")
def hooked(net, x):
    """Every vertex's output and the model output of a plain forward (via hooks, independent of feed_forward)."""
    return capture_outputs(net, x)


@pytest.fixture(scope="module")
def default_acts(net, x):
    with torch.no_grad():
        return feed_forward(net, x)


def test_default_set_is_inputs_layers_and_outputs(net, default_acts, x):
    spec = net.graphspec.spec
    layers = {n for n, v in spec.vertices.items() if v.type in DL4J_LAYER_TYPES}
    assert set(default_acts) == {"input1"} | layers | set(spec.outputs)
    assert len(default_acts) == 1 + len(spec.vertices) - N_MERGES - 1  # minus the merges and embeddings
    for name in ("inception-3a", "inception-3c", "inception-5b", "embeddings"):
        assert name not in default_acts
    assert default_acts["input1"] is x
    # topological order: every vertex comes after its inputs
    pos = {n: i for i, n in enumerate(default_acts)}
    for n in default_acts:
        if n != "input1":
            assert all(pos[i] < pos[n] for i in spec.vertices[n].inputs if i in pos), n


def test_default_activations_equal_the_models_forward(net, default_acts, hooked):
    acts, out = hooked
    assert torch.equal(default_acts["lossLayer"], out)
    assert out.shape == (2, 5749)
    for name, a in default_acts.items():
        if name != "input1":
            assert torch.equal(a, acts[name]), name
    assert default_acts["bottleneck"].shape == (2, 128)
    assert default_acts["stem-cnn1"].shape == (2, 64, 48, 48)


def test_chosen_vertices_including_merge_and_non_output_vertices(net, x, hooked):
    acts, _ = hooked
    with torch.no_grad():
        ff = feed_forward(net, x, vertices=["embeddings", "inception-3a", "input1"])
    assert list(ff) == ["input1", "inception-3a", "embeddings"]  # topological order
    assert ff["inception-3a"].shape == (2, 256, 12, 12)  # merge of 128 + 32 + 32 + 64 channels
    assert torch.equal(ff["inception-3a"], acts["inception-3a"])
    assert torch.equal(ff["embeddings"], acts["embeddings"])
    assert torch.allclose(ff["embeddings"].norm(dim=1), torch.ones(2), atol=1e-5)


def test_default_set_of_the_snipped_model_contains_embeddings(net, x, hooked):
    snipped = (GraphBuilder(net).set_feature_extractor("embeddings").remove_vertex_and_connections("lossLayer")
               .set_outputs("embeddings").build())
    with torch.no_grad():
        ff = feed_forward(snipped, x, vertices=None)
    assert "embeddings" in ff and "lossLayer" not in ff and "inception-3a" not in ff
    assert torch.equal(ff["embeddings"], hooked[0]["embeddings"])


def test_errors(net, x):
    with pytest.raises(GraphspecError) as ei:
        feed_forward(net, x, vertices=["embedings"])
    assert ei.value.problem.message == "feed_forward: no vertex named 'embedings' (did you mean 'embeddings'?)"
    assert ei.value.problem.vertex == "embedings"
    with pytest.raises(GraphspecError) as ei:
        feed_forward(net, x, x)
    assert ei.value.problem.message == "feed_forward: the model has 1 input(s) (input1); received 2"
    with pytest.raises(GraphspecError) as ei:
        feed_forward(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    assert ei.value.problem.message == "feed_forward needs a module built by graphspec"


def _bn_stats(model, name):
    bn = model.get_submodule(name)
    return bn.running_mean.clone(), bn.running_var.clone()


def test_train_mode_updates_bn_statistics_by_the_dl4j_rule_and_restores_the_mode(x):
    model = build(NN4, seed=5)
    model.eval()
    with torch.no_grad():
        conv = feed_forward(model, x, vertices=["stem-cnn1"])["stem-cnn1"]
    later_before = _bn_stats(model, "inception-2-batch1")
    with torch.no_grad():
        ff = feed_forward(model, x, vertices=["stem-batch1"], train=True)
    assert not model.training and not any(m.training for m in model.modules())
    mean, var = _bn_stats(model, "stem-batch1")
    mu = conv.mean(dim=(0, 2, 3))
    biased = conv.var(dim=(0, 2, 3), unbiased=False)
    # from running mean 0, var 1: mean = 0.1*mu; var = 0.9 + 0.1*(biased var + eps)   (Appendix C item 4)
    assert torch.allclose(mean, (1 - BN_DECAY) * mu, rtol=1e-4, atol=1e-4)
    assert torch.allclose(var, BN_DECAY + (1 - BN_DECAY) * (biased + BN_EPS), rtol=1e-4)
    # training-mode output uses batch statistics: per channel mean 0, (biased) variance ~1 (gamma 1, beta 0)
    y = ff["stem-batch1"]
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(64), atol=1e-3)
    assert torch.allclose(y.var(dim=(0, 2, 3), unbiased=False), biased / (biased + BN_EPS), rtol=1e-3)
    # only the ancestors of the requested vertices ran: a later BN did not move
    for a, b in zip(_bn_stats(model, "inception-2-batch1"), later_before):
        assert torch.equal(a, b)


def test_inference_call_on_a_training_model_restores_training_and_leaves_stats(x):
    model = build(NN4, seed=5)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        feed_forward(model, x, vertices=["inception-2-batch1"], train=False)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_frozen_vertices_stay_in_inference_mode_when_training(x):
    model = GraphBuilder(build(NN4, seed=5)).set_feature_extractor("stem-batch1").build()
    model.eval()
    frozen_before = _bn_stats(model, "stem-batch1")
    free_before = _bn_stats(model, "inception-2-batch1")
    with torch.no_grad():
        feed_forward(model, x, vertices=["inception-2-batch1"], train=True)
    assert all(torch.equal(a, b) for a, b in zip(_bn_stats(model, "stem-batch1"), frozen_before))
    assert not any(torch.equal(a, b) for a, b in zip(_bn_stats(model, "inception-2-batch1"), free_before))
    assert not model.training
