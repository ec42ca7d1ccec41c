"""Telling model files from specs by their bytes, whatever their names (graphspec.opening.is_model_file)."""
from __future__ import annotations

import pickle
import shutil
import zipfile

import pytest

import graphspec
from graphspec.opening import is_model_file

SPEC = """version: 1
name: sniff
inputs: {x: {type: feed_forward, size: 4}}
vertices: {d: {type: dense, inputs: [x], out: 3}}
outputs: [d]
"""


@pytest.fixture
def model_file(tmp_path):
    return graphspec.save(graphspec.build(SPEC, seed=0), tmp_path / "m.safetensors")


def test_a_model_file_is_known_by_its_header_under_any_name(tmp_path, model_file):
    renamed = shutil.copy(model_file, tmp_path / "model.yaml")
    assert is_model_file(str(model_file)) and is_model_file(str(renamed))


def test_checkpoints_are_taken_for_model_files_so_they_are_refused_not_parsed(tmp_path):
    pickled = tmp_path / "net.yaml"
    pickled.write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    zipped = tmp_path / "net.data"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    assert is_model_file(str(pickled)) and is_model_file(str(zipped))
    assert all(is_model_file(f"missing{suffix}") for suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl"))


def test_specs_and_missing_files_are_not_model_files(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC)
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    assert not is_model_file(str(spec)) and not is_model_file(str(short))
    assert not is_model_file(str(tmp_path / "nothing.yaml"))


def test_the_cli_reads_a_renamed_model_file_and_refuses_a_renamed_pickle(tmp_path, model_file, cli):
    renamed = shutil.copy(model_file, tmp_path / "model.yaml")
    rc, out, _ = cli("summary", renamed, "--format", "json")
    assert rc == 0 and '"name": "sniff"' in out
    pickled = tmp_path / "net.yaml"
    pickled.write_bytes(pickle.dumps([1, 2], protocol=4))
    rc, _, err = cli("summary", pickled)
    assert rc == 2 and "this is a pickle or torch.save checkpoint, not a graphspec model file" in err
