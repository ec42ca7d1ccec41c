"""`graphspec import` of ONNX files: real exported networks against torchvision and onnxruntime, hand-built graphs
for each translation, and hostile files refused cleanly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import graphspec
from graphspec.importers import ImportRefused, import_model

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def _save(tmp_path, nodes, inputs, outputs, inits=(), name="m", opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _run_ort(path, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _small_cnn(tmp_path, g=np.random.default_rng(0)):
    """Conv (padded, grouped) -> BN -> Relu -> MaxPool (padded, after relu) -> Conv -> Add (residual) -> LRN ->
    GlobalAveragePool -> Flatten -> Gemm -> Softmax, with a Concat branch as a second output."""
    f = lambda *s: g.normal(size=s).astype(np.float32)  # noqa: E731
    inits = [("w1", f(8, 2, 3, 3)), ("b1", f(8)), ("s", f(8) + 2), ("bb", f(8)), ("m", f(8)), ("v", np.abs(f(8)) + .5),
             ("w2", f(8, 8, 3, 3)), ("fc", f(5, 8)), ("fcb", f(5))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], group=2),
             helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1", epsilon=1e-3),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "p1"], ["res"], name="residual"),
             helper.make_node("LRN", ["res"], ["lrn"], name="lrn", size=5, alpha=1e-3, beta=0.75, bias=2.0),
             helper.make_node("GlobalAveragePool", ["lrn"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
             helper.make_node("Concat", ["p1", "res"], ["both"], name="both", axis=1)]
    return _save(tmp_path, nodes, [_info("x", ["N", 4, 12, 12])], [_info("probs", ["N", 5]), _info("both", None)],
                 inits, name="cnn")


def test_a_small_cnn_imports_as_a_readable_spec_equal_to_onnxruntime(tmp_path):
    path = _small_cnn(tmp_path)
    imported = graphspec.import_model(path)  # the package's entry point
    v = imported.document["vertices"]
    assert imported.document["inputs"] == {"x": {"type": "convolutional", "channels": 4, "height": 12, "width": 12}}
    assert [(n, v[n]["type"]) for n in ("conv1", "bn1", "relu1", "pool1", "residual", "lrn", "fc")] == [
        ("conv1", "conv"), ("bn1", "batchnorm"), ("relu1", "activation"), ("pool1", "subsampling"),
        ("residual", "elementwise"), ("lrn", "lrn"), ("fc", "dense")]
    assert imported.document["outputs"] == ["probs", "both"]
    assert v["conv1"]["groups"] == 2 and v["lrn"]["alpha"] == pytest.approx(1e-3 / 5)  # DL4J's alpha: not / n
    x = np.random.default_rng(1).normal(size=(3, 4, 12, 12)).astype(np.float32)
    want = _run_ort(path, {"x": x})
    with torch.no_grad():
        got = imported.model()(torch.from_numpy(x))
    np.testing.assert_allclose(got["probs"].numpy(), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["both"].numpy(), want[1], rtol=1e-4, atol=1e-4)  # float32 sums in another order


def test_cli_import_writes_a_spec_and_a_model_file_that_the_other_commands_read(tmp_path, cli):
    path = _small_cnn(tmp_path)
    rc, out, err = cli("import", path, "-o", tmp_path / "out")
    assert rc == 0, err
    vertices = len(onnx.load(str(path)).graph.node)  # one vertex per node of this graph
    assert out.splitlines()[0] == (f"wrote {tmp_path / 'out' / 'cnn.yaml'} ({vertices} vertices) and "
                                   f"{tmp_path / 'out' / 'cnn.safetensors'}")
    assert "checked against onnxruntime on a random batch of 2: max abs difference" in out
    spec = graphspec.load_spec(tmp_path / "out" / "cnn.yaml")
    assert "conv1" in spec.vertices
    rc, out, _ = cli("summary", tmp_path / "out" / "cnn.safetensors")
    assert rc == 0 and "conv1 (conv)" in out
    rc, _, err = cli("draw", tmp_path / "out" / "cnn.safetensors", "-o", tmp_path / "cnn.dot")
    assert rc == 0, err
    assert '"conv1"' in (tmp_path / "cnn.dot").read_text()
    rc, out, _ = cli("snip", tmp_path / "out" / "cnn.safetensors", "--output", "gap", "-o", tmp_path / "cut.safetensors")
    assert rc == 0
    net = graphspec.load(tmp_path / "cut.safetensors")
    assert net(torch.zeros(1, 4, 12, 12)).shape == (1, 8, 1, 1)


def test_everything_unsupported_is_listed_at_once_and_nothing_is_written(tmp_path, cli):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="odd", auto_pad="SAME_LOWER"),
             helper.make_node("Erf", ["c"], ["e1"], name="erf1"), helper.make_node("Erf", ["e1"], ["e2"], name="erf2"),
             helper.make_node("MaxPool", ["e2"], ["y"], name="pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1])]
    path = _save(tmp_path, nodes, [_info("x", ["N", 1, 6, 6])], [_info("y", None)],
                 [("w", np.ones((2, 1, 3, 3), np.float32))], name="bad")
    with pytest.raises(ImportRefused) as e:
        import_model(path)
    assert str(e.value) == (f"{path}: cannot import bad.onnx exactly; graphspec cannot express:\n"
                            "  Conv: auto_pad SAME_LOWER (nodes: odd)\n"
                            "  Erf: no graphspec translation of this operator (nodes: erf1, erf2)\n"
                            "  MaxPool: padding on an input that may be negative (graphspec's max pooling pads with 0, "
                            "ONNX's with -inf) (nodes: pool)")
    rc, out, err = cli("import", path, "-o", tmp_path / "out")
    assert rc == 2 and "Erf: no graphspec translation" in err and not (tmp_path / "out").exists()


def test_max_pooling_with_padding_on_a_signed_input_is_refused_and_accepted_after_a_relu(tmp_path):
    pool = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1])
    path = _save(tmp_path, [pool], [_info("x", ["N", 1, 4, 4])], [_info("y", None)], name="signed")
    with pytest.raises(ImportRefused, match=r"MaxPool: padding on an input that may be negative \(graphspec's max "
                                            r"pooling pads with 0, ONNX's with -inf\) \(nodes: pool\)"):
        import_model(path)
    # after a Relu, through a Concat: never negative, so zero padding is -inf padding; Caffe's asymmetric pads
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Concat", ["r", "r"], ["c"],
                                                                                    name="cat", axis=1),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[0, 0, 1, 1])]
    path = _save(tmp_path, nodes, [_info("x", ["N", 1, 6, 6])], [_info("y", None)], name="relu_pool")
    imported = import_model(path)
    assert imported.document["vertices"]["pool-pad"] == {"type": "zero_padding", "inputs": ["cat"],
                                                         "padding": [0, 1, 0, 1]}
    x = np.random.default_rng(0).normal(size=(2, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        got = imported.model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _run_ort(path, {"x": x})[0], rtol=1e-6)


def test_constant_subgraphs_are_folded_and_initializers_listed_as_inputs_are_constants(tmp_path):
    # an old exporter's habits: the weight is an initializer also listed as a graph input, the bias comes from a
    # ConstantOfShape, the batch norm is decomposed into Mul and Add, Dropout and Sum appear, opset 9
    w = np.random.default_rng(2).normal(size=(3, 2)).astype(np.float32)
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["bias"], value=helper.make_tensor("v", 1, [1], [0.5])),
             helper.make_node("Gemm", ["x", "w", "bias"], ["d"], name="dense", transB=1),
             helper.make_node("Mul", ["d", "scale"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "shift"], ["a"], name="add"),
             helper.make_node("Dropout", ["a"], ["dr"], name="drop"),
             helper.make_node("Sum", ["dr", "dr"], ["y"], name="sum")]
    inits = [("w", w), ("shape", np.array([3], np.int64)), ("scale", np.array([1., 2., 3.], np.float32)),
             ("shift", np.array([0.1, 0.2, 0.3], np.float32))]
    path = _save(tmp_path, nodes, [_info("x", ["N", 2]), _info("w", [3, 2])], [_info("y", ["N", 3])], inits,
                 name="old", opset=9)
    imported = import_model(path)
    assert list(imported.document["inputs"]) == ["x"]
    assert {n: v["type"] for n, v in imported.document["vertices"].items()} == {
        "dense": "dense", "mul": "batchnorm", "add": "batchnorm", "y": "elementwise"}
    x = np.random.default_rng(3).normal(size=(4, 2)).astype(np.float32)
    with torch.no_grad():
        got = imported.model()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _run_ort(path, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenet_v2"])
def test_torchvision_networks_exported_by_torch_import_equal_to_torchvision_and_onnxruntime(arch, tmp_path):
    from references import torchvision
    tv = torchvision()
    net = getattr(tv.models, arch)(weights=None).eval()
    with torch.no_grad():  # non-trivial batch statistics, so that the batch norms' import is tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    path = tmp_path / f"{arch}.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=False)
    imported = import_model(path)
    with torch.no_grad():
        got, want = imported.model()(x), net(x)
    assert float((got - want).abs().max()) <= 1e-4
    np.testing.assert_allclose(got.numpy(), _run_ort(path, {"image": x.numpy()})[0], rtol=1e-4, atol=1e-4)


# --- hostile files ------------------------------------------------------------------------------------------


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not a protobuf \x00" * 10)
    with pytest.raises(ImportRefused, match="cannot read junk.onnx as ONNX"):
        import_model(tmp_path / "junk.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ImportRefused, match="empty.onnx holds no ONNX graph"):
        import_model(tmp_path / "empty.onnx")


def _with_external(tmp_path, location, nbytes=24):
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    graph = helper.make_graph([node], "g", [_info("x", ["N", 3])], [_info("y", None)], [w])
    path = tmp_path / "ext.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return path


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    (tmp_path / "secret").write_bytes(b"\x00" * 24)
    inner = tmp_path / "model"
    inner.mkdir()
    path = _with_external(inner, "../secret")
    with pytest.raises(ImportRefused, match=r"tensor 'w' points to external data '../secret', outside the model's "
                                            r"folder"):
        import_model(path)


def test_external_data_inside_the_folder_loads_and_a_range_past_its_end_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.ones((2, 3), np.float32).tobytes())
    imported = import_model(_with_external(tmp_path, "w.bin"))
    np.testing.assert_array_equal(imported.weights["y.weight"], np.ones((2, 3), np.float32))
    with pytest.raises(ImportRefused, match=r"tensor 'w': external data range 0\+48 exceeds w.bin \(24 bytes\)"):
        import_model(_with_external(tmp_path, "w.bin", nbytes=48))


def test_a_tensor_declaring_more_than_it_holds_or_absurd_sizes_is_refused(tmp_path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    short = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3], raw_data=np.ones(2, np.float32).tobytes())
    path = _save(tmp_path, [node], [_info("x", ["N", 3])], [_info("y", None)], name="short")
    model = onnx.load(str(path))
    model.graph.initializer.append(short)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ImportRefused, match=r"tensor 'w' declares \[2, 3\] \(24 bytes\) but holds 8 bytes"):
        import_model(path)
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\x00" * 8)
    del model.graph.initializer[:]
    model.graph.initializer.append(huge)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ImportRefused, match=r"tensor 'w' declares 1,099,511,627,776 values"):
        import_model(path)


def test_a_constant_that_would_be_huge_is_refused_before_it_is_computed(tmp_path):
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="bomb"),
             helper.make_node("Add", ["x", "big"], ["y"], name="add")]
    path = _save(tmp_path, nodes, [_info("x", ["N", 3])], [_info("y", None)],
                 [("shape", np.array([1 << 20, 1 << 20], np.int64))], name="bomb")
    with pytest.raises(ImportRefused, match=r"node 'bomb' \(ConstantOfShape\) would make a constant of"):
        import_model(path)


def test_onnx_backend_cases_of_every_claimed_operator_pass_or_are_refused_never_wrong():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import onnx_backend
    results, details = onnx_backend.table()
    failed = [(name, detail) for op in details for name, status, detail in details[op] if status == "failed"]
    assert failed == []
    passed = {name for op in details for name, status, _ in details[op] if status == "passed"}
    assert {"test_conv_with_strides_padding", "test_gemm_transposeB", "test_gemm_alpha", "test_batchnorm_epsilon",
            "test_lrn", "test_globalaveragepool", "test_concat_2d_axis_1", "test_maxpool_2d_strides",
            "test_averagepool_2d_pads_count_include_pad", "test_reshape_reduced_dims", "test_flatten_axis1",
            "test_softmax_example", "test_leakyrelu_default"} <= passed
    assert set(results) <= set(onnx_backend.CLAIMED)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "unet"])
def test_graphspec_export_then_import_gives_the_same_network_with_its_vertex_names(arch, tmp_path, cli):
    net = graphspec.build(arch, seed=0).eval()
    rc, _, err = cli("export", arch, "-o", tmp_path / f"{arch}.onnx", "--seed", "0", "--no-check")
    assert rc == 0, err
    imported = import_model(tmp_path / f"{arch}.onnx")
    assert imported.notes == []  # translated operator by operator, not read from the spec graphspec recorded
    kept = set(net.graphspec.spec.vertices) & set(imported.document["vertices"])
    dropped = {n for n in net.graphspec.spec.vertices if net.graphspec.spec.vertices[n].type == "dropout"}
    assert kept == set(net.graphspec.spec.vertices) - dropped  # dropout is gone from an inference export
    x = torch.rand(2, *net.graphspec.spec.input_shape(next(iter(net.graphspec.spec.inputs))),
                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((imported.model()(x) - net(x)).abs().max()) <= 1e-5


LIGHT = ["light_bvlc_alexnet", "light_squeezenet", "light_densenet121"]


@pytest.mark.parametrize("name", LIGHT)
def test_old_model_zoo_files_shipped_with_onnx_import_equal_to_onnxruntime(name, tmp_path):
    """Opset 9 files as people meet them (initializers listed as inputs, weights from ConstantOfShape, batch norm
    as Mul/Add, Sum, Dropout, Caffe's asymmetric pooling pads): their weights are all 0.02, so random ones are put
    in first (variances positive) to make the comparison mean something."""
    import os
    from graphspec.importers.onnx import check
    source = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"{name}.onnx")
    if not os.path.exists(source):
        pytest.skip(f"{name}.onnx is not shipped with this onnx package")
    model = onnx.load(source)
    g = np.random.default_rng(0)
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            values = np.abs(g.normal(size=a.shape)) + 0.5 if "var" in t.name else g.normal(size=a.shape) * 0.05
            t.CopyFrom(numpy_helper.from_array(values.astype(np.float32), t.name))
    onnx.save(model, str(tmp_path / f"{name}.onnx"))
    imported = import_model(tmp_path / f"{name}.onnx")
    assert check(imported) <= 1e-4


@pytest.mark.parametrize("source", ["specs/nn4small2.yaml", "nn4small2-lfw"])
def test_a_file_graphspec_exported_comes_back_whole_through_its_recorded_spec(source, tmp_path, cli):
    """DL4J's LRN, p-norm pooling and L2 normalisation reach ONNX as primitive operators with no translation; the
    spec graphspec recorded in the file, with the parameters among its initializers, is the import."""
    net = graphspec.load(source) if source.endswith("-lfw") else graphspec.build(source, seed=0)
    net.eval()
    export_path = tmp_path / "net.onnx"
    rc, _, err = cli("export", source, "-o", export_path, "--seed", "0", "--no-check")
    assert rc == 0, err
    imported = import_model(export_path)
    assert imported.notes[0] == ("net.onnx was written by graphspec: its recorded spec is the import (its operators "
                                 "are not all translatable one by one)")
    assert list(imported.document["vertices"]) == list(net.graphspec.spec.vertices)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(imported.model()(x), net(x), rtol=0, atol=1e-6)
    from graphspec.importers.onnx import check
    assert check(imported) <= 1e-4


def test_matmul_and_the_add_of_its_bias_become_one_dense_layer(tmp_path):
    g = np.random.default_rng(4)
    w, b = g.normal(size=(5, 3)).astype(np.float32), g.normal(size=(3,)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="fc"), helper.make_node("Add", ["m", "b"], ["y"],
                                                                                        name="fc_bias")]
    path = _save(tmp_path, nodes, [_info("x", ["N", 5])], [_info("y", ["N", 3])], [("w", w), ("b", b)], name="mm")
    imported = import_model(path)
    assert imported.document["vertices"] == {"y": {"type": "dense", "inputs": ["x"], "out": 3}}
    x = g.normal(size=(4, 5)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(imported.model()(torch.from_numpy(x)).numpy(), x @ w + b, rtol=1e-5, atol=1e-6)
