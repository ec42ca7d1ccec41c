"""Downloading against a local HTTP server in a thread: checksums, interrupted transfers, hostile archives."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from graphspec.data import DataError
from graphspec.faces.data import download, download_lfw, lfw_dataset, safe_extract, synthetic_faces

pytestmark = pytest.mark.usefixtures("isolated_cache")


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range`` unless ``server.ranges`` is False; the first ``server.cuts``
    responses stop after ``server.cut_at`` bytes (an interrupted transfer)."""

    def do_GET(self):
        srv = self.server
        srv.log.append(self.headers.get("Range"))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        partial = start > 0 and srv.ranges
        rest = body[start:] if partial else body
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if srv.cuts > 0:
            srv.cuts -= 1
            self.wfile.write(rest[:srv.cut_at])
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log, srv.ranges, srv.cuts, srv.cut_at = {}, [], True, 0, 0
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small lfw.tgz: top folder lfw/, two synthetic people with two images each."""
    root = synthetic_faces(tmp_path_factory.mktemp("src") / "lfw", identities=2, images=2, seed=3, size=48)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(root.rglob("*.jpg")):
            tar.add(path, arcname=f"lfw/{path.relative_to(root).as_posix()}")
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_download_lfw_verifies_extracts_and_gives_a_dataset(server, archive, tmp_path):
    server.files["/lfw.tgz"] = archive
    target = download_lfw(tmp_path / "lfw", url=server.url + "/lfw.tgz", checksum=sha256(archive))
    ds = lfw_dataset(target, cache=False)
    assert len(ds) == 4 and len(ds.classes) == 2 and ds.root == target / "lfw"
    assert (tmp_path / "cache" / "downloads" / "lfw.tgz").read_bytes() == archive
    assert download_lfw(tmp_path / "lfw2", url=server.url + "/lfw.tgz", checksum=sha256(archive))
    assert server.log == [None]  # the second call reused the verified archive: no request


def test_checksum_mismatch_deletes_the_file(server, archive, tmp_path):
    server.files["/a.tgz"] = archive
    dest = tmp_path / "a.tgz"
    with pytest.raises(DataError, match="checksum mismatch: expected md5:0{32}, received md5:") as e:
        download(server.url + "/a.tgz", dest, checksum="md5:" + "0" * 32)
    assert e.value.problem.location.file == str(dest)
    assert list(tmp_path.iterdir()) == []
    assert download(server.url + "/a.tgz", dest, checksum="md5:" + hashlib.md5(archive).hexdigest()) == dest


def test_interrupted_transfer_is_resumed_with_a_range_request(server, archive, tmp_path):
    server.files["/a.tgz"], server.cuts, server.cut_at = archive, 1, 1000
    dest = download(server.url + "/a.tgz", tmp_path / "a.tgz", checksum=sha256(archive))
    assert dest.read_bytes() == archive and server.log == [None, "bytes=1000-"]


def test_interrupted_transfer_resumes_on_the_next_run(server, archive, tmp_path):
    server.files["/a.tgz"], server.cuts, server.cut_at = archive, 1, 700
    with pytest.raises(DataError, match="interrupted at 700 bytes.*run again to resume"):
        download(server.url + "/a.tgz", tmp_path / "a.tgz", checksum=sha256(archive), retries=0)
    assert (tmp_path / "a.tgz.part").stat().st_size == 700
    download(server.url + "/a.tgz", tmp_path / "a.tgz", checksum=sha256(archive), retries=0)
    assert (tmp_path / "a.tgz").read_bytes() == archive and server.log[-1] == "bytes=700-"


def test_a_server_ignoring_ranges_means_starting_over(server, archive, tmp_path):
    server.files["/a.tgz"], server.cuts, server.cut_at, server.ranges = archive, 1, 500, False
    dest = download(server.url + "/a.tgz", tmp_path / "a.tgz", checksum=sha256(archive))
    assert dest.read_bytes() == archive and server.log == [None, "bytes=500-"]


def test_http_errors_and_offline_are_clear(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        download(server.url + "/missing.tgz", tmp_path / "m.tgz")
    with socket.socket() as s:  # a port with nothing listening: what "offline" looks like to urllib
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="are you offline"):
        download(f"http://127.0.0.1:{port}/lfw.tgz", tmp_path / "x.tgz", retries=0, timeout=5)


def test_download_lfw_refuses_unverified_urls_and_full_folders(tmp_path):
    with pytest.raises(DataError, match="needs a --checksum"):
        download_lfw(tmp_path / "t", url="http://127.0.0.1:1/x.tgz")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        download_lfw(tmp_path / "full")
    with pytest.raises(DataError, match="checksum must be"):
        download("http://127.0.0.1:1/x", tmp_path / "x", checksum="crc:1234")


def tar_with(tmp_path, *members) -> str:
    """A .tgz with the given (TarInfo fields, data) members."""
    path = tmp_path / "evil.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields["name"])
            for k, v in fields.items():
                if k != "name":
                    setattr(info, k, v)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


GOOD = ({"name": "lfw/A_A/A_A_0001.jpg"}, b"ok")


@pytest.mark.parametrize("member,problem", [
    ({"name": "ABSOLUTE"}, "has an absolute path"),
    ({"name": "lfw/../../escaped.txt"}, "has a '..' path component"),
    ({"name": "lfw/link", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, "is a link leaving the target"),
    ({"name": "lfw/abs", "type": tarfile.SYMTYPE, "linkname": "/etc"}, "is a link leaving the target"),
    ({"name": "lfw/hard", "type": tarfile.LNKTYPE, "linkname": "../x"}, "is a link leaving the target"),
    ({"name": "lfw/dev", "type": tarfile.CHRTYPE}, "is a device or fifo"),
])
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path, member, problem):
    work = tmp_path / "work"
    work.mkdir()
    if member["name"] == "ABSOLUTE":
        member = {"name": str(tmp_path / "outside" / "evil.txt")}
    path = tar_with(tmp_path, GOOD, (member, b"evil"))
    with pytest.raises(DataError, match=f"refusing to extract: member '.*' {problem}"):
        safe_extract(path, work / "target")
    assert list(work.iterdir()) == []  # not even the good member, no temporary folder left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz", "work"]


def test_a_safe_archive_with_an_inner_link_extracts(tmp_path):
    path = tar_with(tmp_path, GOOD, ({"name": "lfw/B", "type": tarfile.SYMTYPE, "linkname": "A_A"}, b""))
    names = safe_extract(path, tmp_path / "target")
    assert names == ["lfw/A_A/A_A_0001.jpg", "lfw/B"]
    assert (tmp_path / "target" / "lfw" / "B" / "A_A_0001.jpg").read_bytes() == b"ok"
