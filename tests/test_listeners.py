"""Listeners of a training run (graphspec.train.listeners): CSV and TensorBoard logs of the run's records, the best
model saved when a metric improves, early stopping after a known peak, all resumable; recipe checks before work."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import graphspec
from graphspec.errors import GraphspecError
from graphspec.train.listeners import CSVLogger, Listener, Monitor, TensorBoardLogger
from graphspec.train.recipe import Recipe
from graphspec.train.session import recipe_listeners, run_session
from test_trainer import EVAL, PER_EPOCH, TRAIN, assert_same_state, recipe, trainer

pytestmark = pytest.mark.usefixtures("one_thread")

# the held-out accuracy of a scripted run: it peaks at epoch 3
PEAKED = [0.2, 0.5, 0.7, 0.6, 0.65, 0.4, 0.3, 0.2]


def _records(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logs_every_logged_iteration_and_every_epoch_as_metrics_jsonl_has_them(tmp_path):
    t = trainer(recipe(), tmp_path, listeners=[CSVLogger(tmp_path)])
    t.fit()
    scores, epochs = _rows(tmp_path / "scores.csv"), _rows(tmp_path / "epochs.csv")
    assert list(scores[0]) == ["epoch", "iteration", "score", "lr", "images_per_s"]
    assert len(scores) == 2 * PER_EPOCH
    for row, record in zip(scores, _records(tmp_path, "score")):
        assert {k: float(v) for k, v in row.items()} == pytest.approx({k: float(record[k]) for k in row})
    assert list(epochs[0])[:3] == ["epoch", "iteration", "score"]
    assert {"accuracy", "precision", "recall", "f1"} <= set(epochs[0])
    for row, record in zip(epochs, _records(tmp_path, "epoch")):
        assert float(row["accuracy"]) == record["accuracy"]
        assert int(row["iteration"]) == record["iteration"]
    # the epoch's score is the mean of its iterations' scores
    first = [r["score"] for r in _records(tmp_path, "score") if r["epoch"] == 1]
    assert float(epochs[0]["score"]) == pytest.approx(sum(first) / len(first))


def test_tensorboard_event_files_hold_the_records_as_tensorboards_own_reader_sees_them(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    t = trainer(recipe(), tmp_path, listeners=[TensorBoardLogger(tmp_path)])
    t.fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/score", "train/lr", "train/images_per_s", "eval/accuracy", "eval/score"} <= set(
        events.Tags()["scalars"])
    score = [(e.step, e.value) for e in events.Scalars("train/score")]
    assert score == [(r["iteration"], pytest.approx(r["score"], rel=1e-6)) for r in _records(tmp_path, "score")]
    accuracy = [(e.step, e.value) for e in events.Scalars("eval/accuracy")]
    assert accuracy == [(r["iteration"], pytest.approx(r["accuracy"])) for r in _records(tmp_path, "epoch")]


class Scripted(Listener):
    """Replaces the evaluation's accuracy by PEAKED[epoch] and keeps a copy of the model after each epoch."""

    def __init__(self):
        self.models = {}

    def on_eval(self, trainer, metrics):
        metrics["accuracy"] = PEAKED[trainer.epoch]
        self.models[trainer.epoch + 1] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_the_best_model_is_kept_and_the_run_stops_after_patience_evaluations_past_the_peak(tmp_path):
    scripted = Scripted()
    monitor = Monitor("accuracy", keep_best=True, patience=2)
    t = trainer(recipe(epochs=8), tmp_path, listeners=[scripted, monitor])
    t.fit()
    # peak at epoch 3; epochs 4 and 5 do not beat 0.7: stop after epoch 5, as DL4J's MaxEpochsWithoutImprovement
    assert t.epoch == 5 and (monitor.best, monitor.best_epoch) == (0.7, 3)
    assert t.stop_reason == "early stop: accuracy has not improved for 2 evaluations (best 0.7 at epoch 3)"
    best = graphspec.load(tmp_path / "best.safetensors")
    for k, v in best.state_dict().items():
        torch.testing.assert_close(v, scripted.models[3][k], rtol=0, atol=0)
    assert len(_records(tmp_path, "epoch")) == 5


def test_early_stopping_resumes_counting_where_the_interrupted_run_was(tmp_path):
    straight = trainer(recipe(epochs=8), tmp_path / "a", listeners=[Scripted(), Monitor("accuracy", patience=2)])
    straight.fit()
    first = trainer(recipe(epochs=8), tmp_path / "b", listeners=[Scripted(), Monitor("accuracy", patience=2)])
    first.fit(4)  # one evaluation past the peak, then a checkpoint
    resumed = trainer(recipe(epochs=8), tmp_path / "b", listeners=[Scripted(), Monitor("accuracy", patience=2)])
    assert resumed.resume()
    assert resumed.listeners[1].waited == 1 and resumed.listeners[1].best == 0.7
    resumed.fit()
    assert resumed.epoch == straight.epoch == 5
    assert_same_state(resumed.model, straight.model)


def test_smaller_is_better_for_losses_and_the_training_score():
    assert Monitor("loss").smaller and Monitor("score").smaller and Monitor("head/mse").smaller
    assert not Monitor("accuracy").smaller and not Monitor("head/f1").smaller


def test_a_metric_the_evaluation_does_not_give_is_refused_naming_those_it_does(tmp_path):
    t = trainer(recipe(epochs=2), tmp_path, listeners=[Monitor("auc", keep_best=True)])
    with pytest.raises(GraphspecError) as e:
        t.fit()
    assert e.value.problem.message == ("cannot monitor 'auc': the evaluation gives score, accuracy, precision, "
                                       "recall, f1")


@pytest.mark.parametrize("settings, run, held_out, message", [
    (dict(keep_best="accuracy"), True, False,
     "'accuracy' is measured on held-out data: set data.eval_fraction (--eval-fraction), or monitor 'score' (the "
     "epoch's mean training score)"),
    (dict(keep_best="score"), False, True, "keep_best writes best.safetensors into the run directory: give --out "
                                           "RUN_DIR"),
    (dict(log=["csv"]), False, True, "--log csv writes into the run directory: give --out RUN_DIR"),
])
def test_recipe_settings_that_cannot_work_are_refused_before_training(tmp_path, settings, run, held_out, message):
    with pytest.raises(GraphspecError) as e:
        recipe_listeners(Recipe(**settings), tmp_path if run else None, EVAL if held_out else None)
    assert e.value.problem.message == message


def test_a_recipe_with_keep_best_early_stop_and_both_logs_runs_as_a_session(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    net = graphspec.build(open_spec())
    r = recipe(semantics="pytorch", epochs=3, keep_best="score", early_stop=5, log=["csv", "tensorboard"])
    trainer_ = run_session(net, r, TRAIN, EVAL, out=tmp_path / "run")
    folder = tmp_path / "run"
    assert {"best.safetensors", "scores.csv", "epochs.csv", "tensorboard"} <= {p.name for p in folder.iterdir()}
    assert trainer_.epoch == 3 and trainer_.stop_reason is None
    epochs = _rows(folder / "epochs.csv")
    assert len(epochs) == 3


def open_spec():
    from test_trainer import CONV
    return CONV


# --- verification on identities set aside (data.eval_by: person) ----------------------------------------------


def test_auc_counts_every_different_pair_farther_than_every_same_pair_and_ties_half():
    import numpy as np
    from graphspec.train.evaluation import roc_auc
    rng = np.random.default_rng(0)
    same, different = rng.integers(0, 6, 40).astype(float), rng.integers(2, 9, 55).astype(float)
    brute = np.mean([(d > s) + 0.5 * (d == s) for s in same for d in different])
    d = np.concatenate([same, different])
    labels = np.r_[np.ones(len(same), bool), np.zeros(len(different), bool)]
    assert roc_auc(d, labels) == pytest.approx(brute, abs=1e-12)


def test_verification_of_separated_identities_is_perfect_and_of_identical_rows_is_chance():
    from graphspec.train.evaluation import verification_metrics
    labels = torch.arange(6).repeat_interleave(4)
    centres = torch.eye(8)[:6] * 10
    features = centres[labels] + 0.01 * torch.randn(24, 8, generator=torch.Generator().manual_seed(0))
    m = verification_metrics(features, labels.numpy())
    assert (m["verification_auc"], m["verification_accuracy"], m["eer"]) == (1.0, 1.0, 0.0)
    assert m["pairs"] == 2 * 36  # the 6·C(4,2) same pairs and as many different ones
    chance = verification_metrics(torch.ones(24, 8), labels.numpy())
    assert chance["verification_auc"] == 0.5 and chance["verification_accuracy"] == 0.5


def test_a_face_run_evaluated_on_people_set_aside_reports_verification(tmp_path):
    from graphspec.faces.data import synthetic_faces
    from graphspec.faces.training import train
    from test_distill import STUDENT
    faces = synthetic_faces(tmp_path / "faces", identities=8, images=4, seed=0, size=32)
    (tmp_path / "s.yaml").write_text(STUDENT)
    (tmp_path / "r.yaml").write_text(
        "semantics: pytorch\nepochs: 2\nbatch_size: 8\npreprocessing: {size: [32, 32]}\n"
        "data: {eval_fraction: 0.25, eval_by: person, per_class: 4}\nlosses: {embeddings: {loss: triplet}}\n"
        "keep_best: verification_auc\n")
    t = train(str(tmp_path / "s.yaml"), data=str(faces), recipe_path=str(tmp_path / "r.yaml"),
              out=str(tmp_path / "run"), cache_dir=tmp_path / "cache")
    assert set(t.eval_data.classes).isdisjoint(t.train_data.classes)  # whole people set aside
    epochs = _records(tmp_path / "run", "epoch")
    assert {"verification_auc", "verification_accuracy", "eer", "pairs"} <= set(epochs[-1])
    assert (tmp_path / "run" / "best.safetensors").is_file()
