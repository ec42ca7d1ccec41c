"""Bring networks from elsewhere into graphspec: ONNX and Keras files become a spec a person can read and edit,
with its weights (docs/import.md).

    >>> imported = import_model("resnet18.onnx")          # doctest: +SKIP
    >>> imported.write("imported/")                         # doctest: +SKIP  resnet18.yaml, resnet18.safetensors
"""
from __future__ import annotations

import os
from pathlib import Path

from .common import Imported, ImportRefused

FORMATS = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".dat": "dlib"}
KINDS = ("onnx", "keras", "dlib")  # the formats `import_model(..., format=)` and `graphspec import FORMAT MODEL` name


def import_model(path: "str | os.PathLike", *, name: str | None = None, format: str | None = None) -> Imported:
    """Read an ONNX (``.onnx``), Keras (``.keras``, ``.h5``) or dlib face-recognition (``.dat``) model file into an
    :class:`Imported` network; ``format`` (one of ``KINDS``) overrides the file's suffix."""
    from ..errors import Location
    path = Path(path)
    if format is not None and format not in KINDS:
        raise ImportRefused(f"unknown import format '{format}': expected one of {', '.join(KINDS)}",
                            location=Location(str(path)))
    kind = format or FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ImportRefused(f"cannot import '{path.name}': expected an .onnx, .keras, .h5 or dlib .dat file",
                            location=Location(str(path)))
    if not path.is_file():
        raise ImportRefused(f"no such file: {path}", location=Location(str(path)))
    if kind == "dlib":
        from .dlib import import_dlib
        return import_dlib(path, name=name)
    if kind == "onnx":
        from .onnx import import_onnx
        return import_onnx(path, name=name)
    from .keras import import_keras
    return import_keras(path, name=name)


__all__ = ["import_model", "Imported", "ImportRefused"]
