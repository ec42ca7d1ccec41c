"""Truncated backpropagation through time (recipe ``tbptt_length``, DL4J's tBPTTLength) and carried recurrent state
(``graphspec.state``), against a hand-written PyTorch TBPTT loop with ``nn.LSTM``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import graphspec
from graphspec.errors import GraphspecError
from graphspec.state import carried_state, reset_state
from graphspec.train import tbptt
from graphspec.train.recipe import Recipe
from graphspec.train.steps import TorchStep, param_groups

SPEC = {"version": 1, "name": "lm", "seed": 5, "inputs": {"x": {"type": "recurrent", "size": 3}},
        "vertices": {"lstm": {"type": "lstm", "inputs": ["x"], "out": 4, "activation": "tanh"},
                     "out": {"type": "rnn_output", "inputs": ["lstm"], "out": 5, "activation": "softmax",
                             "loss": "mcxent"}},
        "outputs": ["out"]}


def _reference_tbptt(net, x, y, k: int, lr: float) -> dict[str, torch.Tensor]:
    """Textbook TBPTT with torch.nn: an nn.LSTM and nn.Linear holding the network's weights, SGD on the summed
    per-step cross-entropy / N of each part, the (h, c) of each part's end detached into the next."""
    lstm, head = torch.nn.LSTM(3, 4), torch.nn.Linear(4, 5)
    sd = net.state_dict()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(sd["lstm.weight_ih"])
        lstm.weight_hh_l0.copy_(sd["lstm.weight_hh"])
        lstm.bias_ih_l0.copy_(sd["lstm.bias"])
        lstm.bias_hh_l0.zero_()
        head.weight.copy_(sd["out.weight"])
        head.bias.copy_(sd["out.bias"])
    lstm.bias_hh_l0.requires_grad_(False)  # graphspec's LSTM has DL4J's one bias
    params = [p for p in (*lstm.parameters(), *head.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    state = None
    n = x.shape[0]
    for a in range(0, x.shape[2], k):
        seq = x[:, :, a:a + k].permute(2, 0, 1)  # [T, N, 3]
        out, (h, c) = lstm(seq, state)
        logits = head(out).permute(1, 2, 0)  # [N, 5, T]
        loss = F.cross_entropy(logits, y[:, a:a + k], reduction="sum") / n
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = (h.detach(), c.detach())
    return {"lstm.weight_ih": lstm.weight_ih_l0, "lstm.weight_hh": lstm.weight_hh_l0, "lstm.bias": lstm.bias_ih_l0,
            "out.weight": head.weight, "out.bias": head.bias}


@pytest.mark.parametrize("k", [3, 4, 11])
def test_tbptt_updates_as_a_hand_written_loop_with_carried_detached_state(k):
    net = graphspec.build(SPEC)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 11, generator=g), torch.randint(0, 5, (2, 11), generator=g)
    want = _reference_tbptt(net, x, y, k, lr=0.5)
    opt = torch.optim.SGD(param_groups(net, 0.0), lr=0.5)
    step = TorchStep(net, opt)
    tbptt.step(step, net, x, {"out": y}, 2, k)
    for name, value in want.items():
        torch.testing.assert_close(net.state_dict()[name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
    assert step.iteration == -(-11 // k)  # one update per part, as DL4J's iterations


def test_carried_state_continues_a_sequence_part_by_part_and_is_dropped_after():
    net = graphspec.build(SPEC).eval()
    x = torch.randn(2, 3, 10)
    with torch.no_grad():
        whole = net(x)
        with carried_state(net):
            parts = torch.cat([net(p) for p in torch.split(x, 3, dim=2)], dim=2)
            reset_state(net)
            restarted = net(x[:, :, 3:])
        after = net(x[:, :, 3:])
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(restarted, after)  # reset and leaving the block: from zeros again
    assert not torch.allclose(after, whole[:, :, 3:], atol=1e-4)


def test_a_bidirectional_layer_is_refused_for_tbptt_naming_it():
    spec = {**SPEC, "vertices": {**SPEC["vertices"], "lstm": {**SPEC["vertices"]["lstm"], "bidirectional": "add"}}}
    with pytest.raises(GraphspecError) as e:
        tbptt.check(graphspec.build(spec), 5)
    assert str(e.value) == ("recipe 'tbptt_length': vertex 'lstm' is bidirectional; its backward direction reads "
                            "each sequence's end first, so it cannot be trained part by part (DL4J refuses it too)")
    with pytest.raises(ValueError, match="vertex 'lstm': a bidirectional layer cannot carry its state"):
        with carried_state(graphspec.build(spec)):
            pass


def test_a_network_without_sequences_is_refused_for_tbptt():
    spec = {"version": 1, "name": "mlp", "inputs": {"v": {"type": "feed_forward", "size": 3}},
            "vertices": {"out": {"type": "output", "inputs": ["v"], "out": 2, "loss": "mcxent",
                                 "activation": "softmax"}}, "outputs": ["out"]}
    with pytest.raises(GraphspecError, match=r"recipe 'tbptt_length' 5: 'mlp' has no sequence input to cut "
                                             r"\(inputs: v\)"):
        tbptt.check(graphspec.build(spec), 5)


def test_the_recipe_option_trains_a_run_with_tbptt(tmp_path, cli):
    import json

    import numpy as np
    import yaml
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)  # per step: the sign of the first feature
    np.savez(tmp_path / "d.npz", x=x, out=y)
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"semantics": "pytorch", "epochs": 3, "batch_size": 8,
                                                     "tbptt_length": 5, "optimizer": {"lr": 0.05}}))
    rc, out, err = cli("train", tmp_path / "lm.yaml", "--data", tmp_path / "d.npz", "--recipe", tmp_path / "r.yaml",
                       "--out", tmp_path / "run")
    assert rc == 0, err
    scores = [json.loads(line)["score"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "score"]
    assert len(scores) == 9 and scores[-1] < scores[0]
    assert Recipe.model_validate({"tbptt_length": 5}).tbptt_length == 5
