"""The vertex-type registry.

Vertex *kinds* are a closed set (``input``, ``layer``, ``vertex``; output layers are layers). Vertex *types* are
open: each is a class registered with :func:`register` that carries its parameters (a pydantic model) and its
static rules — output shape, in-channel inference, parameter shapes, MACs — next to its torch factory (see
:class:`graphspec.layers.base.VertexType`). Tools (validation, summary, compiler, schema) only query this
registry; nothing re-derives these rules elsewhere.
"""
from __future__ import annotations

import difflib

from .errors import MAX_SUGGESTED_LENGTH, did_you_mean, shown
from .layers.base import (KINDS, ActivationName, ConvolutionMode, Inferred, NonNegative, NonNegativePair,  # noqa: F401
                          ParamShape, Params, Positive, PositivePair, Shape, ShapeError, Size, VertexType,
                          WeightInitName)

REGISTRY: dict[str, VertexType] = {}
_ALIASES: dict[str, str] = {}
_DL4J_NAMES: dict[str, str] = {}  # lower case -> as DL4J spells it, for suggestions
_LOADED = [False]

#: The entry-point group of vertex-type plugins: each entry point names a :class:`VertexType` subclass.
PLUGIN_GROUP = "graphspec.vertex_types"


class PluginWarning(UserWarning):
    """A vertex-type plugin that could not be loaded or registered (the others still are)."""


def register(cls: type[VertexType]) -> type[VertexType]:
    """Register a vertex type (usable as a class decorator); its name and DL4J name become valid ``type:`` values.

    >>> from graphspec.registry import register, VertexType   # doctest: +SKIP
    >>> @register
    ... class MyGate(VertexType): ...                          # doctest: +SKIP

    See docs/extending.md for what a type defines.
    """
    _ensure_loaded()
    return _add(cls)


def _add(cls: type[VertexType]) -> type[VertexType]:
    if not (isinstance(cls, type) and issubclass(cls, VertexType)):
        raise TypeError(f"a vertex type must be a subclass of graphspec.registry.VertexType; received {cls!r}")
    for attribute in ("name", "dl4j"):
        if not isinstance(getattr(cls, attribute, None), str) or not getattr(cls, attribute):
            raise ValueError(f"vertex type {cls.__name__} needs a class attribute '{attribute}' (a non-empty string)")
    if cls.kind not in KINDS:
        raise ValueError(f"vertex kind must be one of {KINDS}, got {cls.kind!r}")
    if cls.name in REGISTRY or cls.name.lower() in _ALIASES:
        raise ValueError(f"vertex type {cls.name!r} is registered twice")
    if cls.dl4j.lower() in _ALIASES and cls.dl4j.lower() != cls.name.lower():
        raise ValueError(f"vertex type {cls.name!r}: DL4J name {cls.dl4j!r} already names "
                         f"{_ALIASES[cls.dl4j.lower()]!r}")
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
    # Longer than every name: none can match, and lowering a megabyte-long name for each of 10,000 vertices that
    # alias it took seconds (fuzz aliases #374).
    if len(key) > max(map(len, (*REGISTRY, *_ALIASES))):
        raise KeyError(f"unknown vertex type {shown(key)} ({len(key):,} characters: longer than every type name); "
                       f"known types: {', '.join(sorted(REGISTRY))}")
    if key.lower() in _ALIASES:
        return REGISTRY[_ALIASES[key.lower()]]
    suggestion = did_you_mean(key, list(REGISTRY)) or did_you_mean(key, list(_DL4J_NAMES.values()))
    if not suggestion and len(key) <= MAX_SUGGESTED_LENGTH:  # DL4J names match case-insensitively: suggest them
        close = difflib.get_close_matches(key.lower(), list(_DL4J_NAMES), n=1, cutoff=0.6)  # as DL4J spells them
        suggestion = f" (did you mean '{_DL4J_NAMES[close[0]]}'?)" if close else ""
    hint = "" if suggestion else " (a type from a plugin needs the plugin's package installed)"
    raise KeyError(f"unknown vertex type {shown(key)}{suggestion}; known types: {', '.join(sorted(REGISTRY))}{hint}")


def canonical(type_name: str) -> str:
    return lookup(type_name).name


def all_types() -> dict[str, VertexType]:
    _ensure_loaded()
    return dict(REGISTRY)


def _ensure_loaded() -> None:
    """Register the built-in types, then every installed plugin's (once, on first use)."""
    if _LOADED[0]:
        return
    _LOADED[0] = True
    from .layers import base, types, vision, attention, recurrent, sequence  # noqa: F401  (each module registers its types)
    for cls in base.BUILTINS:
        _add(cls)
    _load_plugins()


def _load_plugins() -> None:
    import warnings
    from importlib.metadata import entry_points
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            _add(ep.load())
        except Exception as e:  # a broken plugin must not take the built-in types down with it
            warnings.warn(f"vertex-type plugin '{ep.name}' ({ep.value}) was not registered: "
                          f"{type(e).__name__}: {e}", PluginWarning, stacklevel=3)
