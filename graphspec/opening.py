"""Opening anything a user may name: a model file, a catalogued model's name, or a spec (built with fresh weights)."""
from __future__ import annotations

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pkl")


def is_model_file(path: str) -> bool:
    """Model files are safetensors (and checkpoints we refuse with a clear message); the rest is a spec."""
    from .model_io import looks_like_checkpoint
    if str(path).endswith(MODEL_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return (len(head) == 9 and head[8:9] == b"{") or looks_like_checkpoint(head)


def open_model(path: str, seed: int | None = None):
    """A model file with its weights, the name of a catalogued model, or a spec (fresh weights)."""
    import os

    from . import catalog
    from .compiler import build
    from .model_io import load
    shipped = catalog.path(str(path)) if not os.path.exists(path) else None
    if shipped is not None:
        return load(shipped)
    return load(path) if is_model_file(path) else build(path, seed=seed)
