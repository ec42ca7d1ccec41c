"""``load_spec``: YAML text or file -> validated, block-expanded :class:`Spec`."""
from __future__ import annotations

import os
import re

from pydantic import ValidationError

from ..errors import GraphspecError, Problem, SpecError, brief, did_you_mean, shown, suggestion_budget
from ..registry import lookup
from .yaml_source import Source, load_yaml
from . import blocks as _blocks
from .model import SPEC_VERSION, TRAIN_KEYS, Document, Spec, TrainConfig, Vertex
from .validate import problems as _problems

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")  # \Z, not $: "$" also matches before a final newline
# Vertex and input names, and the names a vertex reads: names are module names and state_dict keys, and every
# message about a vertex quotes them (a megabyte name, repeated by a YAML alias, made gigabyte messages).
MAX_NAME_CHARS = 200
ENVELOPE = ("type", "inputs", "group")


def _reserved() -> frozenset[str]:
    import torch.fx
    return frozenset(n for n in dir(torch.fx.GraphModule) if not n.startswith("__")) | {
        "training", "graph", "meta", "code", "graphspec"}


RESERVED = _reserved()


def load_spec(source: "str | os.PathLike | dict | Spec | Source", *, check_graph: bool = True) -> Spec:
    """Load and validate a spec from a file path, YAML text, a dict or the name of a zoo architecture
    (``"resnet50"``: :mod:`graphspec.zoo`).

    >>> spec = load_spec("specs/nn4small2.yaml")  # doctest: +SKIP
    >>> spec.vertices["inception-3a"].inputs[:2]  # doctest: +SKIP
    ['inception-3a-transfer2-0', 'inception-3a-transfer2-1']

    Raises :class:`~graphspec.errors.SpecError` listing every problem with ``file:line:col`` and vertex. With
    ``check_graph`` (the default) the returned spec carries its graph analysis, ``spec.analysis``.
    """
    with suggestion_budget():  # did-you-mean stays linear however many problems the spec has
        return _load(source, check_graph)


def _load(source, check_graph: bool) -> Spec:
    if isinstance(source, Spec):
        if check_graph and source.analysis is None:
            from ..graph import analyze
            source.analysis = analyze(source, warn=False)
        return source
    from ..zoo import path as zoo_path  # the function, not the package (no import back into graphspec)
    zoo_spec = zoo_path(source)  # a zoo architecture's name (and not a file): its spec
    if zoo_spec is not None:
        source = zoo_spec
    if isinstance(source, Source):
        src = source
    else:
        src = Source(source, "<dict>") if isinstance(source, dict) else load_yaml(source)
    spec, problems, broken = _from_source(src)
    if check_graph or problems:
        from ..graph import analyze
        try:
            spec.analysis = analyze(spec, broken=broken, warn=not problems)
        except SpecError as e:  # report the graph and shape problems of the valid part with the others
            problems = problems + e.problems
    if problems:
        raise SpecError(sorted(problems, key=_position))
    return spec


def _position(problem: Problem) -> tuple:
    return (problem.location.line, problem.location.col)


def _fail(problems: list[Problem]):
    if problems:
        raise SpecError(problems)


def _from_source(src: Source) -> tuple[Spec, list[Problem], frozenset[str]]:
    """The spec of the vertices that validate, the problems of the others, and the names of those refused (so the
    graph analysis can still check what the valid vertices allow)."""
    data = src.data
    if data is None:
        raise GraphspecError("the spec is empty; expected a mapping with at least 'version', 'inputs', "
                             "'vertices' and 'outputs'", location=src.loc(()))
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        kind = {"list": "a list", "str": "a string", "int": "a number", "float": "a number"}.get(kind, kind)
        raise GraphspecError(f"expected a mapping at the top level (version, name, inputs, vertices, outputs); "
                             f"received {kind}", location=src.loc(()))
    check_version(data, src)
    from .versions import upgrade
    upgraded = upgrade(data, src.file)
    if upgraded is not data:  # positions still point into the original file, key by key where unchanged
        src = Source(upgraded, src.file, src.positions)
        data = upgraded
    try:
        doc = Document.model_validate(data)
    except ValidationError as e:
        raise SpecError(_problems(e, src, (), Document)) from None
    problems = [Problem(f"invalid input name: '{brief(n)}' {_name_reason(n)}", src.loc(("inputs", n)), brief(n),
                        ("inputs", n)) for n in doc.inputs if not _valid_name(n)]
    problems += [Problem(f"output '{brief(n)}' {_long(n)}", src.loc(("outputs", i)), None, ("outputs", i))
                 for i, n in enumerate(doc.outputs) if len(n) > MAX_NAME_CHARS]
    from .early_shapes import EarlyShapes
    expansion = _blocks.expand(doc.vertices, doc.blocks, src, EarlyShapes(doc, src, _vertex))
    problems += expansion.problems
    _fail(problems)
    vertices: dict[str, Vertex] = {}
    broken: set[str] = set()
    parts: dict[str, str] = {}  # vertex -> where the part of the network it shares starts (`shares` + `from`)
    for raw in expansion.vertices:
        sharing = isinstance(raw.body, dict) and "shares" in raw.body
        vertex = _sharer(raw, src, problems, parts) if sharing else _vertex(raw, doc, src, problems)
        if vertex is None:
            broken.add(raw.name)
            continue
        if raw.name in vertices or raw.name in doc.inputs:
            first = vertices[raw.name].path if raw.name in vertices else ("inputs", raw.name)
            origin = f" ({raw.origin})" if raw.origin else ""
            problems.append(Problem(f"the name '{brief(raw.name)}' is defined twice (first at {src.loc(first)}); "
                                    f"vertex and input names must be unique{origin}", src.loc(raw.path), raw.name,
                                    raw.path))
            continue
        vertices[raw.name] = vertex
    # A block instance name refers to the block's output, unless the block made a vertex of that very name.
    aliases = {k: v for k, v in expansion.aliases.items() if k not in vertices}
    for v in vertices.values():
        v.inputs = [aliases.get(i, i) for i in v.inputs]
    if parts:
        vertices, part_aliases = _share_parts(vertices, parts, doc.inputs, broken, src, problems)
        aliases.update(part_aliases)
        for v in vertices.values():
            v.inputs = [part_aliases.get(i, i) for i in v.inputs]
    broken |= _resolve_shares(vertices, doc.inputs, broken, src, problems)
    spec = Spec(doc.version, doc.name, doc.seed, doc.defaults, dict(doc.inputs), vertices,
                [aliases.get(o, o) for o in doc.outputs], doc.description, src)
    return spec, problems, frozenset(broken) | frozenset(a for a, target in aliases.items() if target in broken)


def check_version(data: dict, src: Source) -> None:
    """Refuse a document without a version, with an invalid one, or newer than this graphspec reads."""
    version = data.get("version")
    if "version" not in data:
        raise GraphspecError(f"missing required key 'version'; this graphspec reads version {SPEC_VERSION} "
                             f"(add 'version: {SPEC_VERSION}')", location=src.loc(()))  # SPEC_VERSION == CURRENT
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise GraphspecError(f"'version': expected a positive integer; received {shown(version)}",
                             location=src.loc(("version",)))
    from .versions import CURRENT
    if version > CURRENT:
        raise GraphspecError(f"spec version {version} is newer than this graphspec understands "
                             f"(up to {CURRENT}); upgrade graphspec", location=src.loc(("version",)))


SHARER_KEYS = ("shares", "inputs", "group", "from")


def _sharer(raw, src: Source, problems: list[Problem], parts: dict[str, str]) -> Vertex | None:
    """A vertex that applies another vertex's layer to its own inputs; its type, parameters and weights are
    filled in from that vertex by :func:`_resolve_shares` once every vertex is known. With ``from``, it stands for
    the whole part of the network from ``from`` to ``shares`` (recorded in ``parts``, expanded by
    :func:`_share_parts`)."""
    name, body, path = raw.name, raw.body, raw.path
    suffix = f" ({raw.origin})" if raw.origin else ""
    before = len(problems)

    def bad(msg, key=None):
        p = path + ((key,) if key else ())
        problems.append(Problem(msg + suffix, src.loc(p), brief(name), p))

    if not _valid_name(name):
        bad(f"invalid vertex name: '{brief(name)}' {_name_reason(name)}")
    target = body["shares"]
    if not isinstance(target, str) or not target:
        bad(f"'shares' must name the vertex whose layer this one uses; received {shown(target)}", "shares")
    for key in body:
        if key not in SHARER_KEYS:
            bad(f"'{brief(key)}' cannot be set on a vertex that shares '{brief(target)}': its type, parameters and "
                f"training settings are those of '{brief(target)}' (a shared layer has one configuration)", key)
    inputs = body.get("inputs", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        bad(f"'inputs' must be a list of vertex or input names; received {shown(inputs)}", "inputs")
    else:
        for key, names in (("inputs", inputs), ("shares", [target]), ("from", [body.get("from")])):
            if _long_name(names):
                bad(f"'{key}': {_long_name(names)}", key)
    start = body.get("from")
    if "from" in body and (not isinstance(start, str) or not start):
        bad(f"'from' must name the input or vertex where the shared part starts; received {shown(start)}", "from")
    elif "from" in body and isinstance(inputs, list) and len(inputs) != 1:
        bad(f"a vertex that shares the part from '{brief(start)}' takes exactly 1 input (what replaces '{brief(start)}'); "
            f"received {len(inputs)}", "inputs")
    if len(problems) > before:
        return None
    if start:
        parts[name] = start
    group = body.get("group")
    group_path = tuple(str(group).split("/")) if group else raw.group
    return Vertex(name, "", list(inputs), group=group_path, path=path, origin=raw.origin, shares=target)


def _share_parts(vertices: dict[str, Vertex], parts: dict[str, str], inputs, broken: set[str], src: Source,
                 problems: list[Problem]) -> tuple[dict[str, Vertex], dict[str, str]]:
    """Replace each ``{shares: END, from: START, inputs: [X]}`` vertex NAME by a copy of every vertex on a path
    from START to END, named ``NAME-<vertex>``, each sharing the original's layer and reading X where the
    original reads START. Returns the new vertices (in order) and the aliases NAME -> ``NAME-END``."""
    out: dict[str, Vertex] = {}
    aliases: dict[str, str] = {}
    for name, v in vertices.items():
        if name not in parts:
            out[name] = v
            continue
        start, end = parts[name], v.shares
        part, problem, key = _part_between(vertices, inputs, parts, start, end)
        if problem:
            if not {start, end} & broken:
                where = v.path + (key,)
                problems.append(Problem(problem, src.loc(where), name, where))
            broken.add(name)
            continue
        rename = {start: v.inputs[0], **{p: f"{name}-{p}" for p in part}}
        for p in part:
            copy = Vertex(rename[p], "", [rename.get(i, i) for i in vertices[p].inputs],
                          group=v.group + (name,) + vertices[p].group,  # the original's block instances, nested
                          path=v.path, origin=f"the part of '{name}' from '{brief(start)}' to '{brief(end)}'", shares=p)
            if copy.name in vertices or copy.name in inputs:
                problems.append(Problem(f"the shared part makes a vertex '{copy.name}', a name already used",
                                        src.loc(v.path), name, v.path))
                broken.add(name)
                break
            out[copy.name] = copy
        aliases[name] = rename[end]
    return out, aliases


def _part_between(vertices, inputs, parts, start: str, end: str) -> tuple[list[str], str | None, str]:
    """The vertices on a path from ``start`` to ``end`` (in spec order), or a problem and the key it is about."""
    if start not in vertices and start not in inputs:
        known = list(inputs) + list(vertices)
        return [], f"'from': no input or vertex named '{brief(start)}'{did_you_mean(start, known)}", "from"
    if end not in vertices or end in parts:
        return [], f"'shares': no vertex named '{brief(end)}'{did_you_mean(end, list(vertices))}", "shares"
    depends: dict[str, bool] = {start: True}

    def reads_start(n: str, seen: frozenset = frozenset()) -> bool:
        if n not in depends:
            v = vertices.get(n)
            depends[n] = v is not None and n not in seen and any(reads_start(i, seen | {n}) for i in v.inputs)
        return depends[n]
    if not reads_start(end):
        return [], f"'{brief(end)}' does not depend on 'from' ('{brief(start)}'): there is no part between them to share", "shares"
    read_by_end = _read_by(vertices, end)
    part = [n for n in vertices if n in read_by_end and n != start and reads_start(n)]
    for n in part:
        outside = [i for i in vertices[n].inputs if i != start and i not in part]
        if outside:
            return [], (f"the part from '{brief(start)}' to '{brief(end)}' is not self-contained: '{brief(n)}' also reads '{brief(outside[0])}', "
                        f"which does not come from '{brief(start)}'"), "shares"
    return part, None, ""


def _read_by(vertices, end: str) -> set[str]:
    """``end`` and every vertex it reads, directly or not."""
    todo, seen = [end], set()
    while todo:
        m = todo.pop()
        if m not in seen and m in vertices:
            seen.add(m)
            todo.extend(vertices[m].inputs)
    return seen


def _resolve_shares(vertices: dict[str, Vertex], inputs, broken: set[str], src: Source,
                    problems: list[Problem]) -> set[str]:
    """Give every sharing vertex its layer's owner (following chains: a shares b shares c -> c) and the owner's
    type and configuration; returns the sharing vertices refused (removed from ``vertices``)."""
    refused: set[str] = set()
    for name, v in list(vertices.items()):
        if not v.shares:
            continue
        chain, target = [name], v.shares
        while target in vertices and vertices[target].shares and target not in chain:
            chain.append(target)
            target = vertices[target].shares
        problem = _share_problem(target, chain, vertices, inputs, broken)
        if problem is None and target not in broken:
            owner = vertices[target]
            v.type, v.params, v.train = owner.type, owner.params, owner.train
            v.cfg, v.training, v.shares = owner.cfg, owner.training, owner.name
            continue
        if problem:
            problems.append(Problem(problem + (f" ({v.origin})" if v.origin else ""), src.loc(v.path + ("shares",)),
                                    name, v.path + ("shares",)))
        refused.add(name)
    for name in refused:
        del vertices[name]
    return refused


def _share_problem(target: str, chain: list[str], vertices, inputs, broken) -> str | None:
    if target in chain:
        return "'shares' goes round in a circle: " + " -> ".join(chain + [target]) + "; one vertex must own the layer"
    if target in broken:
        return None  # refused already
    if target in inputs:
        return f"'shares' names the network input '{brief(target)}'; only a vertex has a layer to share"
    if target not in vertices:
        return f"'shares': no vertex named '{brief(target)}'{did_you_mean(target, list(vertices))}"
    return None


def _valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_CHARS and bool(NAME.match(name)) and name not in RESERVED


def _name_reason(name: str) -> str:
    if len(name) > MAX_NAME_CHARS:
        return _long(name)
    if name in RESERVED:
        return "is reserved by torch.nn.Module"
    return "may contain only letters, digits, '_' and '-', and must not start with '-'"


def _long(name: str) -> str:
    return f"is {len(name):,} characters long; names are limited to {MAX_NAME_CHARS} characters (MAX_NAME_CHARS)"


def _long_name(names: list) -> str | None:
    """The first name of ``names`` longer than MAX_NAME_CHARS, as a problem's message, or None."""
    name = next((n for n in names if isinstance(n, str) and len(n) > MAX_NAME_CHARS), None)
    return None if name is None else f"'{brief(name)}' {_long(name)}"


def _vertex(raw, doc: Document, src: Source, problems: list[Problem]) -> Vertex | None:
    name, body, path = raw.name, raw.body, raw.path
    suffix = f" ({raw.origin})" if raw.origin else ""

    def bad(msg, key=None):
        p = path + ((key,) if key else ())
        problems.append(Problem(msg + suffix, src.loc(p), brief(name), p))

    if not _valid_name(name):
        bad(f"invalid vertex name: '{brief(name)}' {_name_reason(name)}")
        return None
    if not isinstance(body, dict):
        bad(f"expected a mapping with 'type' and 'inputs'; received {shown(body)}")
        return None
    if "type" not in body:
        bad("missing required key 'type'")
        return None
    try:
        entry = lookup(body["type"])
    except KeyError as e:
        bad(e.args[0], "type")
        return None
    inputs = body.get("inputs", [])
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        bad(f"'inputs' must be a list of vertex or input names; received {shown(inputs)}", "inputs")
        return None
    if _long_name(inputs):
        bad(f"'inputs': {_long_name(inputs)}", "inputs")
        return None
    group = body.get("group")
    group_path = tuple(str(group).split("/")) if group else raw.group
    params = {k: v for k, v in body.items() if k not in ENVELOPE and k not in TRAIN_KEYS}
    train = {k: v for k, v in body.items() if k in TRAIN_KEYS}
    known = tuple(ENVELOPE) + TRAIN_KEYS
    before = len(problems)
    try:
        filled = {k: getattr(doc.defaults, k) for k in entry.uses}
        cfg = entry.Params.model_validate({**filled, **params})
    except ValidationError as e:
        problems.extend(_problems(e, src, path, entry.Params, name, known, suffix))
        cfg = None
    try:
        base = doc.defaults.model_dump(include=set(TRAIN_KEYS))
        training = TrainConfig.model_validate({**base, **train})
    except ValidationError as e:
        problems.extend(_problems(e, src, path, TrainConfig, name, known, suffix))
    if len(problems) > before:
        return None
    return Vertex(name, entry.name, list(inputs), params, train, group_path, path, raw.origin, cfg, training)
