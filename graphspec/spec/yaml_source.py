"""Safe YAML loading that keeps positions.

PyYAML's safe loader is used for tokenising and scalar resolution only; the document is converted to plain
dicts/lists here so that we can (a) refuse every non-standard tag (``!!python/object`` and friends), (b) refuse
duplicate keys, (c) bound nesting depth, expanded size (alias bombs) and file size, and (d) remember the
``line:col`` of every key and list item for error messages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import GraphspecError, Location
from ..files import read_bytes

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000
# Integers, in a file or computed by a block template (spec/expr.py): no size, seed or count needs more than a few
# digits, and Python refuses to write an int of over 4,300 digits as text (an error quoting one would fail).
MAX_INT_DIGITS = 100
# The most characters an integer of MAX_INT_DIGITS digits takes in YAML (binary with '_' separators: ~670);
# checked before converting, because converting YAML 1.1's base-60 integers ('1:2:3:...') is quadratic.
MAX_INT_TEXT = 1_000
_EXACT_BITS = 14_000  # up to here (4,214 digits), str(int) is fast and allowed: count the digits exactly


def int_digits(value: int) -> int:
    """The number of decimal digits of ``value``: exact up to about 3,900 digits, estimated from the bits above."""
    bits = abs(value).bit_length()
    return len(str(abs(value))) if bits <= _EXACT_BITS else int(bits * 0.30103) + 1


def too_many_digits(value: int) -> str | None:
    """Why ``value`` is too large for a spec, or None: '101 digits; integers are limited to 100 digits'."""
    if abs(value).bit_length() <= 332:  # 2**332 < 10**100: at most MAX_INT_DIGITS digits, no need to count
        return None
    digits = int_digits(value)
    if digits <= MAX_INT_DIGITS:
        return None
    return f"{digits:,} digits; integers are limited to {MAX_INT_DIGITS} digits (MAX_INT_DIGITS)"

_TAG = "tag:yaml.org,2002:"
# libyaml's C parser when PyYAML has it (10-20x faster on big specs); same events, nodes and marks.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


@dataclass
class Source:
    """A parsed YAML document and the position of everything in it."""

    data: Any
    file: str = "<string>"
    positions: dict[tuple, Location] = field(default_factory=dict)

    def loc(self, path: tuple = ()) -> Location:
        """Position of the value at ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Location(self.file, 1, 1))


def _is_path(source) -> bool:
    """A path-like, or a one-line string that is not YAML mapping text (``version: 1`` is text)."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str) or "\n" in source:
        return False
    return os.path.exists(source) or source.endswith((".yaml", ".yml", ".json")) or ": " not in source


def read_text(source: str | os.PathLike) -> tuple[str, str]:
    """Return ``(text, file_label)``. A string with a newline (or ``key: value``) is YAML text; else a path."""
    if _is_path(source):
        label = str(source)
        raw = read_bytes(source, "spec", MAX_BYTES, plural="specs")  # regular files only, never past the limit
    else:
        label = "<string>"
        raw = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else bytes(source)
        if len(raw) > MAX_BYTES:
            raise GraphspecError(f"text is {len(raw):,} bytes; specs are limited to {MAX_BYTES:,} bytes",
                                 location=Location(label))
    return _decode(raw, label), label


def _decode(raw: bytes, label: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        raise GraphspecError(f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); expected UTF-8 text",
                             location=Location(label, line, col)) from None


def _mark(label: str, mark) -> Location:
    return Location(label, mark.line + 1, mark.column + 1) if mark is not None else Location(label)


def parse_yaml(text: str, label: str = "<string>") -> Source:
    """Parse one YAML document into plain Python values with positions."""
    try:
        nodes = _compose(text, label, _LOADER)
    except yaml.YAMLError:
        # Invalid YAML: parse again with PyYAML's pure-Python parser, whose messages are clearer than libyaml's.
        try:
            nodes = _compose(text, label, yaml.SafeLoader)
        except yaml.YAMLError as e:
            raise _yaml_error(e, label, text) from e
    if len(nodes) > 1:
        raise GraphspecError("expected a single YAML document, found several ('---')",
                             location=_document_start(label, text, nodes[1].start_mark))
    if not nodes or nodes[0] is None:
        raise GraphspecError("the spec is empty; expected a mapping with at least 'version', 'inputs', "
                             "'vertices' and 'outputs'", location=Location(label, 1, 1))
    conv = _Converter(label)
    data = conv.convert(nodes[0], ())
    return Source(data, label, conv.positions)


def _yaml_error(e: yaml.YAMLError, label: str, text: str = "") -> GraphspecError:
    if isinstance(e, yaml.reader.ReaderError):  # bad characters: PyYAML gives an offset, not a mark
        before = text[: e.position]
        line, col = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
        char = chr(e.character) if isinstance(e.character, int) else e.character
        return GraphspecError(f"character {char!r} (U+{ord(char):04X}) is not allowed in YAML; remove it",
                              location=Location(label, line, col))
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    opened = getattr(e, "context_mark", None)
    if context and context.startswith("while parsing a flow") and opened is not None and mark is not None:
        # The parser notices an unclosed bracket where it stops making sense, often a line later: point at the
        # bracket that was never closed, and say where parsing gave up.
        bracket = "[" if "sequence" in context else "{"
        return GraphspecError(f"YAML syntax error: this '{bracket}' is never closed ({problem} at line "
                              f"{mark.line + 1}, column {mark.column + 1})", location=_mark(label, opened))
    msg = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return GraphspecError(msg, location=_mark(label, mark))


def _compose(text: str, label: str, loader) -> list:
    """Bound nesting depth with the event stream (not recursive), then compose the nodes."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise GraphspecError(f"nesting is deeper than {MAX_DEPTH} levels",
                                     location=_mark(label, event.start_mark))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return list(yaml.compose_all(text, Loader=loader))


def _document_start(label: str, text: str, mark) -> Location:
    """The '---' line that starts the document whose first node is at ``mark``."""
    lines = text.splitlines()
    for i in range(min(mark.line, len(lines) - 1), -1, -1):
        if lines[i].startswith("---"):
            return Location(label, i + 1, 1)
    return _mark(label, mark)


class _Converter:
    def __init__(self, label: str):
        self.label = label
        self.positions: dict[tuple, Location] = {}
        self.count = 0
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def convert(self, node, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise GraphspecError(f"the document expands to more than {MAX_NODES:,} values "
                                 "(an alias bomb?)", location=_mark(self.label, node.start_mark))
        self.positions.setdefault(path, _mark(self.label, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            self._check_tag(node, _TAG + "seq")
            return [self.convert(child, path + (i,)) for i, child in enumerate(node.value)]
        return self._scalar(node)

    def _check_tag(self, node, expected: str | set) -> None:
        allowed = {expected} if isinstance(expected, str) else expected
        if node.tag not in allowed:
            shown = node.tag.replace(_TAG, "!!")
            raise GraphspecError(f"YAML tag '{shown}' is not allowed; graphspec reads plain YAML only "
                                 "(no Python objects or custom tags)", location=_mark(self.label, node.start_mark))

    def _scalar(self, node) -> Any:
        self._check_tag(node, _SCALAR_TAGS)
        is_int = node.tag == _TAG + "int"
        if is_int and len(node.value) > MAX_INT_TEXT:
            digits = node.value.lstrip("+-").replace("_", "")
            size = f"of {len(digits):,} digits" if digits.isdigit() else f"written with {len(node.value):,} characters"
            raise GraphspecError(f"integer {size}; integers are limited to {MAX_INT_DIGITS} digits (MAX_INT_DIGITS)",
                                 location=_mark(self.label, node.start_mark))
        value = self._scalars.construct_object(node)
        problem = too_many_digits(value) if is_int else None
        if problem:
            raise GraphspecError(f"integer of {problem}", location=_mark(self.label, node.start_mark))
        return value

    def _mapping(self, node, path: tuple) -> dict:
        self._check_tag(node, _TAG + "map")
        out: dict = {}
        seen: dict = {}
        merged: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merged.update(self._merge_source(value_node, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise GraphspecError("mapping keys must be plain scalars", location=_mark(self.label, key_node.start_mark))
            key = self._scalar(key_node)
            if isinstance(key, float) or key is None or isinstance(key, bool):
                key = key_node.value
            loc = _mark(self.label, key_node.start_mark)
            if key in seen:
                raise GraphspecError(f"duplicate key '{key}' (first defined at line {seen[key].line}); "
                                     "every key may appear once", location=loc)
            seen[key] = loc
            self.positions[path + (key,)] = loc
            out[key] = self.convert(value_node, path + (key,))
        for key, value in merged.items():
            out.setdefault(key, value)
        return out

    def _merge_source(self, node, path: tuple) -> dict:
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        result: dict = {}
        for n in nodes:
            value = self.convert(n, path)
            if not isinstance(value, dict):
                raise GraphspecError("'<<' merge expects a mapping or a list of mappings",
                                     location=_mark(self.label, n.start_mark))
            for k, v in value.items():
                result.setdefault(k, v)
        return result


def load_yaml(source: str | os.PathLike) -> Source:
    text, label = read_text(source)
    return parse_yaml(text, label)
