"""Model files, second round (issue 23): the JSON in a model file is bounded (nesting depth, digits, finite numbers)
before it is parsed; the preprocessing record's numbers are checked when the file is loaded; the embedded spec goes
through the spec loader's limits; tensors must have the dtype the compiled module has; non-finite weights are named in
a warning and no verification, identification or clustering number is computed from non-finite embeddings;
``--threshold`` is a finite number. Every refusal is a located error with exit status 2, never an internal error."""
from __future__ import annotations

import hashlib
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import graphspec
from graphspec import model_io
from graphspec.cli import main
from graphspec.data.preprocessing import MAX_IMAGE_SIDE
from graphspec.errors import GraphspecError
from graphspec.faces.embed import embed, image_files
from graphspec.faces.verify.scoring import verify
from graphspec.model_io import (MAX_JSON_DEPTH, MAX_JSON_DIGITS, MAX_JSON_VALUES, ModelFileError, ModelFileWarning,
                                load, parse_json)
from graphspec.spec.yaml_source import MAX_BYTES

TINY = """
version: 1
name: tiny
seed: 3
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  c: {type: conv, inputs: [x], kernel: 3, out: 4, activation: relu}
  b: {type: batchnorm, inputs: [c]}
  p: {type: global_pool, inputs: [b], pooling: avg}
  d: {type: dense, inputs: [p], out: 5}
  e: {type: l2_normalize, inputs: [d]}
outputs: [e]
"""
PREP = {"size": [8, 8], "channels": "rgb", "scale": "unit"}
DEEP = 100_000


# --- helpers --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny model file, an LFW-layout folder of two people with two photos each, and a pairs file of one matched
    and one mismatched pair."""
    root = tmp_path_factory.mktemp("limits")
    graphspec.save(graphspec.build(TINY), root / "good.safetensors", preprocessing=PREP)
    rng = np.random.default_rng(0)
    for name in ("Ann_A", "Bob_B"):
        (root / "lfw" / name).mkdir(parents=True)
        for i in (1, 2):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "lfw" / name / f"{name}_{i:04d}.jpg")
    (root / "pairs.txt").write_text("1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    return root


def good_parts(folder: Path) -> tuple[dict, dict]:
    """(metadata, tensors) of the good model file, to edit."""
    path = folder / "good.safetensors"
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def variant(folder: Path, out: Path, tensors: dict | None = None, **metadata) -> Path:
    """The good model file with some metadata (a new spec gets its hash) or tensors replaced."""
    meta, good = good_parts(folder)
    meta.update(metadata)
    if "spec" in metadata:
        meta["spec_sha256"] = hashlib.sha256(metadata["spec"].encode()).hexdigest()
    save_file({**good, **(tensors or {})}, str(out), metadata=meta)
    return out


def raw_header_file(out: Path, header_text: str) -> Path:
    raw = header_text.encode()
    out.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return out


def run(*argv) -> tuple[int, str, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    assert "Traceback" not in out.getvalue() + err.getvalue() and "internal error" not in err.getvalue()
    return rc, out.getvalue(), err.getvalue()


def commands(model: Path, folder: Path, tmp: Path) -> dict[str, list]:
    """Every command that reads a model file, each writing (if it got that far) under ``tmp``."""
    lfw = folder / "lfw"
    return {
        "summary": ["summary", model],
        "snip": ["snip", model, "--output", "d", "-o", tmp / "snipped.safetensors"],
        "embed": ["embed", model, lfw, "-o", tmp / "rows.npy"],
        "verify": ["verify", model, "--data", lfw, "--pairs", folder / "pairs.txt"],
        "export": ["export", model, "-o", tmp / "model.onnx", "--no-check"],
        "identify": ["identify", lfw, "--gallery", lfw, "--model", model, "--threshold", "1"],
        "cluster": ["cluster", lfw, "--model", model, "--threshold", "1", "-o", tmp / "clusters.csv"],
    }


# --- the JSON of a model file: depth, digits, finite numbers, before parsing --------------------------------------


DEPTH_MESSAGE = f"nests {{:,}} levels deep; at most {MAX_JSON_DEPTH} are allowed (MAX_JSON_DEPTH)"
DIGITS_MESSAGE = f"holds a 5,000-digit number; at most {MAX_JSON_DIGITS} digits are allowed (MAX_JSON_DIGITS)"


def hostile_files(folder: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the exact error message every command must give)."""
    deep_list = "[" * DEEP + "]" * DEEP
    digits = "9" * 5000
    header = "not a valid model file: its header "
    frozen = "the model file's frozen set is invalid: it "
    prep = "the model file's preprocessing record is invalid: "
    return {
        "deep-header": (raw_header_file(tmp / "deep-header.safetensors",
                                        '{"__metadata__": {"format": "graphspec-model"}, "x": ' + deep_list + "}"),
                        header + DEPTH_MESSAGE.format(DEEP + 1)),
        "deep-frozen": (variant(folder, tmp / "deep-frozen.safetensors", frozen=deep_list),
                        frozen + DEPTH_MESSAGE.format(DEEP)),
        "deep-preprocessing": (variant(folder, tmp / "deep-prep.safetensors", preprocessing=deep_list),
                               prep + "it " + DEPTH_MESSAGE.format(DEEP)),
        "many-values-header": (raw_header_file(tmp / "values-header.safetensors",
                                               '{"x": [' + "[0,0]," * 999_999 + "0]}"),
                               header + f"holds 3,000,000 values; at most {MAX_JSON_VALUES:,} are allowed "
                                        "(MAX_JSON_VALUES)"),
        "long-integer-header": (raw_header_file(tmp / "int-header.safetensors", '{"x": {"dtype": "F32", "shape": ['
                                                + digits + '], "data_offsets": [0, 4]}}'),
                                header + DIGITS_MESSAGE),
        "long-integer-frozen": (variant(folder, tmp / "int-frozen.safetensors", frozen=f"[{digits}]"),
                                frozen + DIGITS_MESSAGE),
        "nan-mean": (variant(folder, tmp / "nan-mean.safetensors", preprocessing=json.dumps(
            {**PREP, "scale": "standardize", "mean": [float("nan")] * 3, "std": [1, 1, 1]})),
            prep + "it holds a non-finite number (NaN); numbers must be finite"),
        "infinite-std": (variant(folder, tmp / "inf-std.safetensors", preprocessing=json.dumps(
            {**PREP, "scale": "standardize", "mean": [0, 0, 0], "std": [1e999, 1, 1]})),
            prep + "it holds a non-finite number (Infinity); numbers must be finite"),
        "overflowing-std": (variant(folder, tmp / "big-std.safetensors", preprocessing=(
            '{"size": [8, 8], "channels": "rgb", "scale": "standardize", "mean": [0, 0, 0], "std": [1e999, 1, 1]}')),
            prep + "it holds a non-finite number (1e999); numbers must be finite"),
        "huge-image-size": (variant(folder, tmp / "huge-size.safetensors",
                                    preprocessing=json.dumps({**PREP, "size": [200_000, 8]})),
                            prep + f"size.0: Input should be less than or equal to {MAX_IMAGE_SIDE}"),
    }


def test_hostile_json_is_refused_by_every_command_with_exit_2(folder, tmp_path):
    for kind, (path, message) in hostile_files(folder, tmp_path).items():
        for name, argv in commands(path, folder, tmp_path).items():
            rc, out, err = run(*argv)
            assert rc == 2, (kind, name, err)
            assert err.splitlines()[-1] == f"error: {path}: {message}", (kind, name, err)
            assert out == "", (kind, name, out)
    for written in ("snipped.safetensors", "rows.npy", "rows.paths.txt", "model.onnx", "clusters.csv"):
        assert not (tmp_path / written).exists(), written  # refused before anything is written


def test_nesting_and_digits_are_checked_before_the_json_is_parsed(folder, tmp_path, monkeypatch):
    files = hostile_files(folder, tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("json.loads ran on text over a limit")
    monkeypatch.setattr(model_io.json, "loads", never)
    for kind in ("deep-header", "many-values-header", "long-integer-header"):
        path, message = files[kind]
        with pytest.raises(ModelFileError) as ei:
            model_io.read_header(path)
        assert ei.value.problem.message == message and ei.value.problem.location.file == str(path)


def test_limits_at_their_boundaries():
    subject = "the text"
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(nested, subject, "f") == json.loads(nested)
    with pytest.raises(ModelFileError) as ei:
        parse_json("[" + nested + "]", subject, "f")
    assert ei.value.problem.message == f"the text {DEPTH_MESSAGE.format(MAX_JSON_DEPTH + 1)}"
    assert ei.value.problem.location.file == "f"
    assert parse_json(f"[{'9' * MAX_JSON_DIGITS}]", subject, "f") == [int("9" * MAX_JSON_DIGITS)]
    with pytest.raises(ModelFileError) as ei:
        parse_json(f"[-{'1' * (MAX_JSON_DIGITS + 1)}]", subject, "f")
    assert ei.value.problem.message == (f"the text holds a {MAX_JSON_DIGITS + 1}-digit number; at most "
                                        f"{MAX_JSON_DIGITS} digits are allowed (MAX_JSON_DIGITS)")
    at_limit = "[" + "0," * (MAX_JSON_VALUES - 2) + "0]"  # the array and its elements
    assert len(parse_json(at_limit, subject, "f")) == MAX_JSON_VALUES - 1
    with pytest.raises(ModelFileError) as ei:
        parse_json(at_limit.replace("[", "[0,", 1), subject, "f")
    assert ei.value.problem.message == (f"the text holds {MAX_JSON_VALUES + 1:,} values; at most {MAX_JSON_VALUES:,} "
                                        "are allowed (MAX_JSON_VALUES)")
    assert parse_json('{"a": [], "b": {}, "c": [[ ], {"d": [1, 2]}]}', subject, "f")  # (8 values)
    # brackets, digits, commas and quotes inside strings are text, not structure
    inside = {"a": "[" * 1000 + "9" * 5000 + "," * MAX_JSON_VALUES + '\\"{{{', "b": ["]]]", "\\\\"]}
    assert parse_json(json.dumps(inside), subject, "f") == inside
    assert parse_json(b'{"pi": 3.141592653589793, "e": -2.5e-300}', subject, "f") == {"pi": 3.141592653589793,
                                                                                        "e": -2.5e-300}


@pytest.mark.parametrize("text, shown", [("[NaN]", "NaN"), ("[-Infinity]", "-Infinity"), ("[1e400]", "1e400"),
                                         ("[-1.5E+999]", "-1.5E+999")])
def test_non_finite_numbers_are_refused(text, shown):
    with pytest.raises(ModelFileError) as ei:
        parse_json(text, "the text", "f")
    assert ei.value.problem.message == f"the text holds a non-finite number ({shown}); numbers must be finite"


def test_not_json_and_invalid_utf8():
    for raw in (b"{not json", b'{"a": "\xff"}'):
        with pytest.raises(ModelFileError) as ei:
            parse_json(raw, "the text", "f")
        assert ei.value.problem.message.startswith("the text is not JSON (")


# --- the embedded spec goes through the spec loader and its limits ------------------------------------------------


TOWER = """
version: 1
name: tower
inputs:
  x: {type: feed_forward, size: 4}
blocks:
  wide:
    vertices:
      $name: {type: dense, inputs: [$input], out: "${10**10**10}"}
vertices:
  w: {block: wide, inputs: [x]}
outputs: [w]
"""


def test_an_exponent_tower_in_the_embedded_spec_is_refused_quickly(folder, tmp_path):
    # the model file's spec is loaded by the same loader as a spec file, so the expression limits apply to it
    path = variant(folder, tmp_path / "tower.safetensors", spec=TOWER)
    for name in ("summary", "embed"):
        rc, out, err = run(*commands(path, folder, tmp_path)[name])
        assert rc == 2, err
        line = err.splitlines()[-1]
        assert line.startswith(f"error: {path}[spec]:9:"), line
        assert "vertex 'w'" in line and "exponent" in line, line


def test_an_embedded_spec_over_the_spec_size_limit_is_refused(folder, tmp_path):
    meta, _ = good_parts(folder)
    spec = meta["spec"] + "#" * MAX_BYTES + "\n"
    path = variant(folder, tmp_path / "big-spec.safetensors", spec=spec)
    with pytest.raises(ModelFileError) as ei:
        load(path)
    assert ei.value.problem.message == (f"the spec stored in the model file is {len(spec.encode()):,} bytes; specs "
                                        f"are limited to {MAX_BYTES:,} bytes")
    assert run("summary", path)[0] == 2


# --- tensors of the dtypes the compiled module has ---------------------------------------------------------------


def test_tensors_of_the_wrong_dtype_are_refused_by_name(folder, tmp_path):
    _, good = good_parts(folder)
    bad = {"c.weight": good["c.weight"].to(torch.int8), "d.bias": good["d.bias"] > 0}
    path = variant(folder, tmp_path / "dtypes.safetensors", tensors=bad)
    expected = ("the weights do not fit the model:\n"
                "  vertex 'c': wrong dtype: c.weight: file int8 vs model float32\n"
                "  vertex 'd': wrong dtype: d.bias: file bool vs model float32")
    with pytest.raises(ModelFileError) as ei:
        load(path)
    assert ei.value.problem.message == expected and ei.value.problem.location.file == str(path)
    for name, argv in commands(path, folder, tmp_path).items():
        if name == "summary":
            continue  # a summary reads no tensors
        rc, out, err = run(*argv)
        assert rc == 2 and f"error: {path}: {expected}" in err, (name, err)
    # not strict: what fits is loaded, the rest is reported and left as initialised
    fresh = graphspec.build(TINY)
    model = load(path, strict=False)
    report = model.graphspec.weights
    assert report.wrong_dtype == {"c": ["c.weight: file int8 vs model float32"],
                                  "d": ["d.bias: file bool vs model float32"]}
    assert report.loaded == len(good) - 2
    assert torch.equal(model.c.weight, fresh.c.weight) and torch.equal(model.d.weight, good["d.weight"])


def test_which_dtypes_fit():
    # floating point takes any floating point; an integer or boolean buffer (no graphspec layer has one today, but
    # torch's own batch norm counts batches in int64) only its own dtype
    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    for model, accepted in ((torch.float32, floats), (torch.int64, (torch.int64,)), (torch.bool, (torch.bool,))):
        for dtype in floats + (torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool, torch.complex64):
            assert model_io.dtype_fits(dtype, model) == (dtype in accepted), (dtype, model)


def test_floating_point_tensors_of_another_width_load(folder, tmp_path):
    _, good = good_parts(folder)
    half = {k: v.half() for k, v in good.items() if v.is_floating_point()}
    model = load(variant(folder, tmp_path / "half.safetensors", tensors=half))
    assert model.graphspec.weights.ok and model.c.weight.dtype == torch.float32
    assert torch.equal(model.c.weight, half["c.weight"].float())


# --- non-finite weights and embeddings ---------------------------------------------------------------------------


def nan_model(folder: Path, tmp_path: Path) -> Path:
    _, good = good_parts(folder)
    return variant(folder, tmp_path / "nan.safetensors",
                   tensors={k: torch.full_like(v, float("nan")) for k, v in good.items() if v.is_floating_point()})


NAN_WARNING = ("8 tensors hold NaN or infinity: b.bias (4 values), b.running_mean (4 values), b.running_var (4 values), "
               "b.weight (4 values), c.bias (4 values) and 3 more; the model's outputs will be NaN or infinite")


def test_non_finite_weights_are_named_in_a_warning_at_load(folder, tmp_path):
    path = nan_model(folder, tmp_path)
    with pytest.warns(ModelFileWarning) as caught:
        model = load(path)
    [w] = caught
    assert str(w.message) == f"{path}: {NAN_WARNING}"
    assert model.graphspec.weights.non_finite == {"b.bias": 4, "b.running_mean": 4, "b.running_var": 4,
                                                  "b.weight": 4, "c.bias": 4, "c.weight": 108, "d.bias": 5,
                                                  "d.weight": 20}
    # a few values, and a float64 value that overflows float32 when loaded
    _, good = good_parts(folder)
    weight = good["d.weight"].clone()
    weight[0, :3] = float("nan")
    some = variant(folder, tmp_path / "some.safetensors",
                   tensors={"d.weight": weight, "c.bias": good["c.bias"].double().index_fill(0, torch.tensor([1]), 1e300)})
    with pytest.warns(ModelFileWarning) as caught:
        load(some)
    assert [str(w.message) for w in caught] == [
        f"{some}: 2 tensors hold NaN or infinity: c.bias (1 values), d.weight (3 values); the model's outputs will be "
        "NaN or infinite"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(folder / "good.safetensors").graphspec.weights.non_finite == {}


def expected_refusal(path: Path, names: list, total: int) -> str:
    return (f"error: {path}: {len(names)} of {total} embeddings hold NaN or infinity ({', '.join(map(str, names))}): "
            "the model computes non-finite values (its weights hold NaN or infinity); no distances can be scored from "
            "them")


def test_verify_identify_and_cluster_refuse_non_finite_embeddings(folder, tmp_path):
    path = nan_model(folder, tmp_path)
    lfw = folder / "lfw"
    photos = image_files([lfw])
    argv = commands(path, folder, tmp_path)
    rc, out, err = run(*argv["verify"])
    # the three images of the pairs file, in the order they are embedded
    pair_images = [lfw / "Ann_A" / "Ann_A_0001.jpg", lfw / "Ann_A" / "Ann_A_0002.jpg", lfw / "Bob_B" / "Bob_B_0001.jpg"]
    assert (rc, out) == (2, "") and err.splitlines()[-1] == expected_refusal(path, pair_images, 3), err
    assert "ROC AUC" not in out + err
    for name in ("identify", "cluster"):
        rc, out, err = run(*argv[name])
        assert (rc, out) == (2, "") and err.splitlines()[-1] == expected_refusal(path, photos[:4], 4), (name, err)
        assert err.splitlines()[0] == f"warning: {path}: {NAN_WARNING}"
    assert not (tmp_path / "clusters.csv").exists()
    with pytest.warns(ModelFileWarning):
        model = load(path)
    with pytest.raises(GraphspecError) as ei:
        verify(model, lfw, folder / "pairs.txt")
    assert ei.value.problem.location.file == str(path)


def test_finite_weights_that_overflow_are_refused_too(folder, tmp_path):
    _, good = good_parts(folder)
    # each output of 'd' adds a product that overflows to +inf and one that overflows to -inf: NaN
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).expand_as(good["d.weight"])
    huge = {"c.weight": torch.full_like(good["c.weight"], 1e30), "d.weight": signs * 1e30}
    path = variant(folder, tmp_path / "huge.safetensors", tensors=huge)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the weights are finite: no warning at load
        model = load(path)
    with pytest.raises(GraphspecError) as ei:
        verify(model, folder / "lfw", folder / "pairs.txt")
    assert ei.value.problem.message.startswith("3 of 3 embeddings hold NaN or infinity (")
    assert ei.value.problem.message.endswith("): the model computes non-finite values (its activations overflow on "
                                             "these images); no distances can be scored from them")


def test_embed_writes_non_finite_rows_with_a_warning(folder, tmp_path):
    path = nan_model(folder, tmp_path)
    photos = image_files([folder / "lfw"])
    rc, out, err = run(*commands(path, folder, tmp_path)["embed"])
    assert rc == 0, err
    assert (f"warning: {path}: 4 of 4 embeddings hold NaN or infinity ({', '.join(map(str, photos))}): the model "
            "computes non-finite values (its weights hold NaN or infinity); they are written as computed"
            ) in err.splitlines(), err
    rows = np.load(tmp_path / "rows.npy")
    assert rows.shape == (4, 5) and np.isnan(rows).all()


def test_finite_models_embed_without_warnings_and_the_option_is_checked(folder):
    model = load(folder / "good.safetensors")
    files = image_files([folder / "lfw"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, done, skipped = embed(model, files)
    assert np.isfinite(rows).all() and len(done) == 4 and skipped == []
    with pytest.raises(ValueError, match="non_finite must be one of refuse, warn; received 'ignore'"):
        embed(model, files, non_finite="ignore")


# --- --threshold is a finite number ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, reason", [("nan", "expected a finite number; received 'nan'"),
                                           ("inf", "expected a finite number; received 'inf'"),
                                           ("-Infinity", "expected a finite number; received '-Infinity'"),
                                           ("1e999", "expected a finite number; received '1e999'"),
                                           ("abc", "expected a number; received 'abc'")])
def test_threshold_must_be_finite(folder, tmp_path, capsys, value, reason):
    argv = commands(folder / "good.safetensors", folder, tmp_path)
    for name in ("verify", "identify", "cluster"):
        args = [str(a) for a in argv[name]]
        if "--threshold" in args:
            del args[args.index("--threshold"):args.index("--threshold") + 2]
        with pytest.raises(SystemExit) as ei:
            main(args + [f"--threshold={value}"])  # (the = form: argparse takes "-Infinity" for an option)
        assert ei.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == f"graphspec {name}: error: argument --threshold: {reason}", err
    assert not (tmp_path / "clusters.csv").exists()
