"""The package's logger, ``logging.getLogger("graphspec")``: what a command does on the way to its output (the
device it chose, the image cache it opened or built, the checkpoints it wrote) and the warnings it gives.

A program that uses graphspec configures it like any library's logger (graphspec adds no handler of its own,
only a ``NullHandler``). The command line shows warnings and notes on stderr: ``--quiet`` only warnings and errors
(and no progress or score lines), ``--verbose`` the debug records too.
"""
from __future__ import annotations

import contextlib
import logging
import sys

from .text import printable_lines

logger = logging.getLogger("graphspec")
logger.addHandler(logging.NullHandler())

QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class _CommandLineFormat(logging.Formatter):
    """``warning: ...`` for warnings, the message alone otherwise (as the command line always printed them); names
    and paths in a record come from files, so its control characters are escaped (:func:`graphspec.text.printable`)."""

    def format(self, record: logging.LogRecord) -> str:
        text = printable_lines(record.getMessage())
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


@contextlib.contextmanager
def command_line(level: int = NORMAL):
    """While a command runs: the package's records at ``level`` and above on stderr (the stream of the moment, so
    captured output captures them too); afterwards the logger is as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CommandLineFormat())
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
