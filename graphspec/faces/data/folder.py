"""Scan a face folder in LFW layout (``ROOT/NAME/<images>``) cheaply, without decoding.

Each file costs a ``stat`` and two small reads: the extension must be an image one (DL4J's list: jpg, jpeg, png,
bmp, tif, tiff), the file non-empty, its first bytes an image signature, and its last bytes the format's end
marker (JPEG ``FFD9``, PNG ``IEND``, BMP's declared size). Files failing a check are *skipped* with a reason;
files that pass but still fail to decode are caught later, when the cache is built. Empty person folders are
ignored (and listed). If ROOT holds no person folders but exactly one folder that does (an archive's top
folder, e.g. ``lfw-deepfunneled/``), the scan descends into it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...data.cache import Skipped
from ...data.errors import located

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
    try:
        with os.scandir(scan.root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise located(f"cannot list the dataset folder: {e.strerror or e}", scan.root) from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            try:
                _scan_person(scan, entry, check)
            except OSError as e:
                scan.skipped.append(Skipped(entry.name + "/", f"unreadable folder ({e.strerror or e})"))
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            scan.skipped.append(Skipped(entry.name, "image outside a person folder"))
    return scan


def _scan_person(scan: FolderScan, folder: os.DirEntry, check: bool) -> None:
    with os.scandir(folder.path) as it:
        kept, entries = [], sorted(it, key=lambda e: e.name)
    if not entries:
        scan.empty_folders.append(folder.name)
        return
    for entry in entries:
        rel = f"{folder.name}/{entry.name}"
        if entry.is_dir():
            scan.skipped.append(Skipped(rel + "/", "folder inside a person folder"))
            continue
        reason = sniff(entry.path, check)
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
        fd = os.open(name, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                return "empty file (0 bytes)"
            if not check:
                return None
            head, tail = os.pread(fd, 64, 0), os.pread(fd, 64, max(0, size - 64))
        finally:
            os.close(fd)
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
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _has_image_name(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in it if e.is_file())
    except OSError:
        return False


def verify_images(paths, workers: int | None = None) -> dict[int, str]:
    """Fully decode each file (no resizing); returns ``{index: reason}`` for those that fail."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def check(i: int) -> tuple[int, str | None]:
        try:
            with Image.open(paths[i]) as image:
                image.load()
            return i, None
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
            return i, f"unreadable: {e}"

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return {i: why for i, why in pool.map(check, range(len(paths)), chunksize=64) if why}
