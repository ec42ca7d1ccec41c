"""Keras import (graphspec/importers/keras.py; docs/import.md, "Keras").

Numbers: every imported network is compared with Keras itself (``model.predict``, torch backend, no TensorFlow)
on random weights and inputs, after feeding graphspec the NHWC inputs as NCHW (sequences [N, T, F] as [N, F, T]).
Both file formats are checked: ``.keras`` (Keras 3 zip) and ``.h5`` (the Keras 2 HDF5 layout, which Keras 3 still
writes). Files written by hand with h5py (Keras 2 configurations as tf.keras writes them, and hostile files) need
only h5py and run without Keras.
"""
from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras: Keras 3 on torch, no TensorFlow

h5py = pytest.importorskip("h5py")

import graphspec  # noqa: E402
from graphspec.cli import main  # noqa: E402
from graphspec.importers import import_model  # noqa: E402
from graphspec.importers.common import ImportRefused  # noqa: E402
from graphspec.importers.keras import import_keras  # noqa: E402

TOL = 1e-4


# --- helpers -----------------------------------------------------------------------------------------------------
def to_graphspec(x: np.ndarray) -> torch.Tensor:
    """Keras's layouts -> graphspec's: NHWC -> NCHW, [N, T, F] -> [N, F, T]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t.transpose(1, 2) if t.dim() == 3 else t


def to_keras(y: torch.Tensor) -> np.ndarray:
    y = y.detach().numpy()
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y.transpose(0, 2, 1) if y.ndim == 3 else y


def run(imported, xs, index_inputs=()):
    net = imported.model()
    with torch.no_grad():
        out = net(*[torch.from_numpy(x)[:, None, :].float() if i in index_inputs else to_graphspec(x)
                    for i, x in enumerate(xs)])
    outs = list(out.values()) if isinstance(out, dict) else [out]
    return [to_keras(o) for o in outs]


def max_diff(got, want) -> float:
    want = want if isinstance(want, list) else [want]
    assert len(got) == len(want)
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))


def refused(path, **kw) -> str:
    with pytest.raises(ImportRefused) as e:
        import_keras(path, **kw)
    return str(e.value)


# --- Keras-written models ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    k = pytest.importorskip("keras")
    if k.backend.backend() != "torch":
        pytest.skip("these tests run Keras on the torch backend")
    return k  # no global seeding or thread settings: every test draws from its own numpy generator


def randomize(model, rng):
    """Random weights everywhere (small enough that softmax outputs do not saturate); positive variances well
    below 1 so that a forgotten epsilon shows."""
    for layer in model.layers:
        new = []
        for v in layer.weights:
            shape = tuple(v.shape)
            new.append(rng.uniform(0.02, 0.1, shape) if "variance" in v.path else
                       rng.uniform(0.1, 0.3, shape) if "gamma" in v.path else rng.standard_normal(shape) * 0.3)
        if new:
            layer.set_weights([w.astype("float32") for w in new])


def save_both(model, folder):
    paths = {}
    for ext in ("keras", "h5"):
        paths[ext] = folder / f"{model.name}.{ext}"
        model.save(paths[ext])
    return paths


@pytest.fixture(scope="module")
def models(keras, tmp_path_factory):
    """The issue's models, saved in both formats: name -> (paths, inputs, Keras's outputs)."""
    L = keras.layers
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("keras")
    built = {}

    seq = keras.Sequential([
        keras.Input((14, 12, 3), name="image"),
        L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv1"),   # 7x6
        L.Conv2D(6, 3, padding="valid", name="conv2"),                                 # 5x4
        L.BatchNormalization(name="bn1"),
        L.MaxPooling2D(2, name="pool1"),                                               # 2x2x6
        L.Flatten(name="flat"),
        L.Dense(5, activation="softmax", name="fc"),
    ], name="seqcnn")

    a, b = keras.Input((8, 8, 3), name="a"), keras.Input((6,), name="b")
    c1 = L.Conv2D(4, 3, padding="valid", activation="relu", name="c1")(a)
    c2 = L.Conv2D(3, 3, padding="valid", name="c2")(a)
    merged = L.Concatenate(name="merge")([c1, c2])
    pooled = L.GlobalAveragePooling2D(name="gap")(merged)
    s = L.Add(name="add")([L.Dense(8, name="d1")(pooled), L.Dense(8, name="d2")(b)])
    two = keras.Model([a, b], [L.Dense(3, activation="softmax", name="out1")(s), L.Dense(1, name="out2")(s)],
                      name="twohead")

    x = keras.Input((7, 5), name="seq")
    h = L.LSTM(6, return_sequences=True, name="lstm")(x)
    h = L.Bidirectional(L.GRU(3, return_sequences=True), name="bigru")(h)
    h = L.SimpleRNN(4, name="rnn")(h)
    rnn = keras.Model(x, L.Dense(2, name="head")(h), name="recurrent")

    for model in (seq, two, rnn):
        randomize(model, rng)
        xs = [rng.standard_normal((3, *i.shape[1:])).astype("float32") for i in model.inputs]
        ys = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
        if model.name == "seqcnn":
            assert 0.05 < ys.max() < 0.95  # not saturated: the checks below see every difference
        built[model.name] = (save_both(model, folder), xs, ys)
    return built


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_sequential_cnn_matches_keras(models, ext, tmp_path):
    paths, xs, ys = models["seqcnn"]
    imported = import_keras(paths[ext])
    doc = imported.document
    assert list(doc["vertices"]) == ["conv1", "conv2", "bn1", "pool1", "flat", "fc"]  # the Keras layer names
    assert doc["inputs"] == {"image": {"type": "convolutional", "channels": 3, "height": 14, "width": 12}}
    assert doc["outputs"] == ["fc"]
    assert doc["vertices"]["conv1"]["convolution_mode"] == "same" and doc["vertices"]["conv1"]["stride"] == 2
    assert doc["vertices"]["conv2"]["convolution_mode"] == "truncate"
    assert doc["vertices"]["bn1"]["eps"] == pytest.approx(1e-3) and doc["vertices"]["bn1"]["decay"] == 0.99
    assert "NCHW" in doc["description"] and any(n.startswith("images are NCHW") for n in imported.notes)
    assert max_diff(run(imported, xs), ys) < TOL

    # the written spec and model file: `graphspec summary` reads the spec, graphspec.load the model file
    spec_path, model_path = imported.write(tmp_path)
    assert main(["summary", str(spec_path)]) == 0
    assert "NCHW" in spec_path.read_text()
    net = graphspec.load(model_path).eval()
    with torch.no_grad():
        assert float(np.abs(to_keras(net(to_graphspec(xs[0]))) - ys).max()) < TOL


def test_flatten_needs_the_permuted_rows_and_bn_the_epsilon(models):
    """The two traps that give plausible but wrong numbers: without permuting the Dense rows after Flatten
    (Keras flattens H, W, C) and without Keras's epsilon in the running variance, the outputs differ."""
    paths, xs, ys = models["seqcnn"]
    imported = import_keras(paths["keras"])
    w = imported.weights
    fc = w["fc.weight"].copy()
    w["fc.weight"] = fc.reshape(5, 2, 2, 6).transpose(0, 3, 1, 2).reshape(5, -1)  # undo the (C, H, W) reorder
    assert max_diff(run(imported, xs), ys) > 1e-2
    w["fc.weight"] = fc
    w["bn1.running_var"] = w["bn1.running_var"] - 1e-3
    assert max_diff(run(imported, xs), ys) > 1e-3


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_functional_merge_two_outputs_matches_keras(models, ext, tmp_path):
    paths, xs, ys = models["twohead"]
    imported = import_model(paths[ext])  # through graphspec.importers' front door
    doc = imported.document
    assert list(doc["inputs"]) == ["a", "b"] and doc["outputs"] == ["out1", "out2"]
    assert doc["vertices"]["merge"] == {"type": "merge", "inputs": ["c1", "c2"], "axis": 1}  # Keras axis -1
    assert doc["vertices"]["add"] == {"type": "elementwise", "inputs": ["d1", "d2"], "op": "add"}
    assert max_diff(run(imported, xs), ys) < TOL
    spec_path, model_path = imported.write(tmp_path)
    assert main(["summary", str(spec_path)]) == 0
    net = graphspec.load(model_path).eval()
    with torch.no_grad():
        out = net(*map(to_graphspec, xs))
    assert max_diff([to_keras(out["out1"]), to_keras(out["out2"])], ys) < TOL


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_recurrent_layers_match_keras(models, ext):
    paths, xs, ys = models["recurrent"]
    imported = import_keras(paths[ext])
    v = imported.document["vertices"]
    assert v["lstm"]["type"] == "lstm" and v["bigru"]["bidirectional"] == "concat"
    assert v["rnn_last"] == {"type": "time_step", "inputs": ["rnn"], "index": -1}  # return_sequences=False
    assert imported.document["inputs"] == {"seq": {"type": "recurrent", "size": 5, "length": 7}}
    assert max_diff(run(imported, xs), ys) < TOL


def layer_zoo(keras):
    """Small models covering every supported layer type and option, each checked against Keras."""
    L = keras.layers
    out = []
    i = keras.Input((9, 8, 3), name="img")
    x = L.Conv2D(4, 3, strides=2, padding="same", dilation_rate=1, activation="relu", name="c1")(i)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.SeparableConv2D(5, 3, padding="valid", activation="tanh", name="sep")(x)
    x = L.Conv2D(6, 1, use_bias=False, name="c2")(x)
    x = L.BatchNormalization(center=False, name="bn")(x)
    x = L.Conv2D(6, 2, groups=2, dilation_rate=1, name="grouped")(x)
    y = L.Conv2D(2, 3, dilation_rate=2, padding="same", name="dilated")(i)
    out.append(keras.Model(i, [x, y], name="convs"))

    i = keras.Input((8, 8, 3), name="img")
    x = L.ZeroPadding2D(((1, 2), (0, 1)), name="zp")(i)
    x = L.Cropping2D(((1, 0), (0, 1)), name="crop")(x)
    x = L.UpSampling2D(2, name="up")(x)
    y = L.UpSampling2D((2, 1), interpolation="bilinear", name="upb")(i)
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="dc")(x)
    y = L.Conv2DTranspose(4, 4, strides=2, padding="valid", name="dcv")(y)
    out.append(keras.Model(i, [x, y], name="resize"))

    i = keras.Input((9, 9, 3), name="img")
    r = L.ReLU(name="r")(i)
    outs = [L.MaxPooling2D(3, strides=2, padding="same", name="mps")(r),   # exact after a ReLU
            L.AveragePooling2D(3, strides=3, padding="same", name="aps")(i),  # no padding needed: exact
            L.MaxPooling2D(2, name="mp")(i), L.AveragePooling2D((2, 3), strides=(1, 2), name="ap")(i),
            L.GlobalMaxPooling2D(keepdims=True, name="gmp")(i)]
    out.append(keras.Model(i, outs, name="pools"))

    i = keras.Input((4, 3, 2), name="img")
    x = L.Flatten(name="flat")(i)
    x = L.Dropout(0.3, name="drop")(x)
    x = L.BatchNormalization(name="bnv")(x)        # per-feature parameters follow the permuted features
    x = L.LeakyReLU(negative_slope=0.2, name="lrelu")(x)
    out.append(keras.Model(i, L.Dense(5, name="fc")(x), name="flat_chain"))

    i, j = keras.Input((4, 3, 2), name="img"), keras.Input((5,), name="vec")
    f = L.Flatten(name="flat")(i)
    out.append(keras.Model([i, j], L.Dense(3, name="fc")(L.Concatenate(name="cat")([f, j])), name="flat_cat"))

    i = keras.Input((4, 3, 2), name="img")
    f = L.Flatten(name="flat")(i)               # also a model output: Keras's order is needed as it is
    out.append(keras.Model(i, [L.Activation("sigmoid", name="act")(f), L.Dense(3, name="fc")(f)], name="flat_out"))

    i = keras.Input((12,), name="v")
    x = L.Conv2D(2, 1, name="c")(L.Reshape((2, 3, 2), name="rs")(i))
    y = L.Permute((2, 1), name="perm")(L.Reshape((4, 3), name="rs2")(i))
    out.append(keras.Model(i, [x, y, L.Reshape((-1,), name="rs3")(x)], name="reshapes"))

    i = keras.Input((4, 5, 3), name="img")
    out.append(keras.Model(i, [L.Permute((3, 1, 2), name="p1")(i), L.Dense(4, name="pixels")(i),
                               L.LayerNormalization(name="ln")(i), L.Softmax(name="sm")(i),
                               L.Rescaling(1 / 255., offset=-1, name="resc")(i)], name="misc"))

    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(3, activation="elu", name="shared")
    outs = [layer(name=n)([a, b]) for layer, n in [(L.Add, "add"), (L.Subtract, "sub"), (L.Multiply, "mul"),
                                                    (L.Average, "avg"), (L.Maximum, "max"), (L.Minimum, "min")]]
    outs += [shared(a), shared(b)] + [L.Activation(f, name=f)(a) for f in (
        "gelu", "selu", "swish", "hard_swish", "softplus", "softsign", "mish", "relu6")]
    outs += [L.ELU(name="elu")(a), L.ReLU(max_value=6, name="r6")(a)]
    out.append(keras.Model([a, b], outs, name="merges"))

    s = keras.Input((7, 5), name="seq")
    x = L.Conv1D(4, 3, padding="causal", dilation_rate=2, name="c1d")(s)
    x = L.MaxPooling1D(2, name="mp1")(L.Conv1D(4, 3, padding="same", strides=2, name="c1s")(x))
    outs = [x, L.GRU(3, return_sequences=True, name="gru")(s), L.SimpleRNN(3, name="srnn")(s),
            L.LSTM(3, go_backwards=True, return_sequences=True, name="lstmb")(s),
            L.GlobalAveragePooling1D(name="gap1")(s),
            L.Bidirectional(L.LSTM(2, return_sequences=True), name="bi")(s),
            L.Bidirectional(L.GRU(2), merge_mode="sum", name="bi2")(s), L.Dense(3, name="steps")(s)]
    out.append(keras.Model(s, outs, name="sequences"))
    return out


def test_layer_zoo_matches_keras(keras, tmp_path):
    rng = np.random.default_rng(1)
    for model in layer_zoo(keras):
        randomize(model, rng)
        xs = [rng.standard_normal((2, *i.shape[1:])).astype("float32") for i in model.inputs]
        ys = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
        for ext, path in save_both(model, tmp_path).items():
            imported = import_keras(path)
            assert max_diff(run(imported, xs), ys) < TOL, f"{model.name}.{ext}"
            v = imported.document["vertices"]
            if model.name == "merges":
                assert v["shared_1"] == {"shares": "shared", "inputs": ["b"]}  # a layer called twice
            if model.name == "flat_out":  # the Flatten feeds an output: a permute to Keras's order, then flatten
                assert v["flat_keras_order"] == {"type": "permute", "inputs": ["img"], "dims": [2, 3, 1]}
            if model.name == "flat_chain":  # only a Dense needs the order: its rows are permuted instead
                assert v["flat"] == {"type": "reshape", "inputs": ["img"], "shape": [-1]}


def test_nested_models_are_flattened(keras, tmp_path):
    """A functional base called twice (its layers become shared vertices) and a nested Sequential whose layer
    name clashes with the base's (renamed <model>/<layer>), as transfer learning and Siamese networks write them."""
    L = keras.layers
    x = keras.Input((6, 6, 3), name="x")
    base = keras.Model(x, L.BatchNormalization(name="bn")(L.Conv2D(2, 3, name="conv")(x)), name="base")
    head = keras.Sequential([L.GlobalAveragePooling2D(name="gp"), L.Dense(3, name="conv")], name="head")
    a, b = keras.Input((6, 6, 3), name="a"), keras.Input((6, 6, 3), name="b")
    model = keras.Model([a, b], L.Subtract(name="diff")([head(base(a)), head(base(b, training=False))]),
                        name="siamese")
    rng = np.random.default_rng(4)
    randomize(model, rng)
    xs = [rng.standard_normal((2, 6, 6, 3)).astype("float32") for _ in range(2)]
    ys = model.predict(xs, verbose=0)
    for ext, path in save_both(model, tmp_path).items():
        imported = import_keras(path)
        v = imported.document["vertices"]
        assert list(v) == ["conv", "conv_1", "bn", "bn_1", "gp", "gp_1", "head_conv", "head_conv_1", "diff"], ext
        assert v["conv_1"] == {"shares": "conv", "inputs": ["b"]}
        assert v["head_conv_1"] == {"shares": "head_conv", "inputs": ["gp_1"]}
        assert max_diff(run(imported, xs), ys) < TOL, ext


def test_keras_application_in_a_transfer_model(keras, tmp_path):
    """Keras's own MobileNetV2 (depthwise convolutions, ReLU6, ZeroPadding2D, residual Adds, 52 batch norms) as the
    base of a Sequential classifier, Keras's initialisation with perturbed batch-norm statistics, no softmax."""
    L = keras.layers
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False, alpha=0.35)
    model = keras.Sequential([keras.Input((32, 32, 3), name="image"), base, L.GlobalAveragePooling2D(name="pool"),
                              L.Dropout(0.2, name="drop"), L.Dense(4, name="classes")], name="transfer")
    rng = np.random.default_rng(5)
    for layer in base.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.8, 1.2, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2, n)])
    x = rng.standard_normal((2, 32, 32, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    model.save(tmp_path / "transfer.keras")
    imported = import_keras(tmp_path / "transfer.keras")
    v = imported.document["vertices"]
    assert list(v)[:3] == ["Conv1", "bn_Conv1", "Conv1_relu"] and list(v)[-3:] == ["pool", "drop", "classes"]
    assert np.abs(y).max() > 0.05 and max_diff(run(imported, [x]), y) < 1e-5


def test_embedding_takes_class_indices(keras, tmp_path):
    L = keras.layers
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    model = keras.Model(tokens, L.LSTM(3, name="lstm")(L.Embedding(10, 4, name="emb")(tokens)), name="emb")
    randomize(model, np.random.default_rng(2))
    xs = [np.random.default_rng(3).integers(0, 10, (2, 6)).astype("int32")]
    model.save(tmp_path / "emb.keras")
    imported = import_keras(tmp_path / "emb.keras")
    assert imported.document["inputs"] == {"tokens": {"type": "recurrent", "size": 1, "length": 6}}
    assert max_diff(run(imported, xs, index_inputs=(0,)), model.predict(xs[0], verbose=0)) < TOL


def test_unsupported_layers_are_listed_at_once(keras, tmp_path):
    """A Lambda (never decoded) and a Conv3D, both named, in one refusal; neither file is partly imported."""
    L = keras.layers
    img, vol = keras.Input((8, 8, 3), name="img"), keras.Input((4, 4, 4, 1), name="vol")
    out1 = L.Lambda(lambda t: t + 1, name="plus_one")(img)
    out2 = L.Conv3D(2, 1, name="volconv")(vol)
    out3 = L.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(img)
    out4 = L.Conv2D(2, 3, data_format="channels_first", name="chfirst")(img)
    model = keras.Model([img, vol], [out1, out2, out3, out4], name="lam")
    for ext, path in save_both(model, tmp_path).items():
        message = refused(path)
        assert message == (
            f"{path}: cannot import lam.{ext} exactly; graphspec cannot express:\n"
            "  AveragePooling2D: padding 'same' where windows reach past the edge: Keras ignores the padded cells, "
            "graphspec pools them as 0 (nodes: avg_same)\n"
            "  Conv2D: data_format 'channels_first' (only channels_last, Keras's default, is imported) "
            "(nodes: chfirst)\n"
            "  Conv3D: layer type not supported (nodes: volconv)\n"
            "  InputLayer: input shape [4, 4, 4, 1] (graphspec takes vectors [F], sequences [T, F] and images "
            "[H, W, C] of known height and width) (nodes: vol)\n"
            "  Lambda: runs Python code stored in the file; graphspec never decodes or runs it (write the "
            "operation as graphspec vertices) (nodes: plus_one)")


def test_keras3_hard_sigmoid_is_refused(keras, tmp_path):
    """Keras 3's hard_sigmoid is x/6 + 1/2; graphspec's hardsigmoid is Keras 2's (and DL4J's) 0.2x + 1/2."""
    L = keras.layers
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, activation="hard_sigmoid", name="fc")(x), name="hs")
    model.save(tmp_path / "hs.keras")
    assert refused(tmp_path / "hs.keras").endswith(
        "  activation hard_sigmoid: Keras 3's hard_sigmoid is clip(x/6 + 1/2, 0, 1); graphspec's hardsigmoid is "
        "DL4J's clip(0.2x + 1/2, 0, 1) (nodes: fc)")


# --- hand-written files: Keras 2 layouts and hostile files (h5py only) ---------------------------------------
RNG = np.random.default_rng(7)
K1, B1 = RNG.standard_normal((3, 3, 2, 4)).astype("f4"), RNG.standard_normal(4).astype("f4")
GAMMA, BETA = RNG.uniform(0.5, 1.5, 4).astype("f4"), RNG.standard_normal(4).astype("f4")
MEAN, VAR = RNG.standard_normal(4).astype("f4"), RNG.uniform(0.01, 0.1, 4).astype("f4")
K2, B2 = RNG.standard_normal((4 * 4 * 4, 3)).astype("f4"), RNG.standard_normal(3).astype("f4")


def keras2_config(lambda_layer=False):
    """A functional model as tf.keras 2.x writes it: batch_input_shape, [[[layer, node, tensor, kwargs]]], BN
    axis [3]."""
    layers = [
        {"class_name": "InputLayer", "name": "img", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 6, 6, 2], "dtype": "float32", "sparse": False, "name": "img"}},
        {"class_name": "Conv2D", "name": "conv", "inbound_nodes": [[["img", 0, 0, {}]]],
         "config": {"name": "conv", "trainable": True, "dtype": "float32", "filters": 4, "kernel_size": [3, 3],
                    "strides": [1, 1], "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
                    "activation": "relu", "use_bias": True, "kernel_regularizer": {"class_name": "L2",
                                                                                   "config": {"l2": 0.01}}}},
        {"class_name": "BatchNormalization", "name": "bn", "inbound_nodes": [[["conv", 0, 0, {}]]],
         "config": {"name": "bn", "axis": [3], "momentum": 0.9, "epsilon": 0.001, "center": True, "scale": True}},
        {"class_name": "Flatten", "name": "flat", "inbound_nodes": [[["bn", 0, 0, {}]]],
         "config": {"name": "flat", "data_format": "channels_last"}},
        {"class_name": "Dense", "name": "fc", "inbound_nodes": [[["flat", 0, 0, {}]]],
         "config": {"name": "fc", "units": 3, "activation": "linear", "use_bias": True}},
    ]
    if lambda_layer:  # the marshalled bytecode is garbage here: an importer that decoded it would fail differently
        layers.append({"class_name": "Lambda", "name": "evil", "inbound_nodes": [[["fc", 0, 0, {}]]],
                       "config": {"name": "evil", "function": ["!!! not base64, never decoded !!!", None, None],
                                  "function_type": "lambda", "module": "os", "output_shape": None}})
    return {"class_name": "Functional", "keras_version": "2.11.0", "backend": "tensorflow",
            "config": {"name": "k2net", "layers": layers, "input_layers": [["img", 0, 0]],
                       "output_layers": [[layers[-1]["name"], 0, 0]]}}


def write_keras2(path, config=None, weights=None, link=None):
    """A Keras 2 .h5: model_config, model_weights/<layer>/<layer>/<name>:0 datasets named by weight_names."""
    config = config or keras2_config()
    weights = weights or {"conv": [("kernel:0", K1), ("bias:0", B1)],
                          "bn": [("gamma:0", GAMMA), ("beta:0", BETA), ("moving_mean:0", MEAN),
                                 ("moving_variance:0", VAR)],
                          "fc": [("kernel:0", K2), ("bias:0", B2)]}
    names = [entry["name"] for entry in config["config"]["layers"]]
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = config["keras_version"].encode()
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [n.encode() for n in names]
        for n in names:
            lg = g.create_group(n)
            ws = weights.get(n, [])
            lg.attrs["weight_names"] = [f"{n}/{w}".encode() for w, _ in ws]
            for w, a in ws:
                if link and (n, w) == link[0]:
                    lg[f"{n}/{w}"] = link[1]
                else:
                    lg.create_dataset(f"{n}/{w}", data=a)
    return path


def keras2_reference(x):
    """The hand-written network in numpy: conv (valid, relu), batch normalisation, NHWC flatten, dense."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))  # [N, 4, 4, C, 3, 3]
    y = np.maximum(np.einsum("nhwcij,ijco->nhwo", windows, K1) + B1, 0)
    y = (y - MEAN) / np.sqrt(VAR + 1e-3) * GAMMA + BETA
    return y.reshape(len(x), -1) @ K2 + B2


def test_keras2_h5_written_by_hand_matches_numpy(tmp_path):
    path = write_keras2(tmp_path / "k2.h5")
    imported = import_keras(path)
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype("f4")
    assert max_diff(run(imported, [x]), keras2_reference(x)) < TOL
    assert imported.document["vertices"]["bn"]["decay"] == 0.9
    assert any(n.startswith("regularizers are training settings") and n.endswith("(conv)") for n in imported.notes)


def test_keras2_lambda_is_refused_without_decoding(tmp_path):
    path = write_keras2(tmp_path / "k2lambda.h5", config=keras2_config(lambda_layer=True))
    assert refused(path) == (
        f"{path}: cannot import k2lambda.h5 exactly; graphspec cannot express:\n"
        "  Lambda: runs Python code stored in the file; graphspec never decodes or runs it (write the operation as "
        "graphspec vertices) (nodes: evil)")


def test_hdf5_external_link_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as o:
        o["w"] = K2
    path = write_keras2(tmp_path / "linked.h5", link=(("fc", "kernel:0"), h5py.ExternalLink("other.h5", "/w")))
    assert refused(path) == (f"{path}: layer 'fc': 'model_weights/fc/fc/kernel:0' is an external link to "
                             "other.h5:/w; only data stored in the file itself is read")


def test_hdf5_external_storage_and_wrong_shapes_are_refused(tmp_path):
    raw = tmp_path / "secret.raw"
    raw.write_bytes(B2.tobytes())
    path = write_keras2(tmp_path / "ext.h5")
    with h5py.File(path, "a") as f:
        del f["model_weights/fc/fc/bias:0"]
        f["model_weights/fc/fc"].create_dataset("bias:0", shape=(3,), dtype="<f4", external=[(str(raw), 0, 12)])
    assert refused(path) == (f"{path}: layer 'fc': weight 'bias' (model_weights/fc/fc/bias:0) keeps its data in "
                             f"an external file ({raw}); only data stored in the file itself is read")

    path = write_keras2(tmp_path / "shape.h5", weights={
        "conv": [("kernel:0", K1), ("bias:0", B1)],
        "bn": [("gamma:0", GAMMA), ("beta:0", BETA), ("moving_mean:0", MEAN), ("moving_variance:0", VAR)],
        "fc": [("kernel:0", K2[:16]), ("bias:0", B2)]})
    assert refused(path) == (f"{path}: layer 'fc': weight 'kernel' (model_weights/fc/fc/kernel:0) has shape "
                             "(16, 3), but the layer's configuration needs (64, 3)")

    with h5py.File(tmp_path / "weights_only.h5", "w") as f:
        f.create_group("model_weights")
    assert refused(tmp_path / "weights_only.h5").endswith(
        "the HDF5 file has no 'model_config' attribute: a weights-only file (save the whole model with "
        "model.save) or not a Keras model")


def keras3_zip(path, *, config=None, extra=(), compression=zipfile.ZIP_STORED, config_bytes=None):
    """A .keras file written by hand: a Sequential Dense model (Keras 3's config and weight paths)."""
    config = config or {
        "module": "keras", "class_name": "Sequential", "registered_name": None,
        "config": {"name": "tiny", "layers": [
            {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "x"}},
            {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
             "config": {"name": "fc", "units": 2, "activation": "tanh", "use_bias": True}}]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        g = f.create_group("layers/dense/vars")
        g.attrs["name"] = "fc"
        g["0"], g["1"] = K2[:4, :2], B2[:2]
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", config_bytes if config_bytes is not None else json.dumps(config))
        z.writestr("model.weights.h5", buf.getvalue())
        for name, data in extra:
            z.writestr(name, data)
    return path


def test_keras3_file_written_by_hand_matches_numpy(tmp_path):
    imported = import_keras(keras3_zip(tmp_path / "tiny.keras"))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype("f4")
    assert max_diff(run(imported, [x]), np.tanh(x @ K2[:4, :2] + B2[:2])) < TOL


def test_zip_members_outside_the_archive_are_refused(tmp_path):
    for bad in ("../x", "/etc/passwd", "assets/../../x"):
        path = keras3_zip(tmp_path / "evil.keras", extra=[(bad, b"x")])
        with zipfile.ZipFile(path) as z:
            name = [i.filename for i in z.infolist()][-1]  # as the zip stores it
        assert refused(path) == f"{path}: zip member '{name}' points outside the archive; refusing the whole file"


def test_zip_bomb_is_refused(tmp_path):
    path = keras3_zip(tmp_path / "bomb.keras", compression=zipfile.ZIP_DEFLATED,
                      config_bytes=b"{}" + b" " * (4 << 20))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("config.json")
    assert refused(path) == (f"{path}: zip member 'config.json' expands {info.file_size} bytes from "
                             f"{info.compress_size} (more than 100x): a zip bomb, not a Keras file")


def test_absurdly_nested_config_is_refused(tmp_path):
    deep = keras3_zip(tmp_path / "deep.keras", config_bytes=b"[" * 100_000 + b"]" * 100_000)
    assert refused(deep) == f"{deep}: config.json is nested too deeply to be a Keras configuration"
    nested = keras3_zip(tmp_path / "nested.keras", config_bytes=b"[" * 300 + b"]" * 300)
    assert refused(nested) == (f"{nested}: config.json is nested more than 100 levels deep; a Keras "
                               "configuration is not")


def test_not_a_keras_file_and_weight_mismatches(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    assert refused(junk) == f"{junk}: not a Keras model file: neither a .keras zip nor an HDF5 (.h5) file"
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "tiny", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "x"}},
        {"class_name": "Dense", "config": {"name": "fc", "units": 3, "activation": "linear"}}]}}
    path = keras3_zip(tmp_path / "mismatch.keras", config=config)
    assert refused(path) == (f"{path}: layer 'fc': weight 'kernel' (layers/dense/vars/0) has shape (4, 2), but the "
                             "layer's configuration needs (4, 3)")
    sub = {"module": "mine", "class_name": "MyModel", "config": {}}
    path = keras3_zip(tmp_path / "subclassed.keras", config=sub)
    assert refused(path) == (f"{path}: model class 'MyModel' is not a Sequential or Functional model: a subclassed "
                             "model's structure is Python code, not configuration, and is not imported")


def test_custom_layers_are_refused_by_name(tmp_path):
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "tiny", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "x"}},
        {"module": "my_package.layers", "class_name": "Dense", "registered_name": "my_package>Dense",
         "config": {"name": "fc", "units": 2}}]}}
    path = keras3_zip(tmp_path / "custom.keras", config=config)
    assert refused(path) == (f"{path}: cannot import custom.keras exactly; graphspec cannot express:\n"
                             "  Dense: a custom layer (my_package>Dense): its code is not Keras's (nodes: fc)")
