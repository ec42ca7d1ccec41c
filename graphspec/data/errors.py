"""Errors and warnings of the data package.

User errors are :class:`graphspec.errors.GraphspecError` subclasses carrying a :class:`Location` (a file, and a
line and column for protocol files), so the command line prints ``FILE:LINE:COL: message`` and exits 2.
Bad images never raise during a run: they are skipped, and one :class:`DataWarning` lists them.
"""
from __future__ import annotations

from ..errors import GraphspecError, Location


class DataError(GraphspecError):
    """A dataset, image, protocol file, cache or download problem the user can fix."""


class DataWarning(UserWarning):
    """Files were skipped (one warning per dataset, listing them)."""


def located(message: str, file, line: int = 0, col: int = 0) -> DataError:
    """A :class:`DataError` at ``file:line:col`` (line 0: the file as a whole)."""
    return DataError(message, location=Location(str(file), line, col))
