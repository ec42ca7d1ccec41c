"""Fetch the LFW archive, explicitly: resumable, checksum-verified, extracted safely.

Nothing is downloaded unless asked (``graphspec dataset DIR --download`` or :func:`download_lfw`). The archive
goes to ``cache_dir()/downloads`` as ``NAME.part`` until complete (an interrupted transfer resumes with an HTTP
``Range`` request, also on the next run), is verified against its checksum, and is then extracted member by
member after *every* member has been checked: no absolute paths, no ``..``, no links leaving the target, no
device files, and sizes within the limits below (read from the members' headers, stopping at the first one over
a limit: a compression bomb is refused after decompressing at most its budget, and nothing is written). Extraction
goes to a temporary folder beside the target, renamed into place at the end.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
import zlib
from http.client import HTTPException
from pathlib import Path
from typing import Callable

from ...data.locations import cache_dir as default_cache_dir
from ...data.errors import DataError, located
from ...files import open_regular

#: The official archives (University of Massachusetts) and their MD5 sums (as torchvision and others record them).
LFW_ARCHIVES = {
    "deepfunneled": ("http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz", "md5:68331da3eb755a505a502b5aacb3c201"),
    "original": ("http://vis-www.cs.umass.edu/lfw/lfw.tgz", "md5:a17d05bd522c52d84eca14327a23d494"),
    "funneled": ("http://vis-www.cs.umass.edu/lfw/lfw-funneled.tgz", "md5:1b42dfed7d15c9b2dd63d5e5840c86ad"),
}
CHUNK = 1 << 20
# LFW holds 13,233 images in 5,749 folders (19,000 members); 50,000 leaves room for any face folder of that kind
# while bounding the headers kept in memory (about 1 KB each).
MAX_ARCHIVE_MEMBERS = 50_000
# One photo: LFW's are 10-30 KB; 64 MiB is a very large uncompressed image.
MAX_MEMBER_BYTES = 64 * 1024 * 1024
# Everything extracted: LFW's largest variant holds 0.25 GB; 1 GiB is four times that.
MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024
# Photos do not compress (LFW's .tgz files are 0.95x their contents); more than 20 times the archive's size is a
# bomb. (Below MAX_MEMBER_BYTES in all, any ratio is accepted: small archives of text compress well.)
MAX_EXPANSION = 20
Progress = Callable[[int, "int | None"], None]  # (bytes so far, total or None)


def download_lfw(target: "str | os.PathLike", *, variant: str = "deepfunneled", url: str | None = None,
                 checksum: str | None = None, cache_dir: "str | os.PathLike | None" = None, retries: int = 3,
                 timeout: float = 30.0, progress: Progress | None = None) -> Path:
    """Download (or reuse) the LFW archive and extract it into ``target``; returns ``target``.

    ``url``/``checksum`` override the variant's (a custom URL without a checksum is not verified: say so with
    ``checksum=""``; with ``checksum=None`` a custom URL is refused rather than trusted silently).
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise located("target folder exists and is not empty; nothing downloaded", target)
    if variant not in LFW_ARCHIVES and url is None:
        raise DataError(f"unknown LFW variant '{variant}'; expected one of {sorted(LFW_ARCHIVES)} or a url")
    default_url, default_sum = LFW_ARCHIVES.get(variant, (None, None))
    if url is not None and checksum is None:
        raise DataError("a custom --url needs a --checksum (md5:HEX or sha256:HEX), or an explicit empty one to "
                        "skip verification")
    url, checksum = url or default_url, default_sum if checksum is None else checksum
    name = posixpath.basename(url.split("?")[0]) or "archive"
    archive = download(url, default_cache_dir(cache_dir) / "downloads" / name, checksum=checksum or None,
                       retries=retries, timeout=timeout, progress=progress)
    safe_extract(archive, target)
    return target


def download(url: str, dest: "str | os.PathLike", *, checksum: str | None = None, retries: int = 3,
             timeout: float = 30.0, progress: Progress | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify ``checksum`` and return ``dest``.

    A complete ``dest`` that matches the checksum is reused. On a mismatch the file is deleted and a
    :class:`DataError` raised. ``retries`` interrupted transfers are resumed before giving up; the ``.part``
    file stays, so running again resumes too.
    """
    dest = Path(dest)
    if checksum is not None:
        _algorithm(checksum)  # a malformed checksum fails before any transfer
    if dest.exists() and (checksum is None or _matches(dest, checksum)):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as e:
            raise DataError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
        except ValueError as e:  # not a URL urllib understands
            raise DataError(f"cannot download {url}: {e}") from e
        except urllib.error.URLError as e:
            if not _size(part):  # nothing came through: no network, no such host, nothing listening
                raise _offline(url, e, dest) from e
            if attempt == retries:
                raise _interrupted(url, part, e) from e
        except (socket.timeout, ConnectionError, HTTPException, OSError) as e:
            if attempt == retries:
                raise _interrupted(url, part, e) from e
    os.replace(part, dest)
    if checksum is not None and not _matches(dest, checksum):
        actual = file_digest(dest, _algorithm(checksum)[0])
        dest.unlink()
        raise located(f"checksum mismatch: expected {checksum}, received {_algorithm(checksum)[0]}:{actual}; "
                      f"the file was deleted", dest)
    return dest


def _fetch(url: str, part: Path, timeout: float, progress: Progress | None) -> None:
    """Append the rest of ``url`` to ``part``; raises when the transfer stops early."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is already complete
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out:
            got = have
            while chunk := response.read(CHUNK):
                out.write(chunk)
                got += len(chunk)
                if progress:
                    progress(got, total)
    if total is not None and got < total:
        raise ConnectionError(f"connection closed after {got} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _interrupted(url: str, part: Path, error: BaseException) -> DataError:
    return DataError(f"download of {url} interrupted at {_size(part)} bytes ({_why(error)}); run again to "
                     f"resume from {part}")


def _offline(url: str, error: urllib.error.URLError, dest: Path) -> DataError:
    return DataError(f"cannot reach {url} ({_why(error)}); are you offline? Download the archive by hand to "
                     f"{dest} and run again, or pass --url to a mirror, or point GRAPHSPEC_LFW at an extracted "
                     f"copy")


def _why(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason


def _algorithm(checksum: str) -> tuple[str, str]:
    algo, _, digest = checksum.rpartition(":")
    algo = algo or {32: "md5", 40: "sha1", 64: "sha256"}.get(len(digest), "")
    if algo not in ("md5", "sha1", "sha256") or not digest:
        raise DataError(f"checksum must be md5:HEX, sha1:HEX or sha256:HEX; received '{checksum}'")
    return algo, digest.lower()


def file_digest(path: "str | os.PathLike", algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: "str | os.PathLike", checksum: str) -> bool:
    """True when the file's digest equals ``checksum`` (``md5:HEX``, ``sha256:HEX`` or bare HEX)."""
    return _matches(Path(path), checksum)


def _matches(path: Path, checksum: str) -> bool:
    algo, digest = _algorithm(checksum)
    return file_digest(path, algo) == digest


# --- safe extraction ----------------------------------------------------------------------------------------
def safe_extract(archive: "str | os.PathLike", target: "str | os.PathLike") -> list[str]:
    """Extract a tar archive (any compression) into ``target`` after checking every member; returns the
    member names. A hostile member (absolute path, ``..``, a link leaving the target, a device or fifo) or an
    archive over a size limit raises :class:`DataError` naming it, before anything is written."""
    target = Path(target)
    with open_regular(archive, "archive", error=DataError) as f:
        try:
            tar = tarfile.open(fileobj=f)
        except (tarfile.TarError, OSError) as e:
            raise located(f"not a readable tar archive: {e}", archive) from e
        with tar:
            members = checked_members(tar, archive, os.fstat(f.fileno()).st_size)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.extract")
            try:
                tmp.mkdir(parents=True)
                tar.extractall(tmp, members=members, **_filter_kw())
                _move_into(tmp, target)
            except (tarfile.TarError, OSError) as e:
                raise located(f"extraction failed: {e}", archive) from e
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return [m.name for m in members]


def extraction_budget(archive_bytes: int) -> int:
    """The most bytes the members of an archive of ``archive_bytes`` may hold: MAX_EXPANSION times the archive
    (at least MAX_MEMBER_BYTES), never more than MAX_EXTRACTED_BYTES."""
    return min(MAX_EXTRACTED_BYTES, max(MAX_EXPANSION * archive_bytes, MAX_MEMBER_BYTES))


def checked_members(tar: tarfile.TarFile, archive, archive_bytes: int) -> list[tarfile.TarInfo]:
    """Every member of ``tar``, read header by header and checked as it comes: its path and type
    (:func:`_unsafe`), its size, the running count and total. The first refusal stops the reading."""
    budget, total, members = extraction_budget(archive_bytes), 0, []
    try:
        while (member := tar.next()) is not None:
            members.append(member)
            total += member.size
            unsafe = _unsafe(member)
            problem = f"member '{member.name}' {unsafe}" if unsafe else \
                _oversized(member, len(members), total, budget, archive_bytes)
            if problem:
                raise located(f"refusing to extract: {problem}", archive)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # a corrupt stream or header
        raise located(f"not a readable tar archive: {e}", archive) from e
    return members


def _oversized(member: tarfile.TarInfo, count: int, total: int, budget: int, archive_bytes: int) -> str | None:
    if count > MAX_ARCHIVE_MEMBERS:
        return f"the archive has more than {MAX_ARCHIVE_MEMBERS:,} members (MAX_ARCHIVE_MEMBERS)"
    if member.size > MAX_MEMBER_BYTES:
        return (f"member '{member.name}' is {member.size:,} bytes; members are limited to {MAX_MEMBER_BYTES:,} "
                f"bytes (MAX_MEMBER_BYTES)")
    if total > budget:
        return (f"the members hold more than {budget:,} bytes, the limit for a {archive_bytes:,}-byte archive "
                f"(MAX_EXPANSION {MAX_EXPANSION} times its size, at most MAX_EXTRACTED_BYTES "
                f"{MAX_EXTRACTED_BYTES:,})")
    return None


def _unsafe(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "has a '..' path component"
    if member.isdev() or member.isfifo():
        return "is a device or fifo"
    if member.issym() or member.islnk():
        link = member.linkname
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, link))
        if link.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"is a link leaving the target (-> {link})"
    return None


def _filter_kw() -> dict:
    """Python's own 'data' extraction filter as a second line of defence, where this Python has it."""
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _move_into(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    for entry in tmp.iterdir():
        os.replace(entry, target / entry.name)
