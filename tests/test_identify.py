"""`graphspec identify` and `graphspec cluster`: nearest-gallery identification with an unknown threshold, dlib's
Chinese whispers clustering, pairwise clustering scores, and the commands on real LFW photos."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from graphspec.errors import GraphspecError
from graphspec.faces.identify import UNKNOWN, chinese_whispers, gallery_of, identify, pair_scores, pairwise
from references import NO_FACES_EXTRA, faces_extra


def _blobs(sizes, spread=0.05, seed=0):
    """Unit vectors around well-separated centres (one per identity), and their identities."""
    g = np.random.default_rng(seed)
    centres = np.eye(16)[: len(sizes)]
    rows = np.concatenate([c + g.normal(scale=spread, size=(n, 16)) for c, n in zip(centres, sizes)])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), np.repeat(np.arange(len(sizes)), sizes)


def test_pairwise_distances_are_the_verification_metric():
    from graphspec.faces.verify.metrics import distances
    a, b = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(pairwise(a, b), [[2.0], [1.0]])
    np.testing.assert_allclose(pairwise(a, b, "cosine"), [[1.0], [0.0]], atol=1e-12)
    g = np.random.default_rng(0)
    x, y = g.normal(size=(5, 8)), g.normal(size=(3, 8))
    for metric in ("sqeuclidean", "cosine"):  # every pair, as the verification metric computes it row by row
        want = np.array([[distances(x[i:i + 1], y[j:j + 1], metric)[0] for j in range(3)] for i in range(5)])
        np.testing.assert_allclose(pairwise(x, y, metric), want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="metric must be 'sqeuclidean' or 'cosine'; received 'l1'"):
        pairwise(x, y, "l1")


def test_chinese_whispers_finds_separated_identities_and_numbers_them_by_size():
    rows, truth = _blobs([3, 7, 5])
    labels = chinese_whispers(rows, threshold=0.5)
    assert sorted(np.bincount(labels).tolist(), reverse=True) == [7, 5, 3]
    assert labels[truth == 1].tolist() == [0] * 7 and labels[truth == 2].tolist() == [1] * 5  # largest first
    assert pair_scores(labels, truth) == {"precision": 1.0, "recall": 1.0, "f_measure": 1.0, "clusters": 3}
    lone = np.concatenate([rows, -np.ones((1, 16)) / 4])
    assert len(set(chinese_whispers(lone, threshold=0.5).tolist())) == 4  # a photo near no one stays alone


def test_pair_scores_count_pairs():
    # clusters {0,1,2} {3}; truth {0,1} {2,3}: predicted same pairs 01 02 12, actual same pairs 01 23
    scores = pair_scores(np.array([0, 0, 0, 1]), ["a", "a", "b", "b"])
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 2)
    assert scores["f_measure"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


def test_identify_names_the_nearest_gallery_person_or_unknown_beyond_the_threshold():
    gallery, who = _blobs([2, 2], seed=1)
    probes, _ = _blobs([1, 1], seed=2)
    far = -probes[:1]
    matches = identify(np.concatenate([probes, far]), gallery, ["ann", "ann", "bob", "bob"], ["p", "q", "r"], 0.5)
    assert [(m.name, m.nearest) for m in matches[:2]] == [("ann", "ann"), ("bob", "bob")]
    assert matches[2].name == UNKNOWN and matches[2].distance > 0.5
    assert matches[0].distance == pytest.approx(pairwise(probes[:1], gallery[:2]).min())


def test_a_gallery_needs_person_folders(tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(GraphspecError, match=r"the gallery has no images in person sub-folders"):
        gallery_of(tmp_path)


@pytest.mark.skipif(not faces_extra(), reason=NO_FACES_EXTRA)
def test_identify_and_cluster_commands_on_lfw_photos(tmp_path, cli, lfw_images):
    people = sorted(d.name for d in lfw_images.iterdir() if (d / f"{d.name}_0002.jpg").is_file())[:4]
    for p in people:
        (tmp_path / "gallery" / p).mkdir(parents=True)
        (tmp_path / "gallery" / p / f"{p}_0001.jpg").symlink_to(lfw_images / p / f"{p}_0001.jpg")
        (tmp_path / "photos").mkdir(exist_ok=True)
        (tmp_path / "photos" / f"{p}_0002.jpg").symlink_to(lfw_images / p / f"{p}_0002.jpg")
    rc, out, err = cli("identify", tmp_path / "photos", "--gallery", tmp_path / "gallery", "--threshold", "0.116",
                       "-o", tmp_path / "answers.json")
    assert rc == 0, err
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert len(answers) == 4 and {a["nearest"] for a in answers} <= set(people)
    assert all(a["name"] in (a["nearest"], UNKNOWN) for a in answers)
    assert all((a["name"] == UNKNOWN) == (a["distance"] >= 0.116) for a in answers)
    rc, out, err = cli("cluster", tmp_path / "photos", tmp_path / "gallery", "--threshold", "0.3", "-o",
                       tmp_path / "clusters.csv", "--sheets", tmp_path / "sheets")
    assert rc == 0, err
    rows = list(csv.reader(open(tmp_path / "clusters.csv")))
    assert rows[0] == ["path", "cluster"] and len(rows) == 9
