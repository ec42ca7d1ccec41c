"""Distributed training: N processes x B/N examples compute what 1 process x B computes, and a dead worker ends
the run with a clear error. Runs on the CPU with the gloo backend."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import graphspec
from graphspec.data.preprocessing import Preprocessing
from graphspec.train import distributed
from graphspec.train.distributed import Context
from graphspec.train.recipe import Recipe
from graphspec.data import ArrayData
from graphspec.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SPEC = """
version: 1
name: dist
seed: 3
defaults: {activation: identity, weight_init: relu, convolution_mode: same, l2: 1.0e-3,
           updater: {type: adam, lr: 0.01, eps: 1.0e-3}}
inputs:
  x: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  c1: {type: conv, inputs: [x], kernel: 3, stride: 2, out: 6, bias: false}  # a bias before BN has no gradient
  b1: {type: batchnorm, inputs: [c1]}
  a1: {type: activation, inputs: [b1], activation: relu}
  d: {type: dense, inputs: [a1], out: 8}
  e: {type: l2_normalize, inputs: [d]}
  loss: {type: center_loss_output, inputs: [e], out: 5, activation: softmax, loss: mcxent, alpha: 0.5,
         lambda: 0.1, gradient_normalization: renormalize_l2_per_layer}
outputs: [loss]
"""
N_IMAGES, BATCH = 192, 48  # 4 iterations per epoch


def data() -> ArrayData:
    rng = np.random.default_rng(0)
    return ArrayData(rng.integers(0, 256, (N_IMAGES, 3, 10, 10), dtype=np.uint8), rng.integers(0, 5, N_IMAGES),
                     [str(i) for i in range(5)])


def recipe(semantics: str) -> Recipe:
    return Recipe(semantics=semantics, epochs=1, batch_size=BATCH, seed=5, sync_batchnorm=True,
                  augmentation={"flip": True})


def train(semantics: str, ctx: Context) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    model = graphspec.build(SPEC)
    t = Trainer(model, recipe(semantics), data(), preprocessing=Preprocessing(size=(8, 8), scale="unit"), ctx=ctx)
    t.fit()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, semantics: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ok = False
    try:
        state = train(semantics, Context(rank, world))
        if rank == 0:
            torch.save(state, out)
        ok = True
    finally:
        distributed.shutdown(ok)
    distributed.end_process(0)  # as the CLI's workers do: gloo can abort in the interpreter's teardown


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("semantics", ["dl4j", "pytorch"])
def test_two_processes_of_24_equal_one_process_of_48(semantics, tmp_path):
    single = train(semantics, Context())
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, free_port(), semantics, out), nprocs=2, join=True)
    double = torch.load(out, weights_only=True)
    assert single.keys() == double.keys()
    moved = graphspec.build(SPEC).state_dict()
    for key in single:
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
        if key.endswith(("weight", "centers", "running_mean")):
            assert not torch.equal(single[key], moved[key]), f"{key} did not train"


def test_batch_share_covers_the_global_batch():
    for n in (48, 37, 5):
        parts = [Context(r, 3).part(n) for r in range(3)]
        covered = [i for p in parts for i in range(n)[p]]
        assert covered == list(range(n))
        assert max(len(range(n)[p]) for p in parts) - min(len(range(n)[p]) for p in parts) <= 1


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_a_killed_worker_ends_the_run_with_a_clear_error(tmp_path):
    spec = tmp_path / "dist.yaml"
    spec.write_text(SPEC)
    cmd = [sys.executable, "-m", "graphspec.cli", "train", str(spec), "--data", "synthetic", "--epochs", "50",
           "--batch-size", "8", "--out", str(tmp_path / "run"), "--nproc-per-node", "2", "--print-every", "1000"]
    env = {**os.environ, "GRAPHSPEC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [p for p in _descendants(launcher.pid) if "graphspec.cli" in _cmdline(p)]
            assert launcher.poll() is None, launcher.communicate()
        assert len(workers) == 2, "workers did not start"
        time.sleep(8)  # let them reach the training loop
        os.kill(workers[-1], signal.SIGKILL)
        killed_at = time.time()
        out, err = launcher.communicate(timeout=90)
        assert time.time() - killed_at < 90
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode not in (0, None)
    assert "distributed training failed: worker rank" in err
    assert "Traceback" not in err.split("distributed training failed")[-1]


def test_two_nodes_on_localhost_through_torchruns_rendezvous_train_as_one_process(tmp_path):
    """docs/training.md's multi-node command, with two "nodes" on this machine: two torchrun launchers meet at a
    c10d rendezvous, one worker each, and train what one process trains."""
    images, labels = data().images, data().labels
    np.savez(tmp_path / "data.npz", x=images[:, :, 1:9, 1:9], loss=labels)
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "recipe.yaml").write_text(f"semantics: pytorch\nepochs: 1\nbatch_size: {BATCH}\nseed: 5\n"
                                          "sync_batchnorm: true\nprint_every: 100\n")
    common = ["-m", "graphspec.cli", "train", str(tmp_path / "spec.yaml"), "--data", str(tmp_path / "data.npz"),
              "--recipe", str(tmp_path / "recipe.yaml"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
                               "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes",
                               *common, "--out", str(tmp_path / "two")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err
    one = graphspec.load(tmp_path / "one" / "model.safetensors").state_dict()
    two = graphspec.load(tmp_path / "two" / "model.safetensors").state_dict()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


def test_a_worker_that_left_its_group_ends_at_once_with_its_code_and_its_output_flushed(tmp_path):
    # end_process skips the interpreter's teardown (where gloo can abort after a finished run): the exit code and
    # everything printed must survive that; a process that never joined a group just gets its code back
    script = f"""
import os, sys
import torch.distributed as dist
from graphspec.train import distributed
assert distributed.end_process(4) == 4
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{free_port()}")
dist.init_process_group("gloo", rank=0, world_size=1)
distributed.shutdown(True)
print("written before the end", end="")
sys.stderr.write("and on stderr")
distributed.end_process(3)
print("never reached")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (done.returncode, done.stdout, done.stderr) == (3, "written before the end", "and on stderr")
