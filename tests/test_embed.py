"""graphspec embed: folders and files in, one row per image out (.npy + paths, or .csv), with the model's recorded
preprocessing; unreadable files are skipped and listed."""
from __future__ import annotations

import csv
from pathlib import Path

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
    assert main(["embed", str(model_file), str(tmp_path / "empty"), "-o", str(tmp_path / "e.npy")]) == 2
    assert "no images found in" in capsys.readouterr().err


def test_an_unwritable_output_format_is_refused_before_any_work(photos, tmp_path, capsys):
    # the model does not even exist: the output is checked first, so nothing is opened or embedded
    out = tmp_path / "e.parquet"
    assert main(["embed", str(tmp_path / "no-model.safetensors"), str(photos), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {out}: output must end in .npy or .csv; received 'e.parquet'\n"
    assert not out.exists()


def test_classifier_outputs_and_fresh_weights_are_named(photos, tmp_path, capsys):
    spec = tmp_path / "net.yaml"
    spec.write_text(Path("specs/nn4small2.yaml").read_text())
    assert main(["embed", str(spec), str(photos), "-o", str(tmp_path / "e.npy"), "--batch-size", "4"]) == 0
    err = capsys.readouterr().err
    assert "warning: 'lossLayer' is a center_loss_output layer: its rows are class scores, not embeddings" in err
    assert "warning: the weights are freshly initialised (a spec, not a trained model file)" in err


def test_verify_plot_without_matplotlib_is_refused_before_any_work(monkeypatch, tmp_path, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc = main(["verify", str(tmp_path / "no-model.safetensors"), "--data", str(tmp_path), "--pairs",
               str(tmp_path / "pairs.txt"), "--plot", str(tmp_path / "roc.png")])
    assert rc == 2 and capsys.readouterr().err == "error: --plot needs matplotlib: pip install 'graphspec[plot]'\n"


def _rows(model_file, files, **execution):
    from graphspec.execution import Execution
    from graphspec.faces.embed import embed
    rows, done, skipped = embed(graphspec.load(model_file), files, batch_size=2, execution=Execution(**execution))
    assert len(done) == len(files) and not skipped
    return rows


def test_execution_options_agree_with_the_plain_float32_layout(model_file, photos):
    """NHWC (the default) equals NCHW within rounding; bf16 autocast stays within bfloat16's precision; rows of
    every option are unit vectors (the L2 normalisation runs in float32)."""
    files = sorted(p for p in photos.rglob("p_*.jpg"))
    plain = _rows(model_file, files, channels_last=False)
    np.testing.assert_allclose(_rows(model_file, files), plain, rtol=0, atol=1e-5)
    bf16 = _rows(model_file, files, precision="bf16")
    assert not np.array_equal(bf16, plain)
    np.testing.assert_allclose(bf16, plain, rtol=0, atol=3e-2)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-2)


def test_compiled_embedding_equals_eager(tmp_path, photos):
    """torch.compile on a small conv network (compiling nn4small2 takes minutes): same rows as eager."""
    from specs_tiny import TINY_CONV
    net = graphspec.snip(graphspec.build(TINY_CONV.replace("{lr}", "0.01")), ["emb"])
    path = tmp_path / "tiny.safetensors"
    graphspec.save(net, path, preprocessing=Preprocessing(size=(12, 12), channels="rgb", scale="unit"))
    files = sorted(p for p in photos.rglob("p_*.jpg"))
    np.testing.assert_allclose(_rows(path, files, compile=True), _rows(path, files), rtol=0, atol=1e-5)


def test_unknown_precision():
    from graphspec.execution import Execution
    with pytest.raises(graphspec.GraphspecError) as ei:
        Execution(precision="fp8")
    assert ei.value.problem.message == "unknown precision 'fp8' (expected fp32, bf16 or fp16)"


def test_a_line_break_in_a_file_name_cannot_shift_the_paths_listing(model_file, photos, tmp_path, capsys):
    """.paths.txt holds one name per line, row k of the .npy on line k: a file whose name holds a newline would
    have split into two lines and shifted every later row's name, so it is skipped with its reason."""
    person = photos / "Some_Person"
    (person / "p_0.jpg").rename(person / "evil\nname.jpg")
    out = tmp_path / "e.npy"
    assert main(["embed", str(model_file), str(photos), "-o", str(out)]) == 0
    rows, paths = np.load(out), out.with_suffix(".paths.txt").read_text().splitlines()
    assert rows.shape == (2, 128) and [Path(p).name for p in paths] == ["p_1.jpg", "p_2.jpg"]
    assert "control character \\n in the file name" in capsys.readouterr().err


def test_a_line_break_in_a_folder_name_is_caught_too(model_file, photos, tmp_path, capsys):
    (photos / "Some_Person").rename(photos / "Some\nPerson")
    out = tmp_path / "e.npy"
    assert main(["embed", str(model_file), str(photos), "-o", str(out)]) == 0
    assert out.with_suffix(".paths.txt").read_text() == ""  # every photo skipped: no line to shift
    assert capsys.readouterr().err.count("control character \\n in the file name") == 4


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_decoding_on_several_threads_keeps_every_file_in_its_place(photos, overlap, threads):
    # batches split into one part per thread, taking turns with the network (CPU) or decoded ahead of it (GPU):
    # the images, the files kept and the files skipped come back in the files' order, batch after batch
    from graphspec.faces.embed import _Decoder, image_files
    files = sorted(image_files([photos])) * 3  # 12 files, broken.jpg among them three times
    prep = Preprocessing(size=(8, 8), channels="rgb", scale="unit")
    batches = [files[i:i + 5] for i in range(0, len(files), 5)]
    with _Decoder(prep, every_face=False, overlap=overlap, threads=threads) as decoder:
        got = list(decoder.batches(batches))
    assert len(got) == 3
    for batch, (images, kept, skipped, empty) in zip(batches, got):
        readable = [f for f in batch if f.name != "broken.jpg"]
        assert kept == readable and [f for f, _ in skipped] == [f for f in batch if f.name == "broken.jpg"]
        assert empty == []
        for f, image in zip(readable, images):
            assert np.array_equal(image, prep.load(f))
