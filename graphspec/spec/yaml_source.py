"""Safe YAML loading that keeps positions.

PyYAML's safe loader is used for tokenising and scalar resolution only; the document is converted to plain
dicts/lists here so that we can (a) refuse every non-standard tag (``!!python/object`` and friends), (b) refuse
duplicate keys, (c) bound nesting depth, expanded size (alias bombs) and file size, and (d) remember the
``line:col`` of every key and list item for error messages.
"""
from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import GraphspecError, Location, brief
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


def read_text(source: str | os.PathLike, what: str = "spec") -> tuple[str, str]:
    """Return ``(text, file_label)``. A string with a newline (or ``key: value``) is YAML text; else a path.
    ``what`` names the kind of document in errors ('specs are limited to ...')."""
    if _is_path(source):
        label = str(source)
        raw = read_bytes(source, what, MAX_BYTES)  # regular files only, never past the limit
    else:
        label = "<string>"
        raw = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else bytes(source)
        if len(raw) > MAX_BYTES:
            raise GraphspecError(f"text is {len(raw):,} bytes; {what}s are limited to {MAX_BYTES:,} bytes",
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
    """Parse one YAML document into plain Python values with positions (``data`` None when there is none).

    One pass over libyaml's events builds the values directly: no node tree, every scalar's tag resolved and its
    value constructed once per distinct text (a 1 MB spec reads in about a second instead of five)."""
    with _collector_paused():
        return _parse(text, label)


@contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector: a big spec is hundreds of thousands of new objects (events, values,
    positions) without a cycle among them, and the collections their allocation triggers took half the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(text: str, label: str) -> Source:
    try:
        events = _events(text, label, _LOADER)
    except yaml.YAMLError:
        # Invalid YAML: parse again with PyYAML's pure-Python parser, whose messages are clearer than libyaml's.
        try:
            events = _events(text, label, yaml.SafeLoader)
        except yaml.YAMLError as e:
            raise _yaml_error(e, label, text) from e
    starts = [i for i, e in enumerate(events) if isinstance(e, yaml.DocumentStartEvent)]
    if len(starts) > 1:
        raise GraphspecError("expected a single YAML document, found several ('---')",
                             location=_document_start(label, text, events[starts[1] + 1].start_mark))
    if not starts:  # no document at all (an empty file, or comments only): what that means is the caller's
        return Source(None, label, {(): Location(label, 1, 1)})
    builder = _Builder(label, events, _bind_aliases(events, label))
    data = builder.build(starts[0] + 1, len(events) - 3)  # the events between DocumentStart and DocumentEnd
    return Source(data, label, builder.positions)


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


def _events(text: str, label: str, loader) -> list:
    """The stream's events, refusing nesting deeper than MAX_DEPTH as it is read (nothing here recurses)."""
    events, depth = [], 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise GraphspecError(f"nesting is deeper than {MAX_DEPTH} levels",
                                     location=_mark(label, event.start_mark))
        elif isinstance(event, _CLOSE):
            depth -= 1
        events.append(event)
    return events


def _bind_aliases(events: list, label: str) -> dict[int, tuple[int, int]]:
    """For each alias event, the first and last event of the node its anchor names (YAML anchors are unique and
    come before their aliases; an alias inside its own anchor's node would be a structure containing itself)."""
    anchors: dict[str, tuple[int, int]] = {}
    opened: dict[str, int] = {}
    containers: list[tuple[int, str | None]] = []
    bound: dict[int, tuple[int, int]] = {}
    for i, event in enumerate(events):
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            if anchor not in anchors:
                why = "is inside the node it names" if anchor in opened else "names no anchor defined before it"
                raise GraphspecError(f"alias '*{brief(anchor)}' {why}; an alias repeats a node anchored earlier "
                                     f"with '&{brief(anchor)}'", location=_mark(label, event.start_mark))
            bound[i] = anchors[anchor]
            continue
        if anchor is not None and (anchor in anchors or anchor in opened):
            first = events[anchors[anchor][0] if anchor in anchors else opened[anchor]].start_mark
            raise GraphspecError(f"anchor '&{brief(anchor)}' is defined twice (first at line {first.line + 1}); "
                                 "every anchor may appear once", location=_mark(label, event.start_mark))
        if isinstance(event, yaml.ScalarEvent) and anchor is not None:
            anchors[anchor] = (i, i)
        elif isinstance(event, _OPEN):
            containers.append((i, anchor))
            if anchor is not None:
                opened[anchor] = i
        elif isinstance(event, _CLOSE):
            first, anchor = containers.pop()
            if anchor is not None:
                del opened[anchor]
                anchors[anchor] = (first, i)
    return bound


def _document_start(label: str, text: str, mark) -> Location:
    """The '---' line that starts the document whose first node is at ``mark``."""
    lines = text.splitlines()
    for i in range(min(mark.line, len(lines) - 1), -1, -1):
        if lines[i].startswith("---"):
            return Location(label, i + 1, 1)
    return _mark(label, mark)


_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_NO_KEY = object()


class _Seq:
    """An open sequence. One that follows '<<' holds mappings to merge: they take the mapping's path."""

    __slots__ = ("path", "loc", "items", "merge")

    def __init__(self, path: tuple, loc: Location, merge: bool = False):
        self.path, self.loc, self.items, self.merge = path, loc, [], merge

    def child_path(self) -> tuple:
        return self.path if self.merge else self.path + (len(self.items),)

    def add(self, value: Any, loc: Location) -> None:
        if self.merge and not isinstance(value, dict):
            raise GraphspecError("'<<' merge expects a mapping or a list of mappings", location=loc)
        self.items.append(value)

    def value(self) -> Any:
        if not self.merge:
            return self.items
        merged: dict = {}
        for mapping in self.items:  # the first mapping that has a key wins
            for k, v in mapping.items():
                merged.setdefault(k, v)
        return merged


class _Map:
    """An open mapping: keys alternate with values; a '<<' key's value is merged under the explicit keys."""

    __slots__ = ("path", "loc", "out", "seen", "merged", "key", "merging")

    def __init__(self, path: tuple, loc: Location):
        self.path, self.loc, self.out, self.seen, self.merged = path, loc, {}, {}, {}
        self.key, self.merging = _NO_KEY, False

    def wants_key(self) -> bool:
        return self.key is _NO_KEY and not self.merging

    def child_path(self) -> tuple:
        return self.path if self.merging else self.path + (self.key,)

    def add(self, value: Any, loc: Location) -> None:
        if self.merging:
            if not isinstance(value, dict):
                raise GraphspecError("'<<' merge expects a mapping or a list of mappings", location=loc)
            self.merged.update(value)
            self.merging = False
        else:
            self.out[self.key] = value
            self.key = _NO_KEY

    def value(self) -> dict:
        for key, value in self.merged.items():
            self.out.setdefault(key, value)
        return self.out


class _Builder:
    """Plain values and positions from a document's events, aliases replayed from their anchor's events (each
    replayed node counts towards MAX_NODES, so an alias bomb stops early)."""

    def __init__(self, label: str, events: list, bound: dict[int, tuple[int, int]]):
        self.label, self.events, self.bound = label, events, bound
        self.positions: dict[tuple, Location] = {}
        self.count = 0
        self.open: list[_Seq | _Map] = []
        self.result: Any = None
        self.alias_mark = None
        self._scalars = yaml.SafeLoader("")  # its resolver and scalar constructors
        self._tags: dict[tuple, str] = {}  # (text, plain) -> tag
        self._values: dict[tuple, Any] = {}  # (tag, text) -> value: scalars are immutable, so shared

    def build(self, first: int, last: int) -> Any:
        cursors = [[first, last]]  # event ranges still to read: the document, then each alias being replayed
        while cursors:
            cursor = cursors[-1]
            if cursor[0] > cursor[1]:
                cursors.pop()
                continue
            i = cursor[0]
            cursor[0] += 1
            event = self.events[i]
            if isinstance(event, yaml.AliasEvent):
                cursors.append(list(self.bound[i]))
                self.alias_mark = event.start_mark  # the repeated node is where the alias is; its insides are not
            elif isinstance(event, _CLOSE):
                done = self.open.pop()
                self._deliver(done.value(), done.loc)
            else:
                self._node(event)
        return self.result

    def _node(self, event) -> None:
        mark, self.alias_mark = self.alias_mark or event.start_mark, None
        parent = self.open[-1] if self.open else None
        if isinstance(parent, _Map) and parent.wants_key():
            self._key(parent, event, mark)
            return
        self.count += 1
        if self.count > MAX_NODES:
            raise GraphspecError(f"the document expands to more than {MAX_NODES:,} values "
                                 "(an alias bomb?)", location=_mark(self.label, mark))
        path = parent.child_path() if parent is not None else ()
        loc = _mark(self.label, mark)
        self.positions.setdefault(path, loc)
        if isinstance(event, yaml.ScalarEvent):
            self._deliver(self._scalar(event), loc)
            return
        if len(self.open) >= MAX_DEPTH:  # aliases can nest what the text does not
            raise GraphspecError(f"nesting is deeper than {MAX_DEPTH} levels", location=loc)
        mapping = isinstance(event, yaml.MappingStartEvent)
        self._check_tag(event, self._container_tag(event, mapping), {_TAG + ("map" if mapping else "seq")})
        merging = isinstance(parent, _Map) and parent.merging
        self.open.append(_Map(path, loc) if mapping else _Seq(path, loc, merge=merging))

    def _deliver(self, value: Any, loc: Location) -> None:
        if self.open:
            self.open[-1].add(value, loc)
        else:
            self.result = value

    def _key(self, mapping: _Map, event, mark) -> None:
        loc = _mark(self.label, mark)
        if not isinstance(event, yaml.ScalarEvent):
            raise GraphspecError("mapping keys must be plain scalars", location=loc)
        if self._scalar_tag(event) == _TAG + "merge":
            mapping.merging = True
            return
        key = self._scalar(event)
        if isinstance(key, float) or key is None or isinstance(key, bool):
            key = event.value
        if key in mapping.seen:
            raise GraphspecError(f"duplicate key '{brief(key)}' (first defined at line {mapping.seen[key].line}); "
                                 "every key may appear once", location=loc)
        mapping.seen[key] = loc
        mapping.key = key
        self.positions[mapping.path + (key,)] = loc

    def _scalar_tag(self, event) -> str:
        if event.tag not in (None, "!"):
            return event.tag
        plain = bool(event.implicit[0])
        tag = self._tags.get((event.value, plain))
        if tag is None:
            tag = self._tags[(event.value, plain)] = self._scalars.resolve(yaml.ScalarNode, event.value,
                                                                           (plain, not plain))
        return tag

    def _container_tag(self, event, mapping: bool) -> str:
        if event.tag not in (None, "!"):
            return event.tag
        return _TAG + ("map" if mapping else "seq")

    def _check_tag(self, event, tag: str, allowed: set) -> None:
        if tag not in allowed:
            shown = brief(tag.replace(_TAG, "!!"))
            raise GraphspecError(f"YAML tag '{shown}' is not allowed; graphspec reads plain YAML only "
                                 "(no Python objects or custom tags)", location=_mark(self.label, event.start_mark))

    def _scalar(self, event) -> Any:
        tag = self._scalar_tag(event)
        known = self._values.get((tag, event.value), _NO_KEY)
        if known is not _NO_KEY:
            return known
        self._check_tag(event, tag, _SCALAR_TAGS)
        if tag == _TAG + "int" and len(event.value) > MAX_INT_TEXT:
            digits = event.value.lstrip("+-").replace("_", "")
            size = f"of {len(digits):,} digits" if digits.isdigit() else f"written with {len(event.value):,} characters"
            raise GraphspecError(f"integer {size}; integers are limited to {MAX_INT_DIGITS} digits (MAX_INT_DIGITS)",
                                 location=_mark(self.label, event.start_mark))
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        value = self._scalars.yaml_constructors[tag](self._scalars, node)
        problem = too_many_digits(value) if tag == _TAG + "int" else None
        if problem:
            raise GraphspecError(f"integer of {problem}", location=_mark(self.label, event.start_mark))
        self._values[(tag, event.value)] = value
        return value


def load_yaml(source: str | os.PathLike, what: str = "spec") -> Source:
    """Read and parse a YAML document (``what``: the kind of document, for errors); no document: data None."""
    text, label = read_text(source, what)
    return parse_yaml(text, label)
