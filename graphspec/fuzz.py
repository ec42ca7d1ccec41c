"""Fuzzing the spec language (used by tests/test_fuzz.py, tests/test_fuzz_hostile.py and benchmarks/fuzz_specs.py).

Every input must end in a Spec or in a GraphspecError whose problems all have a location — never another
exception, never a hang. Hostile documents (:data:`HOSTILE_FAMILIES`) go through the command line in a
:class:`Sandbox`: each must end with exit 0 or 2 within a time and memory bound, printing no raw control character.
"""
from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass
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


# --- hostile documents ---------------------------------------------------------------------------------------
#
# Generators of spec documents written as an attacker would (RELIABILITY.md, "hostile documents"): the template
# expression language, YAML aliases, non-finite and huge numbers, huge shapes, thousands of mistyped names,
# control characters in names. Each takes a chooser, anything with ``choice(seq)`` and ``randint(lo, hi)``: a
# ``random.Random`` (benchmarks/fuzz_specs.py) or hypothesis's data (tests/test_fuzz_hostile.py, which shrinks
# through it). Each returns YAML text. :class:`Sandbox` runs the command line on them in a worker process with a
# time and memory bound.

# Pieces of expressions that cost much for their length: exponent towers, repetition, formatting, big ranges.
_ATOMS = ["0", "1", "2", "9", "10", "64", "99", "10**6", "10**9", "2**62", "-1", "1e308", "'ab'", "'%s'", "[1, 2]",
          "(1, 2)", "s", "l", "p", "i", "range(3)", "'x' * 1000", "[0] * 1000", "float('inf')", "float('nan')",
          "int('9' * 5000)", "str(10**4000)", "True", "None"]
_TOWER_BASES = ["2", "9", "10", "99", "1.5", "-2"]
_NEST_DEPTHS = [1, 2, 30, 200, 1000, 5000, 20000]


def expression(c, depth: int = 0) -> str:
    """A random template expression, biased towards ones that are expensive to evaluate."""
    kinds = ["atom", "tower", "binary", "format", "repeat", "parens", "unary", "range", "sum", "call", "index",
             "ifexp", "compare"]
    kind = c.choice(kinds if depth < 3 else ["atom"])
    sub = lambda: expression(c, depth + 1)  # noqa: E731
    if kind == "atom":
        return c.choice(_ATOMS)
    if kind == "tower":
        return "**".join(c.choice(_TOWER_BASES) for _ in range(c.randint(2, 8)))
    if kind == "binary":
        return f"({sub()}) {c.choice(['**', '*', '%', '+', '-', '//', '/'])} ({sub()})"
    if kind == "format":  # %-formatting: a width or a repeated pattern builds a huge string from a short one
        return c.choice([lambda: f"'%0{c.choice([9, 10**6, 10**8, 10**9])}d' % 1", lambda: f"'%*d' % ({sub()}, 1)",
                         lambda: f"('%s' * {c.choice([2, 1000, 10**5])}) % ({sub()})",
                         lambda: f"'%s%s' % ({sub()}, {sub()})", lambda: f"({sub()}) % ({sub()})"])()
    if kind == "repeat":  # string and list repetition, of literals and of shared (aliased) parameters
        return c.choice([lambda: f"'{c.choice(['a', 'ab' * 50])}' * ({sub()})", lambda: f"[{sub()}] * ({sub()})",
                         lambda: f"{c.choice(['s', 'l'])} * ({sub()})", lambda: f"({sub()}) * {c.choice(['s', 'l'])}",
                         lambda: "'a' * 10**5 * 10**5", lambda: "l * 10**5 * 10**5"])()
    if kind == "parens":
        n = c.choice(_NEST_DEPTHS)
        return "(" * n + sub() + ")" * n
    if kind == "unary":
        return c.choice(["-", "+", "not ", "~", "- -"]) * c.choice(_NEST_DEPTHS) + sub()
    if kind == "range":
        return c.choice([lambda: f"range({sub()})", lambda: f"range({sub()}, {sub()})",
                         lambda: f"range(0, {sub()}, {sub()})", lambda: "range(10**9)",
                         lambda: "range(-10**18, 10**18)"])()
    if kind == "sum":
        n = c.choice(_NEST_DEPTHS)
        return c.choice([lambda: f"sum({sub()})", lambda: f"sum([{sub()}] * ({sub()}), [])",
                         lambda: "sum(range(10**9))", lambda: "sum([[1] * 99999] * 99999, [])",
                         lambda: "sum(" * n + "[1]" + ", [])" * n, lambda: f"sum([{sub()}], {sub()})"])()
    if kind == "call":
        return f"{c.choice(['len', 'min', 'max', 'int', 'str', 'abs', 'float', 'list', 'range', 'sum'])}({sub()})"
    if kind == "index":
        return f"({sub()})[{sub()}]" if c.randint(0, 1) else f"({sub()})[{sub()}:{sub()}:{sub()}]"
    if kind == "ifexp":
        return f"({sub()}) if ({sub()}) else ({sub()})"
    return f"({sub()}) {c.choice(['==', '<', 'in', 'not in', '>='])} ({sub()})"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    import json
    return json.dumps(text)


def _key(text: str, indent: str) -> list[str]:
    """A mapping key of any length, as YAML's explicit ``? key`` (implicit keys stop at 1024 characters); the value
    follows, indented below ``indent``."""
    return [f"{indent}? {_q(text)}", f"{indent}:"]


def expression_spec(c) -> str:
    """A block template using a hostile expression in one or more places: a parameter's value, a `for` or `if`
    directive (in vertices or in an input list), a `require` check, a vertex name; and instantiated in a fan-out
    (many instances, or blocks instantiating blocks)."""
    e = lambda: _q("${" + expression(c) + "}")  # noqa: E731
    raw = lambda: expression(c)  # noqa: E731
    place = c.choice(["out", "for", "if", "list-for", "require", "name", "param", "fan-out", "nested blocks"])
    body = '{type: dense, inputs: [$input], out: 3}'
    params = "{p: 2, s: 'ab', l: [1, 2, 3]}"
    lines = ["version: 1", "name: fuzz", "inputs:", "  x: {type: feed_forward, size: 4}", "blocks:"]
    instances = ["  h: {block: b, inputs: [x]}"]
    if place == "out":
        lines += ["  b:", f"    params: {params}", "    vertices:", f"      $name: {{type: dense, inputs: [$input], "
                  f"out: {e()}}}"]
    elif place == "for":
        lines += ["  b:", f"    params: {params}", "    vertices:", *_key("for i in " + raw(), "      "),
                  f"        $name-$i: {body}", f"      $name: {body}"]
    elif place == "if":
        lines += ["  b:", f"    params: {params}", "    vertices:", *_key("if " + raw(), "      "),
                  f"        $name-x: {body}", f"      $name: {body}"]
    elif place == "list-for":
        lines += ["  b:", f"    params: {params}", "    vertices:", "      $name:", "        type: merge",
                  "        inputs:", f"          - ? {_q('for i in ' + raw())}", "            : [$input]"]
    elif place == "require":
        lines += ["  b:", f"    params: {params}", f"    require: [{{if: {_q(raw())}, message: {e()}}}]",
                  "    vertices:", f"      $name: {body}"]
    elif place == "name":
        lines += ["  b:", f"    params: {params}", "    vertices:", *_key("$name-${" + raw() + "}", "      "),
                  f"        {body}", f"      $name: {body}"]
    elif place == "param":
        lines += ["  b:", f"    params: {params}", "    vertices:", f"      $name: {{type: dense, inputs: [$input], "
                  f"out: {e()}}}"]
        instances = [f"  h: {{block: b, inputs: [x], p: {e()}, s: {e()}}}"]
    elif place == "fan-out":  # one template, many instances, each repeating itself
        n = c.choice([10, 1000, 20000])
        lines += ["  b:", f"    params: {params}", "    vertices:", f"      {_q('for i in range(' + str(n) + ')')}:",
                  f"        $name-$i: {body}", f"      $name: {body}"]
        instances = ["  h: {block: b, inputs: [x]}"] + [f"  h{k}: {{block: b, inputs: [x]}}"
                                                        for k in range(c.choice([1, 100, 2000]))]
    else:  # blocks instantiating blocks: fan^depth vertices from a few lines
        fan, depth = c.choice([2, 10, 100, 1000]), c.randint(2, 8)
        lines += ["  b0:", "    vertices:", f"      $name: {body}"]
        for level in range(1, depth + 1):
            lines += [f"  b{level}:", "    vertices:", f"      {_q(f'for i in range({fan})')}:",
                      f"        $name-$i: {{block: b{level - 1}, inputs: [$input]}}", f"      $name: {body}"]
        instances = [f"  h: {{block: b{depth}, inputs: [x]}}"]
    lines += ["vertices:"] + instances + ["  o: {type: output, inputs: [h], out: 2}", "outputs: [o]"]
    return "\n".join(lines) + "\n"


def _laughs(level: int, width: int) -> str:
    """A billion-laughs value defined in place: ``&aN [&aN-1 [...], *aN-1, ...]``, width**level strings."""
    if level == 0:
        return f"&a0 [{', '.join(['lol'] * width)}]"
    return f"&a{level} [{', '.join([_laughs(level - 1, width)] + [f'*a{level - 1}'] * (width - 1))}]"


def alias_spec(c) -> str:
    """YAML anchors and aliases: a billion-laughs tower (near and over the expansion limit), or one big string or
    list reused many times where errors quote it (types, inputs, unknown keys, values, outputs, the name). The
    anchor is defined where the value is first used, so no unknown top-level key ends the check early."""
    kind = c.choice(["laughs", "string", "list"])
    if kind == "laughs":
        depth = c.randint(2, 9)
        first, again = _laughs(depth, c.choice([2, 4, 9, 10])), f"*a{depth}"
    elif kind == "string":
        word = c.choice(["x", "ab", "conv", "[red]", "dense "])
        first, again = f"&s {_q(word * c.choice([10, 1000, 100_000, 1_000_000]))}", "*s"
    else:
        first, again = f"&s [{', '.join(['abcdefgh'] * c.choice([10, 1000, 100_000]))}]", "*s"
    used = []

    def payload() -> str:  # the anchor at the first use (the earliest in the text), the alias after
        used.append(1)
        return first if len(used) == 1 else again

    uses = c.choice([1, 10, 100, 1000, 10000])
    site = c.choice(["type", "inputs", "key", "out", "outputs", "name", "description", "block", "input size"])
    lines = ["version: 1", f"name: {payload() if site == 'name' else 'fuzz'}"]
    if site == "description":
        lines.append(f"description: {payload()}")
    lines += ["inputs:", f"  x: {{type: feed_forward, size: {payload() if site == 'input size' else 4}}}", "vertices:"]
    for k in range(uses if site in ("type", "key", "out", "block", "description") else 1):
        if site in ("type", "description"):
            lines.append(f"  v{k}: {{type: {payload()}, inputs: [x], out: 3}}")
        elif site == "key":
            lines.append(f"  v{k}: {{type: dense, inputs: [x], out: 3, bogus{k}: {payload()}}}")
        elif site == "out":
            lines.append(f"  v{k}: {{type: dense, inputs: [x], out: {payload()}}}")
        elif site == "block":
            lines.append(f"  v{k}: {{block: {payload()}, inputs: [x]}}")
    if site == "inputs":
        lines.append(f"  v0: {{type: merge, inputs: [{', '.join(payload() for _ in range(uses))}]}}")
    lines.append("  o: {type: output, inputs: [x], out: 2}")
    lines.append(f"outputs: [{', '.join(payload() for _ in range(uses)) if site == 'outputs' else 'o'}]")
    return "\n".join(lines) + "\n"


HOSTILE_NUMBERS = [".nan", ".NaN", ".inf", "-.inf", "+.inf", "1e308", "1e309", "-1e309", "-0.0", "0", "-1",
                   "9" * 5000, "-" + "9" * 5000, str(2**63), str(-(2**63) - 1), str(2**64), "0x7fffffffffffffff",
                   "1_000_000_000_000", "4.9e-324", "3.0", "1.5", "true", "1e-45"]
_NUMBER_BASE = {  # a small valid network; each (vertex, key) below is a numeric field an attacker may set
    "x": {"type": "convolutional", "channels": 3, "height": 8, "width": 8},
    "conv": {"type": "conv", "inputs": ["x"], "out": 4, "kernel": 3, "stride": 1, "padding": 1, "l2": 1e-4,
             "bias_init": 0.1},
    "lrn": {"type": "lrn", "inputs": ["conv"], "n": 5, "k": 2.0, "alpha": 1e-4, "beta": 0.75},
    "bn": {"type": "batchnorm", "inputs": ["lrn"], "eps": 1e-5, "decay": 0.9},
    "pool": {"type": "subsampling", "inputs": ["bn"], "pooling": "pnorm", "pnorm": 2, "kernel": 2, "stride": 2},
    "fc": {"type": "dense", "inputs": ["pool"], "out": 5, "l1": 0.0},
    "head": {"type": "output", "inputs": ["fc"], "out": 3, "activation": "softmax"},
}


def number_spec(c) -> str:
    """A small valid network with one to three numeric fields (or the seed) set to NaN, infinities, 5,000-digit
    integers, values past int64 or float range, negative zero."""
    import json
    doc = json.loads(json.dumps(_NUMBER_BASE))
    edits = {}
    for _ in range(c.randint(1, 3)):
        name = c.choice(sorted(doc))
        key = c.choice(sorted(k for k in doc[name] if k not in ("type", "inputs", "pooling", "activation")))
        edits[(name, key)] = c.choice(HOSTILE_NUMBERS)
    seed = c.choice(HOSTILE_NUMBERS) if c.randint(0, 3) == 0 else "1"
    lines = ["version: 1", "name: fuzz", f"seed: {seed}", "inputs:"]
    for name, body in doc.items():
        fields = ", ".join(f"{k}: {edits.get((name, k), json.dumps(v))}" for k, v in body.items())
        lines.append(f"  {name}: {{{fields}}}")
        if name == "x":
            lines.append("vertices:")
    lines.append("outputs: [head]")
    return "\n".join(lines) + "\n"


_HUGE = [2**20, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64, 10**19, 3 * 2**30]


def shape_spec(c) -> str:
    """Huge shapes and sizes: nOut 2**40, inputs of 2**31 features, images of 2**32 pixels, channels that overflow
    int64 when multiplied, big-but-finite layers whose weights would take gigabytes."""
    big = lambda: c.choice(_HUGE + [4096, 65536, 100_000])  # noqa: E731
    kind = c.choice(["dense", "conv", "image", "embedding", "recurrent", "chain"])
    lines = ["version: 1", "name: fuzz", "inputs:"]
    if kind == "dense":
        lines += [f"  x: {{type: feed_forward, size: {big() if c.randint(0, 1) else 4}}}", "vertices:",
                  f"  d: {{type: dense, inputs: [x], out: {big()}}}"]
    elif kind == "chain":  # each layer fine alone, the network not
        lines += ["  x: {type: feed_forward, size: 4}", "vertices:",
                  f"  d0: {{type: dense, inputs: [x], out: {big()}}}",
                  f"  d1: {{type: dense, inputs: [d0], out: {big()}}}",
                  f"  d: {{type: dense, inputs: [d1], out: {big()}}}"]
    elif kind == "conv":
        lines += [f"  x: {{type: convolutional, channels: {c.choice([3, big()])}, height: 8, width: 8}}", "vertices:",
                  f"  d: {{type: conv, inputs: [x], out: {big()}, kernel: {c.choice([3, big()])}, "
                  f"padding: {c.choice([0, 1, big()])}}}"]
    elif kind == "image":
        lines += [f"  x: {{type: convolutional, channels: {big()}, height: {big()}, width: {big()}}}", "vertices:",
                  "  d: {type: conv, inputs: [x], out: 2, kernel: 1}"]
    elif kind == "embedding":
        lines += ["  x: {type: feed_forward, size: 1}", "vertices:",
                  f"  d: {{type: embedding, inputs: [x], in: {big()}, out: {big()}}}"]
    else:
        lines += [f"  x: {{type: recurrent, size: {c.choice([4, big()])}, length: {c.choice([16, big()])}}}",
                  "vertices:", f"  d0: {{type: lstm, inputs: [x], out: {big()}}}",
                  "  d: {type: last_time_step, inputs: [d0]}"]
    lines += [f"  o: {{type: output, inputs: [d], out: {c.choice([2, big()])}}}", "outputs: [o]"]
    return "\n".join(lines) + "\n"


def _typo(name: str, k: int) -> str:
    """``name`` with one character changed, deterministically (close enough for did-you-mean to consider it)."""
    i = k % len(name)
    return name[:i] + chr(ord("a") + (ord(name[i]) + k) % 26) + name[i + 1:]


def mistyped_spec(c, most: int = 20000) -> str:
    """Thousands of vertices reading inputs that do not exist but look like ones that do (did-you-mean for
    each), or thousands of mistyped keys or types; ``most`` bounds the count (the suite asks fewer)."""
    n = c.choice([n for n in (10, 300, 3000, 15000, 20000) if n <= most] or [10])
    what = c.choice(["inputs", "keys", "types", "outputs"])
    lines = ["version: 1", "name: fuzz", "inputs:", "  x: {type: feed_forward, size: 4}", "vertices:"]
    for k in range(n):
        name = f"layer-{k:05d}"
        if what == "inputs":
            source = "x" if k == 0 else _typo(f"layer-{k - 1:05d}", k)
            lines.append(f"  {name}: {{type: dense, inputs: [{source}], out: 3}}")
        elif what == "keys":
            lines.append(f"  {name}: {{type: dense, inputs: [x], out: 3, {_typo('activation', k)}: relu}}")
        elif what == "types":
            lines.append(f"  {name}: {{type: {_typo('convolution', k)}, inputs: [x], out: 3}}")
        else:
            lines.append(f"  {name}: {{type: dense, inputs: [x], out: 3}}")
    lines.append("  o: {type: output, inputs: [x], out: 2}")
    outs = [_typo(f"layer-{k:05d}", k) for k in range(n)] if what == "outputs" else ["o"]
    lines.append(f"outputs: [{', '.join(outs)}]")
    return "\n".join(lines) + "\n"


CONTROL_PAYLOADS = [r"\e[2J", r"\e]0;pwned\a", r"\e]8;;http://evil.example/\e\\link\e]8;;\e\\", r"\x9b31m",
                    r"\x9d0;t\a", r"\a", r"\r", r"\x7f", r"\u202e", r"\ud800", r"\0", "[red]", "[/]", "[link=x]",
                    r"\n", r"\t", r"\x85", "%s%n", "{0}", r"\\"]


def control_spec(c) -> str:
    """Control characters, escape sequences, lone surrogates and rich markup in every place a name or string can
    be: the spec's name and description, input, vertex, block and output names, types, keys and values."""
    def hostile(base: str) -> str:  # a YAML double-quoted scalar: the payloads are YAML escapes, kept as written
        return '"' + base + "".join(c.choice(CONTROL_PAYLOADS) for _ in range(c.randint(1, 4))) + '"'

    places = {c.choice(["name", "description", "input", "vertex", "output", "type", "key", "value", "block",
                        "activation"]) for _ in range(c.randint(1, 3))}
    name = hostile("net") if "name" in places else "fuzz"
    x = hostile("x") if "input" in places else "x"
    v = hostile("v") if "vertex" in places else "v"
    typ = hostile("dense") if "type" in places else "dense"
    key = f", {hostile('key')}: 1" if "key" in places else ""
    act = hostile("relu") if "activation" in places else "relu"
    out = hostile("o") if "output" in places else "o"
    lines = ["version: 1", f"name: {name}"]
    if "description" in places:
        lines.append(f"description: {hostile('about')}")
    lines += ["inputs:", f"  {x}: {{type: feed_forward, size: 4}}"]
    if "block" in places:
        lines += ["blocks:", f"  {hostile('b')}:", "    vertices:",
                  "      $name: {type: dense, inputs: [$input], out: 3}"]
    lines += ["vertices:", f"  {v}: {{type: {typ}, inputs: [{x}], out: 3, activation: {act}{key}}}",
              f"  o: {{type: output, inputs: [{v}], out: 2}}", f"outputs: [{out}]"]
    if "value" in places:
        lines.insert(2, f"seed: {hostile('1')}")
    return "\n".join(lines) + "\n"


HOSTILE_FAMILIES = {
    "template expressions": expression_spec,
    "YAML aliases": alias_spec,
    "non-finite and huge numbers": number_spec,
    "huge shapes": shape_spec,
    "mistyped names": mistyped_spec,
    "control characters in names": control_spec,
}


# --- running the command line on them, bounded ---------------------------------------------------------------

CASE_SECONDS = 10.0  # a case must end within this: limits answer in a second or two; 10 s leaves room on a loaded
#                      2-core machine (the issue's hangs ran > 90 s)
CASE_MEMORY = 3 << 30  # the worker's address space (RLIMIT_AS): torch alone maps ~0.7 GB; the issue's attacks
#                        took 2-4 GB, so one that still allocates fails here instead of swapping the machine
KILL_GRACE = 5.0  # after CASE_SECONDS, the seconds the worker has to answer before it is killed (a case stuck in
#                   C code, where the alarm's exception cannot reach it)
OUTPUT_KEPT = 4000  # characters of stdout/stderr kept per case for the report
COMMANDS = (("validate",), ("summary",), ("forward", "--batch-size", "1", "--device", "cpu", "--seed", "0"))
_RAW_OUTPUT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass
class Outcome:
    """What one command did with one document."""

    command: tuple
    rc: int | None  # the exit status; None: no answer in time (the worker was killed) or the worker died
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0  # the worker's peak resident memory after the case
    limit_mb: float = 0.0  # the worker's address-space limit
    status: str = ""  # ok (exit 0), error (exit 2), internal (exit 3 or another), hang, crash, unsafe output

    @property
    def survived(self) -> bool:
        return self.status in ("ok", "error")

    def describe(self) -> str:
        tail = (self.stderr or self.stdout).strip().splitlines()[-3:]
        return (f"{self.status}: graphspec {' '.join(self.command)} DOC -> exit {self.rc} after {self.seconds:.1f} s, "
                f"peak {self.peak_mb:.0f} MB: " + " | ".join(line[:300] for line in tail))


def _status(rc, out: str, err: str) -> str:
    if rc == "timeout":
        return "hang"
    if rc not in (0, 2):
        return "internal"
    if _RAW_OUTPUT.search(out) or _RAW_OUTPUT.search(err):
        return "unsafe output"  # a control character from the document reached the terminal
    return "ok" if rc == 0 else "error"


class Sandbox:
    """Runs ``graphspec.cli.main`` on documents in one worker process (started once, restarted after a hang or a
    crash) whose address space is limited to ``memory`` bytes, with an alarm of ``seconds`` per case.

        >>> with Sandbox() as box:                                       # doctest: +SKIP
        ...     box.run(("validate",), "version: 1\\n").status
        'error'
    """

    def __init__(self, seconds: float = CASE_SECONDS, memory: int = CASE_MEMORY):
        self.seconds, self.memory = seconds, memory
        self._worker = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker.wait()
            self._worker = None

    def _start(self):
        import os
        import subprocess
        import sys
        from pathlib import Path
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self._worker = subprocess.Popen([sys.executable, "-m", "graphspec.fuzz", str(self.seconds), str(self.memory)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env=env)
        return self._worker

    def run(self, command: tuple, text: str) -> Outcome:
        import json
        import select
        import time
        worker = self._worker if self._worker is not None and self._worker.poll() is None else self._start()
        start = time.monotonic()
        worker.stdin.write((json.dumps({"argv": list(command), "text": text}) + "\n").encode())
        worker.stdin.flush()
        ready, _, _ = select.select([worker.stdout], [], [], self.seconds + KILL_GRACE)
        line = worker.stdout.readline() if ready else b""
        if not line:  # killed by the kernel, or stuck where the alarm cannot reach
            self.close()
            hang = not ready
            return Outcome(tuple(command), None, seconds=time.monotonic() - start, status="hang" if hang else "crash")
        answer = json.loads(line)
        rc = answer["rc"]
        status = _status(rc, answer["stdout"], answer["stderr"])
        return Outcome(tuple(command), None if rc == "timeout" else rc, answer["stdout"], answer["stderr"],
                       answer["seconds"], answer["peak_mb"], answer["limit_mb"], status)


class _CaseTimeout(BaseException):
    """Raised by the alarm: a BaseException, so the command line's ``except Exception`` does not report it as an
    internal error."""


def _worker(seconds: float, memory: int) -> None:
    """The sandbox's worker: one JSON case per line on stdin, one JSON answer per line on stdout."""
    import contextlib
    import io
    import json
    import os
    import resource
    import signal
    import sys
    import tempfile
    import time

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    channel = os.fdopen(os.dup(1), "w")  # the answers; anything else written to fd 1 goes nowhere
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    from .cli import main  # imported once: torch and the registry are loaded before the first case

    def alarm(signum, frame):
        raise _CaseTimeout

    signal.signal(signal.SIGALRM, alarm)
    folder = tempfile.mkdtemp(prefix="graphspec-fuzz-")
    path = os.path.join(folder, "case.yaml")
    for line in sys.stdin:
        case = json.loads(line)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(case["text"])
        out, err = io.StringIO(), io.StringIO()
        start = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main([*case["argv"], path])
        except _CaseTimeout:
            rc = "timeout"
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001 - reported, not hidden: anything escaping main is a bug
            rc, err = 3, io.StringIO(f"escaped main: {type(e).__name__}: {e}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        answer = {"rc": rc, "stdout": out.getvalue()[-OUTPUT_KEPT:], "stderr": err.getvalue()[-OUTPUT_KEPT:],
                  "seconds": time.monotonic() - start, "peak_mb": peak_mb,
                  "limit_mb": resource.getrlimit(resource.RLIMIT_AS)[0] / 2**20}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()


if __name__ == "__main__":
    import sys
    _worker(float(sys.argv[1]), int(sys.argv[2]))
