"""One exception family for everything a user can get wrong.

Every error carries where it happened (file, line, column), which vertex it concerns and the key path inside
the spec, so the command line can print ``FILE:LINE:COL: vertex 'NAME': what was expected, what was received``
and tests can assert on the fields as well as on the text.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence


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
        where = f"{self.location}: " if str(self.location) else ""
        who = f"vertex '{self.vertex}': " if self.vertex else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}{tag}{who}{self.message}"


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


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close candidate exists, else ''."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
