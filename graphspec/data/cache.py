"""A uint8 image cache: decode and preprocess once, then memory-map ``[N, 3, H, W]``.

The key hashes the file list (absolute path, size and modification time of every file, in order) and the
deterministic preprocessing, so a changed file, a different selection or another size gets its own cache and a
stale one is never read. A cache is ``KEY.u8`` (raw array) plus ``KEY.json`` (shape, which rows decoded, the
failures); both are written under a temporary name and renamed, the JSON last, so a half-built cache is never
seen. Delete the folder (``graphspec.data.cache_dir() / "images"``) to reclaim the space.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .locations import cache_dir as default_cache_dir
from ..log import logger
from .errors import DataError, located
from .preprocessing import Preprocessing, check_image_size

CACHE_FORMAT = 1
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Skipped:
    """A file left out, relative to the scanned root, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass
class ImageCache:
    """A built cache: ``array`` (read-only memmap ``[N, 3, H, W]`` uint8), ``ok[i]`` = row i decoded."""

    path: Path
    shape: tuple[int, int, int, int]
    ok: np.ndarray
    failures: list[Skipped] = field(default_factory=list)
    built: bool = False  # True when this call decoded the images, False when an existing cache was opened
    _array: np.ndarray | None = field(default=None, repr=False)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:  # opened lazily so that DataLoader workers map the file instead of pickling it
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return self._array

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


def cache_key(files: Sequence["str | os.PathLike"], preprocessing: Preprocessing) -> str:
    """16 hex digits identifying (file list with sizes and mtimes, preprocessing, cache format)."""
    h = hashlib.sha256(f"graphspec-image-cache {CACHE_FORMAT}\n{preprocessing.model_dump_json()}\n".encode())
    for f in files:
        path = os.path.abspath(f)
        try:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()[:16]


def open_or_build(files: Sequence["str | os.PathLike"], preprocessing: Preprocessing, *,
                  cache_dir: "str | os.PathLike | None" = None, workers: int | None = None,
                  progress: Progress | None = None, names: Sequence[str] | None = None) -> ImageCache:
    """Open the cache of ``files`` under ``preprocessing``, building it first if needed.

    ``names`` (default: the paths) label failures. ``workers`` decoding threads (default: the CPU count;
    Pillow releases the GIL while decoding and resizing).
    """
    check_image_size(preprocessing.size)  # before a row of the cache is allocated
    folder = default_cache_dir(cache_dir) / "images"
    key = cache_key(files, preprocessing)
    meta_path, data_path = folder / f"{key}.json", folder / f"{key}.u8"
    h, w = preprocessing.size
    shape = (len(files), 3, h, w)
    cached = _open(meta_path, data_path, shape)
    if cached is not None:
        logger.debug(f"image cache: {data_path} ({len(files):,} images, {preprocessing.describe()})")
        return cached
    _make_dir(folder)
    logger.debug(f"image cache: building {data_path} ({len(files):,} images, {preprocessing.describe()})")
    return _build(files, names or [str(f) for f in files], preprocessing, shape, meta_path, data_path,
                  workers, progress)


def _open(meta_path: Path, data_path: Path, shape) -> ImageCache | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if tuple(meta.get("shape", ())) != shape or meta.get("format") != CACHE_FORMAT:
        return None
    if not data_path.exists() or data_path.stat().st_size != int(np.prod(shape)):
        return None
    ok = np.ones(shape[0], dtype=bool)
    ok[[f["index"] for f in meta["failures"]]] = False
    failures = [Skipped(f["path"], f["reason"]) for f in meta["failures"]]
    return ImageCache(data_path, shape, ok, failures)


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise located(f"cannot create the cache folder: {e.strerror or e} (set GRAPHSPEC_CACHE or pass "
                      f"cache_dir)", folder) from e


def _build(files, names, preprocessing, shape, meta_path: Path, data_path: Path, workers, progress):
    tmp = data_path.with_name(f".{data_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        failures = decode_into(files, preprocessing, array, workers=workers, progress=progress)
        array.flush()
        del array
        os.replace(tmp, data_path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise located(f"cannot write the image cache: {e.strerror or e}", data_path) from e
    records = [{"index": i, "path": names[i], "reason": failures[i]} for i in sorted(failures)]
    meta = {"format": CACHE_FORMAT, "shape": list(shape), "preprocessing": preprocessing.model_dump(mode="json"),
            "failures": records}
    tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, meta_path)
    ok = np.ones(shape[0], dtype=bool)
    ok[sorted(failures)] = False
    return ImageCache(data_path, shape, ok, [Skipped(r["path"], r["reason"]) for r in records], built=True)


def decode_into(files: Sequence["str | os.PathLike"], preprocessing: Preprocessing, array: np.ndarray, *,
                workers: int | None = None, progress: Progress | None = None) -> dict[int, str]:
    """Decode ``files[i]`` into ``array[i]`` with a thread pool; returns ``{row: reason}`` for failures (their
    rows are left untouched)."""
    n, failures = len(files), {}
    chunks = [range(s, min(s + 64, n)) for s in range(0, n, 64)]

    def run(rows: range) -> int:
        for i in rows:
            try:
                array[i] = preprocessing.load(files[i])
            except DataError as e:
                failures[i] = _reason(e)
        return len(rows)

    done = 0
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for count in pool.map(run, chunks):
            done += count
            if progress:
                progress(done, n)
    return failures


def _reason(error: DataError) -> str:
    from .aligners import NoSubject
    from .images import ImageRefused
    message = error.problem.message
    if isinstance(error, (NoSubject, ImageRefused)) or message.startswith("unreadable"):  # said as they are
        return message
    return f"unreadable: {message}"
