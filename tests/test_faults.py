"""Faults during training: a process killed with SIGKILL at random points and resumed ends with weights
identical to an uninterrupted run; the checkpoint folder never holds a half-written checkpoint."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = r'''
import sys, numpy as np, torch, graphspec
from graphspec.data import ArrayData
from graphspec.train.trainer import Trainer
from graphspec.train.recipe import Recipe
from graphspec.data.preprocessing import Preprocessing
torch.set_num_threads(1)
SPEC = """
version: 1
name: f
seed: 4
defaults: {activation: identity, weight_init: relu, convolution_mode: same, updater: {type: adam, lr: 0.01}}
inputs: {x: {type: convolutional, channels: 3, height: 8, width: 8}}
vertices:
  c: {type: conv, inputs: [x], kernel: 3, out: 8}
  b: {type: batchnorm, inputs: [c]}
  a: {type: activation, inputs: [b], activation: relu}
  d: {type: dense, inputs: [a], out: 8}
  e: {type: l2_normalize, inputs: [d]}
  loss: {type: center_loss_output, inputs: [e], out: 4, activation: softmax, loss: mcxent, alpha: 0.5, lambda: 0.1}
outputs: [loss]
"""
run, semantics = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
data = ArrayData(rng.integers(0, 256, (64, 3, 10, 10), dtype=np.uint8), rng.integers(0, 4, 64), list("abcd"))
recipe = Recipe(semantics=semantics, epochs=16, batch_size=8, seed=2, keep_checkpoints=2,
                augmentation={"flip": True})
trainer = Trainer(graphspec.build(SPEC), recipe, data, preprocessing=Preprocessing(size=(8, 8)), run_dir=run)
trainer.resume()
trainer.fit()
graphspec.save(trainer.model, run + "/model.safetensors")
'''


def _run(run: Path, semantics: str, kill_after: float | None = None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(run), semantics], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode in (0, -signal.SIGKILL), err
    return p.returncode


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_sigkill_at_random_points_then_resume_gives_identical_weights(semantics, tmp_path):
    straight = tmp_path / "straight"
    start = time.perf_counter()
    assert _run(straight, semantics) == 0
    duration = time.perf_counter() - start  # kills land at random moments within a run of this length
    expected = load_file(str(straight / "model.safetensors"))

    killed = tmp_path / "killed"
    rng = random.Random(semantics)
    kills = 0
    for _ in range(4):  # up to four kills at random moments (start-up included), then run to the end
        if _run(killed, semantics, kill_after=rng.uniform(0.3, 0.9) * duration) != 0:
            kills += 1
            leftovers = [p.name for p in (killed / "checkpoints").glob("*")] if (killed / "checkpoints").exists() else []
            assert all(n.startswith("ckpt-") or ".tmp-" in n for n in leftovers), leftovers
        if (killed / "model.safetensors").exists():
            break
    if not (killed / "model.safetensors").exists():
        assert _run(killed, semantics) == 0
    assert kills >= 1, "no run was actually interrupted; lengthen the training"
    got = load_file(str(killed / "model.safetensors"))
    assert got.keys() == expected.keys()
    for key in expected:
        assert (got[key] == expected[key]).all(), key
