"""Block expansion: a block instance becomes the vertices its template describes.

A block template is an ordinary ``vertices`` mapping whose names and values may use ``$param`` / ``${expr}``
(see :mod:`expr`), plus two directives usable as mapping keys or as single-key list items:

* ``for i in <expr>: {...}`` repeats its body for every value (``i`` is bound inside);
* ``if <expr>: {...}`` keeps its body only when the condition holds.

Inside a template ``name`` is the instance name, ``inputs`` its input list and ``input`` its only input. A block
may also read the inferred shapes of its inputs (:data:`SHAPE_NAMES`): the expander then asks the loader for the
shapes of the vertices expanded before the instance, so one template fits any width and any input size.
Vertices remember the instance path (``group``) they came from, for summaries and drawings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import Problem, brief, did_you_mean, listing, shown
from .yaml_source import Source
from .expr import Budget, ExprError, WorkLimit, evaluate, expression_names, names_in, substitute

_FOR = re.compile(r"^for\s+([A-Za-z_]\w*)\s+in\s+(.+)$")
_IF = re.compile(r"^if\s+(.+)$")
REQUIRED = "required"
MAX_BLOCK_DEPTH = 16
# Vertices after expansion, and block instances (an instance may make no vertex, `if` leaving it empty): 100x the
# largest network in the zoo, and each exceeded within about a second of expanding (a flat file is bounded by its
# size already). Reaching either stops the expansion with one error.
MAX_EXPANDED = 20_000
MAX_INSTANCES = 20_000
# What a template can read about its inputs: `shapes` (one per input), and for a block with one input its
# `shape` and `channels` (the first dimension: channels, features or sequence size), with `height` and `width`
# for an image. A block parameter of the same name takes precedence.
SHAPE_NAMES = frozenset({"shape", "shapes", "channels", "height", "width"})


@dataclass
class RawVertex:
    name: str
    body: dict[str, Any]
    path: tuple
    group: tuple[str, ...] = ()
    origin: str = ""


@dataclass
class Expansion:
    vertices: list[RawVertex] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # block instance name -> its output vertex
    problems: list[Problem] = field(default_factory=list)


class _Abort(Exception):
    """This instance is refused (its problem is recorded); the expansion goes on with the next vertex."""


class _Stop(Exception):
    """A limit of the whole expansion is reached (its problem is recorded): nothing more is expanded."""


@dataclass
class _Instance:
    body: dict  # `block` and the arguments, as written
    names: list[str]  # the vertices it expanded to, in order


class ShapeUnknown(Exception):
    """Raised by a shape source for an input whose shape is not known where a block reads it."""


class Expander:
    def __init__(self, blocks: dict, source: Source, shapes=None):
        """``shapes(names, expansion)``: the shapes of ``names`` given the vertices expanded so far (or raises
        :class:`ShapeUnknown` naming one); without it, blocks cannot read shapes."""
        self.blocks, self.source, self.shapes = blocks, source, shapes
        self.out = Expansion()
        self.instances: dict[str, _Instance] = {}
        self._reads_shapes: dict[str, bool] = {}
        self.budget = Budget()  # the work every template of this spec may do, together
        self.instance_count = 0

    def problem(self, msg: str, path: tuple, vertex: str | None) -> None:
        self.out.problems.append(Problem(msg, self.source.loc(path), vertex, path))

    def run(self, vertices: dict[str, dict]) -> Expansion:
        later = {n for n, b in vertices.items() if isinstance(b, dict) and "block" in b}
        for name, body in vertices.items():
            path = ("vertices", name)
            try:
                if self.shares_instance(body):
                    self.shared_instance(name, body, path, ())
                elif isinstance(body, dict) and "block" in body:
                    self.instance(name, body, path, ())
                elif isinstance(body, dict) and isinstance(body.get("shares"), str) and body["shares"] in later:
                    self.problem(f"'shares': block instance '{body['shares']}' is defined after '{name}'; define "
                                 "the instance it shares first", path + ("shares",), name)
                else:
                    self.emit(RawVertex(str(name), body, path))
            except _Abort:
                pass
            except _Stop:
                break
            later.discard(name)
        return self.out

    def shares_instance(self, body) -> bool:
        return isinstance(body, dict) and "shares" in body and "block" not in body and \
            isinstance(body["shares"], str) and body["shares"] in self.instances

    def shared_instance(self, name: str, body: dict, path: tuple, stack: tuple) -> None:
        """An instance that applies another instance's layers to its own inputs: the same block and arguments,
        each of its vertices sharing the corresponding vertex of that instance."""
        target = self.instances[body["shares"]]
        extra = [k for k in body if k not in ("shares", "inputs")]
        if extra:
            self.problem(f"'{extra[0]}' cannot be set on an instance that shares '{body['shares']}': its block and "
                         "arguments are those of that instance", path + (extra[0],), name)
            raise _Abort
        start = len(self.out.vertices)
        self.instance(name, {**target.body, "inputs": body.get("inputs", [])}, path, stack)
        for raw, owner in zip(self.out.vertices[start:], target.names):
            if isinstance(raw.body, dict):
                raw.body = {"shares": owner, "inputs": raw.body.get("inputs", [])}

    def emit(self, raw: RawVertex) -> None:
        if len(self.out.vertices) >= MAX_EXPANDED:
            self.problem(f"blocks expand to more than {MAX_EXPANDED:,} vertices; the limit is {MAX_EXPANDED:,} "
                         "(MAX_EXPANDED)", raw.path, raw.name)
            raise _Stop
        self.out.vertices.append(raw)

    def instance(self, name: str, body: dict, path: tuple, stack: tuple[tuple[str, str], ...]) -> None:
        self.instance_count += 1
        if self.instance_count > MAX_INSTANCES:
            self.problem(f"blocks are instantiated more than {MAX_INSTANCES:,} times; the limit is "
                         f"{MAX_INSTANCES:,} (MAX_INSTANCES)", path, name)
            raise _Stop
        block_name = body["block"]
        if not isinstance(block_name, str):
            self.problem(f"'block' must be the name of a block; received {shown(block_name)}", path + ("block",),
                         name)
            raise _Abort
        if block_name not in self.blocks:
            self.problem(f"unknown block '{brief(block_name)}'{did_you_mean(block_name, self.blocks)}; "
                         f"defined blocks: {listing(self.blocks) or 'none'}", path + ("block",), name)
            raise _Abort
        recursive = block_name in [b for b, _ in stack]
        if recursive or len(stack) >= MAX_BLOCK_DEPTH:
            chain = " -> ".join(f"{b}:{i}" for b, i in stack)  # block:instance
            why = (f"block '{block_name}' uses itself (blocks nest: {chain}); blocks must not be recursive"
                   if recursive else f"block '{block_name}' would nest blocks {MAX_BLOCK_DEPTH + 1} deep ({chain}); "
                   f"blocks nest at most {MAX_BLOCK_DEPTH} deep (MAX_BLOCK_DEPTH)")
            self.problem(why, path + ("block",), name)
            raise _Abort
        bdef = self.blocks[block_name]
        env = self.arguments(name, body, bdef, block_name, path)
        self.check_requirements(bdef, block_name, env, path, name)
        origin = f"from block '{block_name}' used at {self.source.loc(path)}"
        group = tuple(instance for _, instance in stack) + (name,)
        bpath = ("blocks", block_name, "vertices")
        start = len(self.out.vertices)
        for vname, vbody, vpath in self.walk(bdef.vertices, env, bpath, name):
            inner = stack + ((block_name, name),)
            if self.shares_instance(vbody):
                self.shared_instance(vname, vbody, vpath, inner)
            elif isinstance(vbody, dict) and "block" in vbody:
                self.instance(vname, vbody, vpath, inner)
            else:
                self.emit(RawVertex(vname, vbody, vpath, group, origin))
        self.instances[name] = _Instance(body, [v.name for v in self.out.vertices[start:]])
        output = str(self.subst(bdef.output, env, ("blocks", block_name, "output"), name))
        output = self.out.aliases.get(output, output)  # the output may itself be an instance (already resolved)
        if output != name:
            self.out.aliases[name] = output

    def arguments(self, name, body, bdef, block_name, path) -> dict:
        before = len(self.out.problems)
        args = {k: v for k, v in body.items() if k not in ("block", "inputs")}
        for key in args:
            if key not in bdef.params:
                self.problem(f"block '{block_name}' has no parameter '{brief(key)}'"
                             f"{did_you_mean(key, bdef.params)}; its parameters: {listing(bdef.params) or 'none'}",
                             path + (key,), name)
        missing = [k for k, v in bdef.params.items() if v == REQUIRED and k not in args]
        if missing:
            self.problem(f"block '{block_name}' needs parameter(s) {', '.join(repr(m) for m in missing)}",
                         path, name)
        inputs = body.get("inputs", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            self.problem(f"'inputs' must be a list of vertex names; received {shown(inputs)}", path + ("inputs",),
                         name)
            inputs = []
        if len(self.out.problems) > before:
            raise _Abort
        env = self.input_shapes(block_name, bdef, inputs, path, name)
        env.update({k: v for k, v in bdef.params.items() if v != REQUIRED})
        env.update(args)
        env.update(name=name, inputs=list(inputs))
        if len(inputs) == 1:
            env["input"] = inputs[0]
        return env

    def reads_shapes(self, block_name: str, bdef) -> bool:
        if block_name not in self._reads_shapes:
            read = _template_names([bdef.vertices, bdef.output, bdef.require])
            self._reads_shapes[block_name] = bool(read & SHAPE_NAMES - set(bdef.params))
        return self._reads_shapes[block_name]

    def input_shapes(self, block_name: str, bdef, inputs: list[str], path: tuple, name: str) -> dict:
        """The shape names of :data:`SHAPE_NAMES` for a block that reads them, else nothing."""
        if not self.reads_shapes(block_name, bdef):
            return {}
        try:
            if self.shapes is None:
                raise ShapeUnknown(inputs[0] if inputs else "")
            shapes = [list(s) for s in self.shapes(inputs, self.out)]
        except ShapeUnknown as e:
            missing, reason = e.args[0], e.args[1] if len(e.args) > 1 else None
            why = f"'{missing}' has a problem: {reason}" if reason else \
                f"the input must be defined before '{name}' and be valid"
            self.problem(f"block '{block_name}' reads the shape of its input '{missing}', which is not known here: "
                         f"{why}", path, name)
            raise _Abort from None
        env: dict = {"shapes": shapes}
        if len(shapes) == 1:
            env.update(shape=shapes[0], channels=shapes[0][0])
            if len(shapes[0]) == 3:
                env.update(height=shapes[0][1], width=shapes[0][2])
        return env

    def check_requirements(self, bdef, block_name, env, path, name) -> None:
        for i, req in enumerate(bdef.require):
            cond = req.get("if") or req.get("check")
            if cond is None:
                continue
            ok = self.evaluate(cond, env, ("blocks", block_name, "require", i), name)
            if not ok:
                msg = req.get("message", f"requirement '{cond}' of block '{block_name}' does not hold")
                self.problem(msg, path, name)
                raise _Abort

    def evaluate(self, expr: str, env: dict, path: tuple, vertex: str):
        try:
            return evaluate(expr, env, self.budget)
        except ExprError as e:
            self.refuse(e, path, vertex)

    def refuse(self, error: ExprError, path: tuple, vertex: str):
        """Record a template's error; the instance is refused, or the whole expansion once its work is spent."""
        self.problem(str(error), path, vertex)
        raise (_Stop if isinstance(error, WorkLimit) else _Abort) from None

    def charge(self, steps: int, path: tuple, vertex: str) -> None:
        try:
            self.budget.charge(steps)
        except ExprError as e:
            self.refuse(e, path, vertex)

    def subst(self, value: Any, env: dict, path: tuple, vertex: str) -> Any:
        """Substitute templates in a value; lists may contain for/if directives."""
        self.charge(1, path, vertex)
        if isinstance(value, str):
            try:
                return substitute(value, env, self.budget)
            except ExprError as e:
                self.refuse(e, path, vertex)
        if isinstance(value, dict):
            return {self.subst(k, env, path, vertex): self.subst(v, env, path + (k,), vertex)
                    for k, v in value.items()}
        if isinstance(value, list):
            out: list = []
            for i, item in enumerate(value):
                directive = self.directive(item)
                if directive:
                    out.extend(self.subst_directive(directive, item, env, path + (i,), vertex))
                else:
                    out.append(self.subst(item, env, path + (i,), vertex))
            return out
        return value

    @staticmethod
    def directive(item: Any):
        if isinstance(item, dict) and len(item) == 1:
            key = next(iter(item))
            if isinstance(key, str) and (_FOR.match(key) or _IF.match(key)):
                return key
        return None

    def subst_directive(self, key: str, item: dict, env: dict, path: tuple, vertex: str) -> list:
        body = item[key]
        items = body if isinstance(body, list) else [body]
        out: list = []
        for scope in self.scopes(key, env, path + (key,), vertex):
            out.extend(self.subst(items, scope, path + (key,), vertex))
        return out

    def scopes(self, key: str, env: dict, path: tuple, vertex: str):
        m = _FOR.match(key)
        if m:
            values = self.evaluate(m.group(2), env, path, vertex)
            if not isinstance(values, (list, tuple)):
                self.problem(f"'{brief(key)}': expected a list to iterate over; received {shown(values)}", path,
                             vertex)
                raise _Abort
            self.charge(len(values) * (1 + len(env)), path, vertex)  # each iteration copies the names in scope
            return [{**env, m.group(1): v} for v in values]
        cond = _IF.match(key).group(1)
        return [env] if self.evaluate(cond, env, path, vertex) else []

    def walk(self, vertices: dict, env: dict, path: tuple, vertex: str):
        """Yield (name, body, path) for a template mapping, expanding for/if keys."""
        for key, body in vertices.items():
            kpath = path + (key,)
            if isinstance(key, str) and (_FOR.match(key) or _IF.match(key)):
                if not isinstance(body, dict):
                    self.problem(f"'{brief(key)}' must contain a mapping of vertices", kpath, vertex)
                    raise _Abort
                for scope in self.scopes(key, env, kpath, vertex):
                    yield from self.walk(body, scope, kpath, vertex)
                continue
            name = self.subst(key, env, kpath, vertex)
            if not isinstance(name, str) or not name:
                self.problem(f"vertex name template '{brief(key)}' must give a non-empty string; received "
                             f"{shown(name)}", kpath, vertex)
                raise _Abort
            yield name, self.subst(body, env, kpath, name), kpath


def _template_names(value) -> set[str]:
    """Every name the templates in ``value`` (keys, values, for/if directives) read."""
    if isinstance(value, str):
        directive = _FOR.match(value) or _IF.match(value)
        if directive:
            return expression_names(directive.group(directive.lastindex))
        return names_in(value)
    if isinstance(value, dict):
        return set().union(*(_template_names(k) | _template_names(v) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(_template_names(v) for v in value))
    return set()


def expand(vertices: dict, blocks: dict, source: Source, shapes=None) -> Expansion:
    return Expander(blocks, source, shapes).run(vertices)
