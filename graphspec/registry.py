"""The vertex-type registry.

Vertex *kinds* are a closed set (``input``, ``layer``, ``vertex``; output layers are layers). Vertex *types* are
open: each is a class registered with :func:`register` that carries its parameters (a pydantic model) and its
static rules — output shape, in-channel inference, parameter shapes, MACs — next to its torch factory (see
:class:`graphspec.layers.base.VertexType`). Tools (validation, summary, compiler, schema) only query this
registry; nothing re-derives these rules elsewhere.
"""
from __future__ import annotations

import difflib

from .errors import did_you_mean
from .layers.base import (KINDS, ActivationName, ConvolutionMode, Inferred, NonNegative, NonNegativePair,  # noqa: F401
                          ParamShape, Params, Positive, PositivePair, Shape, ShapeError, Size, VertexType,
                          WeightInitName)

REGISTRY: dict[str, VertexType] = {}
_ALIASES: dict[str, str] = {}
_DL4J_NAMES: dict[str, str] = {}  # lower case -> as DL4J spells it, for suggestions


def register(cls: type[VertexType]) -> type[VertexType]:
    if cls.kind not in KINDS:
        raise ValueError(f"vertex kind must be one of {KINDS}, got {cls.kind!r}")
    if cls.name in REGISTRY:
        raise ValueError(f"vertex type {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls()
    _ALIASES[cls.dl4j.lower()] = cls.name
    _DL4J_NAMES[cls.dl4j.lower()] = cls.dl4j
    return cls


def lookup(type_name: str) -> VertexType:
    """The entry for a type name or DL4J class name; KeyError carries a did-you-mean message."""
    _ensure_loaded()
    key = str(type_name)
    if key in REGISTRY:
        return REGISTRY[key]
    if key.lower() in _ALIASES:
        return REGISTRY[_ALIASES[key.lower()]]
    suggestion = did_you_mean(key, list(REGISTRY)) or did_you_mean(key, list(_DL4J_NAMES.values()))
    if not suggestion:  # DL4J names match case-insensitively: suggest them as DL4J spells them
        close = difflib.get_close_matches(key.lower(), list(_DL4J_NAMES), n=1, cutoff=0.6)
        suggestion = f" (did you mean '{_DL4J_NAMES[close[0]]}'?)" if close else ""
    raise KeyError(f"unknown vertex type '{key}'{suggestion}; "
                   f"known types: {', '.join(sorted(REGISTRY))}")


def canonical(type_name: str) -> str:
    return lookup(type_name).name


def all_types() -> dict[str, VertexType]:
    _ensure_loaded()
    return dict(REGISTRY)


def _ensure_loaded() -> None:
    if not REGISTRY:
        from .layers import types
        for cls in types.BUILTINS:
            register(cls)
