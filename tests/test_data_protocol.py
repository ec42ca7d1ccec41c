"""People and pairs files: View 1, View 2, header-less name lists, and errors at file:line:col."""
from __future__ import annotations

import pytest

from graphspec.data import DataError
from graphspec.faces.data import Pair, image_path, read_pairs, read_people


def write(tmp_path, text, name="f.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_at(path, reader):
    with pytest.raises(DataError) as e:
        reader(path)
    loc = e.value.problem.location
    return loc.line, loc.col, e.value.problem.message


def test_view1_pairs(tmp_path):
    path = write(tmp_path, "2\nAnn_A\t1\t2\nBob_B 1 3\nAnn_A\t1\tBob_B\t2\nBob_B\t3\tCid_C\t1\n")
    pairs = read_pairs(path)
    assert pairs == [Pair("Ann_A", 1, "Ann_A", 2, True, 0, 2), Pair("Bob_B", 1, "Bob_B", 3, True, 0, 3),
                     Pair("Ann_A", 1, "Bob_B", 2, False, 0, 4), Pair("Bob_B", 3, "Cid_C", 1, False, 0, 5)]
    assert pairs[2].paths("/r") == (image_path("/r", "Ann_A", 1), image_path("/r", "Bob_B", 2))
    assert str(image_path("/r", "Ann_A", 12)) == "/r/Ann_A/Ann_A_0012.jpg"


def test_view2_pairs_have_folds(tmp_path):
    lines = ["3\t1"]
    for f in range(3):
        lines += [f"P{f}\t1\t2", f"P{f}\t1\tQ{f}\t1"]
    pairs = read_pairs(write(tmp_path, "\n".join(lines) + "\n"))
    assert [(p.fold, p.same) for p in pairs] == [(1, True), (1, False), (2, True), (2, False), (3, True), (3, False)]


@pytest.mark.parametrize("text,line,col,message", [
    ("x\n", 1, 1, "expected the number of pairs (an integer); received 'x'"),
    ("1 2 3\n", 1, 1, "expected a header 'N' or 'FOLDS N'; received 3 fields"),
    ("1\nA\t1\tB\t2\nA\t1\tB\t2\n", 2, 1, "expected a matched pair 'NAME I J'; received 4 fields"),
    ("1\nA\t1\t2\nA\t1\t2\n", 3, 1, "expected a mismatched pair 'NAME1 I NAME2 J'; received 3 fields"),
    ("1\nA\t1\tzero\n", 2, 5, "expected an image number (an integer); received 'zero'"),
    ("1\nA\t0\t2\n", 2, 3, "expected an image number >= 1; received 0"),
    ("2\nA\t1\t2\n", 3, 1, "unexpected end of file: expected a matched pair 'NAME I J'"),
    ("1\nA 1 2\nA 1 B 1\nC 1 2\n", 4, 1, "unexpected line after the pairs the header announced: 'C 1 2'"),
    ("2 1\nA 1 2\nA 1 B 1\nA 1 B 1\n", 4, 1, "expected a matched pair 'NAME I J' (fold 2); received 4 fields"),
])
def test_pairs_errors_point_at_line_and_column(tmp_path, text, line, col, message):
    assert error_at(write(tmp_path, text), read_pairs) == (line, col, message)


def test_people_view1_view2_and_name_lists(tmp_path):
    v1 = read_people(write(tmp_path, "2\nAnn_A\t3\nBob_B\t1\n"))
    assert [(p.name, p.images, p.fold, p.line) for p in v1] == [("Ann_A", 3, 0, 2), ("Bob_B", 1, 0, 3)]
    v2 = read_people(write(tmp_path, "2\n1\nAnn_A\t3\n2\nBob_B\t1\nCid_C\t2\n"))
    assert [(p.name, p.fold) for p in v2] == [("Ann_A", 1), ("Bob_B", 2), ("Cid_C", 2)]
    names = read_people(write(tmp_path, "Ann_A\t3\nBob_B\t1\n"))  # lfw-names.txt has no count line
    assert [(p.name, p.images) for p in names] == [("Ann_A", 3), ("Bob_B", 1)]


@pytest.mark.parametrize("text,line,col,message", [
    ("2\nAnn_A\t3\n", 3, 1, "unexpected end of file: expected a 'NAME N' line (2 announced)"),
    ("1\nAnn_A\tthree\n", 2, 7, "expected an image count (an integer); received 'three'"),
    ("2\nAnn_A\t3\nAnn_A\t1\n", 3, 1, "person 'Ann_A' listed twice (first at line 2)"),
    ("1\nAnn_A 3 4\n", 2, 1, "expected 'NAME N' (2 fields); received 3 fields"),
    ("1\nAnn_A\t0\n", 2, 7, "expected an image count >= 1; received 0"),
])
def test_people_errors_point_at_line_and_column(tmp_path, text, line, col, message):
    assert error_at(write(tmp_path, text), read_people) == (line, col, message)


def test_missing_file_is_a_located_error(tmp_path):
    with pytest.raises(DataError) as e:
        read_pairs(tmp_path / "nope.txt")
    assert str(e.value) == f"{tmp_path / 'nope.txt'}: protocol file not found"
