"""Training on sequences of different lengths: padded arrays with masks (``<input>_mask``, ``<output>_mask``), the
per-step and per-sequence losses that read them, and networks that take sequences of any length T."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import graphspec
from graphspec.data.errors import DataError
from graphspec.data.named import NamedArrays
from graphspec.train.recipe import Recipe
from graphspec.train.steps import LossModule, heads_of

# Any length T: per-step predictions (rnn_output) and one class per sequence (last real step + mean over time).
SPEC = {"version": 1, "name": "seq", "seed": 3,
        "inputs": {"x": {"type": "recurrent", "size": 3}},
        "vertices": {"lstm": {"type": "lstm", "inputs": ["x"], "out": 5, "activation": "tanh"},
                     "steps": {"type": "rnn_output", "inputs": ["lstm"], "out": 4, "activation": "softmax",
                               "loss": "mcxent"},
                     "conv": {"type": "conv1d", "inputs": ["x"], "out": 4, "kernel": 3, "convolution_mode": "same",
                              "activation": "relu"},
                     "pool": {"type": "global_pool", "inputs": ["conv"], "pooling": "avg", "collapse": True},
                     "last": {"type": "last_time_step", "inputs": ["lstm"]},
                     "both": {"type": "merge", "inputs": ["last", "pool"]},
                     "label": {"type": "output", "inputs": ["both"], "out": 2, "activation": "softmax",
                               "loss": "mcxent"}},
        "outputs": ["steps", "label"]}
LENGTHS = [6, 3, 5]


def _padded(seed: int = 0):
    """A batch of LENGTHS sequences padded to 6 steps with noise (so that unmasked padding would show), its masks
    and targets."""
    g = torch.Generator().manual_seed(seed)
    t = max(LENGTHS)
    mask = torch.tensor([[1.0] * n + [0.0] * (t - n) for n in LENGTHS])
    x = torch.randn(len(LENGTHS), 3, t, generator=g) * 3
    steps = torch.randint(0, 4, (len(LENGTHS), t), generator=g)
    label = torch.randint(0, 2, (len(LENGTHS),), generator=g)
    return x, mask, steps, label


def _loss_and_grads(net, x, y):
    module = LossModule(net, heads_of(net))
    net.zero_grad()
    total, _ = module(x, y)
    total.backward()
    return float(total.detach()), {k: p.grad.clone() for k, p in net.named_parameters()}


def test_a_padded_batch_trains_exactly_as_its_sequences_one_by_one():
    net = graphspec.build(SPEC)
    x, mask, steps, label = _padded()
    padded, grads = _loss_and_grads(net, {"x": x, "x_mask": mask}, {"steps": steps, "label": label})
    alone_total, alone_grads = 0.0, None
    for i, n in enumerate(LENGTHS):  # each sequence at its own length, no mask, no padding
        total, g = _loss_and_grads(net, x[i:i + 1, :, :n], {"steps": steps[i:i + 1, :n], "label": label[i:i + 1]})
        alone_total += total
        alone_grads = g if alone_grads is None else {k: alone_grads[k] + g[k] for k in g}
    assert padded == pytest.approx(alone_total, rel=1e-5)
    for k in grads:
        torch.testing.assert_close(grads[k], alone_grads[k], rtol=1e-4, atol=1e-6, msg=k)
    unmasked, _ = _loss_and_grads(net, x, {"steps": steps, "label": label})
    assert abs(unmasked - padded) > 1e-2  # without the mask the padding would count


def test_a_label_mask_replaces_the_mask_that_reaches_a_per_step_loss():
    net = graphspec.build(SPEC)
    x, mask, steps, label = _padded()
    labels_mask = mask.clone()
    labels_mask[:, 0] = 0  # e.g. no target for the first step
    module = LossModule(net, [h for h in heads_of(net) if h.name == "steps"])
    head = module._heads[0]
    with torch.no_grad():
        total, _ = module({"x": x, "x_mask": mask}, {"steps": steps, "steps_mask": labels_mask})
        probs = net(x, mask)["steps"]
    # DL4J's per-step MCXENT: Σ over real steps of −log p(target), summed over the batch (normalised later by N)
    picked = probs.gather(1, steps.unsqueeze(1)).squeeze(1).clamp_min(1e-10)
    assert float(total) == pytest.approx(float(-(picked.log() * labels_mask).sum()), rel=1e-5)
    assert head.entry.per_position


def _write(path, n: int = 48, t: int = 10, seed: int = 0) -> dict:
    """Sequences of 2..t steps: the class is whether the real steps' first feature sums positive; the padding is
    large noise of the wrong sign, so a network that reads it cannot learn the task."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, t + 1, n)
    x = rng.normal(size=(n, 3, t)).astype(np.float32)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.uint8)
    label = ((x[:, 0] * mask).sum(1) > 0).astype(np.int64)
    x[:, 0] = np.where(mask == 1, x[:, 0], -5.0 * np.sign((x[:, 0] * mask).sum(1, keepdims=True)))
    steps = (x[:, 0] > 0).astype(np.int64) * mask  # padded steps: class 0, masked out below
    arrays = {"x": x, "x_mask": mask, "label": label, "steps": steps, "steps_mask": mask}
    np.savez(path, **arrays)
    return arrays


def _patterns(net):
    a = net.graphspec.analysis
    return {k: a.pattern(k) for k in net.graphspec.spec.inputs}, {k: a.pattern(k) for k in net.graphspec.spec.outputs}


def test_an_npz_file_brings_feature_and_label_masks(tmp_path):
    net = graphspec.build(SPEC)
    written = _write(tmp_path / "d.npz")
    data = NamedArrays.from_npz(tmp_path / "d.npz", *_patterns(net))
    assert set(data.masks) == {"x_mask", "steps_mask"} and data.masks["x_mask"].dtype == np.float32
    inputs, targets = data.batch([4, 1])
    assert set(inputs) == {"x", "x_mask"} and set(targets) == {"label", "steps", "steps_mask"}
    np.testing.assert_array_equal(inputs["x_mask"], written["x_mask"][[4, 1]])
    part = data.subset([0, 2])
    np.testing.assert_array_equal(part.masks["steps_mask"], written["steps_mask"][[0, 2]])


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(x_mask=a["x_mask"] * 2), "mask 'x_mask' holds 2; a mask holds only 1 (a real time step) "
                                                 "and 0 (padding)"),
    (lambda a: a.update(x_mask=a["x_mask"][:, :4]), "mask 'x_mask' is [N, 4]; expected [N, 10] (1 = a real time "
                                                   "step, 0 = padding)"),
    (lambda a: a.update(label_mask=a["x_mask"]), "array 'label_mask' is a mask, but 'label' is [2] per example, not "
                                                 "a sequence [size, T]; masks: steps_mask, x_mask"),
    (lambda a: a.update(steps_masks=a["x_mask"]), "array 'steps_masks' names no input or output of the network (did "
                                                  "you mean 'steps_mask'?)"),
])
def test_bad_masks_are_refused_naming_the_file_and_the_array(tmp_path, change, message):
    net = graphspec.build(SPEC)
    arrays = _write(tmp_path / "d.npz")
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as e:
        NamedArrays.from_npz(tmp_path / "bad.npz", *_patterns(net))
    assert str(e.value).startswith(str(tmp_path / "bad.npz"))
    assert message in str(e.value)


def test_graphspec_train_learns_from_padded_sequences_and_evaluates_real_steps_only(tmp_path, cli):
    import yaml
    (tmp_path / "seq.yaml").write_text(yaml.safe_dump(SPEC))
    _write(tmp_path / "train.npz", n=160)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "semantics": "pytorch", "epochs": 12, "batch_size": 16, "optimizer": {"type": "adam", "lr": 0.03},
        "data": {"eval_fraction": 0.25}}))
    rc, out, err = cli("train", tmp_path / "seq.yaml", "--data", tmp_path / "train.npz", "--recipe",
                       tmp_path / "recipe.yaml", "--out", tmp_path / "run")
    assert rc == 0, err
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    last = epochs[-1]
    assert last["label/examples"] == 40
    real_steps = int(np.load(tmp_path / "train.npz")["x_mask"].sum())
    assert 0 < last["steps/examples"] < real_steps  # the held-out part's real steps only, never the padding
    assert last["label/accuracy"] > 0.8 and last["steps/accuracy"] > 0.9


def test_per_step_accuracy_counts_the_real_steps_only():
    from graphspec.train.evaluation import head_metrics
    net = graphspec.build(SPEC)
    head = next(h for h in heads_of(net) if h.name == "steps")
    out = torch.zeros(2, 4, 3)
    out[:, 1] = 1.0  # predicts class 1 everywhere
    target = torch.tensor([[1, 1, 2], [1, 3, 3]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    metrics = head_metrics(head, out, None, target, mask)
    assert metrics["examples"] == 5 and metrics["accuracy"] == pytest.approx(3 / 5)


# --- any length T -------------------------------------------------------------------------------------------


def test_a_network_without_a_fixed_length_runs_sequences_of_any_length():
    net = graphspec.build(SPEC).eval()
    with torch.no_grad():
        for t in (1, 7, 300):
            out = net(torch.randn(2, 3, t))
            assert out["steps"].shape == (2, 4, t) and out["label"].shape == (2, 2)


def test_summary_shows_T_and_the_macs_per_step():
    s = graphspec.summarize(SPEC)
    rows = {r.name: r for r in s.rows}
    assert s.variable and s.input_varies["x"] == (False, True)
    assert rows["lstm"].varies == (False, True) and rows["label"].varies == (False,)
    # an LSTM: 4 gates × (input and recurrent products) per step; conv1d: kernel × in × out per output step
    assert rows["lstm"].macs_per_step == 4 * 5 * (3 + 5)
    assert rows["conv"].macs_per_step == 3 * 3 * 4
    assert rows["label"].macs_per_step is None and rows["label"].macs == 9 * 2
    from graphspec.summary import render_markdown
    text = render_markdown(s)
    assert "| lstm (lstm) | x | 3*→5 | [5, T] | 180 | yes | 160·T |" in text  # 4·5·(3 + 5 + 1) parameters
    per_step = sum(r.macs_per_step for r in s.rows if r.macs_per_step is not None)
    fixed = sum(r.macs for r in s.rows if r.macs is not None and r.macs_per_step is None)
    assert f"| MACs per example | {per_step:,.0f}·T + {fixed:,} |" in text


def test_a_stride_that_needs_the_length_is_refused_naming_the_vertex():
    spec = {**SPEC, "vertices": {**SPEC["vertices"], "conv": {**SPEC["vertices"]["conv"], "stride": 2}}}
    with pytest.raises(graphspec.SpecError) as e:
        graphspec.load_spec(spec)
    assert ("vertex 'conv': needs its input's length: it would have a configuration that depends on T (e.g. "
            "padding for stride > 1); give the input 'x' a fixed 'length'") in str(e.value)


def test_a_fixed_length_keeps_its_numbers():
    fixed = {**SPEC, "inputs": {"x": {"type": "recurrent", "size": 3, "length": 9}}}
    s = graphspec.summarize(fixed)
    assert not s.variable and next(r for r in s.rows if r.name == "lstm").out_shape == (5, 9)
    assert next(r for r in s.rows if r.name == "lstm").macs == 160 * 9


@pytest.mark.parametrize("pooling", ["max", "avg", "sum", "pnorm"])
def test_global_pooling_over_a_masked_sequence_reduces_its_real_steps_only(pooling):
    from graphspec.layers.modules import GlobalPooling
    x = torch.randn(2, 3, 5)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    pooled = GlobalPooling(pooling, 3, True)(x, mask)
    for i, n in enumerate([3, 5]):  # DL4J's MaskedReductionUtil on the real steps x[i, :, :n]
        real = x[i, :, :n]
        want = {"max": real.amax(1), "avg": real.mean(1), "sum": real.sum(1),
                "pnorm": real.abs().pow(3).sum(1).pow(1 / 3)}[pooling]
        torch.testing.assert_close(pooled[i], want)
    with pytest.raises(ValueError, match="example 0 has no real time step"):
        GlobalPooling(pooling, 3, True)(x, torch.zeros(2, 5))


def test_batchnorm_in_training_takes_its_statistics_from_the_real_steps_only():
    spec = {"version": 1, "name": "bn", "inputs": {"x": {"type": "recurrent", "size": 2}},
            "vertices": {"bn": {"type": "batchnorm", "inputs": ["x"]}}, "outputs": ["bn"]}
    net = graphspec.build(spec).train()
    real = torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], [[4.0, 5.0, 6.0], [2.0, 2.0, 2.5]]])
    padded = torch.cat([real, torch.full((2, 2, 2), 9.0)], dim=2)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]] * 2)
    want = torch.nn.functional.batch_norm(real, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(net(padded, mask)[:, :, :3], want, rtol=1e-5, atol=1e-5)
    running = net.get_submodule("bn").running_mean.clone()
    net.get_submodule("bn").running_mean.zero_()
    net(real)
    torch.testing.assert_close(running, net.get_submodule("bn").running_mean)  # the same running statistics
