"""Training with several inputs and outputs: data by name (.npz), per-output losses and weights, the loss layer's
contrastive and triplet losses against hand-written references, and the errors a user meets first."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import graphspec
from graphspec import GraphspecError
from graphspec.data import DataError
from graphspec.data.named import NamedArrays
from graphspec.layers.losses import contrastive, triplet_semi_hard
from graphspec.train.recipe import Recipe
from graphspec.train.session import run_session
from specs_tiny import SIAMESE

TWO_HEADS = """
version: 1
name: two-heads
seed: 4
defaults: {activation: relu, weight_init: xavier}
inputs:
  a: {type: feed_forward, size: 5}
  b: {type: feed_forward, size: 3}
vertices:
  both: {type: merge, inputs: [a, b]}
  trunk: {type: dense, inputs: [both], out: 16}
  cls: {type: output, inputs: [trunk], out: 3, activation: softmax, loss: mcxent}
  reg: {type: output, inputs: [trunk], out: 2, activation: identity, loss: mse}
outputs: [cls, reg]
"""


def _two_heads_npz(path, n=48, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
    cls = (a[:, 0] > 0).astype(np.int64) + (b[:, 0] > 0.5)
    reg = np.stack([a[:, 1] + b[:, 1], a[:, 2] - b[:, 2]], 1).astype(np.float32)
    np.savez(path, a=a, b=b, cls=cls, reg=reg)
    return path


def _named(path, spec=TWO_HEADS):
    s = graphspec.load_spec(spec)
    return NamedArrays.from_npz(path, {k: s.input_shape(k) for k in s.inputs}, s.outputs)


# --- the losses, by hand --------------------------------------------------------------------------------------


def test_contrastive_loss_is_hadsells_formula():
    d = torch.tensor([[0.5], [2.0], [0.3], [1.5]])
    same = torch.tensor([1, 1, 0, 0])
    want = torch.tensor([0.5 * 0.25, 0.5 * 4.0, 0.5 * (1.0 - 0.3) ** 2, 0.0])
    torch.testing.assert_close(contrastive(d, same, margin=1.0), want)


def _triplet_by_hand(x: torch.Tensor, labels: list[int], margin: float) -> list[float]:
    """Loops over every anchor and positive, as FaceNet describes semi-hard mining."""
    n = len(labels)
    d = [[float(((x[i] - x[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    out = []
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [q for q in range(n) if labels[q] != labels[a]]
        losses = []
        for p in positives:
            if not negatives:
                losses.append(0.0)
                continue
            farther = [d[a][q] for q in negatives if d[a][q] > d[a][p]]
            dn = min(farther) if farther else max(d[a][q] for q in negatives)
            losses.append(max(0.0, d[a][p] - dn + margin))
        out.append(sum(losses) / len(losses) if losses else 0.0)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_triplet_semi_hard_matches_a_loop_over_every_triplet(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 3]  # label 3 has no positive: its loss is 0
    got = triplet_semi_hard(x, torch.tensor(labels), margin=0.5)
    torch.testing.assert_close(got, torch.tensor(_triplet_by_hand(x, labels, 0.5), dtype=torch.float64))
    assert got[-1] == 0
    one_class = triplet_semi_hard(x[:3], torch.tensor([0, 0, 0]), 0.5)
    assert torch.equal(one_class, torch.zeros(3, dtype=torch.float64))  # no negatives: no triplets, no NaN


# --- data by name ---------------------------------------------------------------------------------------------


def test_npz_arrays_by_name_and_their_errors(tmp_path):
    data = _named(_two_heads_npz(tmp_path / "d.npz"))
    inputs, targets = data.batch([0, 1, 2])
    assert [t.shape for t in inputs] == [(3, 5), (3, 3)] and sorted(targets) == ["cls", "reg"]
    cases = {
        "typo": ({"a": np.zeros((4, 5)), "b": np.zeros((4, 3)), "clss": np.zeros(4, np.int64)},
                 "array 'clss' names no input or output of the network (did you mean 'cls'?); inputs: a, b; "
                 "outputs: cls, reg"),
        "missing": ({"a": np.zeros((4, 5))}, "no array for the network input 'b' (the file has: a)"),
        "rows": ({"a": np.zeros((4, 5)), "b": np.zeros((3, 3))}, "array 'b' has 3 rows; the others have 4"),
        "shape": ({"a": np.zeros((4, 6)), "b": np.zeros((4, 3))},
                  "array 'a' is [N, 6]; the network input 'a' needs [N, 5]"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DataError) as e:
            _named(tmp_path / f"{name}.npz")
        assert str(e.value) == f"{tmp_path / f'{name}.npz'}: {message}", name


# --- training -------------------------------------------------------------------------------------------------


def test_a_two_input_two_output_network_trains_from_npz_and_reports_each_head(tmp_path):
    train, held = _named(_two_heads_npz(tmp_path / "t.npz")), _named(_two_heads_npz(tmp_path / "e.npz", seed=1))
    net = graphspec.build(TWO_HEADS)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recipe = Recipe(semantics="pytorch", epochs=3, batch_size=16, losses={"reg": {"weight": 0.5}})
    trainer = run_session(net, recipe, train, held)
    metrics = trainer.evaluate()
    assert set(metrics) == {"cls/accuracy", "cls/precision", "cls/recall", "cls/f1", "cls/examples",
                            "reg/mse", "reg/mae", "reg/examples"}
    assert trainer.model.get_submodule("reg").weight.shape == (2, 16)  # never resized
    assert not torch.equal(trainer.model.state_dict()["reg.weight"], before["reg.weight"])
    # the regression metric is the mean squared error of the network's own predictions
    with torch.no_grad():
        out = trainer.model.eval()(torch.from_numpy(held.inputs["a"]), torch.from_numpy(held.inputs["b"]))
    assert metrics["reg/mse"] == pytest.approx(float(((out["reg"] - torch.from_numpy(held.targets["reg"])) ** 2)
                                                     .mean()), rel=1e-5)


def test_a_zero_weight_leaves_its_head_untouched(tmp_path):
    train = _named(_two_heads_npz(tmp_path / "t.npz"))
    net = graphspec.build(TWO_HEADS)
    before = net.state_dict()["reg.weight"].clone()
    run_session(net, Recipe(semantics="pytorch", epochs=1, batch_size=16, losses={"reg": {"weight": 0.0}}), train)
    assert torch.equal(net.state_dict()["reg.weight"], before)


def test_loss_weights_scale_the_gradient(tmp_path):
    from graphspec.train.steps import LossModule, heads_of
    net = graphspec.build(TWO_HEADS)
    inputs, targets = _named(_two_heads_npz(tmp_path / "t.npz")).batch(range(8))
    x = tuple(torch.from_numpy(t) for t in inputs)
    y = {k: torch.from_numpy(v) for k, v in targets.items()}
    totals = {}
    for w in (1.0, 3.0):
        heads = heads_of(net, {"reg": Recipe(losses={"reg": {"weight": w}}).losses["reg"]})
        module = LossModule(net, heads)
        totals[w] = float(module(x, y)[0].detach())
    cls_only = float(LossModule(net, heads_of(net, {"reg": Recipe(
        losses={"reg": {"weight": 0.0}}).losses["reg"]}))(x, y)[0].detach())
    assert totals[3.0] - cls_only == pytest.approx(3 * (totals[1.0] - cls_only), rel=1e-5)


def test_several_heads_and_class_data_are_not_resized_unasked():
    net = graphspec.build(TWO_HEADS)
    data = NamedArrays({"a": np.zeros((4, 5), np.float32), "b": np.zeros((4, 3), np.float32)},
                       {"cls": np.zeros(4, np.int64), "reg": np.zeros((4, 2), np.float32)}, classes=list("abcdefg"))
    with pytest.raises(GraphspecError) as e:
        run_session(net, Recipe(epochs=1, batch_size=4), data)
    assert str(e.value) == ("the data has 7 classes but the output layer 'cls' has 3 outputs, and the network has "
                            "several heads; set the recipe's resize_heads: [cls] to resize it, or give data that fits")
    trainer = run_session(net, Recipe(epochs=1, batch_size=4, resize_heads=["cls"]), data)
    assert trainer.model.get_submodule("cls").weight.shape == (7, 16)
    assert trainer.model.get_submodule("reg").weight.shape == (2, 16)


def test_recipe_loss_errors():
    net = graphspec.build(TWO_HEADS)
    from graphspec.train.steps import heads_of
    with pytest.raises(GraphspecError) as e:
        heads_of(net, Recipe(losses={"regg": {"weight": 2}}).losses)
    assert str(e.value) == ("recipe 'losses': 'regg' is not an output of 'two-heads' (did you mean 'reg'?); "
                            "outputs: cls, reg")
    with pytest.raises(GraphspecError) as e:
        heads_of(net, Recipe(losses={"reg": {"loss": "triplet"}}).losses)
    assert str(e.value) == ("recipe 'losses': 'reg' has its own loss in the spec (output, mse); the recipe may set "
                            "only its 'weight'")


SIAMESE_TANH = SIAMESE.replace("activation: relu", "activation: tanh")


def test_a_siamese_network_learns_with_the_contrastive_loss_from_the_recipe(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)).astype(np.float32) * 2
    ids = rng.integers(0, 4, size=(96, 2))
    ids[::2, 1] = ids[::2, 0]  # half the pairs are of one identity
    left = centres[ids[:, 0]] + rng.normal(size=(96, 6)).astype(np.float32) * 0.3
    right = centres[ids[:, 1]] + rng.normal(size=(96, 6)).astype(np.float32) * 0.3
    np.savez(tmp_path / "pairs.npz", left=left, right=right, distance=(ids[:, 0] == ids[:, 1]).astype(np.int64))
    data = _named(tmp_path / "pairs.npz", SIAMESE_TANH)
    net = graphspec.build(SIAMESE_TANH)
    recipe = Recipe(semantics="pytorch", epochs=15, batch_size=16, losses={"distance": {"loss": "contrastive"}})
    trainer = run_session(net, recipe, data, data)
    with torch.no_grad():
        d = trainer.model.eval()(torch.from_numpy(left), torch.from_numpy(right))[:, 0].numpy()
    same = ids[:, 0] == ids[:, 1]
    assert d[same].mean() < 0.5 * d[~same].mean()  # same pairs close, different pairs far
    assert set(trainer.evaluate()) == {"loss", "examples"}


def test_a_triplet_loss_from_the_recipe_on_an_embeddings_output():
    spec = graphspec.build("""
version: 1
name: embedder
seed: 2
defaults: {activation: identity, weight_init: xavier}
inputs:
  x: {type: feed_forward, size: 6}
vertices:
  fc: {type: dense, inputs: [x], out: 3}
  embeddings: {type: l2_normalize, inputs: [fc]}
outputs: [embeddings]
""")
    from graphspec.train.steps import heads_of
    (head,) = heads_of(spec, Recipe(losses={"embeddings": {"loss": "triplet", "margin": 0.3}}).losses)
    assert head.input == "embeddings" and head.cfg.loss == "triplet"
    x = torch.randn(6, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(head.loss(x, y), triplet_semi_hard(x, y, 0.3))


def test_graphspec_train_takes_an_npz_for_any_spec(cli, tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_HEADS)
    data = _two_heads_npz(tmp_path / "two.npz", n=40)
    rc, out, err = cli("train", spec, "--data", data, "--out", tmp_path / "run", "--epochs", "2", "--batch-size", "10",
                       "--semantics", "pytorch", "--eval-fraction", "0.25")
    assert rc == 0, err
    assert "data: " in out and "(arrays by name: a, b, cls, reg)" in out
    evaluation = next(line for line in out.splitlines() if line.startswith("evaluation: "))
    assert "cls/accuracy" in evaluation and "reg/mse" in evaluation and "cls/examples 10" in evaluation
    saved = graphspec.load(tmp_path / "run" / "model.safetensors")
    assert saved.get_submodule("cls").weight.shape == (3, 16)
    rc, out, err = cli("train", spec, "--data", tmp_path / "missing.npz", "--out", tmp_path / "run2")
    assert rc == 2 and "missing.npz: cannot read the arrays" in err


def test_face_pairs_are_balanced_seeded_and_true_to_their_identities():
    from graphspec.data import ArrayData
    from graphspec.faces.data.pairs import PairData
    labels = np.repeat(np.arange(6), [1, 2, 3, 4, 1, 5])
    images = np.zeros((len(labels), 3, 2, 2), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))  # each image knows its index
    pairs = PairData(ArrayData(images, labels, list("abcdef")), 400, seed=3)
    (first, second), same = pairs.batch(range(400))
    a, b = first[:, 0, 0, 0].astype(int), second[:, 0, 0, 0].astype(int)
    assert np.array_equal(same, (labels[a] == labels[b]).astype(np.int64))  # the target tells the truth
    assert 0.4 < same.mean() < 0.6 and (a[same == 1] != b[same == 1]).all()  # balanced; never one image twice
    again = PairData(ArrayData(images, labels, list("abcdef")), 400, seed=3).batch([7, 8])
    assert np.array_equal(again[1], same[7:9]) and np.array_equal(again[0][0], first[7:9])
    with pytest.raises(ValueError, match="^pairs need images of at least 2 people; the data has 1$"):
        PairData(ArrayData(images[:1], labels[:1], ["a"]), 10)
    once = [0, 1, 3]  # three people seen once each: every pair is of two people
    (first, second), same = PairData(ArrayData(images[once], labels[once], list("abc")), 20).batch(range(20))
    assert not same.any() and (first[:, 0, 0, 0] != second[:, 0, 0, 0]).all()


TINY_SIAMESE = """
version: 1
name: tiny-siamese
seed: 1
defaults: {activation: relu, weight_init: relu, convolution_mode: same}
inputs:
  first: {type: convolutional, channels: 3, height: 16, width: 16}
  second: {type: convolutional, channels: 3, height: 16, width: 16}
vertices:
  conv: {type: conv, inputs: [first], out: 4, kernel: 3, stride: 2}
  pool: {type: global_pool, inputs: [conv], pooling: avg}
  embeddings: {type: l2_normalize, inputs: [pool]}
  other: {shares: embeddings, from: first, inputs: [second]}
  distance: {type: l2_distance, inputs: [embeddings, other]}
outputs: [distance]
"""


def test_graphspec_train_makes_pairs_of_faces_for_a_two_input_network(cli, tmp_path):
    from graphspec.faces.data import synthetic_faces
    faces = synthetic_faces(tmp_path / "faces", identities=4, images=3, seed=0, size=32)
    spec, recipe = tmp_path / "siamese.yaml", tmp_path / "recipe.yaml"
    spec.write_text(TINY_SIAMESE)
    recipe.write_text("semantics: pytorch\nepochs: 2\nbatch_size: 8\ndata: {pairs: 24, eval_fraction: 0.25}\n"
                      "losses: {distance: {loss: contrastive}}\n")
    rc, out, err = cli("train", spec, "--data", faces, "--recipe", recipe, "--out", tmp_path / "run")
    assert rc == 0, err
    assert "training 24 examples, 3 iterations per epoch" in out
    assert next(line for line in out.splitlines() if line.startswith("evaluation: ")).startswith("evaluation: loss ")
    model = graphspec.load(tmp_path / "run" / "model.safetensors")
    assert list(model.graphspec.spec.inputs) == ["first", "second"]


def test_the_two_heads_example_runs_as_its_readme_says(cli, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    example = Path(__file__).resolve().parents[1] / "examples" / "two-heads"
    subprocess.run([sys.executable, str(example / "make_data.py"), str(tmp_path / "d.npz")], check=True,
                   capture_output=True)
    rc, out, err = cli("train", example / "two-heads.yaml", "--data", tmp_path / "d.npz", "--recipe",
                       example / "recipe.yaml", "--out", tmp_path / "run", "--epochs", "2")
    assert rc == 0, err
    evaluation = next(line for line in out.splitlines() if line.startswith("evaluation: "))
    assert "cls/examples 400" in evaluation and "reg/examples 400" in evaluation


def test_targets_that_do_not_fit_their_outputs_are_refused_before_training():
    net = graphspec.build(TWO_HEADS)
    inputs = {"a": np.zeros((4, 5), np.float32), "b": np.zeros((4, 3), np.float32)}

    def refused(**targets) -> str:
        data = NamedArrays(inputs, {"cls": np.zeros(4, np.int64), "reg": np.zeros((4, 2), np.float32), **targets})
        with pytest.raises(GraphspecError) as e:
            run_session(net, Recipe(epochs=1, batch_size=4), data)
        return str(e.value)
    assert refused(reg=np.zeros((4, 3), np.float32)) == ("the target of 'reg' is [N, 3] values; the output is [2] per "
                                                         "example (or give class indices [N])")
    assert refused(cls=np.array([0, 1, 2, 3])) == ("the target of 'cls' holds class indices 0..3; the output layer "
                                                   "has 3 classes (0..2)")
    assert refused(cls=np.zeros((4, 2), np.int64)) == ("the target of 'cls' is an integer array of shape [N, 2]; "
                                                       "class indices are [N]")
    data = NamedArrays(inputs, {"cls": np.zeros(4, np.int64)})
    with pytest.raises(GraphspecError) as e:
        run_session(net, Recipe(epochs=1, batch_size=4), data)
    assert str(e.value) == "the data has no target for the output 'reg' (it has: cls)"


def test_the_recipe_is_checked_against_the_network_before_any_data_is_read(cli, tmp_path):
    spec, recipe = tmp_path / "siamese.yaml", tmp_path / "recipe.yaml"
    spec.write_text(TINY_SIAMESE)
    recipe.write_text("data: {pairs: 24}\nlosses: {distanc: {loss: contrastive}}\n")
    rc, _, err = cli("train", spec, "--data", tmp_path / "no-such-folder", "--recipe", recipe)
    assert rc == 2 and "recipe 'losses': 'distanc' is not an output of 'tiny-siamese' (did you mean 'distance'?)" in err
    recipe.write_text("data: {pairs: 24}\n")
    rc, _, err = cli("train", "specs/nn4small2.yaml", "--data", tmp_path / "no-such-folder", "--recipe", recipe)
    assert rc == 2 and "data.pairs feeds a network with 2 image inputs; 'nn4small2' has 1 (input1)" in err


def test_max_minutes_from_the_command_line_is_validated_like_the_recipe(cli, tmp_path):
    rc, _, err = cli("train", "specs/nn4small2.yaml", "--data", "synthetic", "--max-minutes", "-1",
                     "--out", tmp_path / "run")
    assert rc == 2 and "max_minutes" in err and "greater than 0" in err


def test_given_triplets_loss_and_the_face_triplets_that_feed_it(cli, tmp_path):
    from graphspec.data import ArrayData
    from graphspec.faces.data.pairs import TripletData
    from graphspec.layers.losses import triplet_given
    a, p, n = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    want = torch.clamp(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 0.2, min=0)
    torch.testing.assert_close(triplet_given(torch.cat([a, p, n], 1), 0.2), want)

    labels = np.repeat(np.arange(5), [1, 3, 2, 1, 4])
    images = np.zeros((len(labels), 3, 2, 2), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))
    (anchor, positive, negative), _ = TripletData(ArrayData(images, labels, list("abcde")), 200, seed=1).batch(
        range(200))
    ia, ip, ineg = (t[:, 0, 0, 0].astype(int) for t in (anchor, positive, negative))
    assert (labels[ia] == labels[ip]).all() and (ia != ip).all() and (labels[ia] != labels[ineg]).all()
    assert set(labels[ineg]) == set(range(5))  # negatives from everyone, people seen once included

    spec = tmp_path / "triplet.yaml"
    spec.write_text(TINY_SIAMESE.replace("  second: {type: convolutional, channels: 3, height: 16, width: 16}",
                                         "  second: {type: convolutional, channels: 3, height: 16, width: 16}\n"
                                         "  third: {type: convolutional, channels: 3, height: 16, width: 16}")
                    .replace("  distance: {type: l2_distance, inputs: [embeddings, other]}",
                             "  third-embeddings: {shares: embeddings, from: first, inputs: [third]}\n"
                             "  triples: {type: merge, inputs: [embeddings, other, third-embeddings]}\n"
                             "  loss: {type: loss, inputs: [triples], loss: triplet, mining: none}")
                    .replace("outputs: [distance]", "outputs: [loss]"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("semantics: pytorch\nepochs: 1\nbatch_size: 8\ndata: {triplets: 16}\n")
    from graphspec.faces.data import synthetic_faces
    faces = synthetic_faces(tmp_path / "faces", identities=3, images=3, seed=0, size=32)
    rc, out, err = cli("train", spec, "--data", faces, "--recipe", recipe, "--out", tmp_path / "run")
    assert rc == 0, err
    assert "training 16 examples, 2 iterations per epoch" in out


def test_embed_runs_one_tower_of_a_siamese_model(cli, tmp_path):
    from graphspec.faces.data import synthetic_faces
    faces = synthetic_faces(tmp_path / "faces", identities=2, images=2, seed=0, size=32)
    spec = tmp_path / "siamese.yaml"
    spec.write_text(TINY_SIAMESE)
    model = tmp_path / "siamese.safetensors"
    assert cli("init", spec, "-o", model)[0] == 0
    rc, _, err = cli("embed", model, faces, "-o", tmp_path / "e.npy")
    assert rc == 2 and ("'distance' is computed from 2 inputs (first, second); embed feeds one image per row: pass "
                        "--output VERTEX for a vertex of one input (e.g. embeddings)") in err
    rc, out, err = cli("embed", model, faces, "-o", tmp_path / "e.npy", "--output", "embeddings")
    assert rc == 0, err
    assert np.load(tmp_path / "e.npy").shape == (4, 4)


def test_an_npz_with_pickled_objects_is_refused_and_nothing_runs(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, a=np.array([object(), object()], dtype=object), b=np.zeros((2, 3)))
    with pytest.raises(DataError) as e:
        _named(path)
    assert str(e.value).startswith(f"{path}: cannot read the arrays: Object arrays cannot be loaded when "
                                   "allow_pickle=False")


def test_a_recipe_loss_on_an_image_output_trains_an_autoencoder():
    """A loss on any 4-D output: the recipe's mse on a deconvolution's [1, 8, 8] against the input itself."""
    from graphspec.train.recipe import OutputLoss
    from graphspec.train.steps import TorchStep
    d = {"version": 1, "name": "ae", "seed": 3, "defaults": {"activation": "relu", "convolution_mode": "same"},
         "inputs": {"x": {"type": "convolutional", "channels": 1, "height": 8, "width": 8}},
         "vertices": {"enc": {"type": "conv", "inputs": ["x"], "kernel": 3, "stride": 2, "out": 4},
                      "dec": {"type": "deconv", "inputs": ["enc"], "kernel": 2, "stride": 2, "out": 1,
                              "activation": "sigmoid"}},
         "outputs": ["dec"]}
    net = graphspec.build(d)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ((net(x) - x) ** 2).flatten(1).mean(1).mean()  # DL4J's mse: the mean over an example's values
    step = TorchStep(net, torch.optim.Adam(net.parameters(), 1e-2), losses={"dec": OutputLoss(loss="mse")})
    scores = [step(x, {"dec": x}) for _ in range(30)]
    assert scores[0] == pytest.approx(float(expected), rel=1e-5)
    assert scores[-1] < 0.8 * scores[0]
