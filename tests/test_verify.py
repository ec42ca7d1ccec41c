"""Face-verification protocol: distances, threshold selection, accuracy, ROC AUC, EER and TAR@FAR against hand
computations and brute force; fold handling (View 2 and cross-validation in one file); and `graphspec verify`
end to end on a small LFW-layout folder, against embeddings computed directly."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import graphspec
from graphspec.cli import main
from graphspec.data.preprocessing import Preprocessing
from graphspec.errors import GraphspecError
from graphspec.faces.verify.metrics import (accuracy_at, best_threshold, distances, eer, evaluate_folds,
                                      evaluate_with_threshold, roc_auc, roc_curve, tar_at_far)
from graphspec.faces.verify.scoring import stratified_folds, verify

# a hand example: same-person distances 1, 2, 3, 6 and different-person 4, 5, 7, 8
D = np.array([1.0, 2.0, 3.0, 6.0, 4.0, 5.0, 7.0, 8.0])
SAME = np.array([True] * 4 + [False] * 4)


def test_distances_by_hand():
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [3.0, 4.0]])
    np.testing.assert_allclose(distances(a, b, "sqeuclidean"), [2.0, 0.0])
    np.testing.assert_allclose(distances(a, b * 2, "cosine"), [1.0, 0.0], atol=1e-12)  # scale-free
    with pytest.raises(ValueError, match="metric must be 'sqeuclidean' or 'cosine'; received 'l1'"):
        distances(a, b, "l1")


def test_accuracy_and_best_threshold_by_hand():
    assert accuracy_at(D, SAME, 3.5) == 7 / 8  # only the same pair at 6 is wrong
    assert accuracy_at(D, SAME, 0.0) == 4 / 8
    # 3.5 (between 3 and 4) and 6.5 (between 6 and 7) both give 7/8: ties go to the smallest
    assert best_threshold(D, SAME) == 3.5
    assert best_threshold(np.array([0.1, 0.2, 0.3, 0.4]), np.array([True, True, False, False])) == 0.25


def test_best_threshold_is_optimal_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        same = rng.random(60) < 0.5
        d = np.round(rng.normal(1.0, 0.5, 60) + (~same) * rng.uniform(0, 1.5), 1)  # rounding makes ties
        t = best_threshold(d, same)
        brute = max(accuracy_at(d, same, c) for c in np.linspace(d.min() - 1, d.max() + 1, 4001))
        assert accuracy_at(d, same, t) == brute


def test_roc_auc_eer_and_tar_by_hand():
    fpr, tpr = roc_curve(D, SAME)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0, 1.0])
    assert roc_auc(D, SAME) == pytest.approx(14 / 16)  # 14 of the 16 (same, different) pairs are ordered
    assert eer(D, SAME) == pytest.approx(0.25)  # at distance 4: FAR 1/4 = FRR 1/4
    assert tar_at_far(D, SAME, 0.0) == 0.75 and tar_at_far(D, SAME, 0.3) == 0.75
    assert tar_at_far(D, SAME, 0.5) == 1.0


def test_roc_auc_is_the_mann_whitney_statistic_with_ties():
    rng = np.random.default_rng(2)
    same = rng.random(300) < 0.4
    d = np.round(rng.normal(0, 1, 300) + (~same) * 0.8, 1)
    ds, dd = d[same][:, None], d[~same][None, :]
    want = ((ds < dd).sum() + 0.5 * (ds == dd).sum()) / (same.sum() * (~same).sum())
    assert roc_auc(d, same) == pytest.approx(want, abs=1e-12)


def test_eer_is_where_false_accepts_equal_false_rejects():
    rng = np.random.default_rng(3)
    same = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
    d = np.r_[rng.normal(0, 1, 2000), rng.normal(2, 1, 2000)]
    ts = np.sort(d)
    far = np.array([(d[~same] <= t).mean() for t in ts])
    frr = np.array([(d[same] > t).mean() for t in ts])
    i = np.argmin(np.abs(far - frr))
    assert eer(d, same) == pytest.approx((far[i] + frr[i]) / 2, abs=1e-3)
    assert eer(d, same) == pytest.approx(0.1587, abs=0.02)  # two unit normals 2 apart: Φ(-1)


def test_folds_choose_the_threshold_on_the_other_folds():
    # three folds; fold 3's own best threshold would differ, but it is tested with folds 1+2's
    d = np.array([1, 2, 5, 6, 1, 2, 5, 6, 4, 4.5, 3, 7], float)
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0], bool)
    folds = np.repeat([1, 2, 3], 4)
    r = evaluate_folds(d, same, folds, "sqeuclidean", "test")
    want_t = [best_threshold(d[folds != f], same[folds != f]) for f in (1, 2, 3)]
    want_acc = [accuracy_at(d[folds == f], same[folds == f], t) for f, t in zip((1, 2, 3), want_t)]
    assert r.fold_thresholds == want_t and r.fold_accuracies == want_acc
    assert want_acc == [1.0, 1.0, 0.25]  # folds 1+2 pick 3.5 (ties to the smallest): only fold 3's 7 is right
    assert r.accuracy == pytest.approx(2.25 / 3) and r.accuracy_std == pytest.approx(np.std(want_acc))
    assert r.auc == roc_auc(d, same) and r.pairs == 12
    fixed = evaluate_with_threshold(d, same, 4.5, "cosine", "fixed")
    assert fixed.accuracy == accuracy_at(d, same, 4.5) == 10 / 12 and fixed.threshold == 4.5


def test_stratified_folds_keep_the_proportion_of_matched_pairs():
    same = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    folds = stratified_folds(same, 10)
    assert sorted(set(folds)) == list(range(1, 11))
    for f in range(1, 11):
        assert (same[folds == f]).sum() == 30 and (~same[folds == f]).sum() == 30
    assert (np.diff(folds[:300]) >= 0).all()  # contiguous runs, as View 2's folds


# --- end to end ----------------------------------------------------------------------------------------------

PEOPLE = {"Ann_A": 3, "Bob_B": 2, "Cid_C": 2, "Dee_D": 1}
VIEW1 = "3\nAnn_A\t1\t2\nAnn_A\t2\t3\nBob_B\t1\t2\nAnn_A\t1\tCid_C\t1\nBob_B\t2\tDee_D\t1\nCid_C\t2\tDee_D\t1\n"


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    """A tiny LFW layout: the same noise image per person with small per-photo changes (so people differ)."""
    root = tmp_path_factory.mktemp("lfw")
    rng = np.random.default_rng(0)
    for name, n in PEOPLE.items():
        (root / name).mkdir()
        base = rng.integers(0, 256, (64, 64, 3))
        for i in range(1, n + 1):
            img = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{name}_{i:04d}.jpg")
    (root / "pairs.txt").write_text(VIEW1)
    model = graphspec.snip(graphspec.build("specs/nn4small2.yaml", seed=1), ["embeddings"])
    graphspec.save(model, root / "emb.safetensors", preprocessing=Preprocessing(channels="rgb", scale="unit"))
    return root


def direct_distances(root) -> np.ndarray:
    model = graphspec.load(root / "emb.safetensors")
    prep = Preprocessing(channels="rgb", scale="unit")
    files = [("Ann_A", 1, "Ann_A", 2), ("Ann_A", 2, "Ann_A", 3), ("Bob_B", 1, "Bob_B", 2),
             ("Ann_A", 1, "Cid_C", 1), ("Bob_B", 2, "Dee_D", 1), ("Cid_C", 2, "Dee_D", 1)]
    path = lambda n, i: root / n / f"{n}_{i:04d}.jpg"  # noqa: E731
    emb = lambda n, i: model(prep.to_tensor(prep.load(path(n, i))[None])).detach().numpy()[0]  # noqa: E731
    return np.array([((emb(a, i) - emb(b, j)) ** 2).sum() for a, i, b, j in files])


def test_verify_threshold_from_train_pairs_and_fixed(lfw):
    d = direct_distances(lfw)
    same = np.array([True] * 3 + [False] * 3)
    model = graphspec.load(lfw / "emb.safetensors")
    report, got_d, got_same = verify(model, lfw, lfw / "pairs.txt", train_pairs=lfw / "pairs.txt")
    np.testing.assert_allclose(got_d, d, rtol=1e-3, atol=1e-6)
    assert list(got_same) == list(same)
    assert report.threshold == best_threshold(got_d, same)
    assert report.accuracy == accuracy_at(got_d, same, report.threshold)
    assert report.auc == roc_auc(got_d, same)
    t = float(np.median(d))
    fixed, _, _ = verify(model, lfw, lfw / "pairs.txt", threshold=t)
    assert fixed.threshold == t and fixed.accuracy == accuracy_at(got_d, same, t)
    assert fixed.protocol == f"pairs.txt, threshold {t:g} given"


def test_verify_cli_json_and_errors(lfw, capsys):
    args = ["verify", str(lfw / "emb.safetensors"), "--data", str(lfw), "--pairs", str(lfw / "pairs.txt")]
    assert main(args + ["--train-pairs", str(lfw / "pairs.txt"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"accuracy", "auc", "eer", "tar_at_far_1e2", "threshold"} <= out.keys() and out["pairs"] == 6
    assert main(args + ["--train-pairs", str(lfw / "pairs.txt"), "--threshold", "1.0"]) == 2
    err = capsys.readouterr().err
    assert "a fixed --threshold cannot be used here: --train-pairs chooses one" in err and "Traceback" not in err
    (lfw / "bad.txt").write_text("3\nAnn_A\t1\n")
    assert main(args[:-1] + [str(lfw / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt:2" in err and "expected a matched pair 'NAME I J'; received 2 fields" in err
    with pytest.raises(GraphspecError, match="no folder 'Ann_A'"):
        verify(graphspec.load(lfw / "emb.safetensors"), lfw / "Ann_A", lfw / "pairs.txt")


def test_pairs_scored_infinitely_far_give_a_roc_without_numpy_warnings():
    # pairs with a photo where no face was found are scored as d = inf (different); tied at inf, they move together
    import warnings

    from graphspec.faces.verify.metrics import roc_curve
    d = np.array([0.1, np.inf, 0.3, np.inf, 0.5])
    same = np.array([1, 1, 0, 0, 1], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fpr, tpr = roc_curve(d, same)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1])
