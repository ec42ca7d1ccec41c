"""Checkpoints: one safetensors file per checkpoint (model state, optimizer state, RNG state as tensors; epoch,
iteration and the rest as JSON metadata), written atomically; the last k are kept."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..model_io import ModelFileError, read_header

PATTERN = re.compile(r"^ckpt-(\d{8})\.safetensors$")


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
    atomic_save_file(tensors, path, {"format": "graphspec-checkpoint", "state": json.dumps(skeleton)})
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
    from safetensors.torch import load_file
    meta = read_header(path).get("__metadata__") or {}
    if meta.get("format") != "graphspec-checkpoint":
        raise ModelFileError(f"{path} is not a graphspec checkpoint")
    tensors = load_file(str(path))
    return _unflatten(json.loads(meta["state"]), tensors)
