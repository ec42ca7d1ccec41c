"""The one-pass YAML reader (spec/yaml_source.py) against PyYAML's own safe loader, and its errors for anchors.

The reader builds values straight from libyaml's events (no node tree), so the reference is independent: every
YAML file in the project that PyYAML's ``safe_load`` reads must read to the same values, and documents written to
exercise anchors, aliases, merges and every scalar type must too.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from graphspec.errors import GraphspecError
from graphspec.spec.yaml_source import MAX_DEPTH, parse_yaml

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("specs", "recipes", "examples", "graphspec", "tests")  # the project's own (not a user's run folders)


def project_yaml() -> list[Path]:
    """Every YAML file of the project that PyYAML reads as one document (the corpus holds broken ones too)."""
    found = []
    for path in sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("**/*.yaml")):
        if not path.is_file():
            continue
        try:
            list(yaml.safe_load_all(path.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
            continue
        if len(list(yaml.safe_load_all(path.read_text()))) == 1 and "!!" not in path.read_text():
            found.append(path)
    return found


@pytest.mark.parametrize("path", project_yaml(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_project_file_reads_as_pyyaml_reads_it(path):
    text = path.read_text()
    expected = yaml.safe_load(text)
    try:
        assert parse_yaml(text, str(path)).data == expected
    except GraphspecError as e:  # refused on purpose: a limit or rule PyYAML does not have
        assert "corpus" in path.parts, e


DOCUMENTS = [
    "a: &x {b: 1, c: [1, 2]}\nd: *x\ne:\n  <<: *x\n  b: 5\n",
    "<<: [{a: 1}, {a: 2, b: 3}]\nc: 4\n",
    "base: &b {x: 1, y: 2}\nmore: &m {y: 3, z: 4}\nboth:\n  <<: [*b, *m]\n  w: 0\n",
    "s: &s str\nl: [*s, *s, &n 3, *n]\nk: {*s : 1}\n",
    "x: !!str 12\ny: '12'\nz: 0x1F\nw: .inf\nv: ~\nu: yes\nt: 1_000\nr: 1.5e3\nq: 0o17\np: -.5\n",
    "7: one\n2.5: two\nnull: three\ntrue: four\n",
    "nested: [[[[1]]], {a: [{b: [2]}]}]\nblock:\n  - a\n  - - b\n    - c\n  - {d: e}\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "---\nonly: document\n...\n",
    "---\n",
    "[1, 2, 3]\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_documents_read_as_pyyaml_reads_them(text):
    expected = yaml.safe_load(text)
    data = parse_yaml(text).data
    if isinstance(expected, dict):  # YAML 1.1 keys that are not strings are kept as their text (see the loader)
        expected = {k if isinstance(k, (int, str)) and not isinstance(k, bool) else _text_key(text, k): v
                    for k, v in expected.items()}
    assert data == expected


def _text_key(text: str, key) -> str:
    return {2.5: "2.5", None: "null", True: "true"}[key]


def test_positions_of_aliased_values_point_at_the_anchored_text():
    source = parse_yaml("a: &x {b: 1}\nd: *x\n")
    assert (source.loc(("d",)).line, source.loc(("d", "b")).line, source.loc(("d", "b")).col) == (2, 1, 8)


@pytest.mark.parametrize("text, message, line, column", [
    ("a: &x [1]\nb: *y\n", "alias '*y' names no anchor defined before it; an alias repeats a node anchored earlier "
                           "with '&y'", 2, 4),
    ("b: *y\na: &y 1\n", "alias '*y' names no anchor defined before it; an alias repeats a node anchored earlier "
                         "with '&y'", 1, 4),
    ("a: &x [1, *x]\n", "alias '*x' is inside the node it names; an alias repeats a node anchored earlier with '&x'",
     1, 11),
    ("a: &x 1\nb: &x 2\n", "anchor '&x' is defined twice (first at line 1); every anchor may appear once", 2, 4),
    ("a: 1\na: 2\n", "duplicate key 'a' (first defined at line 1); every key may appear once", 2, 1),
    ("? [a]\n: 1\n", "mapping keys must be plain scalars", 1, 3),
    ("<<: 3\n", "'<<' merge expects a mapping or a list of mappings", 1, 5),
    ("<<: [{a: 1}, [2]]\n", "'<<' merge expects a mapping or a list of mappings", 1, 14),
    ("a: !!python/object:os.system x\n", "YAML tag '!!python/object:os.system' is not allowed; graphspec reads "
                                         "plain YAML only (no Python objects or custom tags)", 1, 4),
    ("a: !!map [1]\n", "YAML tag '!!map' is not allowed; graphspec reads plain YAML only (no Python objects or "
                       "custom tags)", 1, 4),
    ("a: 2001-12-14\n", "YAML tag '!!timestamp' is not allowed; graphspec reads plain YAML only (no Python objects "
                        "or custom tags)", 1, 4),
    ("a: 1\n---\nb: 2\n", "expected a single YAML document, found several ('---')", 2, 1),
])
def test_refusals_are_located(text, message, line, column):
    with pytest.raises(GraphspecError) as info:
        parse_yaml(text, "f.yaml")
    (problem,) = info.value.problems
    assert (problem.message, problem.location.line, problem.location.col) == (message, line, column)


def test_aliases_cannot_nest_deeper_than_the_text_may():
    """Each anchor nests 40 levels (allowed), its alias inside another 40: 80 levels once expanded, refused
    without recursion (a low recursion limit must not matter)."""
    inner = "[" * 40 + "]" * 40
    text = f"a: &x {inner}\nb: {'[' * 39}*x{']' * 39}\n"
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        with pytest.raises(GraphspecError) as info:
            parse_yaml(text)
    finally:
        sys.setrecursionlimit(old)
    (problem,) = info.value.problems
    assert problem.message == f"nesting is deeper than {MAX_DEPTH} levels"
    assert (problem.location.line, problem.location.col) == (1, 6 + MAX_DEPTH - 39)  # the top mapping is level 1


def test_the_reader_does_not_leave_the_garbage_collector_paused():
    import gc
    parse_yaml("a: 1\n")
    assert gc.isenabled()
    with pytest.raises(GraphspecError):
        parse_yaml("a: *y\n")
    assert gc.isenabled()
