"""The Trainer: seeded runs reproducible bit for bit, resume after an epoch or mid-epoch bit-identical to a straight
run (both semantics), checkpoints (last k kept, atomic when a write fails, intact after a NaN), metrics.jsonl,
evaluation metrics against a hand-computed confusion matrix, and the learning-rate schedule against its formula."""
from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from rich.console import Console

import graphspec
from graphspec.data.preprocessing import Preprocessing
from graphspec.train.checkpoint import checkpoints, load_checkpoint
from graphspec.train.evaluation import classification_metrics
from graphspec.train.recipe import AugmentationRecipe, DataRecipe, OptimizerRecipe, Recipe, Schedule
from graphspec.train.steps import TorchStep
from graphspec.data import ArrayData
from graphspec.train.trainer import Interrupted, Listener, Trainer, TrainingError
from specs_tiny import tiny_conv

pytestmark = pytest.mark.usefixtures("one_thread")

CONV = tiny_conv(0.05)

PRE = Preprocessing(size=(12, 12), channels="bgr", scale="raw")
CLASSES = [f"p{i}" for i in range(5)]
N_TRAIN, BATCH = 20, 6  # 4 batches per epoch, the last one of 2 images
PER_EPOCH = 4

_rs = np.random.RandomState(0)
TRAIN = ArrayData(_rs.randint(0, 256, (N_TRAIN, 3, 14, 14), dtype=np.uint8), np.arange(N_TRAIN) % 5, CLASSES)
EVAL = ArrayData(_rs.randint(0, 256, (10, 3, 14, 14), dtype=np.uint8), np.arange(10) % 5, CLASSES)


def recipe(semantics="dl4j", **kw) -> Recipe:
    base = dict(semantics=semantics, epochs=2, batch_size=BATCH, seed=5, data=DataRecipe(shuffle=True),
                augmentation=AugmentationRecipe(flip=True), optimizer=OptimizerRecipe(type="adamw", lr=0.01),
                schedule=Schedule(type="cosine", warmup_epochs=0.5), print_every=1)
    base.update(kw)
    return Recipe(**base)


def trainer(r: Recipe, run_dir=None, seed=None, **kw) -> Trainer:
    return Trainer(graphspec.build(CONV, seed=seed), r, TRAIN, EVAL, run_dir=run_dir, preprocessing=PRE,
                   progress=False, **kw)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def straight_run(semantics, tmp_path):
    t = trainer(recipe(semantics), tmp_path / "straight")
    t.fit()
    return t


class StopAfter(Listener):
    def __init__(self, k):
        self.k, self.seen = k, 0

    def on_iteration(self, trainer, score):
        self.seen += 1
        if self.seen == self.k:
            trainer._stop = True


# --- reproducibility and resume --------------------------------------------------------------------------------


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_seeded_run_is_bit_for_bit_reproducible(semantics):
    a, b = trainer(recipe(semantics)), trainer(recipe(semantics))
    init = {k: v.clone() for k, v in a.model.state_dict().items()}
    a.fit()
    b.fit()
    assert_same_state(a.model, b.model)
    assert not torch.equal(a.model.state_dict()["head.weight"], init["head.weight"])  # it did train
    assert not torch.equal(a.model.state_dict()["head.centers"], init["head.centers"])
    # a different recipe seed gives a different run (batch order and augmentation depend on it)
    c = trainer(recipe(semantics, seed=6))
    c.fit()
    assert not torch.equal(c.model.state_dict()["head.weight"], a.model.state_dict()["head.weight"])


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_resume_after_epoch_one_is_bit_identical(semantics, tmp_path):
    straight = straight_run(semantics, tmp_path)
    first = trainer(recipe(semantics), tmp_path / "resumed")
    first.fit(1)
    assert [p.name for p in checkpoints(tmp_path / "resumed")] == [f"ckpt-{PER_EPOCH:08d}.safetensors"]
    # a fresh process: a model built from another seed, so every weight must come from the checkpoint
    second = trainer(recipe(semantics), tmp_path / "resumed", seed=99)
    assert not torch.equal(second.model.head.weight, straight.model.head.weight)
    assert second.resume()
    assert (second.epoch, second.iteration) == (1, PER_EPOCH)
    second.fit()
    assert second.iteration == straight.iteration == 2 * PER_EPOCH
    assert_same_state(second.model, straight.model)
    assert second.step.iteration == straight.step.iteration


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
@pytest.mark.parametrize("stop_after", [3, 4, 6])  # batch 3 of epoch 1, last batch of epoch 1, batch 2 of epoch 2
def test_resume_mid_epoch_is_bit_identical(semantics, stop_after, tmp_path):
    straight = straight_run(semantics, tmp_path)
    run = tmp_path / "interrupted"
    first = trainer(recipe(semantics), run, listeners=[StopAfter(stop_after)])
    with pytest.raises(Interrupted) as ei:
        first.fit()
    saved = checkpoints(run)[-1]
    assert saved.name == f"ckpt-{stop_after:08d}.safetensors"
    assert str(saved) in str(ei.value)
    second = trainer(recipe(semantics), run, seed=99)
    assert second.resume()
    assert second.iteration == stop_after
    second.fit()
    assert_same_state(second.model, straight.model)


def test_resume_without_checkpoint_returns_false(tmp_path):
    t = trainer(recipe(), tmp_path / "empty")
    assert t.resume() is False
    assert (t.epoch, t.iteration) == (0, 0)


# --- checkpoints ------------------------------------------------------------------------------------------------


def test_only_last_k_checkpoints_are_kept(tmp_path):
    t = trainer(recipe(epochs=3, keep_checkpoints=2), tmp_path)
    t.fit()
    assert [p.name for p in checkpoints(tmp_path)] == ["ckpt-00000008.safetensors", "ckpt-00000012.safetensors"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        ["ckpt-00000008.safetensors", "ckpt-00000012.safetensors"]  # no temporary files either
    state = load_checkpoint(checkpoints(tmp_path)[-1])
    assert state["iteration"] == 12 and state["epoch"] == 3
    for k, v in t.model.state_dict().items():
        assert torch.equal(state["model"][k], v), k


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_nan_raises_training_error_naming_last_good_checkpoint(semantics, tmp_path):
    t = trainer(recipe(semantics), tmp_path)
    t.fit(1)
    (good,) = checkpoints(tmp_path)
    good_bytes = good.read_bytes()
    clean_batch = t.batches.batch

    def poisoned(epoch, step, part=slice(None), **kw):
        x, y = clean_batch(epoch, step, part, **kw)
        if t.iteration == PER_EPOCH + 1:  # second batch of epoch 2
            x = x.clone()
            x[0, 0, 0, 0] = float("nan")
        return x, y

    t.batches.batch = poisoned
    with pytest.raises(TrainingError) as ei:
        t.fit()
    message = str(ei.value)
    assert str(good) in message and "nan" in message.lower()
    assert checkpoints(tmp_path) == [good] and good.read_bytes() == good_bytes
    state = load_checkpoint(good)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    again = trainer(recipe(semantics), tmp_path, seed=99)
    assert again.resume() and again.iteration == PER_EPOCH
    assert all(torch.isfinite(v).all() for v in again.model.state_dict().values())


def test_huge_learning_rate_is_caught_as_non_finite_score(tmp_path):
    r = recipe("pytorch", optimizer=OptimizerRecipe(type="sgd", lr=1e30, momentum=0.0, nesterov=False),
               schedule=Schedule(), epochs=3)
    t = trainer(r, tmp_path)
    with pytest.raises(TrainingError) as ei:
        t.fit()
    assert "score became" in str(ei.value)


def test_failing_checkpoint_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    t = trainer(recipe(), tmp_path)
    t.fit(1)
    (good,) = checkpoints(tmp_path)
    good_bytes = good.read_bytes()
    import safetensors.torch

    def disk_full(*args, **kwargs):
        path = args[1] if len(args) > 1 else kwargs.get("filename")
        with open(path, "wb") as f:  # a partial file first, as a real failing write would leave
            f.write(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises((OSError, TrainingError)):
        t.fit()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]  # no partial or temp file
    assert good.read_bytes() == good_bytes
    monkeypatch.undo()
    again = trainer(recipe(), tmp_path, seed=99)
    assert again.resume() and again.iteration == PER_EPOCH


# --- metrics.jsonl, console lines -------------------------------------------------------------------------------


def test_metrics_jsonl_score_lines_every_print_every_and_epoch_lines(tmp_path):
    scores = []

    class Record(Listener):
        def on_iteration(self, trainer, score):
            scores.append(score)

    t = trainer(recipe(print_every=3), tmp_path, listeners=[Record()])
    t.fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    score_lines = [r for r in lines if r["type"] == "score"]
    epoch_lines = [r for r in lines if r["type"] == "epoch"]
    assert len(scores) == 2 * PER_EPOCH
    # DL4J's ScoreIterationListener(3): iterations 0, 3, 6, ... (0-based)
    assert [r["iteration"] for r in score_lines] == list(range(0, 2 * PER_EPOCH, 3))
    assert [r["score"] for r in score_lines] == [scores[r["iteration"]] for r in score_lines]
    assert [r["epoch"] for r in epoch_lines] == [1, 2]
    for r in epoch_lines:
        assert {"accuracy", "precision", "recall", "f1"} <= r.keys()
        assert all(0.0 <= r[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1"))
    # the last epoch line's accuracy: a plain eval-mode forward of the final model on centre-cropped images
    x = torch.from_numpy(EVAL.images[:, :, 1:13, 1:13].astype(np.float32))
    t.model.eval()
    with torch.no_grad():
        pred = t.model(x).argmax(1).numpy()
    assert epoch_lines[-1]["accuracy"] == pytest.approx(float((pred == EVAL.labels).mean()))


def test_score_lines_follow_dl4j_score_iteration_listener_numbering():
    buf = io.StringIO()
    scores = []

    class Record(Listener):
        def on_iteration(self, trainer, score):
            scores.append(score)

    t = trainer(recipe(print_every=3), console=Console(file=buf, width=200), listeners=[Record()])
    t.fit(1)
    lines = [s for s in buf.getvalue().splitlines() if s.startswith("Score at iteration")]
    assert lines == [f"Score at iteration {i} is {scores[i]!r}" for i in (0, 3)]


def test_small_scores_are_printed_like_java_double_to_string():
    many = CONV.replace("out: 5", "out: 4000").replace("lambda: 0.1", "lambda: 1.0e-6").replace("l2: 0.01", "l2: 0")
    buf = io.StringIO()
    t = Trainer(graphspec.build(many), recipe(), TRAIN, None, preprocessing=PRE, progress=False,
                console=Console(file=buf, width=200))
    t.fit(1)
    lines = [s for s in buf.getvalue().splitlines() if s.startswith("Score at iteration")]
    assert lines and all(float(s.rsplit(" ", 1)[1]) < 1e-3 for s in lines)  # MSE over K=4000 outputs ≈ 1/K
    for line in lines:
        assert re.fullmatch(r"Score at iteration \d+ is \d\.\d+E-\d+", line), line


# --- evaluation -------------------------------------------------------------------------------------------------


def test_classification_metrics_against_hand_computed_confusion_matrix():
    #               actual: 0 0 0 1 1 2 2 2 2 3
    actual = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    predicted = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0, 3, 3])
    # confusion (rows actual, cols predicted):
    #   0: [2 1 0 0]   1: [0 1 1 0]   2: [1 0 2 1]   3: [0 0 0 1]
    tp = np.array([2, 1, 2, 1])
    pred_count = np.array([3, 2, 3, 2])
    true_count = np.array([3, 2, 4, 1])
    precision, recall = tp / pred_count, tp / true_count
    m = classification_metrics(predicted, actual, 6)  # classes 4, 5 never occur: not averaged
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["precision"] == pytest.approx(precision.mean())
    assert m["recall"] == pytest.approx(recall.mean())
    # DL4J 0.9.x Evaluation.f1(): the harmonic mean of the macro precision and recall
    p, r = precision.mean(), recall.mean()
    assert m["f1"] == pytest.approx(2 * p * r / (p + r))
    assert m["examples"] == 10
    assert m["precision"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 1 / 2) / 4)


def test_classification_metrics_macro_average_excludes_undefined_classes_like_dl4j():
    actual = torch.tensor([0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 0, 3])  # class 2 never predicted, class 3 never present
    m = classification_metrics(predicted, actual, 4)
    assert m["precision"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # classes 0, 1, 3 (tp+fp > 0)
    assert m["recall"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # classes 0, 1, 2 (tp+fn > 0)


# --- learning-rate schedule ------------------------------------------------------------------------------------


def schedule_lr(i, base, per_epoch, epochs, warmup, min_ratio):
    """Linear warmup over warmup·per_epoch iterations reaching `base`, then a half cosine to min_ratio·base."""
    w = warmup * per_epoch
    if i < w:
        return base * (i + 1) / w
    t = min((i - w) / ((epochs - warmup) * per_epoch), 1.0)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def test_cosine_schedule_with_warmup_values(monkeypatch):
    used = []
    original = TorchStep.__call__

    def recording(self, x, y, n=None):
        used.append([g["lr"] for g in self.optimizer.param_groups])
        return original(self, x, y, n)

    monkeypatch.setattr(TorchStep, "__call__", recording)
    base, epochs = 0.02, 3
    r = recipe("pytorch", epochs=epochs, optimizer=OptimizerRecipe(type="adamw", lr=base),
               schedule=Schedule(type="cosine", warmup_epochs=1, min_lr_ratio=0.1))
    trainer(r).fit()
    assert len(used) == epochs * PER_EPOCH
    want = [schedule_lr(i, base, PER_EPOCH, epochs, 1, 0.1) for i in range(epochs * PER_EPOCH)]
    for i, (lrs, w) in enumerate(zip(used, want)):
        assert lrs == pytest.approx([w, w], rel=1e-12), i  # both parameter groups (decay and no decay)
    assert used[0][0] == pytest.approx(base / 4) and used[PER_EPOCH][0] == pytest.approx(base)


def test_metrics_lr_is_the_rate_used_in_that_iteration(tmp_path):
    base = 0.02
    r = recipe("pytorch", epochs=2, optimizer=OptimizerRecipe(type="adamw", lr=base),
               schedule=Schedule(type="cosine", warmup_epochs=1))
    trainer(r, tmp_path).fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in lines if r["type"] == "score"]
    assert logged[0] == pytest.approx(schedule_lr(0, base, PER_EPOCH, 2, 1, 0.0))
