"""Recurrent graphs through the rest of the framework (issue 18): draw, surgery, freezing, model files, feed_forward
and export (ONNX checked with onnxruntime, with and without masks; TorchScript), for a language model
(embedding_sequence -> lstm -> rnn_output), a classifier (bidirectional LSTM and a conv1d branch merged, then
last_time_step and global_pool) and a chain of every recurrent type in every bidirectional mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import graphspec
from graphspec import GraphBuilder, GraphspecError, feed_forward, snip
from graphspec.cli import main
from graphspec.draw import draw
from graphspec.export import export

T = 3  # short sequences
T_EXPORT = 2  # shorter for the ONNX exports: the exporter unrolls the step loops, each step costs time

LM = {"version": 1, "name": "tiny-lm", "seed": 3, "defaults": {"weight_init": "xavier"},
      "inputs": {"chars": {"type": "recurrent", "size": 1, "length": T}},
      "vertices": {"embed": {"type": "embedding_sequence", "inputs": ["chars"], "num_embeddings": 11, "out": 5},
                   "lstm": {"type": "lstm", "inputs": ["embed"], "out": 6},
                   "next": {"type": "rnn_output", "inputs": ["lstm"], "out": 11, "activation": "softmax",
                            "loss": "mcxent"}},
      "outputs": ["next"]}

CLS = {"version": 1, "name": "tiny-cls", "seed": 4, "defaults": {"weight_init": "xavier"},
       "inputs": {"x": {"type": "recurrent", "size": 3, "length": T}},
       "vertices": {"bi": {"type": "lstm", "inputs": ["x"], "out": 4, "bidirectional": "concat"},
                    "conv": {"type": "conv1d", "inputs": ["x"], "out": 5, "kernel": 3, "convolution_mode": "same"},
                    "merge": {"type": "merge", "inputs": ["bi", "conv"]},
                    "last": {"type": "last_time_step", "inputs": ["merge"]},
                    "pool": {"type": "global_pool", "inputs": ["merge"], "pooling": "avg"},
                    "both": {"type": "merge", "inputs": ["last", "pool"]},
                    "out": {"type": "output", "inputs": ["both"], "out": 2, "activation": "softmax",
                            "loss": "mcxent"}},
       "outputs": ["out"]}

# a language model over every recurrent type in every bidirectional mode, each layer an output so that each is
# compared on its own (biases of 1 keep the gated products away from 0, where an absolute tolerance says little)
TYPES = {"version": 1, "name": "tiny-types", "seed": 5, "defaults": {"weight_init": "xavier"},
         "inputs": {"chars": {"type": "recurrent", "size": 1}},  # any length T
         "vertices": {"embed": {"type": "embedding_sequence", "inputs": ["chars"], "num_embeddings": 11, "out": 3},
                      "lstm": {"type": "lstm", "inputs": ["embed"], "out": 3, "bidirectional": "concat"},
                      "graves": {"type": "graves_lstm", "inputs": ["lstm"], "out": 3, "bidirectional": "add"},
                      "gru": {"type": "gru", "inputs": ["graves"], "out": 3, "bidirectional": "mul",
                              "bias_init": 1.0},
                      "rnn": {"type": "simple_rnn", "inputs": ["gru"], "out": 3, "bidirectional": "average",
                              "bias_init": 0.5},
                      "next": {"type": "rnn_output", "inputs": ["rnn"], "out": 11, "activation": "softmax",
                               "loss": "mcxent"}},
         "outputs": ["lstm", "graves", "gru", "rnn", "next"]}


# TYPES without graves_lstm (always a step loop, which the masked export of TYPES covers): the layers torch runs with
# its fused kernels, which ONNX computes with its LSTM and GRU nodes (each unrolled export costs seconds)
FUSED = {**TYPES, "name": "tiny-fused",
         "vertices": {k: ({**v, "inputs": ["lstm"]} if k == "gru" else v) for k, v in TYPES["vertices"].items()
                      if k != "graves"},
         "outputs": [o for o in TYPES["outputs"] if o != "graves"]}


def _chars(n: int, seed: int = 0, steps: int = T) -> torch.Tensor:
    return torch.randint(0, 11, (n, 1, steps), generator=torch.Generator().manual_seed(seed)).float()


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, T, generator=torch.Generator().manual_seed(seed))


def _mask(lengths, steps: int = T) -> torch.Tensor:
    return (torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()


def _yaml(tmp_path, d) -> str:
    path = tmp_path / f"{d['name']}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path)


def _as_dict(model, y) -> dict[str, torch.Tensor]:
    return y if isinstance(y, dict) else {model.graphspec.spec.outputs[0]: y}


# --- draw ------------------------------------------------------------------------------------------------------


def test_draw_names_every_vertex_and_labels_edges_with_the_shapes_the_forward_gives(tmp_path, capsys):
    path = _yaml(tmp_path, CLS)
    net = graphspec.build(path).eval()
    with torch.no_grad():
        acts = feed_forward(net, _x(2), vertices=["x", *CLS["vertices"]])
    real = {name: "×".join(map(str, a.shape[1:])) for name, a in acts.items()}  # per example, as drawn
    assert real["bi"] == f"{2 * 4}×{T}" and real["merge"] == f"{8 + 5}×{T}" and real["both"] == "26"
    dot = draw(net.graphspec.spec, tmp_path / "api.dot").read_text()
    assert f'"x" [label="x\\ninput 3×{T}"' in dot
    for name, v in CLS["vertices"].items():
        assert f'"{name}" [label="{name}\\n{v["type"]}"' in dot
        for src in v["inputs"]:
            assert f'"{src}" -> "{name}" [label="{real[src]}"];' in dot
    assert '"out" [label="out\\noutput", penwidth=2];' in dot  # the output's bold border
    assert main(["draw", path, "-o", str(tmp_path / "cli.mmd")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'cli.mmd'}\n"
    mermaid = (tmp_path / "cli.mmd").read_text()
    assert 'n_bi["bi<br/>lstm"]' in mermaid and f'n_bi -- "{real["bi"]}" --> n_merge' in mermaid
    assert f'n_merge -- "{real["merge"]}" --> n_last' in mermaid and 'n_both -- "26" --> n_out' in mermaid


def test_draw_of_a_model_file_greys_its_frozen_recurrent_vertices(tmp_path, capsys):
    model = GraphBuilder(graphspec.build(LM)).set_feature_extractor("lstm").build()
    graphspec.save(model, tmp_path / "lm.safetensors")
    assert main(["draw", str(tmp_path / "lm.safetensors"), "-o", str(tmp_path / "lm.dot")]) == 0
    lines = (tmp_path / "lm.dot").read_text().splitlines()
    style = 'fillcolor="#dddddd", fontcolor="#555555", style="rounded,filled,dashed"'
    frozen = {line.split('"')[1] for line in lines if style in line}
    assert frozen == {"embed", "lstm"}
    assert f'  "embed" -> "lstm" [label="5×{T}"];' in lines and f'  "lstm" -> "next" [label="6×{T}"];' in lines


def test_draw_shows_a_variable_length_in_t_as_the_summary_does(tmp_path, capsys):
    d = {**TYPES, "vertices": {**TYPES["vertices"],
                               "conv": {"type": "conv1d", "inputs": ["rnn"], "out": 2, "kernel": 2, "stride": 2},
                               "pool": {"type": "global_pool", "inputs": ["conv"], "pooling": "avg"}},
         "outputs": [*TYPES["outputs"], "pool"]}
    path = _yaml(tmp_path, d)
    dot = draw(graphspec.load_spec(path), tmp_path / "types.dot").read_text()
    assert '"chars" [label="chars\\ninput 1×T"' in dot
    assert '"embed" -> "lstm" [label="3×T"];' in dot and '"lstm" -> "graves" [label="6×T"];' in dot
    assert '"rnn" -> "conv" [label="3×T"];' in dot and '"conv" -> "pool" [label="2×T/2"];' in dot
    assert "64" not in dot  # the example length the analysis runs at is no length of the network
    assert main(["summary", path]) == 0
    assert "[2, T/2]" in capsys.readouterr().out  # what the summary says of the same vertex


# --- surgery and freezing --------------------------------------------------------------------------------------


def test_feature_extractor_lstm_gets_no_gradient_and_does_not_move_in_a_masked_training_step():
    net = graphspec.build(LM)
    model = GraphBuilder(net).set_feature_extractor("lstm").build()
    assert model.graphspec.surgery.frozen == ["embed", "lstm"] and set(model.graphspec.frozen) == {"embed", "lstm"}
    assert model.graphspec.surgery.kept == ["embed", "lstm", "next"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert not model.get_submodule("lstm").training and model.get_submodule("next").training  # frozen: inference
    chars, mask, target = _chars(3), _mask([3, 2, 1]), torch.randint(0, 11, (3, T))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # every parameter: the frozen ones simply get no gradient
    p = model(chars, chars_mask=mask)
    picked = p.gather(1, target.unsqueeze(1)).squeeze(1)  # [N, T]: the probability of each step's target
    loss = -(torch.log(picked + 1e-6) * mask).sum()
    loss.backward()
    opt.step()
    for name, param in model.named_parameters():
        vertex = name.split(".", 1)[0]
        if vertex in ("embed", "lstm"):
            assert param.grad is None and not param.requires_grad, name
            assert torch.equal(param, before[name]), f"frozen {name} moved"
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
            assert not torch.equal(param, before[name]), f"trainable {name} did not move"
    # the copied weights: the trunk computes what the original computes, masked or not (the masked step loop within
    # rounding: CPU matrix products may take another kernel for parameters that do not require gradients)
    model.eval()
    with torch.no_grad():
        for masks in (None, {"chars": mask}):
            torch.testing.assert_close(feed_forward(model, chars, vertices=["lstm"], masks=masks)["lstm"],
                                       feed_forward(net.eval(), chars, vertices=["lstm"], masks=masks)["lstm"],
                                       rtol=0, atol=1e-6)


def test_build_with_frozen_freezes_only_the_named_recurrent_vertex_and_the_model_file_keeps_it(tmp_path):
    model = graphspec.build(CLS, frozen=["bi"])
    assert set(model.graphspec.frozen) == {"bi"}
    model.train()
    assert not model.get_submodule("bi").training and model.get_submodule("conv").training
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == [
        "bi.weight_ih", "bi.weight_hh", "bi.bias", "bi.weight_ih_reverse", "bi.weight_hh_reverse", "bi.bias_reverse"]
    graphspec.save(model, tmp_path / "cls.safetensors")
    loaded = graphspec.load(tmp_path / "cls.safetensors")
    assert set(loaded.graphspec.frozen) == {"bi"}
    assert {n for n, p in loaded.named_parameters() if not p.requires_grad} == \
        {n for n, p in model.named_parameters() if not p.requires_grad}


def test_replacing_the_output_layer_keeps_the_recurrent_trunk(tmp_path):
    net = graphspec.build(LM).eval()
    new = (GraphBuilder(net).remove_vertex_and_connections("next")
           .add_layer("tags", {"type": "rnn_output", "out": 3, "activation": "softmax", "loss": "mcxent"}, "lstm")
           .set_outputs("tags").build().eval())
    report = new.graphspec.surgery
    assert report.kept == ["embed", "lstm"] and report.reinitialised == ["tags"] and report.dropped == ["next"]
    chars, mask = _chars(3, seed=1), _mask([3, 1, 2])
    with torch.no_grad():
        for masks in (None, {"chars": mask}):
            trunk = feed_forward(net, chars, vertices=["lstm"], masks=masks)["lstm"]
            acts = feed_forward(new, chars, vertices=["lstm", "tags"], masks=masks)
            torch.testing.assert_close(acts["lstm"], trunk, rtol=0, atol=0)
            head = new.get_submodule("tags")
            want = torch.softmax(torch.einsum("oi,nit->not", head.weight, trunk) + head.bias[:, None], dim=1)
            if masks:
                want = want * mask.unsqueeze(1)  # rnn_output multiplies its activations by the mask
            torch.testing.assert_close(acts["tags"], want, rtol=1e-6, atol=1e-6)
            got = new(chars) if masks is None else new(chars, chars_mask=mask)
            torch.testing.assert_close(got, acts["tags"], rtol=0, atol=0)
    assert tuple(got.shape) == (3, 3, T)


def test_set_outputs_at_the_merge_of_the_bidirectional_and_conv_branches_gives_the_original_activations():
    net = graphspec.build(CLS).eval()
    cut = snip(net, ["merge"]).eval()
    assert cut.graphspec.surgery.dropped == ["both", "last", "out", "pool"]
    assert cut.graphspec.surgery.kept == ["bi", "conv"] and set(cut.graphspec.frozen) == {"bi", "conv", "merge"}
    lengths = [3, 2, 1]
    x, mask = _x(3, seed=2), _mask(lengths)
    with torch.no_grad():
        torch.testing.assert_close(cut(x), feed_forward(net, x, vertices=["merge"])["merge"], rtol=0, atol=0)
        masked = cut(x, x_mask=mask)  # the step loop: rounding as in the frozen LSTM above
        torch.testing.assert_close(masked, feed_forward(net, x, vertices=["merge"], masks={"x": mask})["merge"],
                                   rtol=0, atol=1e-6)
    assert masked[1, :, 2:].abs().max() == 0 and masked[2, :, 1:].abs().max() == 0  # padding: zeros
    # a new head on the cut: set_outputs with a re-initialised output layer on last_time_step
    head = (GraphBuilder(cut).add_vertex("final", {"type": "last_time_step"}, "merge")
            .add_layer("cls", {"type": "output", "out": 4, "activation": "softmax", "loss": "mcxent"}, "final")
            .set_outputs("cls").build().eval())
    assert head.graphspec.surgery.reinitialised == ["cls"]
    with torch.no_grad():
        final = feed_forward(head, x, vertices=["final"], masks={"x": mask})["final"]
    torch.testing.assert_close(final, torch.stack([masked[i, :, n - 1] for i, n in enumerate(lengths)]),
                               rtol=0, atol=0)  # each example's last real step


def test_remove_vertex_and_connections_and_n_out_replace_on_the_recurrent_branch():
    net = graphspec.build(CLS).eval()
    no_conv = GraphBuilder(net).remove_vertex_and_connections("conv").build().eval()
    report = no_conv.graphspec.surgery
    assert report.dropped == ["conv"] and report.kept == ["bi"] and report.reinitialised == ["out"]
    assert no_conv.graphspec.analysis.shapes["merge"] == (8, T) and no_conv.graphspec.analysis.shapes["both"] == (16,)
    x = _x(2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(feed_forward(no_conv, x, vertices=["merge"])["merge"],
                                   feed_forward(net, x, vertices=["bi"])["bi"], rtol=0, atol=0)
    wider = GraphBuilder(net).n_out_replace("bi", 6).build()
    assert wider.graphspec.surgery.reinitialised == ["bi", "out"] and wider.graphspec.surgery.kept == ["conv"]
    shapes = wider.graphspec.analysis.shapes
    assert shapes["bi"] == (12, T) and shapes["merge"] == (17, T) and shapes["both"] == (34,)
    assert tuple(wider.get_submodule("bi").weight_hh_reverse.shape) == (24, 6)
    assert tuple(wider(x).shape) == (2, 2)


def test_surgery_errors_name_the_recurrent_vertex():
    net = graphspec.build(LM)
    with pytest.raises(GraphspecError) as ei:
        GraphBuilder(net).set_feature_extractor("lstn")
    assert ei.value.problem.message == "set_feature_extractor: no vertex named 'lstn' (did you mean 'lstm'?)"
    with pytest.raises(GraphspecError) as ei:
        GraphBuilder(net).n_out_replace("next", 0)
    assert ei.value.problem.message == "n_out_replace: n_out must be a positive integer; received 0"


# --- feed_forward with masks -----------------------------------------------------------------------------------


def test_feed_forward_with_masks_matches_the_masked_forward_and_checks_the_names():
    net = graphspec.build(CLS).eval()
    lengths = [3, 2, 1]
    x, mask = _x(3, seed=4), _mask(lengths)
    with torch.no_grad():
        acts = feed_forward(net, x, masks={"x": mask})
        torch.testing.assert_close(acts["out"], net(x, x_mask=mask), rtol=0, atol=0)
        inner = feed_forward(net, x, vertices=["merge", "last"], masks={"x": mask})
        unmasked = feed_forward(net, x)
    assert set(acts) == {"x", "bi", "conv", "pool", "out"}  # DL4J's feedForward set: inputs, layers, outputs
    assert acts["bi"][2, :, 1:].abs().max() == 0 and unmasked["bi"][2, :, 1:].abs().max() > 0
    torch.testing.assert_close(unmasked["out"], net(x), rtol=0, atol=0)
    torch.testing.assert_close(inner["last"], torch.stack([inner["merge"][i, :, n - 1] for i, n in
                                                           enumerate(lengths)]), rtol=0, atol=0)
    # global_pool (avg) over the real steps only (DL4J's masked reductions), the mask having passed the merge
    torch.testing.assert_close(acts["pool"], torch.stack([inner["merge"][i, :, :n].mean(1) for i, n in
                                                          enumerate(lengths)]), rtol=1e-6, atol=1e-7)
    with pytest.raises(GraphspecError) as ei:
        feed_forward(net, x, masks={"y": mask})
    assert ei.value.problem.message == "feed_forward: no sequence input named 'y' to mask (sequence inputs: x)"


# --- model files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [LM, CLS, TYPES], ids=["lm", "cls", "types"])
def test_model_file_round_trip_gives_identical_outputs_with_and_without_a_mask(spec, tmp_path):
    net = graphspec.build(spec).eval()
    path = graphspec.save(net, tmp_path / "m.safetensors")
    loaded = graphspec.load(path).eval()
    assert loaded.graphspec.spec.to_yaml() == net.graphspec.spec.to_yaml()
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    (name,) = spec["inputs"]
    steps = spec["inputs"][name].get("length", 2)  # a variable-length model at 2 steps
    x = _x(3, seed=5) if spec is CLS else _chars(3, seed=5, steps=steps)
    mask = _mask([steps, 1, 2], steps=steps)
    with torch.no_grad():
        for kwargs in ({}, {f"{name}_mask": mask}):
            want, got = _as_dict(net, net(x, **kwargs)), _as_dict(loaded, loaded(x, **kwargs))
            assert list(got) == list(want)
            for k in want:
                assert torch.equal(got[k], want[k]), k
    if spec is TYPES:  # the mask matters for every type: padded steps are 0
        assert all(float(want[k][1, :, 1:].abs().max()) == 0 for k in want)


def test_cli_summary_of_a_recurrent_model_file(tmp_path, capsys):
    model = GraphBuilder(graphspec.build(LM)).set_feature_extractor("lstm").build()
    path = graphspec.save(model, tmp_path / "lm.safetensors")
    s = graphspec.summarize(path)
    frozen = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("embed", "lstm"))
    assert s.frozen == frozen == 11 * 5 + 4 * 6 * (5 + 6 + 1)
    assert s.trainable == 11 * (6 + 1)
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "embed (embedding_sequence)" in out and "lstm (lstm)" in out and "next (rnn_output)" in out
    assert f"[6, {T}]" in out and f"[11, {T}]" in out
    assert f"{s.trainable:,}" in out and f"{frozen:,}" in out
    assert main(["summary", str(path), "--format", "json"]) == 0
    assert '"lstm"' in capsys.readouterr().out


def test_cli_forward_of_a_recurrent_spec(tmp_path, capsys):
    assert main(["forward", _yaml(tmp_path, CLS), "--batch-size", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "out: [3, 2] ok"


def test_cli_forward_draws_class_indices_for_an_embedding_input(capsys):
    from pathlib import Path
    lm = Path(__file__).parents[1] / "examples" / "char-lm" / "char-lm.yaml"
    assert main(["forward", str(lm), "--batch-size", "2"]) == 0  # random normal values would be refused indices
    assert capsys.readouterr().out.splitlines()[0] == "next: [2, 128, 64] ok"


# --- export ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    return pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _session(ort, path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def types_net():
    return graphspec.build(TYPES).eval()


def test_onnx_export_of_the_fused_recurrent_kernels_equals_torch(ort, tmp_path):
    import onnx
    net = graphspec.build(FUSED).eval()
    path = tmp_path / "fused.onnx"
    report = export(net, path, check=False, length=T_EXPORT)  # a sequence input without a length: exported at T
    assert report.masks == [] and {"LSTM", "GRU"} <= set(report.ops)  # torch's fused kernels as ONNX's nodes
    assert report.lengths == {"chars": T_EXPORT}
    assert (f"input 'chars': sequences of exactly {T_EXPORT} steps (choose with --length; pad shorter ones and mask "
            "them: --masks)") in report.lines()
    g = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    assert [i.name for i in g.input] == ["chars"] and dims == ["batch", 1, T_EXPORT]
    assert [o.name for o in g.output] == FUSED["outputs"]
    assert {n.name.split("/")[0] for n in g.node if "/" in n.name} == set(FUSED["vertices"])  # named by vertex
    session = _session(ort, path)
    for n in (1, 5):  # the batch is dynamic
        chars = _chars(n, seed=6, steps=T_EXPORT)
        got = dict(zip(FUSED["outputs"], session.run(None, {"chars": chars.numpy()})))
        with torch.no_grad():
            want = net(chars)
        for name in FUSED["outputs"]:
            assert got[name].shape == tuple(want[name].shape)
            np.testing.assert_allclose(got[name], want[name].numpy(), rtol=0, atol=1e-5, err_msg=name)
    assert all(float(want[k].abs().max()) > 0.05 for k in want)  # real activations, not zeros


def test_cli_export_with_masks_equals_the_masked_torch_forward_for_every_recurrent_type(ort, types_net, tmp_path,
                                                                                         capsys):
    import onnx
    model_file = graphspec.save(types_net, tmp_path / "types.safetensors")
    out = tmp_path / "types.onnx"
    assert main(["export", str(model_file), "-o", str(out), "--masks", "--length", str(T_EXPORT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out} (onnx)"
    assert lines[2] == "mask inputs after the inputs: chars_mask [N, T] (1: a real step, 0: padding)"
    assert lines[3] == (f"input 'chars': sequences of exactly {T_EXPORT} steps (choose with --length; pad shorter "
                        "ones and mask them: --masks)")
    assert lines[4].startswith("checked against PyTorch on a random batch of 3 of sequences of random lengths, "
                               "masked: max abs difference ")
    assert float(lines[4].rsplit(" ", 1)[1]) < 1e-5
    model = onnx.load(str(out))
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in model.graph.input] == ["chars", "chars_mask"]
    assert dims(model.graph.input[0]) == ["batch", 1, T_EXPORT] and dims(model.graph.input[1]) == ["batch", T_EXPORT]
    assert {p.key: p.value for p in model.metadata_props}["graphspec.masks"] == "chars_mask"
    session = _session(ort, out)
    lengths = [2, 1, 1, 2]
    chars, mask = _chars(4, seed=7, steps=T_EXPORT), _mask(lengths, steps=T_EXPORT)
    with torch.no_grad():
        masked, plain = types_net(chars, chars_mask=mask), types_net(chars)
    # all ones: the unmasked result (torch's fused kernels; graves_lstm's step loop without a mask)
    for given, want in ((mask, masked), (torch.ones(4, T_EXPORT), plain)):
        got = dict(zip(TYPES["outputs"], session.run(None, {"chars": chars.numpy(), "chars_mask": given.numpy()})))
        for name in TYPES["outputs"]:
            np.testing.assert_allclose(got[name], want[name].numpy(), rtol=0, atol=1e-5, err_msg=name)
    for name in TYPES["outputs"]:
        for i, n in enumerate(lengths):
            assert float(masked[name][i, :, n:].abs().sum()) == 0, name  # padded steps are 0
        # the backward directions start at the last real step: the real steps change too
        assert float((masked[name][1:3, :, 0] - plain[name][1:3, :, 0]).abs().max()) > 1e-3, name
    assert all(float(plain[k].abs().max()) > 0.05 for k in plain)  # real activations, not zeros
    torch.testing.assert_close(masked["next"][0].sum(0), torch.ones(T_EXPORT))  # real steps: distributions


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_export_with_masks(tmp_path):
    net = graphspec.build(CLS).eval()
    report = export(net, tmp_path / "cls.pt", format="torchscript", masks=True)
    assert report.masks == ["x_mask"] and report.max_abs_diff is not None and report.max_abs_diff < 1e-6
    loaded = torch.jit.load(str(tmp_path / "cls.pt"))
    x, mask = _x(3, seed=9), _mask([1, 3, 2])
    with torch.no_grad():
        (got,) = loaded(x, mask)
        torch.testing.assert_close(got, net(x, x_mask=mask), rtol=0, atol=1e-6)


def test_export_masks_of_a_model_without_sequences_is_an_error(tmp_path):
    d = {"version": 1, "name": "flat", "inputs": {"v": {"type": "feed_forward", "size": 3}},
         "vertices": {"d": {"type": "dense", "inputs": ["v"], "out": 2}}, "outputs": ["d"]}
    with pytest.raises(GraphspecError) as ei:
        export(graphspec.build(d), tmp_path / "flat.onnx", masks=True)
    assert ei.value.problem.message == "cannot export masks: the model has no sequence input ([size, T]) to mask"
    assert ei.value.problem.location.file == str(tmp_path / "flat.onnx") and not (tmp_path / "flat.onnx").exists()
    with pytest.raises(GraphspecError) as ei:
        export(graphspec.build(CLS), tmp_path / "cls.onnx", length=5)
    assert ei.value.problem.message == ("an export length applies to sequence inputs without a fixed length; this "
                                        "model has none")
    with pytest.raises(GraphspecError) as ei:
        export(graphspec.build(TYPES), tmp_path / "types.onnx", length=0)
    assert ei.value.problem.message == "the export length must be a positive number of steps; received 0"
