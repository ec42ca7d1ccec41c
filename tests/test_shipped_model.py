"""The model that ships with graphspec: loads by name, is the snipped tutorial network, and reproduces its model
card's accuracy on LFW View 1 (skipped where LFW is absent)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import graphspec
from graphspec.faces import models
from graphspec.faces.data import locate_lfw
from graphspec.data.preprocessing import Preprocessing
from references import NO_FACES_EXTRA, faces_extra

CARD = Path(models.__file__).parent / "nn4small2-lfw.md"


def test_shipped_model_loads_by_name_and_is_the_snipped_tutorial_network():
    assert "nn4small2-lfw" in models.available()
    path = models.path("nn4small2-lfw")
    assert path.stat().st_size <= 20 * 1024 * 1024
    model = graphspec.load("nn4small2-lfw")
    info = model.graphspec
    assert info.spec.outputs == ["embeddings"]
    assert info.frozen == frozenset(info.spec.vertices)  # everything frozen, as the tutorial's snip
    assert graphspec.summarize(info.spec).total == 3_579_440
    assert info.preprocessing == Preprocessing(align="openface", channels="rgb", scale="unit")
    out = model(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


@pytest.mark.skipif(locate_lfw() is None, reason="LFW is not on this machine")
@pytest.mark.skipif(not faces_extra(), reason=NO_FACES_EXTRA)
def test_shipped_model_reproduces_its_model_card_on_pairs_dev_test():
    from graphspec.faces.verify.scoring import verify
    lfw = locate_lfw()
    report, _, _ = verify(graphspec.load("nn4small2-lfw"), lfw / "lfw-deepfunneled", lfw / "pairsDevTest.txt",
                          train_pairs=str(lfw / "pairsDevTrain.txt"))
    card = re.search(r"\| squared L2 \(= cosine\) \| no \| \*\*([0-9.]+)\*\* \| ([0-9.]+) \|", CARD.read_text())
    assert report.accuracy == pytest.approx(float(card.group(1)), abs=1e-9)
    assert report.auc == pytest.approx(float(card.group(2)), abs=5e-4)
    assert report.accuracy >= 0.90
