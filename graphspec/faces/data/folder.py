"""Scan a face folder in LFW layout (``ROOT/NAME/<images>``) cheaply, without decoding.

Each file costs a ``stat`` and two small reads: the extension must be an image one (DL4J's list: jpg, jpeg, png,
bmp, tif, tiff), the file non-empty, its first bytes an image signature, and its last bytes the format's end
marker (JPEG ``FFD9``, PNG ``IEND``, BMP's declared size). Files failing a check are *skipped* with a reason;
files that pass but still fail to decode are caught later, when the cache is built. Empty person folders are
ignored (and listed). If ROOT holds no person folders but exactly one folder that does (an archive's top
folder, e.g. ``lfw-deepfunneled/``), the scan descends into it.

No folder outside ROOT is listed: a symbolic link to a folder outside ROOT is skipped with its reason (a link
names a whole tree someone else controls), as are links that cannot be followed (a loop), anything that is not a
regular file (a FIFO, a device: never opened), and names with a control character or bytes that are not UTF-8 (a
newline in a name would split the one-name-a-line listings written from the scan, such as ``embed``'s
``.paths.txt``). A link to one image file is followed wherever it leads (folders of links to a collection's images
are a common way to make a subset); the file it names must still be a regular file within the decoding limits.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ...data.cache import Skipped
from ...data.errors import DataError, located
from ...data.images import open_image
from ...files import NotARegularFile, not_regular, open_fd, unsafe_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_SIGNATURES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"BM": "bmp", b"II*\x00": "tiff",
               b"MM\x00*": "tiff"}


@dataclass
class FolderScan:
    """What a folder holds: ``images[person]`` = sorted file names that passed the cheap checks."""

    root: Path
    images: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    empty_folders: list[str] = field(default_factory=list)

    @property
    def people(self) -> list[str]:
        """Person names with at least one image, sorted (Python ``str`` order = Java's for ASCII names)."""
        return sorted(name for name, files in self.images.items() if files)

    @property
    def n_images(self) -> int:
        return sum(len(files) for files in self.images.values())

    def path(self, person: str, file: str) -> Path:
        return self.root / person / file


def resolve_root(root: "str | os.PathLike") -> Path:
    """The folder whose subfolders are people: ``root`` itself, or its single subfolder that is such a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise located("dataset folder not found (pass --download to fetch LFW, or see `graphspec dataset "
                      "--help`)" if not root.exists() else "not a folder", root)
    subdirs = [d for d in _dirs(root)]
    if any(_has_image_name(d) for d in subdirs):
        return root
    nested = [d for d in subdirs if any(_has_image_name(sd) for sd in _dirs(d))]
    return nested[0] if len(nested) == 1 else root


def scan_folder(root: "str | os.PathLike", check: bool = True) -> FolderScan:
    """List people and images under ``root`` (see the module doc). ``check=False`` skips the content checks
    (signature and end marker) and keeps only the extension and empty-file tests."""
    scan = FolderScan(resolve_root(root))
    inside = os.path.realpath(scan.root)
    for entry in _entries(scan.root, located_as=scan.root):
        if entry.name.startswith("."):
            continue
        kind, why = _kind(entry, inside)
        if kind == "folder":
            try:
                _scan_person(scan, entry, check, inside)
            except OSError as e:
                scan.skipped.append(Skipped(entry.name + "/", f"unreadable folder ({e.strerror or e})"))
        elif why:  # not a folder, not a regular file: listed (regular files beside the people, e.g. pairs.txt, are not)
            scan.skipped.append(Skipped(entry.name, why))
        elif _image_name(entry.name):
            scan.skipped.append(Skipped(entry.name, "image outside a person folder"))
    return scan


def _entries(folder: "str | os.PathLike", located_as=None) -> list[os.DirEntry]:
    """The entries of ``folder`` by name; an unlistable folder raises OSError, or a located error for the root."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        if located_as is None:
            raise
        raise located(f"cannot list the dataset folder: {e.strerror or e}", located_as) from e


def _kind(entry: os.DirEntry, inside: str) -> tuple[str | None, str | None]:
    """``("folder", None)``, ``("file", None)`` (a regular file), or ``(None, why it is skipped)``: a name that
    cannot be listed, a link that cannot be followed, a link to a folder outside ``inside`` (the real dataset
    folder), or anything else that is not a regular file. Costs no open: the scandir entry's own (cached) stat."""
    why = unsafe_name(entry.name)
    if why:
        return None, why
    try:
        mode = entry.stat().st_mode  # follows links: a loop raises ELOOP
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        if entry.is_symlink() and not _within(os.path.realpath(entry.path), inside):
            return None, f"a link to a folder outside the dataset folder (-> {os.readlink(entry.path)})"
        return "folder", None
    return ("file", None) if stat.S_ISREG(mode) else (None, not_regular(mode))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_person(scan: FolderScan, folder: os.DirEntry, check: bool, inside: str) -> None:
    kept, entries = [], _entries(folder.path)
    if not entries:
        scan.empty_folders.append(folder.name)
        return
    for entry in entries:
        rel = f"{folder.name}/{entry.name}"
        kind, why = _kind(entry, inside)
        if kind == "folder":
            scan.skipped.append(Skipped(rel + "/", "folder inside a person folder"))
            continue
        reason = why or sniff(entry.path, check)
        if reason:
            scan.skipped.append(Skipped(rel, reason))
        else:
            kept.append(entry.name)
    if kept:
        scan.images[folder.name] = kept


def sniff(path: "str | os.PathLike", check: bool = True) -> str | None:
    """Why a file is not a usable image, or None. Cheap: an open, a stat and two 64-byte reads."""
    name = os.fspath(path)
    ext = os.path.splitext(name)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        return f"not an image (extension '{ext}')" if ext else "not an image (no extension)"
    try:
        fd = open_fd(name)  # a regular file, opened without blocking
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                return "empty file (0 bytes)"
            if not check:
                return None
            head, tail = os.pread(fd, 64, 0), os.pread(fd, 64, max(0, size - 64))
        finally:
            os.close(fd)
    except NotARegularFile as e:
        return e.strerror
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    kind = next((k for sig, k in _SIGNATURES.items() if head.startswith(sig)), None)
    if kind is None:
        return "not an image (content is no JPEG, PNG, BMP or TIFF)"
    return _truncated(kind, head, tail, size)


def _truncated(kind: str, head: bytes, tail: bytes, size: int) -> str | None:
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated (no JPEG end-of-image marker)"
    if kind == "png" and b"IEND" not in tail:
        return "truncated (no PNG IEND chunk)"
    if kind == "bmp" and len(head) >= 6 and int.from_bytes(head[2:6], "little") > size:
        return f"truncated (BMP header says {int.from_bytes(head[2:6], 'little')} bytes, file has {size})"
    return None


def _dirs(folder: Path) -> list[Path]:
    return [Path(e.path) for e, kind in _kinds(folder) if kind == "folder"]


def _has_image_name(folder: Path) -> bool:
    return any(_image_name(e.name) and kind == "file" for e, kind in _kinds(folder))


def _kinds(folder: Path) -> list[tuple[os.DirEntry, str | None]]:
    """(entry, :func:`_kind`) of each visible entry of ``folder``; none when it cannot be listed."""
    try:
        entries = _entries(folder)
    except OSError:
        return []
    inside = os.path.realpath(folder)
    return [(e, _kind(e, inside)[0]) for e in entries if not e.name.startswith(".")]


def verify_images(paths, workers: int | None = None) -> dict[int, str]:
    """Fully decode each file (no resizing); returns ``{index: reason}`` for those that fail."""
    from concurrent.futures import ThreadPoolExecutor

    def check(i: int) -> tuple[int, str | None]:
        try:
            with open_image(paths[i]) as image:  # a regular file within the decoding limits
                image.load()
            return i, None
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
            return i, e.problem.message if isinstance(e, DataError) else f"unreadable: {e}"

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return {i: why for i, why in pool.map(check, range(len(paths)), chunksize=64) if why}
