"""Aligners (``Preprocessing.align``): the registry, a Python aligner applied before the crop and resize, and the
face application's ``dlib-5pt`` on photos composed from LFW faces pasted at other scales and offsets."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from graphspec.data import aligners
from graphspec.data.errors import DataError
from graphspec.data.preprocessing import Preprocessing


def test_an_unknown_aligner_is_refused_naming_the_installed_ones(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"no aligner named 'dlib-5p' \(did you mean 'dlib-5pt'\?\) \(installed: "):
        Preprocessing(align="dlib-5p").load(tmp_path / "a.png")


def test_a_registered_aligner_runs_before_the_crop_and_resize(tmp_path):
    aligners.register("left-half", lambda im: im.crop((0, 0, im.width // 2, im.height)))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    got = Preprocessing(size=(8, 8), channels="rgb", align="left-half").load(tmp_path / "a.png")
    np.testing.assert_array_equal(got, pixels[:, :8].transpose(2, 0, 1))


def test_an_aligner_that_finds_nothing_names_the_file(tmp_path):
    def nothing(im):
        raise aligners.NoSubject("no face found")
    aligners.register("nothing", nothing)
    Image.new("RGB", (20, 20)).save(tmp_path / "empty.png")
    with pytest.raises(DataError) as e:
        Preprocessing(align="nothing").load(tmp_path / "empty.png")
    assert str(e.value) == f"{tmp_path / 'empty.png'}: no face found"


def _dlib_model():
    from graphspec.faces.align import models_folder
    if models_folder() is None or importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib-bin and face_recognition_models are not installed (pip install 'graphspec[faces]')")
    from graphspec.importers.dlib import import_dlib
    return import_dlib(models_folder() / "dlib_face_recognition_resnet_model_v1.dat")


def test_dlib_alignment_finds_a_face_pasted_anywhere_in_a_photo(tmp_path, lfw_images):
    from graphspec.faces.embed import embed
    imported = _dlib_model()
    assert imported.preprocessing.align == "dlib-5pt"
    net = imported.model()
    face = Image.open(next(lfw_images.glob("Aaron_Eckhart/*.jpg"))).convert("RGB")
    photo = Image.new("RGB", (640, 480), (90, 120, 150))
    photo.paste(face.resize((150, 150)), (400, 60))  # smaller, off centre
    photo.save(tmp_path / "photo.jpg", quality=95)
    face.save(tmp_path / "face.jpg", quality=95)
    Image.new("RGB", (300, 300), (128, 128, 128)).save(tmp_path / "wall.jpg")
    rows, done, skipped = embed(net, [tmp_path / "face.jpg", tmp_path / "photo.jpg", tmp_path / "wall.jpg"])
    assert [p.name for p in done] == ["face.jpg", "photo.jpg"]
    assert [(p.name, why) for p, why in skipped] == [("wall.jpg", "no face found")]
    aligned = float(np.linalg.norm(rows[0] - rows[1]))
    whole = Preprocessing(size=(150, 150), channels="rgb", scale="raw")  # the photo resized whole, unaligned
    with torch.no_grad():
        unaligned = net(torch.from_numpy(whole.load(tmp_path / "photo.jpg")[None]).float())[0].numpy()
    assert aligned < 0.3 < float(np.linalg.norm(rows[0] - unaligned))  # dlib: same person below 0.6


def test_verify_scores_a_pair_with_a_faceless_photo_as_different_and_says_so(tmp_path):
    import dataclasses

    import graphspec
    from graphspec.faces.verify.scoring import verify

    def bright_only(im):  # a stand-in detector: "finds" a subject in bright photos only
        if np.asarray(im).mean() < 50:
            raise aligners.NoSubject("no face found")
        return im
    aligners.register("bright-only", bright_only)
    g = np.random.default_rng(0)
    for name, i, dark in (("Ann", 1, False), ("Ann", 2, False), ("Bob", 1, True), ("Bob", 2, False)):
        (tmp_path / "lfw" / name).mkdir(parents=True, exist_ok=True)
        pixels = g.integers(0, 30 if dark else 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "lfw" / name / f"{name}_{i:04d}.jpg")
    (tmp_path / "pairs.txt").write_text("2\nAnn\t1\t2\nBob\t1\t2\nAnn\t1\tBob\t2\nAnn\t2\tBob\t1\n")
    net = graphspec.load("nn4small2-lfw")
    prep = dataclasses.replace(net.graphspec, preprocessing=net.graphspec.preprocessing.model_copy(
        update={"align": "bright-only"}))
    net.graphspec = prep
    report, d, same = verify(net, tmp_path / "lfw", tmp_path / "pairs.txt", threshold=0.9)
    assert np.isinf(d).tolist() == [False, True, False, True]  # Bob_0001 is dark: its pairs
    assert "2 pairs with a photo where no face was found, scored as different" in report.protocol
