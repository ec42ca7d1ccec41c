"""A tiny, safe expression language for block templates: ``$name`` and ``${expr}``.

Expressions are Python syntax restricted to literals, names from the block's arguments, arithmetic,
comparisons, boolean logic, conditional expressions, indexing/slicing, list/tuple displays and a few pure
functions (len, range, min, max, sum, int, str, abs, float, list). No attribute access, no comprehensions, no
imports: evaluating a spec can never run arbitrary code.

Work is bounded too, each limit checked *before* the work it bounds (an exponent tower is refused from the bit
lengths of its operands, a repetition from the sizes of its operands, a ``%`` format from its widths): one
expression's length and nesting, the digits of an integer, the size of a value, and — through a :class:`Budget`
shared by every template of a spec — the total work of expanding the spec's blocks.
"""
from __future__ import annotations

import ast
import operator
import re
from typing import Any

from ..errors import brief, did_you_mean, listing
from .yaml_source import MAX_INT_DIGITS, int_digits, too_many_digits

MAX_RANGE = 10_000  # items of one range(): no hand-written network repeats a layer more often
# The size of one value: characters of a string, items of a list, nested lists counted through (a list repeated
# by `*` counts each repetition: what a copy, a message or the validation of a parameter would walk).
MAX_SEQUENCE = 100_000
MAX_EXPRESSION_CHARS = 2_000  # the text of one ${...}: templates are one-liners (a 4 MiB one is an attack)
# Nesting of one expression (a + b + c ... counts one level per operator): keeps Python's parser and this
# evaluator (which recurse) far from their recursion limits; written templates nest a few levels.
MAX_EXPRESSION_DEPTH = 50
# Work for all the templates of one spec, in steps: an expression node evaluated, a loop iteration, a value
# substituted, an item or character of a value built or inserted. About 1 s of work; the zoo's specs take 60-70
# steps per vertex (mobilenet_v2: 9,895), so this allows about 15,000 templated vertices (MAX_EXPANDED: 20,000).
MAX_TEMPLATE_WORK = 1_000_000
_LOG10_2 = 0.30103


class ExprError(ValueError):
    pass


class WorkLimit(ExprError):
    """The spec's template budget is spent: expansion stops (every later template would fail the same way)."""


_CONTAINERS = (list, tuple, dict)


def _scalar_size(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int_digits(value)
    return 1


def _children(value) -> list:
    return [*value.keys(), *value.values()] if isinstance(value, dict) else value


class Budget:
    """The work the templates of one spec may still do (:data:`MAX_TEMPLATE_WORK` steps), and what it knows of
    the values it saw: their sizes (by identity: values are never changed) and the parsed expressions."""

    def __init__(self, limit: int | None = None):
        self.limit = self.left = MAX_TEMPLATE_WORK if limit is None else limit
        self._sizes: dict[int, tuple[Any, int]] = {}  # id -> (the value, kept so that its id stays its own; size)
        self._trees: dict[str, ast.expr] = {}

    def charge(self, steps: int) -> None:
        if steps > self.left:
            self.left = 0
            raise WorkLimit(f"the block templates of this spec take more than {self.limit:,} steps (loop "
                            f"iterations, expression steps, values substituted and built); the limit is "
                            f"{self.limit:,} (MAX_TEMPLATE_WORK)")
        self.left -= steps

    def size(self, value) -> int:
        """Characters of a string, digits of an integer, 1 for another scalar; for a list, tuple or dict, the sum of
        its items' sizes (each at least 1). Walks each distinct list once (iteratively: no recursion limit)."""
        if not isinstance(value, _CONTAINERS):
            return _scalar_size(value)
        stack = [value]
        while stack:
            top = stack[-1]
            if id(top) in self._sizes:
                stack.pop()
                continue
            items = _children(top)
            pending = [c for c in items if isinstance(c, _CONTAINERS) and id(c) not in self._sizes]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            total = sum(max(1, self._sizes[id(c)][1] if isinstance(c, _CONTAINERS) else _scalar_size(c))
                        for c in items)
            self._sizes[id(top)] = (top, total)
        return self._sizes[id(value)][1]

    def check_size(self, size: int, what: str = "the result") -> None:
        """Refuse a value of ``size`` before it is built."""
        if size > MAX_SEQUENCE:
            raise ExprError(f"{what} would have {size:,} items or characters; the limit is {MAX_SEQUENCE:,} "
                            "(MAX_SEQUENCE)")

    def built(self, value):
        """Check a value just built (an integer's digits, a list's or string's size) and charge its size."""
        if isinstance(value, int) and not isinstance(value, bool):
            _check_int(value)
            return value
        size = self.size(value)
        self.check_size(size)
        self.charge(size)
        return value

    def tree(self, expr: str) -> ast.expr:
        """``expr`` parsed and checked (its length and depth), once per distinct text."""
        tree = self._trees.get(expr)
        if tree is None:
            tree = self._trees[expr] = _parse(expr)
        return tree


def _check_int(value: int) -> None:
    problem = too_many_digits(value)
    if problem:
        raise ExprError(f"the result has {problem}")


def _refuse_digits(estimate: int) -> None:
    """Refuse an integer result estimated (from bit lengths, before computing it) to have ``estimate`` digits."""
    if estimate > MAX_INT_DIGITS:
        raise ExprError(f"the result would have about {estimate:,} digits; integers are limited to "
                        f"{MAX_INT_DIGITS} digits (MAX_INT_DIGITS)")


def _parse(expr: str) -> ast.expr:
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ExprError(f"expression of {len(expr):,} characters; the limit is {MAX_EXPRESSION_CHARS:,} "
                        "(MAX_EXPRESSION_CHARS)")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ExprError(f"invalid expression '{brief(expr)}': {e.msg}") from e
    except (RecursionError, MemoryError, ValueError) as e:  # Python's parser on deep nesting or huge literals
        raise ExprError(f"invalid expression '{brief(expr)}': nested too deeply or too large for Python's "
                        f"parser; expressions nest at most {MAX_EXPRESSION_DEPTH} levels") from e
    _check_depth(tree.body, expr)
    return tree.body


def _check_depth(root: ast.expr, expr: str) -> None:
    """Refuse nesting deeper than MAX_EXPRESSION_DEPTH (counted without recursion)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExprError(f"expression '{brief(expr)}' nests deeper than {MAX_EXPRESSION_DEPTH} levels "
                            "(MAX_EXPRESSION_DEPTH)")
        stack.extend((child, depth + isinstance(child, ast.expr)) for child in ast.iter_child_nodes(node))


def _range(*args):
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise ExprError(f"range of {len(r):,} items exceeds the limit of {MAX_RANGE:,} (MAX_RANGE)")
    return list(r)


def _sum(values, start=0):
    """``sum``, in linear time for lists and tuples (Python's copies the growing result at every item)."""
    if isinstance(start, str):
        raise TypeError("sum() can't sum strings [use ''.join(seq) instead]")
    if not isinstance(start, (list, tuple)):
        return sum(values, start)
    out = list(start)
    for item in values:
        if type(item) is not type(start):
            raise TypeError(f'can only concatenate {type(start).__name__} (not "{type(item).__name__}") to '
                            f"{type(start).__name__}")
        out.extend(item)
    return out if isinstance(start, list) else tuple(out)


FUNCTIONS = {"len": len, "range": _range, "min": min, "max": max, "sum": _sum, "int": int, "str": str, "abs": abs,
             "float": float, "list": list}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
        ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
        ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_SEQ = (list, str, tuple)
# One %-conversion: mapping key, flags, width, precision, length modifier, conversion.
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.?)", re.S)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_operation(op: ast.operator, left, right, budget: Budget) -> None:
    """Refuse an operation whose result would be too large, from its operands' sizes, before computing it."""
    if isinstance(op, ast.Pow) and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        _refuse_digits(int((abs(left).bit_length() - 1) * right * _LOG10_2))
    elif isinstance(op, ast.Mult) and _is_int(left) and _is_int(right):
        _refuse_digits(int_digits(left) + int_digits(right) - 1)
    elif isinstance(op, ast.Mult) and isinstance(left, _SEQ) and isinstance(right, int):
        budget.check_size(budget.size(left) * right)
    elif isinstance(op, ast.Mult) and isinstance(right, _SEQ) and isinstance(left, int):
        budget.check_size(budget.size(right) * left)
    elif isinstance(op, ast.Add) and isinstance(left, _SEQ) and isinstance(right, _SEQ):
        budget.check_size(budget.size(left) + budget.size(right))
    elif isinstance(op, ast.Mod) and isinstance(left, str):
        budget.check_size(len(left) + _format_padding(left) + budget.size(right))


def _format_padding(fmt: str) -> int:
    """The characters the widths and precisions of a %-format may add ('%999999999d' adds 999,999,999)."""
    padding = 0
    for m in _CONVERSION.finditer(fmt):
        width, precision = m.group(1), m.group(2) or ""
        if "*" in (width, precision):
            raise ExprError("'*' widths and precisions are not allowed in % formatting; write the number in the "
                            "format")
        if len(width) > 9 or len(precision) > 9:
            return MAX_SEQUENCE + 1  # certainly over the limit, and int() of a huge digit string is slow
        padding += int(width or 0) + int(precision or 0)
    return padding


def _call_size(name: str, args: list, budget: Budget) -> int | None:
    """The size a call's result may have, known before calling it (None: small, or checked once built)."""
    if name in ("str", "list") and args:
        return budget.size(args[0])
    if name == "sum" and args and isinstance(args[0], (list, tuple)):
        start = args[1] if len(args) > 1 else 0
        if isinstance(start, (list, tuple)):
            return budget.size(start) + sum(budget.size(item) for item in args[0])
    return None


def evaluate(expr: str, env: dict[str, Any], budget: Budget | None = None) -> Any:
    """The value of ``expr`` with the names of ``env``; ``budget`` (default: a fresh one) is charged its work."""
    budget = budget or Budget()
    tree = budget.tree(expr)
    try:
        return _eval(tree, env, budget)
    except ExprError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, OverflowError) as e:
        raise ExprError(f"cannot evaluate '{brief(expr)}': {type(e).__name__}: {brief(str(e), 200)}") \
            from e


def _unknown(name: str, env: dict) -> ExprError:
    return ExprError(f"unknown name '{brief(name)}'{did_you_mean(name, env)}; known: {listing(sorted(env))}")


def _eval(node, env, budget: Budget):
    budget.charge(1)
    if isinstance(node, ast.Constant):
        if _is_int(node.value):
            _check_int(node.value)
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        raise _unknown(node.id, env)
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, env, budget) for e in node.elts]
        return budget.built(items if isinstance(node, ast.List) else tuple(items))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _eval(node.left, env, budget), _eval(node.right, env, budget)
        _check_operation(node.op, left, right, budget)
        return budget.built(_BIN[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        value = _eval(node.operand, env, budget)
        if isinstance(node.op, ast.USub):
            return -value
        return +value if isinstance(node.op, ast.UAdd) else not value
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env, budget) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, budget)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env, budget)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env, budget) if _eval(node.test, env, budget) else _eval(node.orelse, env, budget)
    if isinstance(node, ast.Subscript):
        target = _eval(node.value, env, budget)
        if isinstance(node.slice, ast.Slice):
            s = node.slice
            bounds = [None if x is None else _eval(x, env, budget) for x in (s.lower, s.upper, s.step)]
            return budget.built(target[slice(*bounds)])
        return target[_eval(node.slice, env, budget)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
            and not node.keywords:
        args = [_eval(a, env, budget) for a in node.args]
        size = _call_size(node.func.id, args, budget)
        if size is not None:
            budget.check_size(size)
        return budget.built(FUNCTIONS[node.func.id](*args))
    raise ExprError(f"'{brief(ast.unparse(node))}' is not allowed in a template expression (only literals, "
                    f"names, arithmetic, comparisons, indexing and {', '.join(FUNCTIONS)})")


_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def substitute(text: str, env: dict[str, Any], budget: Budget | None = None) -> Any:
    """Expand ``$name`` / ``${expr}`` in ``text``. A string that is exactly one reference keeps the value's type.
    The values inserted are charged to ``budget`` by size: a template cannot multiply a large value unboundedly."""
    if "$" not in text:
        return text
    budget = budget or Budget()
    whole = _TOKEN.fullmatch(text)
    if whole and whole.group(0) != "$$":
        value = _value(whole, env, budget)
        budget.charge(budget.size(value))
        return value
    pieces, end, length = [], 0, 0
    for m in _TOKEN.finditer(text):
        value = "$" if m.group(0) == "$$" else _value(m, env, budget)
        budget.check_size(length + budget.size(value), "the substituted text")  # before str() writes it
        inserted = str(value)
        pieces += [text[end:m.start()], inserted]
        length += m.start() - end + len(inserted)
        budget.check_size(length, "the substituted text")
        budget.charge(len(inserted))
        end = m.end()
    return "".join(pieces) + text[end:]


def _value(match, env, budget: Budget):
    if match.group(2) is not None:  # $ident: a plain lookup, so keyword-named params like $in work
        name = match.group(2)
        if name not in env:
            raise _unknown(name, env)
        return env[name]
    return evaluate(match.group(1), env, budget)


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
        tree = _parse(expr)
    except ExprError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
