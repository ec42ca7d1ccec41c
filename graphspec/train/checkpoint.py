"""Checkpoints: one safetensors file per checkpoint (model state, optimizer state, RNG state as tensors; epoch,
iteration and the rest as JSON metadata), written atomically; the last k are kept, so a resume falls back to the
previous one when the latest is unreadable (:class:`CheckpointError`)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import Location
from ..model_io import ModelFileError, read_header

PATTERN = re.compile(r"^ckpt-(\d{8})\.safetensors$")


class CheckpointError(ModelFileError):
    """A checkpoint file cannot be read (truncated, corrupt, not a checkpoint)."""


def _flatten(prefix: str, value: Any, tensors: dict, meta: dict) -> Any:
    """Split a nested state (dicts/lists of tensors and numbers) into tensors and a JSON skeleton."""
    if isinstance(value, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[_key(k), _flatten(f"{prefix}.{k}", v, tensors, meta)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(f"{prefix}.{i}", v, tensors, meta) for i, v in enumerate(value)]
    return value


def _key(k):
    return {"int": k} if isinstance(k, int) else k


def _unflatten(skeleton: Any, tensors: dict) -> Any:
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {(k["int"] if isinstance(k, dict) else k): _unflatten(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [_unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` (nested dicts of tensors and JSON values) atomically, then prune old checkpoints."""
    from ..model_io import atomic_save_file
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten("s", state, tensors, {})
    path = Path(run_dir) / "checkpoints" / f"ckpt-{iteration:08d}.safetensors"
    try:
        atomic_save_file(tensors, path, {"format": "graphspec-checkpoint", "state": json.dumps(skeleton)})
    except Exception as e:  # safetensors' writer reports a failed write as its own error: an OSError here
        failed = os_error_of(e)
        if failed is None:
            raise
        raise OSError(failed.errno, failed.strerror, str(path)) from e
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def checkpoints(run_dir: Path) -> list[Path]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.match(p.name))


def remove_partial(run_dir: Path) -> list[Path]:
    """Delete temporary files left by a process killed while writing (they are never read)."""
    folder = Path(run_dir) / "checkpoints"
    stale = [p for p in folder.iterdir() if p.name.startswith(".ckpt-") and ".tmp-" in p.name] \
        if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved in ``path``; :class:`CheckpointError` (naming the file and why) when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        meta = read_header(path).get("__metadata__") or {}
    except ModelFileError as e:
        raise CheckpointError(e.problem.message, location=Location(str(path))) from e
    if meta.get("format") != "graphspec-checkpoint":
        raise CheckpointError("not a graphspec checkpoint", location=Location(str(path)))
    try:
        tensors = load_file(str(path))
        return _unflatten(json.loads(meta["state"]), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError) as e:  # truncated, broken
        raise CheckpointError(f"unreadable checkpoint: {type(e).__name__}: {e}", location=Location(str(path))) \
            from e


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(e: BaseException) -> OSError | None:
    """The failed system call behind ``e``: an OSError itself, or safetensors' writer error, which reports one as
    text ("I/O error: No space left on device (os error 28)"); None for anything else."""
    if isinstance(e, OSError):
        return e
    found = _OS_ERROR.search(str(e)) if type(e).__name__ == "SafetensorError" else None
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    return None
