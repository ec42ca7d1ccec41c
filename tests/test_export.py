"""graphspec export: ONNX with the spec's vertex names, shapes and a dynamic batch, equal to PyTorch under
onnxruntime on real images (LFW when present, else the synthetic faces); TorchScript; errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import graphspec
from graphspec.cli import main
from graphspec.faces.data import locate_lfw
from graphspec.execution import preprocessing_of
from graphspec.errors import GraphspecError
from graphspec.export import ONNX_EXTRA, export

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def shipped():
    return graphspec.load("nn4small2-lfw")


@pytest.fixture(scope="module")
def onnx_file(shipped, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "nn4small2-lfw.onnx"
    report = export(shipped, path, check=False)
    return path, report


@pytest.fixture(scope="module")
def real_batch(shipped):
    """Seven preprocessed photos: LFW deep-funneled where present, else synthetic faces."""
    lfw = locate_lfw()
    if lfw is not None:
        files = sorted((lfw / "lfw-deepfunneled" / "Aaron_Peirsol").glob("*.jpg"))[:4] + \
            sorted((lfw / "lfw-deepfunneled" / "George_W_Bush").glob("*.jpg"))[:3]
    else:
        from graphspec.faces.data.synthetic import synthetic_faces
        files = sorted(Path(synthetic_faces(identities=2, images=4)).rglob("*.jpg"))[:7]
    prep = preprocessing_of(shipped)
    return prep.to_tensor(np.stack([prep.load(f) for f in files]))


def test_onnxruntime_matches_pytorch_on_real_images_at_two_batch_sizes(shipped, onnx_file, real_batch):
    path, _ = onnx_file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = shipped(real_batch).numpy()
    for x, y in ((real_batch, want), (real_batch[:1], want[:1])):  # the batch dimension is dynamic
        (got,) = session.run(None, {"input1": x.numpy()})
        assert got.shape == y.shape
        assert np.abs(got - y).max() < 1e-4
    assert np.abs(want).max() > 0.05  # real embeddings, not zeros


def test_onnx_nodes_carry_vertex_names_and_every_conv_vertex_appears(shipped, onnx_file):
    path, report = onnx_file
    graph = onnx.load(str(path)).graph
    names = [n.name for n in graph.node]
    assert len(set(names)) == len(names)
    spec = shipped.graphspec.spec
    convs = {v for v, vx in spec.vertices.items() if vx.type == "conv"}
    assert {n.name.split("/")[0] for n in graph.node if n.op_type == "Conv"} == convs
    assert all(n.name == f"{n.name.split('/')[0]}/Conv" for n in graph.node if n.op_type == "Conv")
    assert "stem-cnn1/Conv" in names and "inception-3a-cnn1-0/Conv" in names
    assert "stem-batch1/BatchNormalization" in names and "stem-activation1/Relu" in names
    assert "embeddings/Div" in names
    assert report.nodes == len(names) and report.ops["Conv"] == len(convs) == 37
    assert report.vertices == len({n.split("/")[0] for n in names if "/" in n})


def test_onnx_shapes_dynamic_batch_and_metadata(shipped, onnx_file):
    path, _ = onnx_file
    model = onnx.load(str(path))
    g = model.graph
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in g.input] == ["input1"] and dims(g.input[0]) == ["batch", 3, 96, 96]
    assert [o.name for o in g.output] == ["embeddings"] and dims(g.output[0]) == ["batch", 128]
    conv = next(n for n in g.node if n.name == "stem-cnn1/Conv")
    shapes = {vi.name: dims(vi) for vi in g.value_info}
    assert shapes[conv.output[0]] == ["batch", 64, 48, 48]  # the summary's stem-cnn1 shape
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["graphspec.spec"] == shipped.graphspec.spec.name
    assert meta["graphspec.outputs"] == "embeddings"
    assert json.loads(meta["graphspec.preprocessing"]) == json.loads(shipped.graphspec.preprocessing.model_dump_json())


def test_torchscript_matches_pytorch(shipped, real_batch, tmp_path):
    report = export(shipped, tmp_path / "m.pt", format="torchscript")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        (got,) = loaded(real_batch)
        torch.testing.assert_close(got, shipped(real_batch), rtol=0, atol=1e-5)


TWO_OUTPUTS = """
version: 1
name: two-outputs
inputs:
  image: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  conv: {type: conv, inputs: [image], kernel: 3, out: 4, convolution_mode: same, activation: relu}
  pool: {type: global_pool, inputs: [conv], pooling: avg}
  emb: {type: l2_normalize, inputs: [pool]}
  logits: {type: dense, inputs: [pool], out: 2}
outputs: [emb, logits]
"""


def test_several_outputs_keep_their_names_and_order_and_the_check_runs(tmp_path):
    net = graphspec.build(TWO_OUTPUTS, seed=0)
    report = export(net, tmp_path / "two.onnx")
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    g = onnx.load(str(tmp_path / "two.onnx")).graph
    assert [o.name for o in g.output] == ["emb", "logits"] and [i.name for i in g.input] == ["image"]
    assert {n.name.split("/")[0] for n in g.node if "/" in n.name} == {"conv", "pool", "emb", "logits"}


def test_cli_export_prints_the_report(tmp_path, capsys):
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_OUTPUTS)
    assert main(["export", str(spec), "-o", str(tmp_path / "two.onnx")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"wrote {tmp_path / 'two.onnx'} (onnx)"
    assert " nodes from 4 vertices (" in out[1]
    assert out[2].startswith("checked against PyTorch on a random batch of 3: max abs difference ")
    assert (tmp_path / "two.onnx").stat().st_size > 0


def test_errors(tmp_path, monkeypatch, capsys):
    net = graphspec.build(TWO_OUTPUTS, seed=0)
    with pytest.raises(GraphspecError) as ei:
        export(net, tmp_path / "x", format="tflite")
    assert ei.value.problem.message == "unknown export format 'tflite' (expected one of: onnx, torchscript)"
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    with pytest.raises(GraphspecError) as ei:
        export(net, tmp_path / "x.onnx")
    assert ei.value.problem.message == ONNX_EXTRA and ei.value.problem.location.file == str(tmp_path / "x.onnx")
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_OUTPUTS)
    assert main(["export", str(spec), "-o", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'x.onnx'}: {ONNX_EXTRA}\n"
    assert not (tmp_path / "x.onnx").exists()


def test_unwritable_destination_is_a_located_error_and_leaves_nothing(tmp_path):
    net = graphspec.build(TWO_OUTPUTS, seed=0)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(GraphspecError) as ei:
        export(net, blocker / "m.pt", format="torchscript")
    assert ei.value.problem.location.file == str(blocker / "m.pt")
    assert ei.value.problem.message.startswith("cannot write the exported model: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]
