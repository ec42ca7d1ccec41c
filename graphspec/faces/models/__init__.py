"""The face models shipped with graphspec, by name (``graphspec embed nn4small2-lfw ...``).

Each is a graphspec model file ``<name>.safetensors`` with a model card ``<name>.md`` beside it. The folder is
registered in the model catalog (:mod:`graphspec.catalog`) by the ``graphspec.models`` entry point ``faces``.
"""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.safetensors"))


def path(name: str) -> Path | None:
    """The file of a shipped model, or None when ``name`` is not one."""
    candidate = FOLDER / f"{name}.safetensors"
    return candidate if "/" not in name and candidate.is_file() else None
