"""graphspec embed: folders and files in, one row per image out (.npy + paths, or .csv), with the model's recorded
preprocessing; unreadable files are skipped and listed."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import graphspec
from graphspec.cli import main
from graphspec.data.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    net = graphspec.snip(graphspec.build("specs/nn4small2.yaml", seed=1), ["embeddings"])
    path = tmp_path_factory.mktemp("m") / "emb.safetensors"
    graphspec.save(net, path, preprocessing=Preprocessing(channels="rgb", scale="unit"))
    return path


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos" / "Some_Person"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(folder / f"p_{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path / "photos"


def test_embed_npy_rows_match_the_model_on_the_recorded_preprocessing(model_file, photos, tmp_path, capsys):
    out = tmp_path / "e.npy"
    assert main(["embed", str(model_file), str(photos), "-o", str(out), "--batch-size", "2"]) == 0
    rows = np.load(out)
    paths = out.with_suffix(".paths.txt").read_text().splitlines()
    assert rows.shape == (3, 128) and len(paths) == 3 and all(p.endswith(".jpg") for p in paths)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    model = graphspec.load(model_file)
    prep = Preprocessing(channels="rgb", scale="unit")
    expected = model(prep.to_tensor(np.stack([prep.load(p) for p in paths]))).detach().numpy()
    np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-5)
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "embedded 3 images (128 values each)" in captured.out


def test_embed_csv_and_flip(model_file, photos, tmp_path):
    out = tmp_path / "e.csv"
    assert main(["embed", str(model_file), str(photos), "-o", str(out), "--flip"]) == 0
    with open(out) as f:
        table = list(csv.reader(f))
    assert table[0][:2] == ["path", "e0"] and len(table) == 4 and len(table[1]) == 129
    npy = tmp_path / "plain.npy"
    assert main(["embed", str(model_file), str(photos), "-o", str(npy)]) == 0
    flipped = np.array([[float(v) for v in row[1:]] for row in table[1:]])
    assert not np.allclose(flipped, np.load(npy))  # flip averaging changes the rows


def test_embed_errors_are_clear(model_file, tmp_path, capsys):
    assert main(["embed", str(model_file), str(tmp_path / "missing"), "-o", str(tmp_path / "e.npy")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such file or folder\n"
    (tmp_path / "empty").mkdir()
    assert main(["embed", str(model_file), str(tmp_path / "empty"), "-o", str(tmp_path / "e.txt")]) == 2
    assert "no images found in" in capsys.readouterr().err
