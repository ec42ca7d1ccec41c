"""Readers for LFW's protocol files: people lists and verification pairs.

People (``peopleDevTrain.txt``, ``peopleDevTest.txt``; View 2 ``people.txt``)::

    4038                      a count, then that many "NAME<TAB>N" lines
    AJ_Cook	1                 (View 2: a fold count, then per fold a count and its lines)

Pairs (``pairsDevTrain.txt``, ``pairsDevTest.txt``; View 2 ``pairs.txt``)::

    1100                      View 1: N, then N matched then N mismatched pairs
    10	300                   View 2: folds and N, then per fold N matched then N mismatched pairs
    Aaron_Peirsol	1	2           matched: NAME I J
    AJ_Cook	1	Marsha_Thomason	1   mismatched: NAME1 I NAME2 J

Image ``I`` of ``NAME`` is ``NAME/NAME_%04d.jpg``. Fields may be separated by tabs or spaces. Every structural
error is a :class:`DataError` at ``file:line:col``. A NAME is one folder name inside the dataset: a name that is
absolute, holds a ``/`` or ``\\``, is ``.`` or ``..``, or holds a control character is refused at its line, so a
protocol file can never make ``verify`` or training read outside ``--data``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...data.errors import DataError, located
from ...files import PROTOCOL_BYTES, read_text, unsafe_name


@dataclass(frozen=True)
class Person:
    """One line of a people file: a name, its image count, its fold (0 in View 1) and its line."""

    name: str
    images: int
    fold: int = 0
    line: int = 0


@dataclass(frozen=True)
class Pair:
    """One verification pair; ``same`` is True for a matched pair. ``fold`` is 0 in View 1."""

    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    fold: int = 0
    line: int = 0

    def paths(self, root: "str | os.PathLike", ext: str = ".jpg") -> tuple[Path, Path]:
        """The two image files under an LFW folder."""
        return image_path(root, self.name1, self.index1, ext), image_path(root, self.name2, self.index2, ext)


def image_path(root: "str | os.PathLike", name: str, index: int, ext: str = ".jpg") -> Path:
    """``ROOT/NAME/NAME_%04d.jpg``, LFW's file naming."""
    return Path(root) / name / f"{name}_{index:04d}{ext}"


class _Lines:
    """Non-blank lines of a text file with their 1-based numbers and fields; errors point at a line/column."""

    def __init__(self, path: "str | os.PathLike"):
        self.path = str(path)
        if not os.path.lexists(path):
            raise located("protocol file not found", path)
        text = read_text(path, "protocol file", PROTOCOL_BYTES, error=DataError)  # regular files, within the limit
        self.lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        self.pos = 0
        self.last_line = len(text.splitlines())

    def done(self) -> bool:
        return self.pos >= len(self.lines)

    def next(self, what: str) -> tuple[int, str, list[str]]:
        if self.done():
            raise located(f"unexpected end of file: expected {what}", self.path, self.last_line + 1, 1)
        number, line = self.lines[self.pos]
        self.pos += 1
        return number, line, line.split()

    def error(self, message: str, number: int, line: str, field: int = 0):
        return located(message, self.path, number, _column(line, field))

    def integer(self, number: int, line: str, fields: list[str], k: int, what: str, minimum: int = 1) -> int:
        try:
            value = int(fields[k])
        except ValueError:
            raise self.error(f"expected {what} (an integer); received '{fields[k]}'", number, line, k) from None
        if value < minimum:
            raise self.error(f"expected {what} >= {minimum}; received {value}", number, line, k)
        return value

    def name(self, number: int, line: str, fields: list[str], k: int) -> str:
        """Field ``k`` as a person's name: one folder name, which a path built from it cannot leave."""
        name = fields[k]
        why = person_name_refusal(name)
        if why:
            raise self.error(f"person name '{name}' {why}; a name is one folder name inside the dataset",
                             number, line, k)
        return name

    def expect_end(self, what: str) -> None:
        if not self.done():
            number, line = self.lines[self.pos]
            raise self.error(f"unexpected line after the {what} the header announced: '{line.strip()}'",
                             number, line)


def person_name_refusal(name: str) -> str | None:
    """Why ``name`` cannot be a person's folder name (it would name a path outside the dataset folder, or a name
    that cannot be listed), or None."""
    if name in (".", ".."):
        return f"is '{name}'"
    if os.path.isabs(name) or "/" in name or "\\" in name:
        return "is a path (holds '/' or '\\')"
    return "holds a control character or bytes that are not UTF-8" if unsafe_name(name) else None


def _column(line: str, field: int) -> int:
    """1-based column where whitespace-separated field ``field`` starts."""
    col, seen, in_field = 0, -1, False
    for col, ch in enumerate(line):
        if not ch.isspace() and not in_field:
            seen += 1
            if seen == field:
                return col + 1
        in_field = not ch.isspace()
    return 1


def read_people(path: "str | os.PathLike") -> list[Person]:
    """Read a people file (View 1 ``N`` then N lines, View 2 folds, or header-less ``NAME N`` lines as in
    ``lfw-names.txt``). Duplicate names within a fold are an
    error; the same name in two folds is allowed (View 2 folds are disjoint by construction)."""
    src = _Lines(path)
    if not src.done() and len(src.lines[0][1].split()) == 2:  # no header: lfw-names.txt ("NAME N" lines)
        people = _people_block(src, len(src.lines), fold=0)
        return people
    number, line, fields = src.next("a count line")
    if len(fields) != 1:
        raise src.error(f"expected a count line with one integer; received {len(fields)} fields", number, line)
    count = src.integer(number, line, fields, 0, "the number of people", minimum=0)
    folded = not src.done() and len(src.lines[src.pos][1].split()) == 1
    if not folded:
        people = _people_block(src, count, fold=0)
    else:
        people = []
        for fold in range(1, count + 1):
            n, ln, fs = src.next(f"the people count of fold {fold}")
            if len(fs) != 1:
                raise src.error(f"expected the people count of fold {fold}; received '{ln.strip()}'", n, ln)
            people += _people_block(src, src.integer(n, ln, fs, 0, "a people count", minimum=0), fold)
    src.expect_end("people")
    return people


def _people_block(src: _Lines, count: int, fold: int) -> list[Person]:
    people, seen = [], {}
    for _ in range(count):
        number, line, fields = src.next(f"a 'NAME N' line ({count} announced)")
        if len(fields) != 2:
            raise src.error(f"expected 'NAME N' (2 fields); received {len(fields)} fields", number, line)
        src.name(number, line, fields, 0)
        if fields[0] in seen:
            raise src.error(f"person '{fields[0]}' listed twice (first at line {seen[fields[0]]})", number, line)
        seen[fields[0]] = number
        people.append(Person(fields[0], src.integer(number, line, fields, 1, "an image count"), fold, number))
    return people


def read_pairs(path: "str | os.PathLike") -> list[Pair]:
    """Read a pairs file (View 1 ``N`` or View 2 ``FOLDS N`` header); every block has N matched then N
    mismatched pairs, in file order."""
    src = _Lines(path)
    number, line, fields = src.next("a header line")
    if len(fields) == 1:
        folds, per = 1, src.integer(number, line, fields, 0, "the number of pairs", minimum=0)
    elif len(fields) == 2:
        folds = src.integer(number, line, fields, 0, "the number of folds")
        per = src.integer(number, line, fields, 1, "the number of pairs per fold", minimum=0)
    else:
        raise src.error(f"expected a header 'N' or 'FOLDS N'; received {len(fields)} fields", number, line)
    view2 = len(fields) == 2
    pairs = []
    for fold in range(1, folds + 1):
        for same in (True, False):
            for _ in range(per):
                pairs.append(_pair(src, same, fold if view2 else 0))
    src.expect_end("pairs")
    return pairs


def _pair(src: _Lines, same: bool, fold: int) -> Pair:
    kind = "a matched pair 'NAME I J'" if same else "a mismatched pair 'NAME1 I NAME2 J'"
    number, line, fields = src.next(kind + (f" in fold {fold}" if fold else ""))
    if len(fields) != (3 if same else 4):
        where = f" (fold {fold})" if fold else ""
        raise src.error(f"expected {kind}{where}; received {len(fields)} fields", number, line)
    if same:
        name = src.name(number, line, fields, 0)
        return Pair(name, src.integer(number, line, fields, 1, "an image number"), name,
                    src.integer(number, line, fields, 2, "an image number"), True, fold, number)
    return Pair(src.name(number, line, fields, 0), src.integer(number, line, fields, 1, "an image number"),
                src.name(number, line, fields, 2), src.integer(number, line, fields, 3, "an image number"), False,
                fold, number)
