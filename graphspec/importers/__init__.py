"""Bring networks from elsewhere into graphspec: ONNX and Keras files become a spec a person can read and edit,
with its weights (docs/import.md).

    >>> imported = import_model("resnet18.onnx")          # doctest: +SKIP
    >>> imported.write("imported/")                         # doctest: +SKIP  resnet18.yaml, resnet18.safetensors
"""
from __future__ import annotations

import os
from pathlib import Path

from .common import Imported, ImportRefused

FORMATS = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras"}


def import_model(path: "str | os.PathLike", *, name: str | None = None) -> Imported:
    """Read an ONNX (``.onnx``) or Keras (``.keras``, ``.h5``) model file into an :class:`Imported` network."""
    from ..errors import Location
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ImportRefused(f"cannot import '{path.name}': expected an .onnx, .keras or .h5 file",
                            location=Location(str(path)))
    if not path.is_file():
        raise ImportRefused(f"no such file: {path}", location=Location(str(path)))
    if kind == "onnx":
        from .onnx import import_onnx
        return import_onnx(path, name=name)
    from .keras import import_keras
    return import_keras(path, name=name)


__all__ = ["import_model", "Imported", "ImportRefused"]
