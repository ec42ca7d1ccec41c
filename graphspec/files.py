"""Opening the files a user names: regular files only, and never more than a limit per kind of file.

A path can name something that is not a file: a FIFO (``open`` blocks until a writer comes, forever), a device
(``/dev/zero`` never ends, ``/dev/tty`` waits for a keyboard), a directory, a socket, or a symlink loop. Every
reader of a user's file goes through :func:`open_regular` or :func:`read_bytes`: the path is ``stat``-ed (only a
regular file passes), opened with ``O_NONBLOCK`` (so that a FIFO swapped in after the check cannot block the
open), ``fstat``-ed again (the file opened is the file checked), and read up to the limit its caller names, plus
one byte to tell "at the limit" from "over it". A refusal is a :class:`GraphspecError` (or the subclass its caller
names) located at the file: ``FILE: cannot read WHAT: REASON``.

    >>> from graphspec.files import read_bytes
    >>> read_bytes("/dev/zero", "pairs file", limit=1024)         # doctest: +SKIP
    GraphspecError: /dev/zero: cannot read pairs file: not a regular file (a character device)

The limits of the kinds of file graphspec reads live beside their readers (``spec.yaml_source.MAX_BYTES`` for
specs and recipes, ``model_io.MAX_HEADER`` for model headers) or here for kinds without a module of their own.
"""
from __future__ import annotations

import errno
import os
import stat
import unicodedata
from typing import BinaryIO

from .errors import GraphspecError, Location

# LFW's largest protocol file (View 2 pairs.txt) is 0.1 MB and its people list 0.06 MB; 16 MiB is over 100 times
# that, while bounding what one line-by-line parse of a hostile file can cost (about 1 s, a few hundred MB).
PROTOCOL_BYTES = 16 * 1024 * 1024
# A file listing the images of a targets file (one path per line): 64 MiB holds a million 64-character paths.
LISTING_BYTES = 64 * 1024 * 1024

_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


class NotARegularFile(OSError):
    """The path names a directory, FIFO, device or socket; ``strerror`` says which."""


def not_regular(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not a regular file (``Is a directory``, as the OS says it, or ``not a
    regular file (a FIFO)``, ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "Is a directory"
    kind = next((what for test, what in _NOT_REGULAR if test(mode)), "an unknown kind of file")
    return f"not a regular file ({kind})"


def open_fd(path: "str | os.PathLike") -> int:
    """A read-only descriptor of the regular file ``path``; :class:`OSError` otherwise (:class:`NotARegularFile`
    for a directory, FIFO, device or socket). Never blocks: a FIFO is refused before it is opened, and opened
    without blocking if one is swapped in after the check (then refused by ``fstat``)."""
    _refuse_irregular(os.stat(path).st_mode, path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _refuse_irregular(os.fstat(fd).st_mode, path)  # the file opened is the file checked
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: "str | os.PathLike", what: str, *, error: type[GraphspecError] = GraphspecError
                 ) -> BinaryIO:
    """:func:`open_fd` as a binary file object; a refusal raises ``error`` located at the file: ``cannot read
    WHAT: REASON`` (the OS's, e.g. ``No such file or directory``, or :func:`not_regular`'s)."""
    try:
        return os.fdopen(open_fd(path), "rb")
    except OSError as e:
        raise _cannot(os.fspath(path), what, e.strerror or str(e), error) from e


def read_bytes(path: "str | os.PathLike", what: str, limit: int, *, plural: str | None = None,
               error: type[GraphspecError] = GraphspecError) -> bytes:
    """The bytes of the regular file ``path``, refused (``error``, located) when it is not a regular file or
    holds more than ``limit`` bytes: ``file is N bytes; PLURAL are limited to LIMIT bytes`` (``plural``, default
    ``what + "s"``, e.g. ``specs``). At most ``limit + 1`` bytes are ever read, even from a file that grows
    while it is read."""
    label = os.fspath(path)
    with open_regular(path, what, error=error) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""  # (a file over the limit is not read at all)
        except OSError as e:
            raise _cannot(label, what, e.strerror or str(e), error) from e
    if size > limit or len(data) > limit:
        raise error(f"file is {max(size, len(data)):,} bytes; {plural or what + 's'} are limited to {limit:,} bytes",
                    location=Location(label))
    return data


def read_text(path: "str | os.PathLike", what: str, limit: int, *,
              error: type[GraphspecError] = GraphspecError) -> str:
    """:func:`read_bytes` decoded as UTF-8; invalid UTF-8 is refused naming its line and column."""
    raw = read_bytes(path, what, limit, error=error)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[:e.start]
        line, col = before.count(b"\n") + 1, e.start - (before.rfind(b"\n") + 1) + 1
        raise error(f"cannot read {what}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})",
                    location=Location(os.fspath(path), line, col)) from None


def unsafe_name(name: str) -> str | None:
    """Why a file name cannot be listed one per line, or None when it can: a newline, tab or other control
    character would split or garble listings (``embed``'s ``.paths.txt``, reports) and terminals; bytes that are
    not UTF-8 (decoded by Python as lone surrogates) cannot be written into a UTF-8 listing at all."""
    if name.isascii() and name.isprintable():  # most names, at once (embed checks every file, in its decoding threads)
        return None
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cc" or ch in "\u2028\u2029":  # (the last two: Unicode's line and paragraph separators)
            return f"control character {ascii(ch)[1:-1]} in the file name"
        if category == "Cs":
            return "the file name is not valid UTF-8"
    return None


def _refuse_irregular(mode: int, path) -> None:
    reason = not_regular(mode)
    if reason:
        raise NotARegularFile(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL, reason, os.fspath(path))


def _cannot(label: str, what: str, reason: str, error: type[GraphspecError]) -> GraphspecError:
    return error(f"cannot read {what}: {reason}", location=Location(label))
