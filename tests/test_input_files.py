"""Every input file that is not what it claims: FIFOs, devices, symlink loops, links out of the dataset, names that
break listings, images that decode to gigabytes, archives that expand to gigabytes, pairs files naming other files.

Each is refused or skipped with its reason (exit 2 for a refused argument, never 3), before the work it would cost:
nothing here blocks (a FIFO is never opened for a blocking read), decodes a refused image or extracts a refused
archive. Operations that could hang run in a thread with a generous backstop, so a regression fails instead of
hanging the suite.
"""
from __future__ import annotations

import io
import json
import os
import struct
import sys
import tarfile
import threading
import warnings
import zlib

import pytest
from PIL import Image, ImageFile

from graphspec.cli import main
from graphspec.data import DataError, DataWarning, Preprocessing
from graphspec.data.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, open_image
from graphspec.data.preprocessing import MAX_IMAGE_SIDE
from graphspec.errors import GraphspecError
from graphspec.faces.data import lfw_dataset, load_images, read_pairs, read_people, safe_extract, scan_folder
from graphspec.faces.data.download import MAX_ARCHIVE_MEMBERS, MAX_EXTRACTED_BYTES, MAX_MEMBER_BYTES
from graphspec.files import read_bytes, read_text, unsafe_name

pytestmark = pytest.mark.usefixtures("isolated_cache")

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
BACKSTOP = 20  # seconds; a refusal takes milliseconds, a FIFO read blocks forever


def within(seconds: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failing (not hanging) when it does not return in time."""
    result = {}

    def run():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for {seconds} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = within(BACKSTOP, main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def person(root, name, n=2, size=16):
    (root / name).mkdir(parents=True, exist_ok=True)
    for j in range(1, n + 1):
        Image.new("RGB", (size, size), (j, j, j)).save(root / name / f"{name}_{j:04d}.png")
    return root / name


# --- graphspec.files: regular files only, never past the limit --------------------------------------------------------
@needs_fifo
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(GraphspecError) as e:
        within(BACKSTOP, read_bytes, fifo, "spec", 1024)
    assert str(e.value) == f"{fifo}: cannot read spec: not a regular file (a FIFO)"
    assert e.value.problem.location.file == str(fifo)


def test_a_device_is_refused_before_a_byte_is_read():
    with pytest.raises(GraphspecError) as e:
        read_bytes("/dev/zero", "pairs file", 1024)
    assert str(e.value) == "/dev/zero: cannot read pairs file: not a regular file (a character device)"


def test_a_directory_and_a_missing_file_say_so_as_the_os_does(tmp_path):
    with pytest.raises(GraphspecError, match=r"cannot read spec: Is a directory$"):
        read_bytes(tmp_path, "spec", 10)
    with pytest.raises(GraphspecError, match=r"cannot read spec: No such file or directory$"):
        read_bytes(tmp_path / "nope", "spec", 10)


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(GraphspecError) as e:
        read_bytes(tmp_path / "a", "recipe", 10)
    assert str(e.value) == f"{tmp_path / 'a'}: cannot read recipe: Too many levels of symbolic links"


def test_the_limit_is_checked_before_reading_and_exactly(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_bytes(b"x" * 100)
    assert read_bytes(path, "pairs file", 100) == b"x" * 100
    with pytest.raises(GraphspecError) as e:
        read_bytes(path, "pairs file", 99)
    assert str(e.value) == f"{path}: file is 100 bytes; pairs files are limited to 99 bytes"


def test_invalid_utf8_is_located_at_its_line_and_column(tmp_path):
    path = tmp_path / "people.txt"
    path.write_bytes(b"2\nAnn_A\t1\nB\xffb\t2\n")
    with pytest.raises(DataError) as e:
        read_text(path, "protocol file", 1000, error=DataError)
    assert str(e.value) == f"{path}:3:2: cannot read protocol file: invalid UTF-8 (byte 0xff at offset 11)"


def test_names_that_break_one_name_a_line_listings():
    assert unsafe_name("Ann_A_0001.jpg") is None and unsafe_name("Zoë_0001.jpg") is None
    assert unsafe_name("a\nb.jpg") == "control character \\n in the file name"
    assert unsafe_name("\x1b[2J.jpg") == "control character \\x1b in the file name"
    # every ASCII control character, DEL included, past the fast path for printable ASCII names
    for code in [*range(0x20), 0x7F]:
        assert unsafe_name(f"a{chr(code)}b.jpg") == f"control character {ascii(chr(code))[1:-1]} in the file name"
    assert unsafe_name("a\u2028b.jpg") == "control character \\u2028 in the file name"
    assert unsafe_name(os.fsdecode(b"a\xffb.jpg")) == "the file name is not valid UTF-8"


# --- the command line: specs, models, recipes, pairs that are not files -----------------------------------------------
@needs_fifo
@pytest.mark.parametrize("name,command,message", [
    ("spec.yaml", "validate", "cannot read spec: not a regular file (a FIFO)"),
    ("spec", "summary", "cannot read spec: not a regular file (a FIFO)"),
    ("model.safetensors", "summary", "cannot read model file: not a regular file (a FIFO)"),
])
def test_cli_refuses_a_fifo_as_spec_or_model(tmp_path, capsys, name, command, message):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    rc, _, err = cli(capsys, command, fifo)
    assert (rc, err) == (2, f"error: {fifo}: {message}\n")


def test_cli_refuses_dev_zero_as_spec(capsys):
    rc, _, err = cli(capsys, "validate", "/dev/zero")
    assert (rc, err) == (2, "error: /dev/zero: cannot read spec: not a regular file (a character device)\n")


# --- pairs and people files ---------------------------------------------------------------------------------------------
def test_dev_zero_as_a_pairs_file_is_refused():
    with pytest.raises(DataError) as e:
        read_pairs("/dev/zero")
    assert str(e.value) == "/dev/zero: cannot read protocol file: not a regular file (a character device)"


def test_an_oversized_pairs_file_is_refused_unread(tmp_path, monkeypatch):
    import graphspec.faces.data.protocol as protocol
    monkeypatch.setattr(protocol, "PROTOCOL_BYTES", 64)
    path = tmp_path / "pairs.txt"
    path.write_text("1\n" + "Ann_A\t1\t2\n" * 10)
    with pytest.raises(DataError) as e:
        read_pairs(path)
    assert str(e.value) == f"{path}: file is 102 bytes; protocol files are limited to 64 bytes"


PATH = "is a path (holds '/' or '\\')"


@pytest.mark.parametrize("line,col,name,why", [
    ("/etc/passwd\t1\t2", 1, "/etc/passwd", PATH),
    ("..\t1\t2", 1, "..", "is '..'"),
    ("Ann_A\t1\t../../x\t1", 9, "../../x", PATH),
    ("Ann_A\t1\tC:\\x\t1", 9, "C:\\x", PATH),
    ("Ann\x1b[2J\t1\t2", 1, "Ann\x1b[2J", "holds a control character or bytes that are not UTF-8"),
])
def test_pairs_naming_files_outside_the_dataset_are_refused_at_their_line(tmp_path, line, col, name, why):
    matched = line.count("\t") == 2
    pairs = ["Ann_A\t1\t2", "Ann_A\t1\tBob_B\t1"]
    pairs[0 if matched else 1] = line
    path = tmp_path / "pairs.txt"
    path.write_text("1\n" + "\n".join(pairs) + "\n")
    with pytest.raises(DataError) as e:
        read_pairs(path)
    location = e.value.problem.location
    assert (location.file, location.line, location.col) == (str(path), 2 if matched else 3, col)
    assert e.value.problem.message == f"person name '{name}' {why}; a name is one folder name inside the dataset"


def test_people_files_hold_folder_names_only(tmp_path):
    path = tmp_path / "people.txt"
    path.write_text("2\nAnn_A\t1\n../Bob_B\t2\n")
    with pytest.raises(DataError) as e:
        read_people(path)
    assert str(e.value) == f"{path}:3:1: person name '../Bob_B' {PATH}; a name is one folder name inside the dataset"


# --- image folders ------------------------------------------------------------------------------------------------------
@needs_fifo
def test_a_fifo_named_like_an_image_is_skipped_with_its_reason(tmp_path, capsys):
    root = tmp_path / "faces"
    person(root, "Ann_A")
    person(root, "Bob_B")
    os.mkfifo(root / "Ann_A" / "Ann_A_0003.jpg")
    scan = within(BACKSTOP, scan_folder, root)
    assert [(s.path, s.reason) for s in scan.skipped] == [("Ann_A/Ann_A_0003.jpg", "not a regular file (a FIFO)")]
    assert scan.images["Ann_A"] == ["Ann_A_0001.png", "Ann_A_0002.png"]
    rc, out, _ = cli(capsys, "dataset", root, "--format", "json")
    assert rc == 0 and json.loads(out)["skipped"] == [{"path": "Ann_A/Ann_A_0003.jpg",
                                                      "reason": "not a regular file (a FIFO)"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = within(BACKSTOP, lfw_dataset, root, preprocessing=Preprocessing(size=(16, 16)))
    assert len(ds) == 4


def test_symlink_loops_in_a_dataset_are_skipped_not_internal_errors(tmp_path, capsys):
    root = tmp_path / "faces"
    person(root, "Ann_A")
    (root / "Loop_A").symlink_to("Loop_B")
    (root / "Loop_B").symlink_to("Loop_A")
    (root / "Ann_A" / "Ann_A_0009.jpg").symlink_to("Ann_A_0009.jpg")  # a link to itself
    loop = "unreadable (Too many levels of symbolic links)"
    scan = scan_folder(root)
    assert [(s.path, s.reason) for s in scan.skipped] == [("Ann_A/Ann_A_0009.jpg", loop), ("Loop_A", loop),
                                                         ("Loop_B", loop)]
    rc, out, err = cli(capsys, "dataset", root, "--format", "json")
    assert rc == 0 and "internal error" not in err and json.loads(out)["identities"] == 1


def test_a_symlink_loop_as_the_dataset_root_is_a_located_error(tmp_path, capsys):
    (tmp_path / "faces").symlink_to("faces")
    rc, _, err = cli(capsys, "dataset", tmp_path / "faces")
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'faces'}: dataset folder not found")


def test_links_to_folders_outside_the_dataset_are_skipped_and_links_inside_are_followed(tmp_path):
    root, outside = tmp_path / "faces", tmp_path / "elsewhere"
    person(root, "Ann_A")
    person(outside, "Eve_E")
    person(outside, "Ann_B", n=1)
    (root / "Eve_E").symlink_to(outside / "Eve_E")                 # a person folder outside: skipped
    (root / "Ann_A" / "Ann_A_0003.png").symlink_to(outside / "Ann_B" / "Ann_B_0001.png")  # one image: followed
    (root / "Ann_2").symlink_to("Ann_A")                           # a folder inside: followed
    (root / "Ann_A" / "Sub").symlink_to(outside)                   # inside a person folder: skipped as well
    scan = scan_folder(root)
    assert [(s.path, s.reason) for s in scan.skipped] == [
        ("Ann_2/Sub", f"a link to a folder outside the dataset folder (-> {outside})"),
        ("Ann_A/Sub", f"a link to a folder outside the dataset folder (-> {outside})"),
        ("Eve_E", f"a link to a folder outside the dataset folder (-> {outside / 'Eve_E'})")]
    assert scan.images == {"Ann_2": ["Ann_A_0001.png", "Ann_A_0002.png", "Ann_A_0003.png"],
                           "Ann_A": ["Ann_A_0001.png", "Ann_A_0002.png", "Ann_A_0003.png"]}


def test_a_dataset_root_that_is_a_link_is_its_target(tmp_path):
    person(tmp_path / "real", "Ann_A")
    (tmp_path / "faces").symlink_to(tmp_path / "real")
    assert scan_folder(tmp_path / "faces").people == ["Ann_A"]


def test_names_with_control_characters_are_skipped_at_scan(tmp_path):
    root = tmp_path / "faces"
    folder = person(root, "Ann_A")
    Image.new("RGB", (16, 16)).save(folder / "evil\nAnn_A_0001.png", format="PNG")
    (root / "Bob\x1b]0;pwned\x07").mkdir()
    scan = scan_folder(root)
    assert [(s.path, s.reason) for s in scan.skipped] == [
        ("Ann_A/evil\nAnn_A_0001.png", "control character \\n in the file name"),
        ("Bob\x1b]0;pwned\x07", "control character \\x1b in the file name")]
    assert scan.images == {"Ann_A": ["Ann_A_0001.png", "Ann_A_0002.png"]}


# --- images that decode to far more than their file -------------------------------------------------------------------
def png_header(path, width: int, height: int, bit_depth: int = 16, color_type: int = 0):
    """A tiny PNG that declares ``width`` x ``height`` pixels (an IDAT of a few bytes: never decoded here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any image is decoded: refusals must come from the header alone."""
    def load(self):
        raise AssertionError(f"decoded {self.size} {self.mode}")
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_a_tiny_16_bit_png_declaring_100_megapixels_is_refused_from_its_header(tmp_path, no_decoding):
    path = png_header(tmp_path / "bomb.png", 10_000, 10_000)
    assert path.stat().st_size < 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's, between 1 and 2 times its limit
        with pytest.raises(DataError) as e:
            Preprocessing().load(path)
    assert str(e.value) == (f"{path}: image too large to decode: 10000x10000 is 100,000,000 pixels; the limit is "
                            f"{MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS)")


def test_pillow_refuses_the_largest_before_our_check_and_we_say_so(tmp_path, no_decoding):
    path = png_header(tmp_path / "bomb.png", 20_000, 20_000)
    with pytest.raises(DataError) as e:
        Preprocessing().load(path)
    assert str(e.value) == (f"{path}: image too large to decode: more than {2 * MAX_IMAGE_PIXELS:,} pixels; the "
                            f"limit is {MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS)")


def test_decoded_bytes_are_limited_whatever_the_pixel_count(tmp_path, no_decoding):
    path = png_header(tmp_path / "wide.png", 7_500, 7_500, bit_depth=8, color_type=6)  # RGBA: 4 bytes a pixel
    assert 7_500 * 7_500 <= MAX_IMAGE_PIXELS and 7_500 * 7_500 * 4 > MAX_IMAGE_BYTES
    with pytest.raises(DataError) as e:
        Preprocessing().load(path)
    assert str(e.value) == (f"{path}: image too large to decode: 7500x7500 RGBA pixels need 225,000,000 bytes; the "
                            f"limit is {MAX_IMAGE_BYTES:,} (MAX_IMAGE_BYTES)")


def test_pillow_is_told_the_same_pixel_limit():
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS


def test_an_oversized_image_in_a_dataset_is_skipped_with_its_reason(tmp_path):
    root = tmp_path / "faces"
    person(root, "Ann_A")
    person(root, "Bob_B")
    png_header(root / "Bob_B" / "Bob_B_0003.png", 10_000, 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = lfw_dataset(root, preprocessing=Preprocessing(size=(16, 16)))
    assert len(ds) == 4
    assert [(s.path, s.reason) for s in ds.skipped] == [("Bob_B/Bob_B_0003.png", (
        f"image too large to decode: 10000x10000 is 100,000,000 pixels; the limit is {MAX_IMAGE_PIXELS:,} "
        f"(MAX_IMAGE_PIXELS)"))]
    assert any("Bob_B_0003.png (image too large" in str(w.message) for w in caught)


@needs_fifo
def test_open_image_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DataError) as e:
        within(BACKSTOP, open_image(fifo).__enter__)
    assert str(e.value) == f"{fifo}: cannot read image: not a regular file (a FIFO)"


def test_sixteen_bit_and_float_images_still_become_8_bit_rgb(tmp_path):
    import numpy as np
    gray16 = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 256, 65535]], dtype=np.uint16)).save(gray16)
    assert Preprocessing(size=(1, 3), channels="rgb").load(gray16)[0].tolist() == [[0, 1, 255]]
    f32 = tmp_path / "f.tiff"
    Image.fromarray(np.array([[-5.0, 1.4, 300.0]], dtype=np.float32), "F").save(f32)
    assert Preprocessing(size=(1, 3), channels="rgb").load(f32)[0].tolist() == [[0, 1, 255]]


# --- image sizes a recipe or a model file asks for ---------------------------------------------------------------------
def test_a_preprocessing_size_beyond_the_limit_is_refused():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match=f"less than or equal to {MAX_IMAGE_SIDE}"):
        Preprocessing(size=(20_000, 20_000))
    assert Preprocessing(size=(MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)).size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)


def test_a_load_size_that_skipped_validation_is_refused_before_any_work(tmp_path):
    huge = Preprocessing().model_copy(update={"size": (20_000, 20_000)})  # how augmentation.load_size arrives
    message = ("image size 20000x20000 is outside 1..1024 pixels per side (MAX_IMAGE_SIDE); lower "
               "augmentation.load_size or preprocessing.size")
    with pytest.raises(DataError) as e:
        lfw_dataset(tmp_path / "not-even-scanned", preprocessing=huge)
    assert str(e.value) == message
    with pytest.raises(DataError, match="MAX_IMAGE_SIDE"):
        load_images([tmp_path / "x.png"], huge)
    assert not (tmp_path / "cache").exists()  # no cache file was created


# --- archives -----------------------------------------------------------------------------------------------------------
def archive(tmp_path, members, name="a.tgz"):
    """A .tgz of (name, size) members whose data is zeros (compresses about 1000:1)."""
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        for member, size in members:
            info = tarfile.TarInfo(member)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def refused(path, target) -> str:
    with pytest.raises(DataError) as e:
        safe_extract(path, target)
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == [path.name]  # nothing written
    return e.value.problem.message


def test_an_archive_expanding_past_its_budget_is_refused_before_extraction(tmp_path):
    path = archive(tmp_path, [(f"lfw/A/A_{i:04d}.jpg", 16 << 20) for i in range(8)])  # 128 MiB of zeros
    size = path.stat().st_size
    assert size < (1 << 20)
    assert refused(path, tmp_path / "target") == (
        f"refusing to extract: the members hold more than {MAX_MEMBER_BYTES:,} bytes, the limit for a {size:,}-byte "
        f"archive (MAX_EXPANSION 20 times its size, at most MAX_EXTRACTED_BYTES {MAX_EXTRACTED_BYTES:,})")


def test_an_oversized_member_is_refused(tmp_path):
    path = archive(tmp_path, [("lfw/A/A_0001.jpg", MAX_MEMBER_BYTES + 1)])
    assert refused(path, tmp_path / "target") == (
        f"refusing to extract: member 'lfw/A/A_0001.jpg' is {MAX_MEMBER_BYTES + 1:,} bytes; members are limited "
        f"to {MAX_MEMBER_BYTES:,} bytes (MAX_MEMBER_BYTES)")


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["graphspec.faces.data.download"], "MAX_ARCHIVE_MEMBERS", 5)
    path = archive(tmp_path, [(f"lfw/A/A_{i:04d}.jpg", 1) for i in range(6)])
    assert refused(path, tmp_path / "target") == "refusing to extract: the archive has more than 5 members " \
                                                 "(MAX_ARCHIVE_MEMBERS)"
    assert MAX_ARCHIVE_MEMBERS == 50_000


def test_an_archive_within_the_limits_extracts(tmp_path):
    path = archive(tmp_path, [("lfw/A/A_0001.jpg", 1000), ("lfw/B/B_0001.jpg", 10)])
    assert safe_extract(path, tmp_path / "target") == ["lfw/A/A_0001.jpg", "lfw/B/B_0001.jpg"]
    assert (tmp_path / "target" / "lfw" / "A" / "A_0001.jpg").stat().st_size == 1000


@needs_fifo
def test_a_fifo_as_the_archive_is_refused(tmp_path):
    fifo = tmp_path / "lfw.tgz"
    os.mkfifo(fifo)
    with pytest.raises(DataError) as e:
        within(BACKSTOP, safe_extract, fifo, tmp_path / "target")
    assert str(e.value) == f"{fifo}: cannot read archive: not a regular file (a FIFO)"
