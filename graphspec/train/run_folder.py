"""A run folder (``graphspec train --out RUN``) holds one run, written by one process at a time.

* **A lock.** The process training into RUN holds an exclusive ``fcntl.flock`` on ``RUN/.lock`` from before it
  reads any data until its final model is written; a second process is refused at once, naming the folder. The
  kernel releases the lock when the process ends however it ends, so a killed run never leaves a stale lock.
* **One run per folder.** ``RUN/run.yaml`` records hashes of the spec and recipe (and the data source) a run started
  with. A new run (not ``--resume``) into a folder that holds a run is refused before any work, unless
  ``overwrite``: then the files a run writes (:data:`RUN_FILES`, :data:`RUN_FOLDERS`, and nothing else) are removed
  first. The same run, stopped before its first checkpoint, holds nothing to lose and may be started again.
* **Write failures.** :func:`graphspec.train.checkpoint.os_error_of` recognises a failed write (a full disk, a
  read-only folder) in the errors the writers raise, so the trainer can end the run naming the folder and its last
  good checkpoint, which stays intact (checkpoints are written atomically).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

import yaml

from ..errors import GraphspecError, Location

LOCK_FILE = ".lock"  # flock'ed by the process training into the folder; holds its process id
IDENTITY_FILE = "run.yaml"  # what the run started with: hashes of its spec and recipe, and its data source
#: The files a run writes into its folder; --overwrite removes these (and RUN_FOLDERS' own files), nothing else.
RUN_FILES = ("spec.yaml", "recipe.yaml", "data.yaml", IDENTITY_FILE, "metrics.jsonl", "scores.csv", "epochs.csv",
             "model.safetensors", "best.safetensors")
#: The folders a run writes, with the names of the files it writes there.
RUN_FOLDERS = {"checkpoints": re.compile(r"^\.?ckpt-\d{8}\.safetensors(\.tmp-\d+|\.unreadable)?$"),
               "tensorboard": re.compile(r"^events\.out\.tfevents\.")}
_held: dict[Path, int] = {}  # run folders this process holds the lock of -> how many claims are open


class RunFolderError(GraphspecError):
    """The run folder cannot be used: another process trains into it, it holds another run, or it is not
    writable. Nothing was read or written."""


def identity(spec_yaml: str, recipe, data: str | None = None) -> dict[str, str]:
    """What makes a run this run: its spec (as given, before the recipe adapts its heads), its recipe (every
    override applied) and, when known, its data source."""
    recipe_json = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)
    out = {"spec": _sha256(spec_yaml), "recipe": _sha256(recipe_json)}
    if data is not None:
        out["data"] = str(data)
    return out


@contextlib.contextmanager
def claim(run: Path | None, ident: dict[str, str], *, resume: bool = False, overwrite: bool = False,
          is_main: bool = True) -> Iterator[None]:
    """Hold ``run`` for this process while the block runs: lock it, then (a new run) refuse a folder that holds
    another run unless ``overwrite``, remove the earlier run's files and record ``ident``. Claiming a folder this
    process already holds (a session inside ``graphspec train``) checks nothing again. Ranks other than the main
    one write nothing and claim nothing."""
    if run is None or not is_main:
        yield
        return
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in this folder and --overwrite starts a new one: give one "
                             "of them", location=Location(str(run)))
    key = Path(os.path.abspath(run))
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _lock(run)
    _held[key] = 1
    try:
        if not resume:
            _check_new_run(run, ident, overwrite)
            _start(run, ident)
        yield
    finally:
        del _held[key]
        os.close(fd)  # releases the lock


def _lock(run: Path) -> int:
    """An open descriptor of RUN/.lock, exclusively locked; refused at once when another process holds it."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        _check_writable(run)
        fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise RunFolderError(f"cannot write into the run folder: {e.strerror or e}", location=Location(str(run))) \
            from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f" (process {holder})" if holder.isdigit() else ""
        raise RunFolderError(f"the run folder is in use by another training run{who}; wait for it to end or give "
                             "another --out", location=Location(str(run))) from e
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:
        os.close(fd)
        raise RunFolderError(f"cannot write into the run folder: {e.strerror or e}", location=Location(str(run))) \
            from e
    return fd


def _check_writable(run: Path) -> None:
    """Refuse a read-only file system or a folder this user cannot write, before any work (root writes anyway)."""
    if os.statvfs(run).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    if not os.access(run, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))


def holds_run(run: Path) -> bool:
    """Whether ``run`` holds a run (its record, a checkpoint or a model), not merely files of other programs."""
    return (run / "spec.yaml").exists() or (run / "recipe.yaml").exists() or _has_progress(run)


def _has_progress(run: Path) -> bool:
    """What starting the run again would lose: its checkpoints and its final model."""
    from .checkpoint import checkpoints
    return bool(checkpoints(run)) or (run / "model.safetensors").exists()


def _check_new_run(run: Path, ident: dict[str, str], overwrite: bool) -> None:
    if overwrite or not holds_run(run):
        return
    recorded = recorded_identity(run)
    if recorded == ident:
        if not _has_progress(run):
            return  # the same run stopped before its first checkpoint: nothing to lose by starting it again
        raise RunFolderError("the run folder holds this run already: --resume continues it from its last checkpoint,"
                             " --overwrite starts it again", location=Location(str(run)))
    differs = [k for k in ("spec", "recipe", "data") if recorded is None or recorded.get(k) != ident.get(k)]
    named = {"spec": "spec", "recipe": "recipe", "data": "data source"}
    what = " and ".join(named[k] for k in differs) if recorded is not None else "spec and recipe"
    raise RunFolderError(f"the run folder holds another run (a different {what}; see its spec.yaml and recipe.yaml):"
                         " --overwrite replaces it, or give another --out", location=Location(str(run)))


def recorded_identity(run: Path) -> dict | None:
    """The identity recorded in ``run``, or None (a folder of an older graphspec, or an unreadable record)."""
    try:
        recorded = yaml.safe_load((run / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _start(run: Path, ident: dict[str, str]) -> None:
    """Remove what an earlier run wrote (the check allowed it) and record this run's identity."""
    try:
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
        for folder, pattern in RUN_FOLDERS.items():
            if (run / folder).is_dir():
                for path in (run / folder).iterdir():
                    if pattern.match(path.name):
                        path.unlink()
                with contextlib.suppress(OSError):
                    (run / folder).rmdir()  # only when nothing else is in it
        (run / IDENTITY_FILE).write_text(yaml.safe_dump(ident, sort_keys=False), encoding="utf-8")
    except OSError as e:
        raise RunFolderError(f"cannot write into the run folder: {e.strerror or e}", location=Location(str(run))) \
            from e




def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
