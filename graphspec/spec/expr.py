"""A tiny, safe expression language for block templates: ``$name`` and ``${expr}``.

Expressions are Python syntax restricted to literals, names from the block's arguments, arithmetic,
comparisons, boolean logic, conditional expressions, indexing/slicing, list/tuple displays and a few pure
functions (len, range, min, max, sum, int, str, abs). No attribute access, no comprehensions, no imports:
evaluating a spec can never run arbitrary code, and sizes are bounded so it cannot hang.
"""
from __future__ import annotations

import ast
import operator
import re
from typing import Any

MAX_RANGE = 10_000
MAX_SEQUENCE = 100_000


class ExprError(ValueError):
    pass


def _range(*args):
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise ExprError(f"range of {len(r):,} items exceeds the limit of {MAX_RANGE:,}")
    return list(r)


FUNCTIONS = {"len": len, "range": _range, "min": min, "max": max, "sum": sum, "int": int, "str": str, "abs": abs,
             "float": float, "list": list}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
        ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
        ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}


_SEQ = (list, str, tuple)


def _check_size(op, left, right) -> None:
    """Refuse results longer than MAX_SEQUENCE *before* computing them (no 10 GB strings)."""
    size = None
    if isinstance(op, ast.Mult) and isinstance(left, _SEQ) and isinstance(right, int):
        size = len(left) * right
    elif isinstance(op, ast.Mult) and isinstance(right, _SEQ) and isinstance(left, int):
        size = len(right) * left
    elif isinstance(op, ast.Add) and isinstance(left, _SEQ) and isinstance(right, _SEQ):
        size = len(left) + len(right)
    if size is not None and size > MAX_SEQUENCE:
        raise ExprError(f"the result would have {size:,} items; the limit is {MAX_SEQUENCE:,}")


def evaluate(expr: str, env: dict[str, Any]) -> Any:
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ExprError(f"invalid expression '{expr}': {e.msg}") from e
    try:
        return _eval(tree.body, env)
    except ExprError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError) as e:
        raise ExprError(f"cannot evaluate '{expr}': {type(e).__name__}: {e}") from e


def _eval(node, env):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        from ..errors import did_you_mean
        raise ExprError(f"unknown name '{node.id}'{did_you_mean(node.id, env)}; known: {', '.join(sorted(env))}")
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, env) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
            raise ExprError("exponent larger than 64")
        _check_size(node.op, left, right)
        return _BIN[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        if isinstance(node.op, ast.Not):
            return not value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Subscript):
        target = _eval(node.value, env)
        if isinstance(node.slice, ast.Slice):
            s = node.slice
            bounds = [None if x is None else _eval(x, env) for x in (s.lower, s.upper, s.step)]
            return target[slice(*bounds)]
        return target[_eval(node.slice, env)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
            and not node.keywords:
        return FUNCTIONS[node.func.id](*[_eval(a, env) for a in node.args])
    raise ExprError(f"'{ast.unparse(node)}' is not allowed in a template expression (only literals, names, "
                    f"arithmetic, comparisons, indexing and {', '.join(FUNCTIONS)})")


_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def substitute(text: str, env: dict[str, Any]) -> Any:
    """Expand ``$name`` / ``${expr}`` in ``text``. A string that is exactly one reference keeps the value's type."""
    if "$" not in text:
        return text
    whole = _TOKEN.fullmatch(text)
    if whole and whole.group(0) != "$$":
        return _value(whole, env)
    return _TOKEN.sub(lambda m: "$" if m.group(0) == "$$" else str(_value(m, env)), text)


def _value(match, env):
    if match.group(2) is not None:  # $ident: a plain lookup, so keyword-named params like $in work
        name = match.group(2)
        if name not in env:
            from ..errors import did_you_mean
            raise ExprError(f"unknown name '{name}'{did_you_mean(name, env)}; known: {', '.join(sorted(env))}")
        return env[name]
    return evaluate(match.group(1), env)


def names_in(text: str) -> set[str]:
    """The names the templates in ``text`` read (``$name`` and the names inside ``${expr}``); an expression that
    does not parse reads nothing here (evaluating it reports the error)."""
    found: set[str] = set()
    for m in _TOKEN.finditer(text):
        if m.group(2) is not None:
            found.add(m.group(2))
        elif m.group(1) is not None:
            found |= expression_names(m.group(1))
    return found


def expression_names(expr: str) -> set[str]:
    """The names an expression reads."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
