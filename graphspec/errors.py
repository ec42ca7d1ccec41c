"""One exception family for everything a user can get wrong.

Every error carries where it happened (file, line, column), which vertex it concerns and the key path inside
the spec, so the command line can print ``FILE:LINE:COL: vertex 'NAME': what was expected, what was received``
and tests can assert on the fields as well as on the text.
"""
from __future__ import annotations

import difflib
import functools
import heapq
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from .text import printable, printable_lines


@dataclass(frozen=True)
class Location:
    """A position in a source file; line and column are 1-based (0 means unknown). An error that is not about a
    file has no location (``file`` empty) and prints none, rather than a placeholder."""

    file: str = ""
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if not self.file:
            return ""
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class Problem:
    """One thing wrong with a spec: a message and where it is."""

    message: str
    location: Location = field(default_factory=Location)
    vertex: str | None = None
    path: tuple = ()
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        """``FILE:LINE:COL: vertex 'NAME': message``, safe for a terminal: names and paths come from files, so
        every control character in them is escaped (a message's own line breaks are kept)."""
        where = f"{printable(self.location)}: " if str(self.location) else ""
        who = f"vertex '{printable(self.vertex)}': " if self.vertex else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}{tag}{who}{printable_lines(self.message)}"


class GraphspecError(Exception):
    """Base of every error graphspec raises on purpose; the CLI prints these without a traceback."""

    exit_code = 2
    label = "error"  # how the command line introduces it

    def __init__(self, message: str, *, location: Location | None = None, vertex: str | None = None,
                 path: tuple = ()):
        self.problem = Problem(message, location or Location(), vertex, tuple(path))
        super().__init__(str(self.problem))

    @property
    def problems(self) -> list[Problem]:
        return [self.problem]


class SpecError(GraphspecError):
    """A spec is invalid. Holds every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]):
        self._problems = list(problems)
        first = self._problems[0]
        self.problem = first
        Exception.__init__(self, "\n".join(str(p) for p in self._problems))

    @property
    def problems(self) -> list[Problem]:
        return self._problems


# Did-you-mean compares a word with candidate names by difflib, whose cost grows with both lengths and with the
# number of candidates; an error path must stay linear however many names and errors a spec has.
MAX_SUGGESTED_LENGTH = 200  # a longer word gets no suggestion (and difflib's cost is quadratic in the length)
MAX_COMPARED = 200  # candidates compared in full; from a larger pool, the SHORTLIST sharing most letter pairs
SHORTLIST = 20
# Candidates looked at by all the searches within one `suggestion_budget` (one spec load), about 0.2 s of work:
# the first problems found get suggestions, later ones none (a spec with 20,000 mistyped names among 20,000
# vertices gets a few suggestions, not 20,000 searches of 20,000 names each).
MAX_SUGGESTION_WORK = 100_000
_WORK_LEFT: ContextVar[list[int] | None] = ContextVar("graphspec_suggestion_work", default=None)


@contextmanager
def suggestion_budget(candidates: int = MAX_SUGGESTION_WORK) -> Iterator[None]:
    """Within, :func:`did_you_mean` looks at ``candidates`` names in all, then suggests nothing. Nested budgets
    share the outermost one."""
    if _WORK_LEFT.get() is not None:
        yield
        return
    token = _WORK_LEFT.set([candidates])
    try:
        yield
    finally:
        _WORK_LEFT.reset(token)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close candidate exists, else ''. Linear in the number of candidates (see
    MAX_COMPARED); inside a :func:`suggestion_budget`, only while its work lasts."""
    left = _WORK_LEFT.get()
    if left is not None and left[0] <= 0:
        return ""
    names = candidates if isinstance(candidates, (list, tuple, dict, set, frozenset)) else list(candidates)
    if left is not None:
        if len(names) > left[0]:
            left[0] = 0  # this search would overrun the budget: it and every later one suggest nothing
            return ""
        left[0] -= len(names)
    word = str(word)
    if len(word) > MAX_SUGGESTED_LENGTH:
        return ""
    # difflib's ratio is 2*matches/(len(a)+len(b)), at least 0.6 only if the shorter is >= 3/7 of the longer.
    low, high = len(word) * 3 // 7, -(-len(word) * 7 // 3)
    pool = [c for c in map(str, names) if low <= len(c) <= high]
    if len(pool) > MAX_COMPARED:
        pieces = _pieces(word)
        pool = heapq.nlargest(SHORTLIST, pool, key=lambda c: len(pieces & _pieces(c)))
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


@functools.lru_cache(maxsize=1 << 16)
def _pieces(text: str) -> frozenset[str]:
    """The letter pairs of ``text`` (with its ends marked): a cheap likeness to shortlist candidates by."""
    padded = f"^{text}$"
    return frozenset(padded[i:i + 2] for i in range(len(padded) - 1))


# How much of a value from a file an error message quotes: a message must stay short even when the value is a
# megabyte string repeated by YAML aliases (the quote is built piece by piece and stops at the limit).
MAX_SHOWN = 60
MAX_LISTED = 30  # names listed by `listing` ("known: a, b, ...") before "and N more"
_SHOWN_DEPTH = 8
_REPR_INT_BITS = 10_000  # repr of a larger int is slow (and raises past Python's 4,300 digits)


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters with '...', without ever building more than that much text.

    >>> shown(["x" * 1000] * 1000, 20)
    "['xxxxxxxxxxxxxxx..."
    """
    parts: list[str] = []
    used = 0
    for piece in _repr_pieces(value, limit, 0):
        parts.append(piece)
        used += len(piece)
        if used > limit:
            break
    text = "".join(parts)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _repr_pieces(value: Any, limit: int, depth: int) -> Iterator[str]:
    if isinstance(value, str):
        yield repr(value[: limit + 1])[:-1] + ("" if len(value) > limit else repr(value)[-1])
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _REPR_INT_BITS:
        yield f"<an integer of {value.bit_length():,} bits>"
    elif isinstance(value, (list, tuple, dict)) and depth >= _SHOWN_DEPTH:
        yield "[...]" if isinstance(value, list) else "(...)" if isinstance(value, tuple) else "{...}"
    elif isinstance(value, (list, tuple)):
        yield "[" if isinstance(value, list) else "("
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _repr_pieces(item, limit, depth + 1)
        yield "]" if isinstance(value, list) else ",)" if len(value) == 1 else ")"
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ", " if i else ""
            yield from _repr_pieces(key, limit, depth + 1)
            yield ": "
            yield from _repr_pieces(item, limit, depth + 1)
        yield "}"
    else:
        yield repr(value)


def listing(names: Iterable[Any], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` for up to ``limit`` names (each cut like :func:`shown`), then ``... and N more``: a message that
    lists the names a spec defines stays short however many it defines."""
    names = list(names)
    head = ", ".join(brief(n) for n in names[:limit])
    return head + (f", ... and {len(names) - limit:,} more" if len(names) > limit else "")


def brief(name: Any, limit: int = MAX_SHOWN) -> str:
    """A name as a message quotes it: control characters escaped (a message keeps its own line breaks, not a
    name's), cut to ``limit`` characters with '...' when long (a value that is not a string, as :func:`shown`
    writes it)."""
    text = printable(name[: limit + 1]) if isinstance(name, str) else shown(name, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."
