"""Datasets over LFW-layout folders: selection, labels, splits, DL4J mode, cache, loaders, bad files.

Images are 16x16 PNGs whose pixel value encodes (person, image), so every batch can be traced back to its files.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from graphspec.data import Augmentation, DataError, DataWarning, Preprocessing, make_loader
from graphspec.faces.data import balanced_select, lfw_dataset, load_images, scan_folder, split_indices

pytestmark = pytest.mark.usefixtures("isolated_cache")

PREP = Preprocessing(size=(16, 16), channels="rgb")  # images are 16x16 already: no resampling


def make_folder(root, counts: dict[str, int]):
    """ROOT/NAME/NAME_%04d.png, pixel value 10 * person_rank + image_number (person_rank in sorted order)."""
    for rank, name in enumerate(sorted(counts)):
        (root / name).mkdir(parents=True)
        for j in range(1, counts[name] + 1):
            Image.new("RGB", (16, 16), (10 * rank + j,) * 3).save(root / name / f"{name}_{j:04d}.png")
    return root


def code(images) -> list[int]:
    return [int(v) for v in np.asarray(images)[:, 0, 0, 0]]


COUNTS = {"Aaron_Eckhart": 2, "AJ_Cook": 1, "Zoe_Z": 5, "Bob_B": 3}


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "faces", COUNTS)


def test_labels_are_sorted_folder_names_and_images_match_labels(folder):
    ds = lfw_dataset(folder, preprocessing=PREP)
    assert ds.classes == ["AJ_Cook", "Aaron_Eckhart", "Bob_B", "Zoe_Z"]  # Java/Python code-unit order
    assert len(ds) == 11 and ds.counts() == COUNTS
    images, labels = ds.batch(range(len(ds)))
    assert [c // 10 for c in code(images)] == labels.tolist()  # pixel says which person: labels agree
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16) and y == int(ds.labels[3])


def test_people_filter_min_images_and_limit(folder, tmp_path):
    people = tmp_path / "people.txt"
    people.write_text("3\nBob_B\t3\nZoe_Z\t5\nNobody_N\t1\n")
    with pytest.warns(DataWarning, match="1 listed people have no images.*Nobody_N"):
        ds = lfw_dataset(folder, people=people, preprocessing=PREP)
    assert ds.classes == ["Bob_B", "Zoe_Z"] and len(ds) == 8
    assert len(lfw_dataset(folder, people=["AJ_Cook"], preprocessing=PREP)) == 1
    ds = lfw_dataset(folder, min_images=3, preprocessing=PREP)
    assert ds.counts() == {"Bob_B": 3, "Zoe_Z": 5}
    a, b = (lfw_dataset(folder, limit=4, seed=s, preprocessing=PREP, cache=False) for s in (1, 2))
    assert len(a) == 4 and set(a.paths) < set(lfw_dataset(folder, cache=False).paths)
    assert a.paths == lfw_dataset(folder, limit=4, seed=1, cache=False).paths and a.paths != b.paths


def test_split_by_image_and_by_person(folder):
    n = 11
    train = lfw_dataset(folder, split="train", train_fraction=0.7, seed=5, preprocessing=PREP)
    test = lfw_dataset(folder, split="test", train_fraction=0.7, seed=5, preprocessing=PREP)
    assert (len(train), len(test)) == (round(0.7 * n), n - round(0.7 * n))
    assert not set(train.paths) & set(test.paths) and train.classes == test.classes
    train = lfw_dataset(folder, split="train", train_fraction=0.5, split_by="person", preprocessing=PREP)
    test = lfw_dataset(folder, split="test", train_fraction=0.5, split_by="person", preprocessing=PREP)
    assert len(train.classes) == 2 and not set(train.classes) & set(test.classes)
    assert len(train) + len(test) == n
    with pytest.raises(DataError, match="split must be"):
        lfw_dataset(folder, split="validation")
    assert len(lfw_dataset(folder, split="test", train_fraction=1.0)) == 0  # an empty part is fine...
    with pytest.raises(DataError, match="no images selected: 4 people .* min_images=6"):
        lfw_dataset(folder, min_images=6)  # ...an empty selection is a mistake


def test_load_images_for_any_file_list(folder, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    paths = [folder / "Bob_B" / "Bob_B_0002.png", bad, folder / "AJ_Cook" / "AJ_Cook_0001.png"]
    cached, failures = load_images(paths, PREP)
    lazy, lazy_failures = load_images(paths, PREP, cache=False)
    assert code(cached) == code(lazy) == [22, 0, 1] and np.array_equal(cached, lazy)
    assert [f.path for f in failures] == [f.path for f in lazy_failures] == [str(bad)]


def test_split_indices_formula():
    labels = ["a"] * 7 + ["b"] * 3 + ["c"] * 10
    tr, te = split_indices(labels, 0.25, seed=0)
    assert len(tr) == 5 and sorted(tr + te) == list(range(20))


def test_dl4j_mode_one_random_image_per_person_in_a_fixed_order(folder):
    ds = lfw_dataset(folder, dl4j=True, preprocessing=PREP)
    assert len(ds) == 4 and sorted(ds.counts()) == sorted(COUNTS)  # the rarest person has 1 image: 1 each
    again = lfw_dataset(folder, dl4j=True, preprocessing=PREP)
    assert ds.paths == again.paths  # same seed: same images, same order
    picks = {tuple(lfw_dataset(folder, dl4j=True, seed=s, cache=False).paths) for s in range(8)}
    assert len(picks) > 1  # the choice and order depend on the seed
    loader = make_loader(ds, 3)
    assert [len(y) for _, y in loader] == [3, 1]
    assert torch.equal(next(iter(loader))[1], next(iter(loader))[1])  # every epoch the same order


def test_balanced_select_is_datavec_balanced_path_filter():
    labels = ["a"] * 2 + ["b"] * 3 + ["c"] * 5
    out = balanced_select(labels, labels, seed=0)
    assert len(out) == 6  # k = smallest group = 2
    first, second = [labels[i] for i in out[:3]], [labels[i] for i in out[3:]]
    assert sorted(first) == ["a", "b", "c"] and first == second  # round-robin in first-appearance order
    assert len(balanced_select(labels, labels, seed=0, max_per_label=1)) == 3
    two = [labels[i] for i in balanced_select(labels, labels, seed=0, max_labels=2)]
    assert len(set(two)) == 2 and len(two) == 2 * min(labels.count(x) for x in set(two))
    assert len(balanced_select(labels, labels, seed=0, min_per_label=5)) == 2 + 3 + 5
    assert len(balanced_select(labels, labels, seed=0, max_paths=1)) == 1


def test_loader_batches_cover_the_dataset_and_shuffle_per_epoch(folder):
    ds = lfw_dataset(folder, preprocessing=PREP)
    loader = make_loader(ds, 4, seed=7)
    assert len(loader) == math.ceil(11 / 4)
    epochs = [[c for x, _ in loader for c in code(x.to(torch.uint8))] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(code(ds.batch(range(11))[0])) and epochs[0] != epochs[1]
    replay = make_loader(ds, 4, seed=7)
    assert [c for x, _ in replay for c in code(x.to(torch.uint8))] == epochs[0]
    assert len(make_loader(ds, 4, drop_last=True)) == 2


def test_loader_workers_give_the_same_batches(folder):
    ds = lfw_dataset(folder, preprocessing=PREP)
    aug = Augmentation(padding=2, seed=1)
    one = [(x, y) for x, y in make_loader(ds, 4, augmentation=aug, workers=0)]
    two = [(x, y) for x, y in make_loader(ds, 4, augmentation=aug, workers=1)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))


def test_cache_is_reused_keyed_and_equal_to_decoding(folder, tmp_path):
    ds = lfw_dataset(folder, preprocessing=PREP)
    assert ds._cache.built and str(ds._cache.path).startswith(str(tmp_path / "cache" / "images"))
    again = lfw_dataset(folder, preprocessing=PREP)
    assert not again._cache.built and again._cache.path == ds._cache.path
    lazy = lfw_dataset(folder, preprocessing=PREP, cache=False)
    assert torch.equal(lazy.batch(range(11))[0], ds.batch(range(11))[0])
    bigger = lfw_dataset(folder, preprocessing=PREP.model_copy(update={"size": (8, 8)}))
    assert bigger._cache.path != ds._cache.path and bigger.batch([0])[0].shape == (1, 3, 8, 8)
    f = ds.paths[0]
    os.utime(f, ns=(1, 1))  # a changed file changes the key: never a stale cache
    assert lfw_dataset(folder, preprocessing=PREP)._cache.built


def test_cache_inside_the_dataset_is_refused(folder, monkeypatch):
    monkeypatch.setenv("GRAPHSPEC_CACHE", str(folder / "cache"))
    with pytest.raises(DataError, match="inside the dataset folder"):
        lfw_dataset(folder)


def broken_folder(root):
    """Good, broken and odd files; returns the expected skip reasons by path."""
    make_folder(root, {"Ann_A": 1, "Eve_E": 1})
    good = (root / "Ann_A" / "Ann_A_0001.png").read_bytes()
    (root / "Ann_A" / "Ann_A_0002.jpg").write_bytes(b"")
    jpeg = root / "Ann_A" / "Ann_A_0003.jpg"
    Image.new("RGB", (30, 30), (1, 2, 3)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    (root / "Bob_B").mkdir()
    Image.new("L", (16, 16), 99).save(root / "Bob_B" / "Bob_B_0001.png")  # grayscale: converted, kept
    (root / "Bob_B" / "Bob_B_0002.png").write_bytes(good[:-20])
    (root / "Bob_B" / "notes.txt").write_text("not a face")
    (root / "Bob_B" / "Bob_B_0003.jpg").write_text("a text file with an image name")
    (root / "Cid_C").mkdir()
    Image.new("CMYK", (16, 16), (10, 20, 30, 40)).save(root / "Cid_C" / "Cid_C_0001.jpg")
    Image.new("RGBA", (16, 16), (5, 6, 7, 0)).save(root / "Cid_C" / "Cid_C_0002.png")
    (root / "Dan_D").mkdir()  # empty: ignored
    (root / "Eve_E" / "Eve_E_0002.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")
    return {"Ann_A/Ann_A_0002.jpg": "empty file (0 bytes)",
            "Ann_A/Ann_A_0003.jpg": "truncated (no JPEG end-of-image marker)",
            "Bob_B/Bob_B_0002.png": "truncated (no PNG IEND chunk)",
            "Bob_B/Bob_B_0003.jpg": "not an image (content is no JPEG, PNG, BMP or TIFF)",
            "Bob_B/notes.txt": "not an image (extension '.txt')"}


def test_scan_reports_every_broken_file_with_its_reason(tmp_path):
    expected = broken_folder(tmp_path / "faces")
    scan = scan_folder(tmp_path / "faces")
    assert {s.path: s.reason for s in scan.skipped} == expected
    assert scan.empty_folders == ["Dan_D"] and scan.people == ["Ann_A", "Bob_B", "Cid_C", "Eve_E"]


def test_bad_files_never_stop_a_run_and_are_listed_in_one_warning(tmp_path):
    expected = broken_folder(tmp_path / "faces")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = lfw_dataset(tmp_path / "faces", preprocessing=PREP)
    data_warnings = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(data_warnings) == 1
    text = str(data_warnings[0].message)
    assert "skipped 6 file(s)" in text and all(path in text for path in expected)
    assert "Eve_E/Eve_E_0002.jpg (unreadable" in text  # passed the cheap checks, failed to decode
    assert len(ds) == 5 and ds.counts() == {"Ann_A": 1, "Bob_B": 1, "Cid_C": 2, "Eve_E": 1}
    x = torch.cat([x for x, _ in make_loader(ds, 2, shuffle=False)])
    assert x.shape == (5, 3, 16, 16)
    gray = ds.paths.index(tmp_path / "faces" / "Bob_B" / "Bob_B_0001.png")
    assert x[gray, :, 0, 0].tolist() == [99.0, 99.0, 99.0]


def test_lazy_mode_drops_undecodable_images_from_the_batch(tmp_path):
    broken_folder(tmp_path / "faces")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = lfw_dataset(tmp_path / "faces", preprocessing=PREP, cache=False)
    assert len(ds) == 6  # the undecodable file is only found when read
    with pytest.warns(DataWarning, match="Eve_E_0002.jpg"):
        images, labels = ds.batch(range(6))
    assert len(images) == len(labels) == 5


def test_parent_folder_of_an_archive_is_descended(tmp_path):
    make_folder(tmp_path / "lfw" / "lfw-deepfunneled", {"Ann_A": 2})
    (tmp_path / "lfw" / "pairs.txt").write_text("0\n")
    ds = lfw_dataset(tmp_path / "lfw", preprocessing=PREP)
    assert ds.root == tmp_path / "lfw" / "lfw-deepfunneled" and len(ds) == 2


def test_missing_folder_is_a_located_error(tmp_path):
    with pytest.raises(DataError) as e:
        lfw_dataset(tmp_path / "nope")
    assert e.value.problem.location.file == str(tmp_path / "nope") and "--download" in str(e.value)
