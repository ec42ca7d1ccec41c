"""Text from files made safe for a terminal: one place that decides which characters are shown as escapes.

A spec, model file, dataset folder or recipe can hold any character in a name or string. Printed raw, an escape
sequence in one clears the screen, sets the window title, draws a hyperlink that lies about its target
(OSC 8) or recolours the rest of the output; a lone surrogate (from a YAML ``"\\ud800"``) cannot be encoded and
would end the command with an internal error. Every name or string from a file passes through :func:`printable`
(or :func:`printable_lines`, :func:`markup_safe`) before it reaches stdout or stderr.

    >>> printable("net\\x1b[2J")
    'net\\\\x1b[2J'
    >>> printable("csi\\x9b31m bell\\x07")
    'csi\\\\x9b31m bell\\\\x07'
"""
from __future__ import annotations

import re

# Shown as escapes: C0 controls (incl. ESC, BEL, CR, tab, newline), DEL, C1 controls (incl. the one-byte CSI
# U+009B and OSC U+009D that some terminals obey), lone surrogates (unencodable), and the bidirectional
# overrides and isolates that reorder how the rest of a line reads ("Trojan Source", CVE-2021-42574).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"  # as Python's repr writes them


def printable(text) -> str:
    """``text`` (or ``str(text)``) with every unsafe character written as an escape: ``\\x1b``, ``\\x9b``,
    ``\\u202e``, ``\\ud800``, ``\\n``, as Python's ``repr`` writes them (without repr's quotes or doubled backslashes).
    Linear in the length; text that needs nothing is returned as it is."""
    text = text if isinstance(text, str) else str(text)
    return UNSAFE.sub(_escape, text) if UNSAFE.search(text) else text


def printable_lines(text) -> str:
    """:func:`printable` for text whose line breaks are meant (a multi-line message, a log record): every line made
    safe, the ``\\n`` between them kept."""
    text = text if isinstance(text, str) else str(text)
    return "\n".join(printable(line) for line in text.split("\n"))


def markup_safe(text) -> str:
    """:func:`printable`, and rich markup escaped too (``[red]`` prints as itself, styles nothing): for a name
    that goes into a string rich reads as markup (``console.print(f"...{name}...")``). A rich ``Text`` does
    not read markup; give it :func:`printable` text."""
    from rich.markup import escape
    return escape(printable(text))
