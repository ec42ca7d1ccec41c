"""``graphspec dataset``: the report as text and JSON, creating folders, and located errors (exit 2)."""
from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from graphspec.faces.data.command import main, register_cli
from graphspec.errors import GraphspecError

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    for name, n in {"Ann_A": 3, "Bob_B": 1, "Cid_C": 2}.items():
        (root / name).mkdir(parents=True)
        for j in range(1, n + 1):
            Image.new("RGB", (8, 8), (j, j, j)).save(root / name / f"{name}_{j:04d}.jpg")
    (root / "Bob_B" / "Bob_B_0002.jpg").write_bytes(b"")
    (root / "Empty_E").mkdir()
    return root


def run_json(capsys, *argv):
    assert main([*map(str, argv), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_report(capsys, folder):
    r = run_json(capsys, folder)
    assert (r["identities"], r["images"]) == (3, 6)
    assert r["per_person"] == {"min": 1, "median": 2, "mean": 2.0, "max": 3}
    assert r["histogram"] == [{"images": "1", "people": 1, "total": 1}, {"images": "2", "people": 1, "total": 2},
                              {"images": "3-4", "people": 1, "total": 3}]
    assert r["skipped"] == [{"path": "Bob_B/Bob_B_0002.jpg", "reason": "empty file (0 bytes)"}]
    assert r["empty_folders"] == ["Empty_E"] and r["largest"][0] == ["Ann_A", 3]


def test_people_file_and_min_images(capsys, folder, tmp_path):
    people = tmp_path / "people.txt"
    people.write_text("3\nAnn_A\t4\nBob_B\t1\nZed_Z\t1\n")
    r = run_json(capsys, folder, "--people", people, "--min-images", 2)
    assert (r["identities"], r["images"]) == (1, 3)
    assert r["missing_people"] == ["Zed_Z"] and r["count_mismatches"] == [["Ann_A", 4, 3]]


def test_table_report_lists_skipped_files(capsys, folder):
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "3 identities, 6 images" in out and "Bob_B/Bob_B_0002.jpg: empty file (0 bytes)" in out
    assert "ignored 1 empty folder(s): Empty_E" in out


def test_verify_decodes_every_image(capsys, folder):
    (folder / "Cid_C" / "Cid_C_0002.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(300) + b"\xff\xd9")
    assert run_json(capsys, folder)["images"] == 6  # passes the cheap checks
    r = run_json(capsys, folder, "--verify")
    assert r["images"] == 5 and r["verified"]
    assert [s["path"] for s in r["skipped"]] == ["Bob_B/Bob_B_0002.jpg", "Cid_C/Cid_C_0002.jpg"]


def test_synthetic_creates_the_folder(capsys, tmp_path):
    r = run_json(capsys, tmp_path / "syn", "--synthetic", "3x2", "--seed", "4")
    assert (r["identities"], r["images"]) == (3, 6)


def test_user_errors_are_located_with_exit_2(capsys, folder, tmp_path):
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'missing'}: dataset folder not found (pass "
                                               f"--download to fetch LFW, or see `graphspec dataset --help`)")
    bad = tmp_path / "people.txt"
    bad.write_text("2\nAnn_A\tx\n")
    assert main([str(folder), "--people", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {bad}:2:7: expected an image count (an integer); "
                                               f"received 'x'")


def test_register_cli_adds_a_dataset_command_raising_graphspec_errors(tmp_path):
    parser = argparse.ArgumentParser(prog="graphspec")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dataset", str(tmp_path / "nope"), "--min-images", "2"])
    with pytest.raises(GraphspecError):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["dataset", "x", "--synthetic", "3by2"])
    with pytest.raises(SystemExit):
        parser.parse_args(["dataset", "x", "--min-images", "0"])
