"""A run folder holds one run, written by one process at a time: a second process is refused at once (a lock), a
different run is refused unless --overwrite, --resume still works, an unreadable latest checkpoint falls back to the
previous good one, and a full disk or a read-only folder ends the run with an error naming the folder while the
previous checkpoint stays intact."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml

import graphspec
from graphspec.data import ArrayData
from graphspec.data.preprocessing import Preprocessing
from graphspec.train import run_folder
from graphspec.train.checkpoint import checkpoints, load_checkpoint
from graphspec.train.recipe import Recipe
from graphspec.train.session import run_session
from graphspec.errors import GraphspecError
from graphspec.train.trainer import RunWriteError, Trainer
from specs_tiny import TINY_CLASSIFIER, tiny_conv

pytestmark = pytest.mark.usefixtures("isolated_cache", "one_thread")

SPEC = TINY_CLASSIFIER
TRAIN = ("--epochs", "1", "--batch-size", "8", "--print-every", "100", "--quiet")


def _files(folder) -> dict[str, str]:
    """Every file under ``folder`` (but the lock) with its content's hash: what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != run_folder.LOCK_FILE}


@pytest.fixture
def started(tmp_path, cli):
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC)
    faces = tmp_path / "faces"
    rc, _, err = cli("dataset", faces, "--synthetic", "4x6", "--format", "json")
    assert rc == 0, err
    run = tmp_path / "run"
    rc, _, err = cli("train", spec, "--data", faces, "--out", run, *TRAIN)
    assert rc == 0, err
    return spec, faces, run


def _no_data_read(monkeypatch):
    """Reading the data from here on fails the test: a refusal comes before any work."""
    import graphspec.faces.training as training

    def refused(*args, **kwargs):
        raise AssertionError("the data was read")
    monkeypatch.setattr(training, "datasets", refused)
    monkeypatch.setattr(training, "arrays", refused)


# --- the lock ---------------------------------------------------------------------------------------------------


def test_a_second_process_into_a_held_folder_is_refused_at_once(started, cli, monkeypatch):
    spec, faces, run = started
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(run / run_folder.LOCK_FILE)!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())
        print("locked", flush=True)
        sys.stdin.read()  # hold it until the test closes stdin
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        before = _files(run)
        _no_data_read(monkeypatch)
        for argv in (["--resume"], [str(spec), "--data", str(faces), "--overwrite", *TRAIN]):
            rc, _, err = cli("train", "--out", run, *argv)
            assert (rc, err) == (2, f"error: {run}: the run folder is in use by another training run (process "
                                    f"{holder.pid}); wait for it to end or give another --out\n")
        assert _files(run) == before
    finally:
        holder.communicate("")
    assert run_folder._held == {}  # nothing left held in this process either


def test_two_concurrent_runs_one_proceeds_the_other_is_refused(tmp_path, cli):
    """Two real `graphspec train` processes into one folder (before: both reported success and left a folder that
    could not resume): the second exits 2 naming the folder while the first trains on; the first, stopped with
    Ctrl-C, leaves a checkpoint that resumes."""
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC)
    faces = tmp_path / "faces"
    assert cli("dataset", faces, "--synthetic", "4x6", "--format", "json")[0] == 0
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "graphspec.cli", "train", str(spec), "--data", str(faces), "--out", str(run),
            "--epochs", "100000", "--batch-size", "8", "--quiet"]  # the first trains until it is stopped
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = run / run_folder.LOCK_FILE
        deadline = time.monotonic() + 120  # a backstop only: the first holds the lock within seconds
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.05)
        second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        while not (run / "metrics.jsonl").is_file():  # training has begun: Ctrl-C then saves a checkpoint
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert first.poll() is None  # the first still trains: the second was refused while it held the folder
    finally:
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=120)
    assert (second.returncode, second.stderr) == (2, f"error: {run}: the run folder is in use by another training "
                                                     f"run (process {first.pid}); wait for it to end or give another "
                                                     "--out\n")
    assert first.returncode == 130, first_err
    assert load_checkpoint(checkpoints(run)[-1])["iteration"] > 0


# --- one run per folder -----------------------------------------------------------------------------------------


def test_another_spec_or_recipe_is_refused_and_nothing_changes(started, cli, tmp_path, monkeypatch):
    """Before: the second run overwrote the first's spec, recipe, model and checkpoints, and a later resume ended in
    `internal error: RuntimeError`."""
    spec, faces, run = started
    other = tmp_path / "other.yaml"
    other.write_text(SPEC.replace("out: 4}", "out: 6}"))
    before = _files(run)
    _no_data_read(monkeypatch)
    rc, _, err = cli("train", other, "--data", faces, "--out", run, *TRAIN)
    assert (rc, err) == (2, f"error: {run}: the run folder holds another run (a different spec; see its spec.yaml "
                            "and recipe.yaml): --overwrite replaces it, or give another --out\n")
    rc, _, err = cli("train", spec, "--data", faces, "--out", run, *TRAIN, "--epochs", "2")
    assert (rc, err) == (2, f"error: {run}: the run folder holds another run (a different recipe; see its spec.yaml "
                            "and recipe.yaml): --overwrite replaces it, or give another --out\n")
    rc, _, err = cli("train", spec, "--data", "synthetic", "--out", run, *TRAIN)
    assert (rc, err) == (2, f"error: {run}: the run folder holds another run (a different data source; see its "
                            "spec.yaml and recipe.yaml): --overwrite replaces it, or give another --out\n")
    rc, _, err = cli("train", spec, "--data", faces, "--out", run, *TRAIN)
    assert (rc, err) == (2, f"error: {run}: the run folder holds this run already: --resume continues it from its "
                            "last checkpoint, --overwrite starts it again\n")
    rc, _, err = cli("train", "--out", run, "--resume", "--overwrite")
    assert (rc, err) == (2, f"error: {run}: --resume continues the run in this folder and --overwrite starts a new "
                            "one: give one of them\n")
    assert _files(run) == before


def test_a_folder_of_an_older_run_without_its_record_is_refused_too(started, cli, monkeypatch):
    spec, faces, run = started
    (run / run_folder.IDENTITY_FILE).unlink()
    _no_data_read(monkeypatch)
    rc, _, err = cli("train", spec, "--data", faces, "--out", run, *TRAIN)
    assert (rc, err) == (2, f"error: {run}: the run folder holds another run (a different spec and recipe; see its "
                            "spec.yaml and recipe.yaml): --overwrite replaces it, or give another --out\n")


def test_overwrite_replaces_the_run_and_only_its_files_and_resume_still_works(started, cli, tmp_path):
    spec, faces, run = started
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "keep.txt").write_text("mine too")
    (run / "checkpoints" / "ckpt-00000099.safetensors").write_bytes(b"a checkpoint of the old run")
    other = tmp_path / "other.yaml"
    other.write_text(SPEC.replace("out: 4}", "out: 6}"))
    rc, _, err = cli("train", other, "--data", faces, "--out", run, "--overwrite", *TRAIN)
    assert rc == 0, err
    assert yaml.safe_load((run / "spec.yaml").read_text())["vertices"]["conv"]["out"] == 6  # the new run's spec
    assert [p.name for p in checkpoints(run)] == ["ckpt-00000003.safetensors"]  # the old run's are gone
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoints" / "keep.txt").read_text() == "mine too"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # this run's lines only, not appended
    rc, _, err = cli("train", "--out", run, "--resume", "--quiet")
    assert rc == 0, err


def test_the_same_run_stopped_before_its_first_checkpoint_may_start_again(started, cli):
    spec, faces, run = started
    for name in ("model.safetensors", *(p.name for p in checkpoints(run))):
        (run / name if name == "model.safetensors" else run / "checkpoints" / name).unlink()
    rc, _, err = cli("train", spec, "--data", faces, "--out", run, *TRAIN)
    assert rc == 0, err


def test_a_session_in_python_refuses_another_run_too(tmp_path):
    data = ArrayData(np.random.default_rng(0).integers(0, 255, (16, 3, 12, 12), dtype=np.uint8), np.arange(16) % 4,
                     [f"c{i}" for i in range(4)])
    run_session(graphspec.build(tiny_conv(0.01)), Recipe(epochs=1, batch_size=8), data, out=tmp_path / "run")
    with pytest.raises(run_folder.RunFolderError) as e:
        run_session(graphspec.build(tiny_conv(0.02)), Recipe(epochs=1, batch_size=8), data, out=tmp_path / "run")
    assert str(e.value).startswith(f"{tmp_path / 'run'}: the run folder holds another run (a different spec;")
    trainer = run_session(graphspec.build(tiny_conv(0.02)), Recipe(epochs=1, batch_size=8), data,
                          out=tmp_path / "run", overwrite=True)
    assert trainer.iteration == 2


# --- checkpoints: fallback, full disks, read-only folders ---------------------------------------------------------

PRE = Preprocessing(size=(12, 12), channels="bgr", scale="raw")
_rs = np.random.RandomState(0)
DATA = ArrayData(_rs.randint(0, 256, (12, 3, 14, 14), dtype=np.uint8), np.arange(12) % 3, ["a", "b", "c"])


def _trainer(run, epochs=2, seed=None) -> Trainer:
    return Trainer(graphspec.build(tiny_conv(0.05), seed=seed), Recipe(epochs=epochs, batch_size=6, seed=5), DATA,
                   run_dir=run, preprocessing=PRE, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    straight = _trainer(tmp_path / "straight", epochs=3)
    straight.fit()
    t = _trainer(tmp_path / "run")
    t.fit()
    good, latest = checkpoints(tmp_path / "run")
    raw = latest.read_bytes()
    latest.write_bytes({"truncated": raw[:len(raw) // 2], "garbage": os.urandom(len(raw)), "empty": b""}[damage])
    again = _trainer(tmp_path / "run", epochs=3, seed=99)
    with caplog.at_level(logging.WARNING, logger="graphspec"):
        assert again.resume()
    assert again.iteration == 2  # the first epoch's checkpoint
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage().startswith(f"checkpoint {latest} is unreadable (")
    assert record.getMessage().endswith(f"); resuming from the previous good one, {good}")
    assert checkpoints(tmp_path / "run") == [good]  # the unreadable one is set aside, never taken for the latest
    assert (latest.parent / (latest.name + ".unreadable")).is_file()
    again.fit()  # and the run ends as an uninterrupted one does
    for k, v in straight.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k


def test_no_readable_checkpoint_at_all_is_a_clear_error(tmp_path):
    t = _trainer(tmp_path, epochs=1)
    t.fit()
    (only,) = checkpoints(tmp_path)
    only.write_bytes(b"\0" * 7)
    with pytest.raises(GraphspecError) as e:
        _trainer(tmp_path).resume()
    assert e.value.exit_code == 2
    assert str(e.value) == (f"{only.parent}: no readable checkpoint to resume from: {only}: not a model file: 7 "
                            "bytes is too short for a safetensors header")


def test_a_checkpoint_of_another_network_is_a_clear_error(tmp_path):
    t = _trainer(tmp_path, epochs=1)
    t.fit()
    (only,) = checkpoints(tmp_path)
    wider = graphspec.build(tiny_conv(0.05).replace("out: 4, bias_init", "out: 6, bias_init"))
    other = Trainer(wider, Recipe(epochs=2, batch_size=6), DATA, run_dir=tmp_path, preprocessing=PRE, progress=False)
    with pytest.raises(GraphspecError) as e:
        other.resume()
    assert str(e.value).startswith(f"{only}: the checkpoint does not fit this run's network and recipe (")
    assert str(e.value).endswith("); was it copied from another run?")


def _failing_writer(monkeypatch, error: Exception, after: int = 0):
    """safetensors' writer fails from its ``after``-th call on, leaving a partial file as a real failure would."""
    calls = {"n": 0}
    real = safetensors.torch.save_file

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] <= after:
            return real(tensors, filename, metadata=metadata)
        with open(filename, "wb") as f:
            f.write(b"\0" * 100)
        raise error
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


ENOSPC_RUST = safetensors.SafetensorError(
    'Error while serializing: I/O error: No space left on device (os error 28) at path "x"')


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    (ENOSPC_RUST, "No space left on device"),  # what safetensors' Rust writer really raises
    (OSError(errno.EROFS, os.strerror(errno.EROFS)), "Read-only file system"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "Permission denied"),
])
def test_a_failing_checkpoint_write_ends_the_run_naming_the_folder(tmp_path, monkeypatch, error, reason):
    t = _trainer(tmp_path)
    t.fit(1)
    (good,) = checkpoints(tmp_path)
    good_bytes = good.read_bytes()
    _failing_writer(monkeypatch, error)
    with pytest.raises(RunWriteError) as e:
        t.fit()
    assert e.value.exit_code == 1
    assert str(e.value) == (f"{tmp_path}: cannot write the checkpoint ckpt-00000004.safetensors into the run folder: "
                            f"{reason}; the run stopped after iteration 4; the last good checkpoint, {good}, is "
                            "intact: make room (or make the folder writable) and continue with --resume")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]  # no partial file
    assert good.read_bytes() == good_bytes
    monkeypatch.undo()
    again = _trainer(tmp_path, seed=99)
    assert again.resume() and again.iteration == 2


def test_a_full_disk_during_a_command_line_run_exits_1_with_the_folder(tmp_path, cli, monkeypatch):
    spec = tmp_path / "net.yaml"
    spec.write_text(SPEC)
    faces = tmp_path / "faces"
    assert cli("dataset", faces, "--synthetic", "4x6", "--format", "json")[0] == 0
    run = tmp_path / "run"
    _failing_writer(monkeypatch, ENOSPC_RUST, after=1)  # the first epoch's checkpoint is written, then the disk fills
    rc, _, err = cli("train", spec, "--data", faces, "--out", run, *TRAIN, "--epochs", "2")
    (good,) = checkpoints(run)
    assert (rc, err) == (1, f"error: {run}: cannot write the checkpoint ckpt-00000006.safetensors into the run "
                            f"folder: No space left on device; the run stopped after iteration 6; the last good "
                            f"checkpoint, {good}, is intact: make room (or make the folder writable) and continue "
                            "with --resume\n")
    monkeypatch.undo()
    rc, _, err = cli("train", "--out", run, "--resume", "--quiet")
    assert rc == 0, err


@pytest.mark.parametrize("fault, reason", [("read-only file system", "Read-only file system"),
                                           ("no write permission", "Permission denied")])
def test_a_folder_that_cannot_be_written_is_refused_before_any_work(started, cli, monkeypatch, fault, reason):
    """As the kernel reports them (this runs as any user, root included; the chmod test below needs a user)."""
    spec, faces, run = started
    before = _files(run)
    if fault == "read-only file system":
        real = os.statvfs

        class ReadOnly:
            def __init__(self, path):
                self.f_flag = real(path).f_flag | os.ST_RDONLY
        monkeypatch.setattr(run_folder.os, "statvfs", ReadOnly)
    else:
        monkeypatch.setattr(run_folder.os, "access", lambda path, mode: False)
    _no_data_read(monkeypatch)
    rc, _, err = cli("train", "--out", run, "--resume")
    assert (rc, err) == (2, f"error: {run}: cannot write into the run folder: {reason}\n")
    assert _files(run) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
def test_a_read_only_run_folder_is_refused_before_any_work(started, cli, monkeypatch):
    spec, faces, run = started
    before = _files(run)
    for folder in (run / "checkpoints", run):
        folder.chmod(0o555)
    try:
        _no_data_read(monkeypatch)
        rc, _, err = cli("train", "--out", run, "--resume")
        assert (rc, err) == (2, f"error: {run}: cannot write into the run folder: Permission denied\n")
    finally:
        for folder in (run, run / "checkpoints"):
            folder.chmod(0o755)
    assert _files(run) == before
