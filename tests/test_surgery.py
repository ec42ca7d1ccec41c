"""Transfer learning as graph surgery (SEMANTICS §9, Appendix C items 9-10): the tutorial's snip of nn4small2,
freezing (named vertices + ancestors, always inference mode, no gradient), every GraphBuilder edit with its
errors, weights copied by name and shape, and `graphspec init` / `graphspec snip` / `graphspec summary`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import graphspec
from graphspec import GraphBuilder, SpecError, build, feed_forward, snip
from graphspec.summary import summarize
from graphspec.surgery import SurgeryError
from conftest import lfw_images_folder

NN4 = "specs/nn4small2.yaml"

# SEMANTICS §8 / Appendix C 8-9: tutorial total and the snipped transfer-learning graph (DL4J counts everything
# stored: BN running mean/var and the centers included).
TUTORIAL_TOTAL = 5_056_933
SNIPPED_TOTAL = 3_579_440
# lossLayer (CenterLossOutputLayer 128 -> 5749): W {128,5749}, b {1,5749}, cL {5749,128}
LOSS_LAYER_PARAMS = 128 * 5749 + 5749 + 5749 * 128
assert TUTORIAL_TOTAL - LOSS_LAYER_PARAMS == SNIPPED_TOTAL


# --- helpers --------------------------------------------------------------------------------------------------


def ancestors(spec, name: str) -> set[str]:
    """All vertices (not network inputs) from which ``name`` is reachable, by walking the spec's input lists."""
    seen, todo = set(), list(spec.vertices[name].inputs)
    while todo:
        n = todo.pop()
        if n in seen or n in spec.inputs:
            continue
        seen.add(n)
        todo.extend(spec.vertices[n].inputs)
    return seen


def consumers(spec, name: str) -> set[str]:
    return {n for n, v in spec.vertices.items() if name in v.inputs}


def vertex_state(model, vertex: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] == vertex}


def param_vertices(model) -> set[str]:
    return {k.split(".", 1)[0] for k in model.state_dict()}


def assert_same_weights(new, old, vertices) -> None:
    for vertex in vertices:
        a, b = vertex_state(new, vertex), vertex_state(old, vertex)
        assert a.keys() == b.keys() and a, vertex
        for k in a:
            assert torch.equal(a[k], b[k]), k


def surgery_error(fn, message: str, vertex: str | None = None) -> SurgeryError:
    with pytest.raises(SurgeryError) as ei:
        fn()
    assert ei.value.problem.message == message
    assert ei.value.problem.vertex == vertex
    return ei.value


def rand_faces(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 96, 96, generator=g) * 255.0


def lfw_faces(n: int = 3) -> torch.Tensor:
    """A few real LFW faces with the DL4J preprocessing (SEMANTICS §10): whole image resized to 96x96 (bilinear),
    BGR channel order, float values 0..255, layout [N, 3, 96, 96]."""
    import numpy as np
    from PIL import Image
    LFW = lfw_images_folder()
    files = []
    for person in sorted(p.name for p in LFW.iterdir()):
        f = LFW / person / f"{person}_0001.jpg"
        if f.is_file():
            files.append(f)
        if len(files) == n:
            break
    if len(files) < n:
        pytest.skip("not enough LFW images")
    batch = []
    for f in files:
        img = Image.open(f).convert("RGB").resize((96, 96), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR
        batch.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
    x = torch.stack(batch)
    assert x.shape == (n, 3, 96, 96) and x.min() >= 0 and x.max() <= 255 and x.max() > 1
    return x


def capture_outputs(model, x) -> dict[str, torch.Tensor]:
    """Every vertex's output during a plain ``model(x)``, via forward hooks (independent of feed_forward)."""
    acts, handles = {}, []
    for name in model.graphspec.spec.vertices:
        def hook(module, args, out, name=name):
            acts[name] = out
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return acts


SMALL = """
version: 1
name: small
seed: 3
defaults: {activation: relu, weight_init: xavier}
inputs:
  x: {type: feed_forward, size: 6}
vertices:
  d1: {type: dense, inputs: [x], out: 10}
  s:  {type: subset, inputs: [d1], start: 0, end: 3}
  d2: {type: dense, inputs: [s], out: 2}
outputs: [d2]
"""


# --- fixtures: a "trained" nn4small2 (seed 7, not the spec's 123, so fresh initialisations differ from it) -----


@pytest.fixture(scope="module")
def base():
    net = build(NN4, seed=7)
    net.eval()
    return net


@pytest.fixture(scope="module")
def base_state(base):
    return {k: v.clone() for k, v in base.state_dict().items()}


@pytest.fixture(scope="module")
def x1():
    return rand_faces(1, seed=1)


@pytest.fixture(scope="module")
def base_acts(base, x1):
    """Every vertex's output of the original model on ``x1`` (inference mode)."""
    return capture_outputs(base, x1)


@pytest.fixture(scope="module")
def snipped(base):
    return (GraphBuilder(base).set_feature_extractor("embeddings").remove_vertex_and_connections("lossLayer")
            .set_outputs("embeddings").build())


@pytest.fixture(scope="module", autouse=True)
def base_untouched(base, base_state):
    """Surgery never changes the model it starts from (weights, mode, trainability)."""
    yield
    for k, v in base.state_dict().items():
        assert torch.equal(v, base_state[k]), k
    assert all(p.requires_grad for p in base.parameters())
    assert not any(graphspec.freeze.is_frozen(m) for m in base.modules())


# --- the tutorial's snip --------------------------------------------------------------------------------------


def test_tutorial_snip_structure_report_and_weights(base, snipped):
    spec, old = snipped.graphspec.spec, base.graphspec.spec
    assert spec.outputs == ["embeddings"]
    assert set(spec.vertices) == set(old.vertices) - {"lossLayer"}
    rep = snipped.graphspec.surgery
    assert rep.dropped == ["lossLayer"]
    assert rep.reinitialised == []
    assert set(rep.kept) == param_vertices(base) - {"lossLayer"}
    assert_same_weights(snipped, base, rep.kept)
    # every remaining vertex is an ancestor of embeddings: the whole network is frozen (SEMANTICS §9)
    assert set(rep.frozen) == set(spec.vertices) == set(snipped.graphspec.frozen)
    assert not any(p.requires_grad for p in snipped.parameters())


def test_tutorial_snip_summary_totals(base, snipped):
    info = snipped.graphspec
    t = summarize(info.spec, frozen=set(info.frozen)).totals()
    assert t["total"] == SNIPPED_TOTAL
    assert t["trainable"] == 0
    running = sum(b.numel() for n, b in snipped.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert t["state"] == running and t["frozen"] == SNIPPED_TOTAL - running
    assert sum(v.numel() for v in snipped.state_dict().values()) == SNIPPED_TOTAL
    assert sum(v.numel() for v in base.state_dict().values()) == TUTORIAL_TOTAL


def _original_embeddings(base, x):
    return capture_outputs(base, x)["embeddings"]


def test_snipped_output_equals_original_embeddings_random(base, snipped):
    x = rand_faces(2)
    expected = _original_embeddings(base, x)
    assert expected.shape == (2, 128)
    for mode in (False, True):  # frozen vertices run in inference mode even in a model set to train
        snipped.train(mode)
        with torch.no_grad():
            assert torch.equal(snipped(x), expected)
    snipped.eval()


def test_snipped_output_equals_original_embeddings_lfw(base, snipped):
    x = lfw_faces(3)
    expected = _original_embeddings(base, x)
    snipped.train()
    with torch.no_grad():
        out = snipped(x)
    snipped.eval()
    assert torch.equal(out, expected)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)  # L2-normalised embeddings
    assert torch.equal(feed_forward(snipped, x, vertices=["embeddings"])["embeddings"], expected)


def test_snip_function_matches_tutorial_calls(base, snipped):
    s = snip(base, ["embeddings"])
    assert s.graphspec.spec == snipped.graphspec.spec
    assert s.graphspec.frozen == snipped.graphspec.frozen
    for k, v in snipped.state_dict().items():
        assert torch.equal(s.state_dict()[k], v)


def test_snip_at_an_inner_vertex_keeps_only_its_ancestors(base, x1, base_acts):
    s = snip(base, ["inception-3a"], freeze=[])
    spec = s.graphspec.spec
    assert set(spec.vertices) == ancestors(base.graphspec.spec, "inception-3a") | {"inception-3a"}
    assert s.graphspec.frozen == frozenset()
    assert all(p.requires_grad for p in s.parameters())
    with torch.no_grad():
        s.eval()
        assert torch.equal(s(x1), base_acts["inception-3a"])
    assert set(s.graphspec.surgery.dropped) == set(base.graphspec.spec.vertices) - set(spec.vertices)


def test_snip_errors(base):
    surgery_error(lambda: snip(base, ["embedings"]), "snip: no vertex named 'embedings' (did you mean 'embeddings'?)",
                  "embedings")


# --- freezing --------------------------------------------------------------------------------------------------


def test_feature_extractor_freezes_named_plus_ancestors_not_descendants_or_siblings(base):
    m = GraphBuilder(base).set_feature_extractor("3c-transfer2").build()
    spec = base.graphspec.spec
    expected = ancestors(spec, "3c-transfer2") | {"3c-transfer2"}
    assert set(m.graphspec.frozen) == expected == set(m.graphspec.surgery.frozen)
    # siblings in the same inception block and descendants stay trainable
    for name in ("3c-pool", "3c-2-1x1", "3c-2-transfer4", "inception-3c", "inception-4a", "lossLayer"):
        assert name not in expected
    assert {"inception-3b", "inception-3a", "stem-cnn1", "3c-1x1", "3c-3x3-norm"} <= expected
    m.train()
    for name in spec.vertices:
        module = m.get_submodule(name)
        assert module.training == (name not in expected), name
        assert all(p.requires_grad == (name not in expected) for p in module.parameters()), name
    assert m.training


def test_feature_extractor_with_several_names(base):
    m = GraphBuilder(base).set_feature_extractor("stem-lrn1", "3c-pool").build()
    spec = base.graphspec.spec
    expected = {"stem-lrn1", "3c-pool"} | ancestors(spec, "stem-lrn1") | ancestors(spec, "3c-pool")
    assert set(m.graphspec.frozen) == expected
    assert "3c-1x1" not in expected


def _train_steps(model, x, optimizers) -> None:
    model.train()
    target = torch.tensor([0, 3])
    for make, steps in optimizers:
        opt = make(model.parameters())  # every parameter: frozen ones must simply get no gradient
        for _ in range(steps):
            opt.zero_grad()
            out = model(x)
            loss = -torch.log(out[torch.arange(len(target)), target] + 1e-6).mean() + out.pow(2).sum()
            loss.backward()
            opt.step()


@pytest.mark.parametrize("cut", ["avgpool", "inception-3a"])
def test_optimizer_steps_leave_frozen_params_and_bn_statistics_bit_identical(cut):
    net = build(NN4, seed=11)
    model = GraphBuilder(net).set_feature_extractor(cut).build()
    frozen = set(model.graphspec.frozen)
    assert frozen == ancestors(net.graphspec.spec, cut) | {cut}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_steps(model, rand_faces(2, seed=5), [
        (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3), 1),
        (lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-2), 2)])
    moved_params, moved_stats = set(), set()
    for k, v in model.state_dict().items():
        vertex = k.split(".", 1)[0]
        if vertex in frozen:
            assert torch.equal(v, before[k]), f"frozen {k} changed"
        elif not torch.equal(v, before[k]):
            (moved_stats if k.endswith(("running_mean", "running_var")) else moved_params).add(vertex)
    for name, p in model.named_parameters():
        vertex = name.split(".", 1)[0]
        assert p.grad is None or vertex not in frozen
        if vertex not in frozen:
            assert vertex in moved_params, f"trainable {name} did not move"
    trainable_bn = {n for n, v in net.graphspec.spec.vertices.items() if v.type == "batchnorm"} - frozen
    assert moved_stats == trainable_bn  # BN statistics move only outside the frozen set
    if cut == "inception-3a":
        assert trainable_bn  # the partly frozen case really trains batch norms


def test_frozen_set_survives_further_surgery_and_a_new_head_trains(snipped, base):
    """Transfer learning proper: on the frozen snipped model add a classifier; only it trains."""
    m = GraphBuilder(snipped).add_layer(
        "cls", {"type": "output", "out": 4, "loss": "mcxent", "activation": "softmax"}, "embeddings") \
        .set_outputs("cls").build()
    rep = m.graphspec.surgery
    assert rep.reinitialised == ["cls"] and rep.dropped == []
    assert set(m.graphspec.frozen) == set(snipped.graphspec.spec.vertices)
    assert_same_weights(m, base, set(rep.kept))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    out = m(rand_faces(2))
    assert out.shape == (2, 4)
    (-torch.log(out[:, 1]).mean()).backward()
    opt.step()
    changed = {k.split(".", 1)[0] for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"cls"}


# --- remove_vertex_and_connections / remove_vertex_keep_connections ------------------------------------------


def test_remove_vertex_and_connections_success(base, x1, base_acts):
    m = GraphBuilder(base).remove_vertex_and_connections("lossLayer").set_outputs("bottleneck") \
        .remove_vertex_and_connections("embeddings").build()
    assert m.graphspec.spec.outputs == ["bottleneck"]
    assert set(m.graphspec.surgery.dropped) == {"lossLayer", "embeddings"}
    with torch.no_grad():
        m.eval()
        assert torch.equal(m(x1), base_acts["bottleneck"])


def test_remove_vertex_and_connections_removes_it_from_outputs(base):
    b = GraphBuilder(base).remove_vertex_and_connections("lossLayer")
    with pytest.raises(SpecError) as ei:  # no outputs left at all: invalid spec, reported at build
        b.build()
    assert "'outputs'" in str(ei.value) and "received []" in str(ei.value)
    assert b.set_outputs("embeddings").spec().outputs == ["embeddings"]


def test_vertex_left_without_inputs_fails_at_build_naming_it(base):
    b = GraphBuilder(base).remove_vertex_and_connections("avgpool")  # no error yet (DL4J: at build)
    surgery_error(b.build, "vertex 'bottleneck' has no inputs left after the edits; give it inputs or remove it",
                  "bottleneck")


def test_removing_one_input_of_a_merge_is_reported_at_build(base):
    b = GraphBuilder(base).remove_vertex_and_connections("3c-pool")
    with pytest.raises(SpecError) as ei:
        b.build()  # inception-3c now has 320 channels; inception-4a's layers were written with in: 640
    assert "640" in str(ei.value)


def test_remove_vertex_keep_connections_without_readding_fails_at_build_naming_vertices(base):
    b = GraphBuilder(base).remove_vertex_keep_connections("inception-3a")  # no error yet
    with pytest.raises(SpecError) as ei:
        b.build()
    spec = base.graphspec.spec
    assert {p.vertex for p in ei.value.problems} == consumers(spec, "inception-3a") == {
        "inception-3b-cnn1-0", "inception-3b-cnn1-1", "inception-3b-pool1", "inception-3b-reduce2"}
    for p in ei.value.problems:
        assert p.message.startswith("input 'inception-3a' does not exist")


def test_remove_vertex_keep_connections_of_an_output_fails_at_build(base):
    with pytest.raises(SpecError) as ei:
        GraphBuilder(base).remove_vertex_keep_connections("lossLayer").build()
    assert "output 'lossLayer' is not a vertex" in str(ei.value)


def test_remove_vertex_keep_connections_then_readd(base):
    m = GraphBuilder(base).remove_vertex_keep_connections("bottleneck") \
        .add_layer("bottleneck", {"type": "dense", "out": 128, "activation": "identity"}, "avgpool").build()
    rep = m.graphspec.surgery
    assert rep.reinitialised == ["bottleneck"] and rep.dropped == []
    assert set(rep.kept) == param_vertices(base) - {"bottleneck"}
    assert_same_weights(m, base, rep.kept)
    assert not torch.equal(m.bottleneck.weight, base.bottleneck.weight)  # freshly initialised
    assert m.graphspec.spec.vertices["lossLayer"].inputs == ["embeddings"]


def test_remove_vertex_keep_connections_then_readd_a_vertex(base, x1, base_acts):
    m = GraphBuilder(base).remove_vertex_keep_connections("embeddings") \
        .add_vertex("embeddings", {"type": "scale", "factor": 2.0}, "bottleneck") \
        .remove_vertex_and_connections("lossLayer").set_outputs("embeddings").build()
    with torch.no_grad():
        assert torch.equal(m.eval()(x1), base_acts["bottleneck"] * 2.0)


@pytest.mark.parametrize("method", ["remove_vertex_and_connections", "remove_vertex_keep_connections",
                                    "set_feature_extractor", "n_out_replace"])
def test_unknown_vertex_with_did_you_mean(base, method):
    b = GraphBuilder(base)
    args = ("losslayer", 10) if method == "n_out_replace" else ("losslayer",)
    surgery_error(lambda: getattr(b, method)(*args),
                  f"{method}: no vertex named 'losslayer' (did you mean 'lossLayer'?)", "losslayer")


def test_unknown_vertex_without_a_close_name(base):
    surgery_error(lambda: GraphBuilder(base).remove_vertex_and_connections("zzz"),
                  "remove_vertex_and_connections: no vertex named 'zzz'", "zzz")


def test_graph_builder_needs_a_graphspec_module():
    surgery_error(lambda: GraphBuilder(torch.nn.Linear(2, 2)),
                  "GraphBuilder needs a module built by graphspec (or a spec)")


def test_graph_builder_from_a_spec_gives_fresh_weights():
    m = GraphBuilder(SMALL).build()
    rep = m.graphspec.surgery
    assert rep.kept == [] and rep.dropped == [] and set(rep.reinitialised) == {"d1", "d2"}


# --- set_outputs ------------------------------------------------------------------------------------------------


def test_set_outputs_replaces_the_outputs(base, x1, base_acts):
    m = GraphBuilder(base).add_vertex("twice", {"type": "scale", "factor": 2.0}, "embeddings") \
        .set_outputs("lossLayer", "twice").build()
    assert m.graphspec.spec.outputs == ["lossLayer", "twice"]
    with torch.no_grad():
        out = m.eval()(x1)
    assert set(out) == {"lossLayer", "twice"}
    assert torch.equal(out["lossLayer"], base_acts["lossLayer"])
    assert torch.equal(out["twice"], base_acts["embeddings"] * 2.0)


def test_set_outputs_errors(base):
    surgery_error(lambda: GraphBuilder(base).set_outputs("embedings"),
                  "set_outputs: no vertex named 'embedings' (did you mean 'embeddings'?)", "embedings")
    surgery_error(lambda: GraphBuilder(base).set_outputs(), "set_outputs: give at least one output")
    surgery_error(lambda: GraphBuilder(base).set_outputs("input1"),
                  "set_outputs: no vertex named 'input1'", "input1")


# --- add_layer / add_vertex / add_inputs -------------------------------------------------------------------------


def test_add_layer_from_yaml_text(base):
    m = GraphBuilder(base).add_layer("extra", "{type: dense, out: 3, activation: identity}", "embeddings") \
        .set_outputs("extra").remove_vertex_and_connections("lossLayer").build()
    assert m.extra.weight.shape == (3, 128)
    assert m.graphspec.surgery.reinitialised == ["extra"]


def test_add_errors(base):
    b = GraphBuilder(base)
    surgery_error(lambda: b.add_layer("x", {"type": "merge"}, "embeddings"),
                  "add_layer: 'merge' is a vertex, not a layer; use add_vertex", "x")
    surgery_error(lambda: b.add_vertex("x", {"type": "dense", "out": 3}, "embeddings"),
                  "add_vertex: 'dense' is a layer, not a vertex; use add_layer", "x")
    surgery_error(lambda: b.add_layer("x", {"out": 3}, "embeddings"),
                  "add_layer: 'x' needs a mapping with a 'type', e.g. {'type': 'dense', 'out': 10}, or with "
                  "'shares', e.g. {'shares': 'tower'}", "x")
    surgery_error(lambda: b.add_layer("x", {"type": "dense", "out": 3}),
                  "add_layer: 'x' needs at least one input", "x")
    surgery_error(lambda: b.add_layer("bottleneck", {"type": "dense", "out": 3}, "avgpool"),
                  "add_layer: 'bottleneck' already exists; remove it first (DL4J would silently overwrite)",
                  "bottleneck")
    surgery_error(lambda: b.add_vertex("input1", {"type": "scale", "factor": 1.0}, "embeddings"),
                  "add_vertex: 'input1' already exists; remove it first (DL4J would silently overwrite)", "input1")
    with pytest.raises(SurgeryError) as ei:
        b.add_vertex("x", {"type": "nosuch"}, "embeddings")
    assert ei.value.problem.message.startswith("add_vertex: unknown vertex type 'nosuch'")
    # none of the failed calls changed the builder: it still builds the original graph
    assert b.build().graphspec.spec == base.graphspec.spec


def test_added_vertex_with_unknown_input_fails_at_build_naming_it(base):
    b = GraphBuilder(base).add_layer("x", {"type": "dense", "out": 3}, "nosuch").set_outputs("x", "lossLayer")
    with pytest.raises(SpecError) as ei:
        b.build()
    assert ei.value.problem.vertex == "x"
    assert "input 'nosuch' does not exist" in ei.value.problem.message


def test_add_inputs(base, x1, base_acts):
    m = GraphBuilder(base).add_inputs(extra={"type": "feed_forward", "size": 128}) \
        .add_vertex("sum", {"type": "elementwise", "op": "add"}, "embeddings", "extra") \
        .remove_vertex_and_connections("lossLayer").set_outputs("sum").build()
    assert list(m.graphspec.spec.inputs) == ["input1", "extra"]
    e = torch.randn(1, 128)
    with torch.no_grad():
        assert torch.equal(m.eval()(x1, e), base_acts["embeddings"] + e)
    surgery_error(lambda: GraphBuilder(base).add_inputs(input1={"type": "feed_forward", "size": 3}),
                  "add_inputs: 'input1' already exists", "input1")
    surgery_error(lambda: GraphBuilder(base).add_inputs(bottleneck={"type": "feed_forward", "size": 3}),
                  "add_inputs: 'bottleneck' already exists", "bottleneck")


# --- n_out_replace ---------------------------------------------------------------------------------------------


def _check_reinit(m, base, expected_reinit: set[str]) -> None:
    rep = m.graphspec.surgery
    assert set(rep.reinitialised) == expected_reinit
    assert set(rep.kept) == param_vertices(base) - expected_reinit
    assert_same_weights(m, base, rep.kept)


def test_n_out_replace_through_pooling_lrn_bn_activation(base):
    # inception-2-cnn2 (192) -> batch2 -> activation2 -> lrn1 -> pool1 -> the four branches of inception-3a
    m = GraphBuilder(base).n_out_replace("inception-2-cnn2", 96).build()
    assert m.get_submodule("inception-2-cnn2").weight.shape == (96, 64, 3, 3)
    assert m.get_submodule("inception-2-batch2").weight.shape == (96,)
    # inception-3a reduce [96, 16, 32, 64]: the 1x1 convs reading the pooled map get in = 96
    for name, out in [("inception-3a-cnn1-0", 96), ("inception-3a-cnn1-1", 16), ("inception-3a-cnn2", 32),
                      ("inception-3a-reduce2", 64)]:
        assert m.get_submodule(name).weight.shape == (out, 96, 1, 1), name
    _check_reinit(m, base, {"inception-2-cnn2", "inception-2-batch2", "inception-3a-cnn1-0", "inception-3a-cnn1-1",
                            "inception-3a-cnn2", "inception-3a-reduce2"})


def test_n_out_replace_through_a_merge(base):
    # 3a merge = [128 (3x3), 32 (5x5), 32 (pool), 64 (1x1)] = 256; the 3x3 branch 128 -> 64 gives 192
    m = GraphBuilder(base).n_out_replace("inception-3a-reduce1-0", 64).build()
    merged = 64 + 32 + 32 + 64
    for name, out in [("inception-3b-cnn1-0", 96), ("inception-3b-cnn1-1", 32), ("inception-3b-cnn2", 64),
                      ("inception-3b-reduce2", 64)]:
        assert m.get_submodule(name).weight.shape == (out, merged, 1, 1), name
    _check_reinit(m, base, {"inception-3a-reduce1-0", "inception-3a-batch2-0", "inception-3b-cnn1-0",
                            "inception-3b-cnn1-1", "inception-3b-cnn2", "inception-3b-reduce2"})
    delta = (128 - 64) * (96 * 9 + 1) + (128 - 64) * 4 + (256 - merged) * (96 + 32 + 64 + 64)
    assert sum(v.numel() for v in m.state_dict().values()) == TUTORIAL_TOTAL - delta
    with torch.no_grad():
        ff = feed_forward(m.eval(), rand_faces(1), vertices=["inception-3a"])
    assert ff["inception-3a"].shape == (1, merged, 12, 12)


def test_n_out_replace_through_l2_normalize_with_weight_inits(base):
    m = GraphBuilder(base).n_out_replace("bottleneck", 64, "xavier", "zero").build()
    assert m.bottleneck.weight.shape == (64, 736)
    assert m.lossLayer.weight.shape == (5749, 64)
    assert m.lossLayer.centers.shape == (5749, 64)
    assert torch.count_nonzero(m.lossLayer.weight) == 0  # weight_init of the next layer: zero
    vs = m.graphspec.spec.vertices
    assert vs["bottleneck"].params["weight_init"] == "xavier" and vs["bottleneck"].params["out"] == 64
    _check_reinit(m, base, {"bottleneck", "lossLayer"})


def test_n_out_replace_of_the_output_layer(base):
    m = GraphBuilder(base).n_out_replace("lossLayer", 10).build()
    assert m.lossLayer.weight.shape == (10, 128) and m.lossLayer.centers.shape == (10, 128)
    _check_reinit(m, base, {"lossLayer"})


@pytest.mark.parametrize("order", ["first-then-next", "next-then-first"])
def test_two_n_out_replaces_in_a_row_compose(base, order):
    b = GraphBuilder(base)
    edits = [("inception-2-cnn1", 32), ("inception-2-cnn2", 96)]
    for name, n in (edits if order == "first-then-next" else edits[::-1]):
        b.n_out_replace(name, n)
    m = b.build()
    assert m.get_submodule("inception-2-cnn1").weight.shape == (32, 64, 1, 1)
    assert m.get_submodule("inception-2-cnn2").weight.shape == (96, 32, 3, 3)
    assert m.get_submodule("inception-3a-cnn1-0").weight.shape == (96, 96, 1, 1)
    _check_reinit(m, base, {"inception-2-cnn1", "inception-2-batch1", "inception-2-cnn2", "inception-2-batch2",
                            "inception-3a-cnn1-0", "inception-3a-cnn1-1", "inception-3a-cnn2",
                            "inception-3a-reduce2"})


def test_same_layer_replaced_twice_and_composed_with_other_edits(base):
    m = GraphBuilder(base).n_out_replace("bottleneck", 64).n_out_replace("bottleneck", 32) \
        .remove_vertex_keep_connections("embeddings") \
        .add_vertex("embeddings", {"type": "l2_normalize", "eps": 1e-6}, "bottleneck") \
        .n_out_replace("lossLayer", 7).build()
    assert m.bottleneck.weight.shape == (32, 736)
    assert m.lossLayer.weight.shape == (7, 32)
    _check_reinit(m, base, {"bottleneck", "lossLayer"})


def test_n_out_replace_errors(base):
    b = GraphBuilder(base)
    for name, typ in [("embeddings", "l2_normalize"), ("inception-3a", "merge"), ("stem-pool1", "subsampling"),
                      ("stem-activation1", "activation")]:
        surgery_error(lambda: b.n_out_replace(name, 10),
                      f"n_out_replace: '{name}' is a {typ}, which has no 'out'; it applies to conv, dense, output and "
                      "center_loss_output layers", name)
    for bad in (0, -3, True, 2.5):
        surgery_error(lambda: b.n_out_replace("bottleneck", bad),
                      f"n_out_replace: n_out must be a positive integer; received {bad!r}", "bottleneck")
    assert b.build().graphspec.spec == base.graphspec.spec  # nothing was applied


def test_n_out_replace_on_batchnorm_is_refused_at_the_call(base):
    surgery_error(lambda: GraphBuilder(base).n_out_replace("stem-batch1", 128),
                  "n_out_replace: 'stem-batch1' is a batchnorm, which has no 'out'; it applies to conv, dense, output "
                  "and center_loss_output layers", "stem-batch1")


def test_n_out_replace_cannot_flow_through_a_shape_changing_vertex():
    b = GraphBuilder(build(SMALL))
    surgery_error(lambda: b.n_out_replace("d1", 8),
                  "n_out_replace: the new width of 'd1' cannot flow through 's' (a subset); replace it with "
                  "remove_vertex_keep_connections + add_vertex", "s")


def test_failed_n_out_replace_leaves_the_builder_unchanged():
    net = build(SMALL)
    b = GraphBuilder(net)
    with pytest.raises(SurgeryError):
        b.n_out_replace("d1", 8)
    m = b.build()
    assert m.graphspec.spec == net.graphspec.spec
    assert m.d1.weight.shape == (10, 6)
    assert m.graphspec.surgery.reinitialised == []


# --- fine_tune ---------------------------------------------------------------------------------------------------


def test_fine_tune_sets_defaults_and_replaces_per_vertex_values(base):
    assert base.graphspec.spec.vertices["lossLayer"].train == {"gradient_normalization": "renormalize_l2_per_layer"}
    m = GraphBuilder(base).fine_tune(l2=1e-4, updater={"type": "sgd", "lr": 0.01},
                                     gradient_normalization="none").build()
    spec = m.graphspec.spec
    assert spec.defaults.l2 == 1e-4
    assert spec.defaults.updater.type == "sgd" and spec.defaults.updater.lr == 0.01
    assert spec.defaults.weight_init == "relu" and spec.defaults.convolution_mode == "same"  # untouched
    for v in spec.vertices.values():
        assert v.training.l2 == 1e-4 and v.training.updater.lr == 0.01
        assert v.training.gradient_normalization == "none"
    assert spec.vertices["lossLayer"].train == {}
    rep = m.graphspec.surgery
    assert rep.reinitialised == [] and set(rep.kept) == param_vertices(base)  # training settings keep weights
    assert_same_weights(m, base, rep.kept)


def test_fine_tune_only_overrides_what_it_sets(base):
    spec = GraphBuilder(base).fine_tune(l2=0.0).spec()
    assert spec.vertices["lossLayer"].training.gradient_normalization == "renormalize_l2_per_layer"
    assert spec.vertices["lossLayer"].training.updater.type == "adam"
    assert spec.defaults.l2 == 0.0


def test_fine_tune_seed_makes_reinitialisation_reproducible(base):
    def head(seed):
        return GraphBuilder(base).fine_tune(seed=seed).n_out_replace("lossLayer", 5).build().lossLayer.weight
    a, b, c = head(1), head(1), head(2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fine_tune_unknown_setting():
    surgery_error(lambda: GraphBuilder(SMALL).fine_tune(l2_bais=0.1),
                  "fine_tune: unknown setting 'l2_bais' (did you mean 'l2_bias'?); settings: l1, l2, l1_bias, l2_bias, updater, "
                  "gradient_normalization, gradient_normalization_threshold")


def test_fine_tune_invalid_value_is_reported_at_build():
    with pytest.raises(SpecError):
        GraphBuilder(SMALL).fine_tune(l2=-1.0).build()


# --- the surgery result is independent of the original ---------------------------------------------------------


def test_built_model_does_not_share_tensors_with_the_original(base):
    m = GraphBuilder(base).set_outputs("lossLayer").build()
    with torch.no_grad():
        m.bottleneck.weight.add_(1.0)
    assert not torch.equal(m.bottleneck.weight, base.bottleneck.weight)  # base_untouched checks the rest


# --- command line: init, snip, summary ---------------------------------------------------------------------------


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from graphspec.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_cli_init_snip_summary(tmp_path, capsys):
    model = tmp_path / "nn4.safetensors"
    rc, out, err = _cli(capsys, "init", NN4, "-o", model)
    assert rc == 0 and model.is_file(), err
    assert f"{TUTORIAL_TOTAL:,} values" in out
    rc, out, err = _cli(capsys, "snip", model, "--output", "embeddings")
    assert rc == 0, err
    default_out = tmp_path / "nn4-snipped.safetensors"
    assert default_out.is_file()
    assert "dropped (1): lossLayer" in out and "re-initialised (0)" in out
    assert f"{SNIPPED_TOTAL:,}" in out
    rc, out, err = _cli(capsys, "summary", default_out, "--format", "json")
    assert rc == 0, err
    totals = json.loads(out)["totals"]
    assert totals["total"] == SNIPPED_TOTAL and totals["trainable"] == 0
    # the written model is the tutorial snip of the initialised model
    orig, cut = graphspec.load(model), graphspec.load(default_out)
    assert cut.graphspec.spec.outputs == ["embeddings"]
    assert set(cut.graphspec.frozen) == set(cut.graphspec.spec.vertices)
    assert cut.graphspec.surgery is None  # a loaded file, its weights: those of the initialised model
    cut_state, orig_state = cut.state_dict(), orig.state_dict()
    assert set(cut_state) == set(orig_state) - {k for k in orig_state if k.startswith("lossLayer.")}
    for k, v in cut_state.items():
        assert torch.equal(v, orig_state[k]), k


def test_cli_snip_options(tmp_path, capsys):
    out1 = tmp_path / "a.safetensors"
    rc, out, err = _cli(capsys, "snip", NN4, "--output", "embeddings", "--no-freeze", "-o", out1)
    assert rc == 0, err
    m = graphspec.load(out1)
    assert m.graphspec.frozen == frozenset()
    running = sum(b.numel() for n, b in m.named_buffers() if n.endswith(("running_mean", "running_var")))
    rc, out, err = _cli(capsys, "summary", out1, "--format", "json")
    totals = json.loads(out)["totals"]
    assert totals["total"] == SNIPPED_TOTAL and totals["trainable"] == SNIPPED_TOTAL - running

    out2 = tmp_path / "b.safetensors"
    rc, out, err = _cli(capsys, "snip", NN4, "--output", "bottleneck", "--remove", "embeddings",
                        "--freeze", "inception-3a", "-o", out2)
    assert rc == 0, err
    m = graphspec.load(out2)
    assert m.graphspec.spec.outputs == ["bottleneck"]
    assert "embeddings" not in m.graphspec.spec.vertices and "lossLayer" not in m.graphspec.spec.vertices
    assert set(m.graphspec.frozen) == ancestors(m.graphspec.spec, "inception-3a") | {"inception-3a"}


def test_cli_snip_unknown_output(tmp_path, capsys):
    rc, out, err = _cli(capsys, "snip", NN4, "--output", "embedings", "-o", tmp_path / "x.safetensors")
    assert rc == 2
    assert "snip: no vertex named 'embedings' (did you mean 'embeddings'?)" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_n_out_replace_flows_through_a_depthwise_convolution():
    """A depthwise convolution's width is in · depth_multiplier: widening its input widens it (new weights) and
    the next layer with parameters takes the new width."""
    d = {"version": 1, "name": "dw", "seed": 0, "defaults": {"activation": "relu", "convolution_mode": "same"},
         "inputs": {"x": {"type": "convolutional", "channels": 3, "height": 8, "width": 8}},
         "vertices": {"c": {"type": "conv", "inputs": ["x"], "kernel": 1, "out": 4},
                      "dw": {"type": "depthwise_conv", "inputs": ["c"], "kernel": 3, "depth_multiplier": 2},
                      "pw": {"type": "conv", "inputs": ["dw"], "kernel": 1, "out": 5}},
         "outputs": ["pw"]}
    net = graphspec.build(d)
    new = graphspec.GraphBuilder(net).n_out_replace("c", 6).build()
    assert {k: tuple(v.shape) for k, v in new.state_dict().items()} == {
        "c.weight": (6, 3, 1, 1), "c.bias": (6,), "dw.weight": (12, 1, 3, 3), "dw.bias": (12,),
        "pw.weight": (5, 12, 1, 1), "pw.bias": (5,)}
    assert new(torch.randn(2, 3, 8, 8)).shape == (2, 5, 8, 8)
