"""The real LFW folder (skipped when absent: set GRAPHSPEC_LFW, or keep ../shared/data/lfw beside the repo).

Counts are the official ones (LFW README / lfw-names.txt / the View 1 people files). Only a handful of images are
decoded; everything else works on the listing, so the module runs in seconds.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graphspec.data import Preprocessing, make_loader
from graphspec.faces.data import dataset_report, lfw_dataset, locate_lfw, read_pairs, read_people, scan_folder

LFW = locate_lfw()
pytestmark = [pytest.mark.skipif(LFW is None, reason="LFW not found (set GRAPHSPEC_LFW or ../shared/data/lfw)"),
              pytest.mark.usefixtures("isolated_cache")]


@pytest.fixture(scope="module")
def scan():
    return scan_folder(LFW)


def protocol(name: str) -> Path:
    path = LFW / name
    if not path.exists():
        pytest.skip(f"{name} not in {LFW}")
    return path


def test_whole_folder_is_13233_images_of_5749_people(scan):
    assert (len(scan.people), scan.n_images) == (5749, 13233)
    assert scan.skipped == [] and scan.empty_folders == []
    sizes = [len(f) for f in scan.images.values()]
    assert sizes.count(1) == 4069  # SEMANTICS.md §10: why DL4J's balanced filter keeps one image per person


def test_people_files_select_9525_of_4038_and_6671_of_1184_with_two_images():
    train = protocol("peopleDevTrain.txt")
    ds = lfw_dataset(LFW, people=train, cache=False)
    assert (len(ds), len(ds.classes)) == (9525, 4038)
    ds = lfw_dataset(LFW, people=train, min_images=2, cache=False)
    assert (len(ds), len(ds.classes)) == (6671, 1184)
    listed = read_people(train)
    assert sum(p.images for p in listed) == 9525  # the file's own counts agree with the folder
    report = dataset_report(LFW, people=train, min_images=2)
    assert (report.identities, report.images) == (1184, 6671) and report.count_mismatches == []
    assert sum(row["people"] for row in report.histogram) == 1184


def test_dev_train_and_dev_test_are_disjoint_and_cover_lfw():
    train = {p.name for p in read_people(protocol("peopleDevTrain.txt"))}
    test = read_people(protocol("peopleDevTest.txt"))
    assert (len(test), sum(p.images for p in test)) == (1711, 3708)
    assert not train & {p.name for p in test} and len(train) + len(test) == 5749


def test_dl4j_mode_is_5749_images_one_per_person_in_120_batches_of_48():
    ds = lfw_dataset(LFW, dl4j=True, cache=False)
    assert len(ds) == 5749 and len(ds.classes) == 5749
    assert set(ds.counts().values()) == {1}
    loader = make_loader(ds, 48)
    batches = loader.sampler.batches
    sizes = [len(batches.indices(0, step)) for step in range(len(batches))]
    assert not batches.shuffle and np.array_equal(batches.order(0), batches.order(1))  # DL4J's fixed order
    assert len(loader) == math.ceil(5749 / 48) == 120 and sizes[:-1] == [48] * 119 and sizes[-1] == 37
    assert sorted(ds.labels.tolist()) == list(range(5749))  # label = rank of the name among all 5,749


def test_dl4j_images_are_whole_250_resized_to_96_bgr_raw():
    ds = lfw_dataset(LFW, dl4j=True, cache=False)
    x, y = ds[0]
    path = ds.paths[0]
    with Image.open(path) as im:
        assert im.size == (250, 250)
        ref = np.asarray(im.convert("RGB").resize((96, 96), Image.Resampling.BILINEAR))
    assert x.shape == (3, 96, 96) and float(x.max()) > 1.0  # 0..255, not scaled
    assert np.array_equal(x.numpy().astype(np.uint8), ref[:, :, ::-1].transpose(2, 0, 1))
    assert ds.classes[y] == path.parent.name


def test_pairs_files_name_existing_images(scan):
    for name, n in (("pairsDevTrain.txt", 1100), ("pairsDevTest.txt", 500)):
        pairs = read_pairs(protocol(name))
        assert len(pairs) == 2 * n and sum(p.same for p in pairs) == n
        missing = [p for p in pairs for f in p.paths(scan.root) if not os.path.exists(f)]
        assert missing == []


def test_a_few_images_through_the_cache():
    ds = lfw_dataset(LFW, people=["Aaron_Eckhart", "Aaron_Guiel", "Aaron_Patterson"],
                     preprocessing=Preprocessing(channels="rgb", scale="unit"))
    assert len(ds) == 3 and ds.cached
    x = ds.preprocessing.to_tensor(ds.batch(range(3))[0])
    assert x.shape == (3, 3, 96, 96) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
