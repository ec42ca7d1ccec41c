"""Model files: one safetensors file = tensors + spec + frozen set + preprocessing + spec hash + format version.
Round trips are bit-identical; wrong shapes give a per-vertex report; hostile files (empty, truncated, random,
absurd header, code-running pickles, torch.save archives, edited or newer metadata) are refused with a clear
error and never execute anything; the command line answers them with exit status 2 and no traceback."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from graphspec import GraphBuilder, GraphspecError, build, load, load_spec, load_weights, save
from graphspec.model_io import MAX_HEADER, ModelFileError

NN4 = "specs/nn4small2.yaml"

SMALL = """
version: 1
name: small
seed: 3
defaults: {activation: relu, weight_init: xavier}
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  c: {type: conv, inputs: [x], kernel: 3, out: 4}
  b: {type: batchnorm, inputs: [c]}
  p: {type: global_pool, inputs: [b], pooling: avg}
  d: {type: dense, inputs: [p], out: 5}
  e: {type: l2_normalize, inputs: [d]}
  o: {type: center_loss_output, inputs: [e], out: 3, loss: squared_loss, activation: softmax}
outputs: [o]
"""
SMALL_WIDE = SMALL.replace("inputs: [p], out: 5", "inputs: [p], out: 7")
assert SMALL_WIDE != SMALL

PREP = {"size": [96, 96], "channels": "bgr", "scale": "raw"}  # the DL4J tutorial's (SEMANTICS §10)
PICKLE_MESSAGE = ("this is a pickle or torch.save checkpoint, not a graphspec model file; graphspec never unpickles "
                  "files (that can run code). Convert it in a trusted environment: load it with "
                  "torch.load(..., weights_only=True) and save with graphspec.save")


# --- helpers --------------------------------------------------------------------------------------------------


def prep_fields(p) -> dict:
    """A recorded preprocessing as plain JSON data (a dict, or a pydantic record once graphspec.data exists)."""
    if hasattr(p, "model_dump"):
        return p.model_dump(mode="json")
    return json.loads(json.dumps(p))


def trained_small():
    """The small model with weights and BN statistics that differ from a fresh build (as after training)."""
    m = build(SMALL)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for t in m.state_dict().values():
            t.add_(torch.rand(t.shape, generator=g))
    return m


def file_metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def write_raw(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def header_file(path: Path, header, body: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    return write_raw(path, struct.pack("<Q", len(raw)) + raw + body)


def load_error(path, message: str | None = None, startswith: str | None = None) -> ModelFileError:
    with pytest.raises(ModelFileError) as ei:
        load(path)
    p = ei.value.problem
    assert p.location.file == str(path)
    if message is not None:
        assert p.message == message
    if startswith is not None:
        assert p.message.startswith(startswith), p.message
    return ei.value


class MkdirOnUnpickle:
    """A pickle payload that creates a directory when unpickled (stands in for arbitrary code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def small_file(tmp_path):
    m = trained_small()
    path = save(m, tmp_path / "small.safetensors", preprocessing=PREP)
    return m, path


# --- round trips ------------------------------------------------------------------------------------------------


def test_round_trip_small_partly_frozen(tmp_path):
    m = GraphBuilder(trained_small()).set_feature_extractor("b").build()
    assert set(m.graphspec.frozen) == {"c", "b"}
    path = save(m, tmp_path / "m.safetensors", preprocessing=PREP, metadata={"note": "hello"})
    assert os.listdir(tmp_path) == ["m.safetensors"]  # written atomically, no temporary left
    r = load(path)
    a, b = m.state_dict(), r.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert r.graphspec.spec == m.graphspec.spec
    assert r.graphspec.frozen == frozenset({"c", "b"})
    r.train()
    assert not r.get_submodule("b").training and r.get_submodule("d").training
    assert not any(p.requires_grad for p in r.get_submodule("c").parameters())
    assert all(p.requires_grad for p in r.get_submodule("d").parameters())
    got = prep_fields(r.graphspec.preprocessing)
    assert {k: got[k] for k in PREP} == PREP
    rep = r.graphspec.weights
    assert rep.ok and rep.loaded == len(a)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(r.eval()(x), m.eval()(x))
    assert file_metadata(path)["note"] == "hello"


def test_metadata_fields(small_file):
    m, path = small_file
    meta = file_metadata(path)
    assert meta["format"] == "graphspec-model"
    assert meta["format_version"] == "1"
    assert meta["spec_sha256"] == hashlib.sha256(meta["spec"].encode("utf-8")).hexdigest()
    assert json.loads(meta["frozen"]) == []
    prep = json.loads(meta["preprocessing"])
    assert {k: prep[k] for k in PREP} == PREP
    import yaml
    assert load_spec(yaml.safe_load(meta["spec"])) == m.graphspec.spec
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(m.state_dict())


def test_round_trip_nn4small2_every_tensor(tmp_path):
    net = GraphBuilder(build(NN4, seed=4)).set_feature_extractor("inception-3a").build()
    path = save(net, tmp_path / "nn4.safetensors")
    r = load(path)
    a, b = net.state_dict(), r.state_dict()
    assert a.keys() == b.keys() and len(a) > 200
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert r.graphspec.spec == net.graphspec.spec and r.graphspec.frozen == net.graphspec.frozen
    assert r.graphspec.preprocessing is None and json.loads(file_metadata(path)["frozen"]) == sorted(net.graphspec.frozen)


def test_save_overwrites_and_needs_a_graphspec_module(tmp_path, small_file):
    m, path = small_file
    m2 = build(SMALL)
    save(m2, path)
    assert torch.equal(load(path).d.weight, m2.d.weight)
    assert sorted(os.listdir(path.parent)) == ["small.safetensors"]
    with pytest.raises(GraphspecError) as ei:
        save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    assert ei.value.problem.message == ("expected a module built by graphspec (it carries its spec as "
                                        "`module.graphspec`)")
    assert not (tmp_path / "x.safetensors").exists()


# --- weights that do not fit ------------------------------------------------------------------------------------


def _wrong_shape_file(tmp_path, small_file) -> tuple[Path, dict]:
    """Tensors of SMALL_WIDE (dense 'd' has 7 outputs), minus c.bias, plus zz.weight, under SMALL's metadata."""
    _, path = small_file
    wide = build(SMALL_WIDE, seed=8)
    tensors = {k: v.contiguous() for k, v in wide.state_dict().items() if k != "c.bias"}
    tensors["zz.weight"] = torch.ones(2, 2)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=file_metadata(path))
    return bad, tensors


EXPECTED_MISMATCH = {"d": {"d.weight: file [7, 4] vs model [5, 4]", "d.bias: file [7] vs model [5]"},
                     "o": {"o.weight: file [3, 7] vs model [3, 5]", "o.centers: file [3, 7] vs model [3, 5]"}}


def test_wrong_shapes_strict_load_reports_every_problem_by_vertex(tmp_path, small_file):
    bad, _ = _wrong_shape_file(tmp_path, small_file)
    e = load_error(bad, startswith="the weights do not fit the model:\n  ")
    lines = e.problem.message.split("\n  ")[1:]
    expected = {"vertex 'c': missing from the file": {"c.bias"}, "vertex 'zz': not in the model": {"zz.weight"},
                **{f"vertex '{v}': wrong shape": items for v, items in EXPECTED_MISMATCH.items()}}
    assert len(lines) == len(expected)
    for prefix, items in expected.items():
        [line] = [line for line in lines if line.startswith(prefix + ": ")]
        rest = line[len(prefix) + 2:]
        assert all(item in rest for item in items) and len(rest) == len(", ".join(items)), line


def test_wrong_shapes_non_strict_load_loads_what_fits(tmp_path, small_file):
    bad, tensors = _wrong_shape_file(tmp_path, small_file)
    fresh = build(SMALL)  # what the loader builds from the embedded spec (seeded by the spec)
    r = load(bad, strict=False)
    rep = r.graphspec.weights
    assert not rep.ok
    assert rep.missing == {"c": ["c.bias"]}
    assert rep.unexpected == {"zz": ["zz.weight"]}
    assert {v: set(items) for v, items in rep.mismatched.items()} == EXPECTED_MISMATCH
    fits = {k for k in tensors if k in fresh.state_dict() and tensors[k].shape == fresh.state_dict()[k].shape}
    assert fits == {"c.weight", "b.weight", "b.bias", "b.running_mean", "b.running_var", "o.bias"}
    assert rep.loaded == len(fits)
    state = r.state_dict()
    for k in fits:
        assert torch.equal(state[k], tensors[k]), k
    for k in ("c.bias", "d.weight", "d.bias", "o.weight", "o.centers"):  # left as initialised
        assert torch.equal(state[k], fresh.state_dict()[k]), k
    assert rep.lines()[0].startswith("vertex 'c': missing from the file")


def test_load_weights_strict_loads_nothing_and_non_strict_loads_what_fits(tmp_path, small_file):
    bad, tensors = _wrong_shape_file(tmp_path, small_file)
    model = build(SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelFileError) as ei:
        load_weights(model, bad)
    assert ei.value.problem.location.file == str(bad)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # nothing loaded
    rep = load_weights(model, tensors, strict=False)
    assert rep.loaded == 6 and torch.equal(model.c.weight, tensors["c.weight"])
    assert torch.equal(model.d.weight, before["d.weight"])


def test_load_weights_from_a_plain_safetensors_file(tmp_path, small_file):
    m, _ = small_file
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(plain))
    target = build(SMALL)
    rep = load_weights(target, plain)
    assert rep.ok and rep.loaded == len(m.state_dict())
    for k, v in m.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)
    load_error(plain, message="not a graphspec model file: its safetensors metadata has no 'format: graphspec-model' "
                              "(plain weights can be loaded with graphspec.load_weights)")


# --- hostile and damaged files ----------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    load_error(write_raw(tmp_path / "e.safetensors", b""),
               message="not a model file: 0 bytes is too short for a safetensors header")


def test_missing_file(tmp_path):
    load_error(tmp_path / "nope.safetensors", startswith="cannot read model file: ")


def test_truncated_in_the_header(tmp_path, small_file):
    _, path = small_file
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cut = write_raw(tmp_path / "t.safetensors", raw[:8 + n // 2])
    load_error(cut, message=f"not a valid model file: header length {n:,} exceeds the file ({8 + n // 2:,} bytes) or "
                            f"the {MAX_HEADER:,}-byte limit (truncated or corrupt)")


def test_truncated_in_the_tensor_data(tmp_path, small_file):
    _, path = small_file
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert len(raw) > 8 + n + 20
    load_error(write_raw(tmp_path / "t.safetensors", raw[:8 + n + 20]), startswith="cannot read the tensors: ")


def test_tensor_extending_beyond_the_file(tmp_path, small_file):
    _, path = small_file
    header = {"__metadata__": file_metadata(path),
              "c.weight": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    load_error(header_file(tmp_path / "big.safetensors", header, b"\0" * 16), startswith="cannot read the tensors: ")


def test_random_bytes(tmp_path):
    data = random.Random(1234).randbytes(4096)
    with pytest.raises(ModelFileError):
        load(write_raw(tmp_path / "r.safetensors", data))


def test_absurd_header_length(tmp_path):
    n = 2 ** 62
    p = write_raw(tmp_path / "a.safetensors", struct.pack("<Q", n) + b"{}")
    load_error(p, message=f"not a valid model file: header length {n:,} exceeds the file (10 bytes) or the "
                          f"{MAX_HEADER:,}-byte limit (truncated or corrupt)")
    # within the file but above the 16 MiB limit is refused before being read
    assert MAX_HEADER == 16 * 1024 * 1024
    p2 = tmp_path / "b.safetensors"
    with open(p2, "wb") as f:
        f.write(struct.pack("<Q", MAX_HEADER + 1))
        f.truncate(8 + MAX_HEADER + 2)  # sparse file
    load_error(p2, startswith="not a valid model file: header length 16,777,217 exceeds")


def test_header_not_json_or_not_an_object(tmp_path):
    body = b"\xff\xfe not json"
    load_error(write_raw(tmp_path / "h.safetensors", struct.pack("<Q", len(body)) + body),
                   startswith="not a valid model file: its header is not JSON")
    load_error(header_file(tmp_path / "l.safetensors", [1, 2]),
               message="not a valid model file: its header is not a JSON object")


@pytest.mark.parametrize("protocol", [
    0,
    1,
    2, 3, 4, 5])
def test_code_running_pickle_is_refused_and_never_run(tmp_path, protocol):
    # the payload is live: unpickling it really creates its marker
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(MkdirOnUnpickle(str(proof)), protocol=protocol))
    assert proof.is_dir()
    marker = tmp_path / "marker"
    evil = write_raw(tmp_path / "evil.safetensors", pickle.dumps(MkdirOnUnpickle(str(marker)), protocol=protocol))
    with pytest.raises(ModelFileError) as ei:
        load(evil)
    with pytest.raises(ModelFileError):
        load_weights(build(SMALL), evil)
    assert not marker.exists()
    assert ei.value.problem.message == PICKLE_MESSAGE


@pytest.mark.parametrize("zipfile", [True, False])
def test_torch_save_checkpoint_is_refused(tmp_path, small_file, zipfile):
    m, _ = small_file
    p = tmp_path / "ckpt.safetensors"
    torch.save(m.state_dict(), p, _use_new_zipfile_serialization=zipfile)
    load_error(p, message=PICKLE_MESSAGE)


def test_header_length_starting_with_the_pickle_opcode_byte_is_a_model_file(tmp_path, small_file):
    # A header of 0x..80 bytes starts the file with 0x80, a pickle's PROTO opcode (seen in a real checkpoint):
    # pad the metadata until the length's low byte is 0x80; the file must load, not be refused as a pickle.
    m, path = small_file
    for pad in range(0, 512, 8):
        out = _rewrite(tmp_path, small_file, name=f"pad{pad}.safetensors", padding="x" * pad)
        if out.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    loaded = load(out)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), m.state_dict().values()))


def _rewrite(tmp_path, small_file, name="edited.safetensors", **changes) -> Path:
    m, path = small_file
    meta = file_metadata(path)
    meta.update(changes)
    out = tmp_path / name
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(out), metadata=meta)
    return out


def test_edited_spec_hash_mismatch(tmp_path, small_file):
    spec = file_metadata(small_file[1])["spec"]
    edited = spec.replace("out: 5", "out: 6")
    assert edited != spec
    load_error(_rewrite(tmp_path, small_file, spec=edited),
               message="the spec stored in the model file does not match its hash (the file was edited or corrupted)")


def test_spec_with_python_tag_and_matching_hash_runs_nothing(tmp_path, small_file):
    marker = tmp_path / "marker"
    spec = file_metadata(small_file[1])["spec"]
    evil = spec.replace("name: small", f"name: !!python/object/apply:os.mkdir ['{marker}']")
    assert evil != spec
    p = _rewrite(tmp_path, small_file, spec=evil, spec_sha256=hashlib.sha256(evil.encode()).hexdigest())
    with pytest.raises(GraphspecError) as ei:
        load(p)
    assert "is not allowed" in str(ei.value)
    assert not marker.exists()


@pytest.mark.parametrize("version", ["2", "17"])
def test_newer_format_version(tmp_path, small_file, version):
    load_error(_rewrite(tmp_path, small_file, format_version=version),
               message=f"model file format version '{version}' is not supported (this graphspec reads up to 1); "
                       "upgrade graphspec")


@pytest.mark.parametrize("version", ["", "one", "-1", "1.0"])
def test_invalid_format_version(tmp_path, small_file, version):
    load_error(_rewrite(tmp_path, small_file, format_version=version),
               startswith=f"model file format version {version!r} is not supported")


def test_other_format(tmp_path, small_file):
    load_error(_rewrite(tmp_path, small_file, format="something-else"),
               startswith="not a graphspec model file: its safetensors metadata has no 'format: graphspec-model'")


@pytest.mark.parametrize("frozen", [json.dumps(["nosuch"]), json.dumps("c"), json.dumps([1])])
def test_invalid_frozen_set(tmp_path, small_file, frozen):
    load_error(_rewrite(tmp_path, small_file, frozen=frozen), message="the model file's frozen set is invalid")


def test_frozen_set_not_json(tmp_path, small_file):
    load_error(_rewrite(tmp_path, small_file, frozen="{not json"),
               message="the model file's frozen set is invalid: it is not JSON (Expecting property name enclosed in "
                       "double quotes: line 1 column 2 (char 1))")


def test_invalid_preprocessing_record(tmp_path, small_file):
    with pytest.raises(ModelFileError) as ei:
        load(_rewrite(tmp_path, small_file, preprocessing="{not json"))
    assert "preprocessing" in ei.value.problem.message


MALFORMED_METADATA = [
    pytest.param({"__metadata__": ["graphspec-model"]}, id="metadata-is-a-list"),
    pytest.param({"__metadata__": {"format": "graphspec-model", "format_version": 1}}, id="version-is-a-number"),
    pytest.param({"__metadata__": {"format": "graphspec-model", "format_version": "1", "spec": 5,
                                   "spec_sha256": "x"}}, id="spec-is-a-number"),
]
MALFORMED_REASON = ("BUG: read_metadata/load trust the JSON types of the safetensors header: a non-object "
                    "__metadata__ or a non-string format_version/spec raises AttributeError (the CLI answers "
                    "'internal error', exit 3) instead of ModelFileError")


@pytest.mark.parametrize("header", MALFORMED_METADATA)
def test_malformed_metadata_types(tmp_path, header):
    with pytest.raises(ModelFileError):
        load(header_file(tmp_path / "m.safetensors", header))


# --- the command line never shows a traceback for a hostile file ------------------------------------------------


def _hostile_files(tmp_path, small_file) -> dict[str, Path]:
    m, path = small_file
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    zip_ckpt = tmp_path / "zip.safetensors"
    torch.save(m.state_dict(), zip_ckpt)
    spec = file_metadata(path)["spec"]
    return {
        "empty": write_raw(tmp_path / "empty.safetensors", b""),
        "truncated-header": write_raw(tmp_path / "th.safetensors", raw[:8 + n // 2]),
        "truncated-data": write_raw(tmp_path / "td.safetensors", raw[:8 + n + 20]),
        "random": write_raw(tmp_path / "random.safetensors", random.Random(7).randbytes(2048)),
        "absurd-header": write_raw(tmp_path / "absurd.safetensors", struct.pack("<Q", 2 ** 63) + b"{}"),
        "pickle": write_raw(tmp_path / "evil.safetensors",
                            pickle.dumps(MkdirOnUnpickle(str(tmp_path / "marker")), protocol=4)),
        "torch-zip": zip_ckpt,
        "hash-mismatch": _rewrite(tmp_path, small_file, "hm.safetensors", spec=spec.replace("out: 5", "out: 6")),
        "newer-version": _rewrite(tmp_path, small_file, "nv.safetensors", format_version="2"),
        "bad-preprocessing": _rewrite(tmp_path, small_file, "bp.safetensors", preprocessing="{not json"),
    }


def test_cli_answers_hostile_model_files_with_exit_2(tmp_path, small_file, cli):
    for kind, p in _hostile_files(tmp_path, small_file).items():
        for argv in (["summary", p], ["snip", p, "--output", "d", "-o", tmp_path / "out.safetensors"]):
            rc, out, err = cli(*argv)
            assert rc == 2, (kind, argv[0], err)
            assert err.startswith("error: ") and "Traceback" not in out + err, (kind, err)
            assert str(p) in err, (kind, err)
        if kind in ("pickle", "torch-zip"):
            assert "pickle" in err
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_malformed_metadata_exit_2(tmp_path, cli):
    p = header_file(tmp_path / "m.safetensors", {"__metadata__": ["graphspec-model"]})
    rc, out, err = cli("summary", p)
    assert rc == 2, err


def test_cli_names_a_torch_checkpoint_with_another_suffix(tmp_path, cli):
    p = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, p, _use_new_zipfile_serialization=False)
    rc, out, err = cli("summary", p)
    assert rc == 2 and "Traceback" not in err
    assert "pickle" in err


def test_real_command_on_a_code_running_pickle(tmp_path):
    marker = tmp_path / "marker"
    evil = write_raw(tmp_path / "evil.safetensors", pickle.dumps(MkdirOnUnpickle(str(marker))))
    exe = Path(sys.executable).with_name("graphspec")
    r = subprocess.run([str(exe), "summary", str(evil)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr == f"error: {evil}: {PICKLE_MESSAGE}\n"
    assert not marker.exists()
