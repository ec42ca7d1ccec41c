"""The framework's training session on datasets it is given (no face folders): the run directory it records."""
from __future__ import annotations

import numpy as np
import yaml

import graphspec
from graphspec.train.recipe import Recipe
from graphspec.train.session import run_session
from graphspec.data import ArrayData
from specs_tiny import tiny_conv


def _data(n=16, classes=4):
    images = np.random.default_rng(0).integers(0, 255, (n, 3, 12, 12), dtype=np.uint8)
    return ArrayData(images, np.arange(n) % classes, [f"c{i}" for i in range(classes)])


def test_a_session_on_arrays_records_the_run_and_adapts_the_head(tmp_path):
    net = graphspec.build(tiny_conv(0.01))
    assert net.get_submodule("head").weight.shape[0] == 5
    trainer = run_session(net, Recipe(epochs=1, batch_size=8), _data(), out=tmp_path / "run")
    assert trainer.iteration == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock", "checkpoints", "metrics.jsonl", "model.safetensors", "recipe.yaml", "run.yaml", "spec.yaml"]
    saved = graphspec.load(tmp_path / "run" / "model.safetensors")
    assert saved.get_submodule("head").weight.shape[0] == 4  # as many classes as the data has
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["epochs"] == 1


def test_a_resumed_session_ends_where_an_uninterrupted_one_does(tmp_path):
    full = run_session(graphspec.build(tiny_conv(0.01)), Recipe(epochs=2, batch_size=8), _data(), out=tmp_path / "a")
    run_session(graphspec.build(tiny_conv(0.01)), Recipe(epochs=1, batch_size=8), _data(), out=tmp_path / "b")
    resumed_model = graphspec.load(tmp_path / "b" / "model.safetensors")
    resumed = run_session(resumed_model, Recipe(epochs=2, batch_size=8), _data(), out=tmp_path / "b", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
