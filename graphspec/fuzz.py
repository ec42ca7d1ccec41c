"""Fuzzing the spec language (used by tests/test_fuzz.py and benchmarks/fuzz_specs.py).

Every input must end in a Spec or in a GraphspecError whose problems all have a location — never another
exception, never a hang.
"""
from __future__ import annotations

import copy
import random
from typing import Any

import yaml

from .errors import GraphspecError
from .spec.loader import load_spec

SCALARS = [0, 1, -1, 2, 3, 7, 10**12, -(10**9), 1.5, -0.0, float("inf"), True, False, None, "", "x", "conv",
           "dense", "merge", "same", "relu", "input1", "stem-cnn1", "$name", "${1/0}", "a.b", [3], [3, 3, 3], {}]


def check(text_or_doc: Any) -> str:
    """'ok' or 'error'; raises AssertionError for anything else (another exception, an unlocated error)."""
    import warnings

    from .graph import SpecWarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpecWarning)  # unreachable vertices: a valid outcome
            warnings.simplefilter("ignore", DeprecationWarning)
            load_spec(text_or_doc)
        return "ok"
    except GraphspecError as e:
        for p in e.problems:
            assert p.location is not None and p.location.file, f"unlocated problem: {p}"
            assert str(p), "empty message"
        return "error"


def mutate(doc: dict, rng: random.Random, steps: int = 3) -> dict:
    """Random edits of a valid spec document: deletions, renames, retypes, cycles, dangling inputs, extremes."""
    doc = copy.deepcopy(doc)
    for _ in range(steps):
        _one(doc, rng)
    return doc


def _containers(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _containers(v, path + (k,))
    elif isinstance(node, list):
        yield path, node
        for i, v in enumerate(node):
            yield from _containers(v, path + (i,))


def _one(doc: dict, rng: random.Random) -> None:
    containers = list(_containers(doc))
    _, target = rng.choice(containers)
    vertices = doc.get("vertices") if isinstance(doc.get("vertices"), dict) else {}
    op = rng.randrange(8)
    if op == 0 and target:  # delete a key or an item
        key = rng.choice(list(target.keys()) if isinstance(target, dict) else range(len(target)))
        del target[key]
    elif op == 1 and isinstance(target, dict) and target:  # rename a key
        key = rng.choice(list(target))
        target[key + rng.choice(["x", "_", "s", ""]) + "e"] = target.pop(key)
    elif op == 2 and target:  # retype a value
        key = rng.choice(list(target.keys()) if isinstance(target, dict) else range(len(target)))
        target[key] = copy.deepcopy(rng.choice(SCALARS))
    elif op == 3 and len(vertices) >= 2:  # a cycle: an early vertex reads a late one
        names = list(vertices)
        a, b = names[rng.randrange(len(names) // 2)], names[-1 - rng.randrange(len(names) // 2)]
        if isinstance(vertices[a], dict):
            vertices[a]["inputs"] = [b]
    elif op == 4 and vertices:  # a dangling input
        v = vertices[rng.choice(list(vertices))]
        if isinstance(v, dict):
            v["inputs"] = list(v.get("inputs") or []) + ["nowhere-" + str(rng.randrange(99))]
    elif op == 5 and vertices:  # extreme sizes
        v = vertices[rng.choice(list(vertices))]
        if isinstance(v, dict):
            v[rng.choice(["out", "in", "kernel", "stride", "padding", "n", "pnorm"])] = rng.choice(
                [0, -3, 10**9, 10**15, 2**63, 1e300])
    elif op == 6:  # duplicate a vertex under a new name
        if vertices:
            name = rng.choice(list(vertices))
            vertices[name + "-copy"] = copy.deepcopy(vertices[name])
    else:  # replace a whole section
        key = rng.choice(["inputs", "outputs", "vertices", "defaults", "blocks", "version", "name"])
        doc[key] = copy.deepcopy(rng.choice(SCALARS + [[], {"a": 1}]))


def random_yaml(rng: random.Random, depth: int = 0) -> Any:
    """A random YAML-able value, biased towards spec-like keys."""
    keys = ["version", "name", "inputs", "vertices", "outputs", "type", "inputs", "out", "kernel", "blocks",
            "defaults", "block", "x", "y"]
    kind = rng.randrange(4 if depth < 4 else 1)
    if kind == 0:
        return copy.deepcopy(rng.choice(SCALARS))
    if kind == 1:
        return [random_yaml(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(keys): random_yaml(rng, depth + 1) for _ in range(rng.randrange(5))}


def dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
