"""One way to open anything a user may name: a built module, a spec (object, dict, YAML text or file), a model
file, or the name of a catalogued model.

:func:`open` gives a module (weights from the model file, or fresh seeded weights for a spec);
:func:`open_spec` gives only ``(spec, frozen)``, for commands that need no weights (summary, draw, validate).
"""
from __future__ import annotations

import os
from pathlib import Path

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pkl")
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def is_model_file(path: str) -> bool:
    """Model files are safetensors (and checkpoints we refuse with a clear message); the rest is a spec."""
    from .model_io import looks_like_checkpoint
    if str(path).endswith(MODEL_SUFFIXES):
        return True
    from .errors import GraphspecError
    from .files import open_regular
    try:
        with open_regular(path, "file") as f:  # a FIFO or device is no model file (and must not block here)
            head = f.read(9)
    except (GraphspecError, OSError, TypeError, ValueError):
        return False
    return (len(head) == 9 and head[8:9] == b"{") or looks_like_checkpoint(head)


def _is_module(source) -> bool:
    return getattr(source, "graphspec", None) is not None and not isinstance(source, (str, bytes, os.PathLike))


def _is_inline(source) -> bool:
    """A Spec object, a dict, or YAML text (not a path or a name)."""
    from .spec.model import Spec
    from .spec.yaml_source import Source, _is_path
    if isinstance(source, (Spec, dict, Source)):
        return True
    return isinstance(source, str) and not _is_path(source)


def _is_bare_name(text: str) -> bool:
    """A word that can only mean a catalogued model: no directory part and no file suffix."""
    return not any(sep in text for sep in ("/", "\\", os.sep)) and not text.endswith(MODEL_SUFFIXES + SPEC_SUFFIXES)


def resolve(source) -> tuple[str, Path | str]:
    """``("model", path)`` or ``("spec", path)`` for a path or a catalogued name.

    A missing path keeps its own reader's error ("cannot read spec: ..."); a bare name that is neither a file nor a
    catalogued model raises :class:`GraphspecError` with a did-you-mean over the catalogued names.
    """
    # the modules' functions, not `from . import ...`: that would import the package (and reach back here)
    from .catalog import available, path as catalog_path
    from .zoo import names as zoo_names, path as zoo_path
    from .errors import GraphspecError, Location, did_you_mean
    text = os.fspath(source)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if os.path.exists(text):
        return ("model" if is_model_file(text) else "spec"), text
    shipped = catalog_path(text)
    if shipped is not None:
        return "model", shipped
    architecture = zoo_path(text)
    if architecture is not None:
        return "spec", architecture
    if _is_bare_name(text):
        names = sorted(available())
        listed = ", ".join(f"'{n}'" for n in names) if names else "none are installed"
        raise GraphspecError(f"no such file, and no catalogued model or zoo architecture of that name"
                             f"{did_you_mean(text, names + zoo_names())}; expected a spec file, a model file, one "
                             f"of the catalogued models ({listed}) or one of the zoo's architectures "
                             f"({', '.join(zoo_names())})", location=Location(text))
    return ("model" if is_model_file(text) else "spec"), text  # the reader says why it cannot be read


def open(source, *, seed: int | None = None):  # noqa: A001 - graphspec.open, the one way to open anything
    """Open anything as a built module.

    In order: a built graphspec module (returned as is); a :class:`~graphspec.Spec`, a dict or YAML text (built
    with fresh weights, seeded by ``seed``, else the spec's); an existing model file
    (:func:`graphspec.model_io.load`) or spec file (:func:`graphspec.compiler.build`); the name of a catalogued
    model (:func:`graphspec.catalog.path`). Anything else raises :class:`~graphspec.errors.GraphspecError`
    saying what was expected, with a did-you-mean over the catalogued names.
    """
    from .compiler import build
    from .model_io import load
    if _is_module(source):
        return source
    if _is_inline(source):
        return build(source, seed=seed)
    kind, path = resolve(source)
    return load(path) if kind == "model" else build(path, seed=seed)




def open_spec(source, *, check_graph: bool = True):
    """``(spec, frozen)`` of anything :func:`open` accepts, without reading a model file's weights."""
    from .spec.loader import load_spec
    if _is_module(source):
        info = source.graphspec
        return info.spec, frozenset(info.frozen)
    if _is_inline(source):
        return load_spec(source, check_graph=check_graph), frozenset()
    kind, path = resolve(source)
    if kind == "model":
        from .model_io import read_spec
        spec, frozen, _ = read_spec(path, check_graph=check_graph, weights_needed=False)
        return spec, frozenset(frozen)
    return load_spec(path, check_graph=check_graph), frozenset()
