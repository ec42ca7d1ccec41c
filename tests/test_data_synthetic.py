"""The built-in synthetic face set: deterministic, nested, LFW layout, identities separable but varied."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from graphspec.data import DataError, Preprocessing
from graphspec.faces.data import lfw_dataset, scan_folder, synthetic_faces
from graphspec.faces.data.synthetic import identity_names

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return synthetic_faces(tmp_path_factory.mktemp("syn") / "faces", identities=6, images=6, seed=0, size=64)


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_lfw_layout_and_dl4j_labels(faces):
    scan = scan_folder(faces)
    assert len(scan.people) == 6 and scan.n_images == 36 and scan.skipped == []
    for name in scan.people:
        assert not re.search(r"\d", name)
        for f in scan.images[name]:  # DataVec's PatternPathLabelGenerator(".[0-9]+"): first piece of the name
            assert re.split(r".[0-9]+", f.rsplit(".", 1)[0])[0] == name
    assert scan.images[scan.people[0]][0].endswith("_0001.jpg")


def test_deterministic_and_nested(faces, tmp_path):
    again = synthetic_faces(tmp_path / "again", identities=6, images=6, seed=0, size=64)
    assert files(again) == files(faces)
    small = synthetic_faces(tmp_path / "small", identities=4, images=3, seed=0, size=64)
    assert all(files(faces)[k] == v for k, v in files(small).items())  # identity i is the same in any set
    other = synthetic_faces(tmp_path / "other", identities=6, images=6, seed=1, size=64)
    assert files(other).keys() != files(faces).keys()
    assert identity_names(6, 0) == identity_names(8, 0)[:6] and len(set(identity_names(300, 0))) == 300


def test_reused_when_complete_and_refuses_foreign_folders(faces, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in faces.rglob("*.jpg")}
    assert synthetic_faces(faces, identities=6, images=6, seed=0, size=64) == faces
    assert {p: p.stat().st_mtime_ns for p in faces.rglob("*.jpg")} == before
    with pytest.raises(DataError, match="not an identical synthetic set"):
        synthetic_faces(faces, identities=7, images=6, seed=0, size=64)
    default = synthetic_faces(identities=2, images=2, size=32)
    assert default.parent == tmp_path / "cache" / "synthetic" and len(files(default)) == 4
    with pytest.raises(DataError, match="identities >= 1"):
        synthetic_faces(tmp_path / "x", identities=0)


def test_identities_are_separable_but_every_photo_differs(faces):
    """Face-region pixels: leave-one-out nearest neighbour far above chance (1/6), yet no two photos of a
    person alike (pose, expression, lighting, background and noise vary)."""
    ds = lfw_dataset(faces, preprocessing=Preprocessing(size=(32, 32), crop=0.6, channels="rgb"), cache=False)
    images, labels = ds.batch(range(len(ds)))
    x = images.reshape(len(images), -1).float()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    y = labels.numpy()
    accuracy = float((y[d.argmin(1).numpy()] == y).mean())
    assert accuracy >= 0.75
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    diff = y[:, None] != y[None, :]
    mad = (images[:, None].float() - images[None].float()).abs().mean(dim=(2, 3, 4)).numpy()
    assert mad[same].min() > 8  # gray levels: photos of one person are never near-duplicates
    assert mad[same].mean() < mad[diff].mean()
