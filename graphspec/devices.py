"""Which device a command runs on: ``--device auto|cpu|cuda|cuda:N|mps`` (``device=`` in the API).

``auto`` is CUDA when torch sees a GPU, else Apple's MPS when present, else the CPU. A device that this machine
or this build of torch does not have is refused before any work, saying why.
"""
from __future__ import annotations

import re

import torch

from .errors import GraphspecError

CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve(name: str | None = "auto") -> str:
    """The torch device string for ``name`` (None: ``auto``)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps() else "cpu"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        return _cuda(name, match.group(1))
    if name == "mps":
        if not _mps():
            raise GraphspecError("--device mps: Apple's MPS backend is not available on this machine")
        return "mps"
    raise GraphspecError(f"unknown device '{name}'; expected {CHOICES}")


def _cuda(name: str, index: str | None) -> str:
    if not torch.cuda.is_available():
        why = "this torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise GraphspecError(f"--device {name}: {why}; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise GraphspecError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return name


def _mps() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def to(value, device: str):
    """``value`` (a tensor, or a tuple / list / dict of them) on ``device``; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to(v, device) for v in value)
    return value
