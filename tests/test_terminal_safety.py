"""Names and strings from files never reach a terminal raw: escape sequences in a spec's name, a vertex name, a
log record or a dataset folder are printed as escapes (graphspec.text.printable) by every output — the summary's
table, markdown and JSON, validate, draw's DOT and Mermaid files, errors and warnings, log lines, the dataset
report."""
from __future__ import annotations

import io
import json
import logging
import re

import pytest
from rich.console import Console

from graphspec.errors import GraphspecError, Location, Problem
from graphspec.text import markup_safe, printable, printable_lines

# every attack at once, as YAML double-quoted escapes: clear screen, a window title (OSC 0, BEL-terminated), an
# OSC 8 hyperlink (ST-terminated), a one-byte C1 CSI (U+009B) and OSC (U+009D), a right-to-left override, rich
# markup, a carriage return that would overwrite the line, DEL
HOSTILE = r"\e[2J\e]0;pwned\a\e]8;;http://evil.example/\e\\link\e]8;;\e\\\x9b31m\x9d0;t\a\u202e[red]x[/red]\r\x7f"
HOSTILE_ESCAPED = (r"\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil.example/\x1b\link\x1b]8;;\x1b\\x9b31m\x9d0;t\x07"
                   r"\u202e[red]x[/red]\r\x7f")
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e\ud800-\udfff]")  # anything unsafe but the line feed


def spec_text(name: str = "net", vertex: str = "d") -> str:
    return (f'version: 1\nname: "{name}"\ninputs:\n  x: {{type: feed_forward, size: 4}}\nvertices:\n'
            f'  "{vertex}": {{type: dense, inputs: [x], out: 3}}\n  o: {{type: output, inputs: ["{vertex}"], out: 2}}\n'
            f'outputs: [o]\n')


def assert_safe(*texts: str) -> None:
    for text in texts:
        raw = RAW.findall(text)
        assert not raw, f"raw control characters {raw!r} in {text!r}"
        text.encode("utf-8")  # a lone surrogate could not be written to a UTF-8 terminal


# --- the function --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char, shown", [("\x1b", r"\x1b"), ("\x07", r"\x07"), ("\x00", r"\x00"), ("\x7f", r"\x7f"),
                                         ("\x9b", r"\x9b"), ("\x9d", r"\x9d"), ("\x85", r"\x85"), ("\t", r"\t"),
                                         ("\n", r"\n"), ("\r", r"\r"), ("\ud800", r"\ud800"), ("\udfff", r"\udfff"),
                                         ("\u202e", r"\u202e"), ("\u2066", r"\u2066"), ("\u200f", r"\u200f")])
def test_every_unsafe_character_is_written_as_python_writes_its_escape(char, shown):
    assert printable(f"a{char}b") == f"a{shown}b"


@pytest.mark.parametrize("text", ["inception-3a", "net [v2]", "Zoë ⟶ 東京 🙂", "C:\\path\\x1b", "", "a\u00a0b"])
def test_safe_text_is_returned_unchanged(text):
    assert printable(text) is text or printable(text) == text
    assert printable(text) == text


def test_the_whole_hostile_name_is_escaped_and_non_strings_are_converted():
    import yaml
    name = yaml.safe_load(f'n: "{HOSTILE}"')["n"]
    assert printable(name) == HOSTILE_ESCAPED
    assert printable(Location("a\x1bb.yaml", 3, 4)) == r"a\x1bb.yaml:3:4"


def test_printable_lines_keeps_line_breaks_and_markup_safe_escapes_markup():
    assert printable_lines("one\x1b[2J\ntwo\r") == "one\\x1b[2J\ntwo\\r"
    assert markup_safe("[red]x[/red]\x1b") == r"\[red]x\[/red]\x1b"
    out = io.StringIO()
    Console(file=out, width=200).print(f"name: {markup_safe('[bold red]x[/bold red]')}")
    assert out.getvalue() == "name: [bold red]x[/bold red]\n"  # printed as written, styles nothing


def test_printable_is_linear_on_a_large_hostile_string():
    text = "\x1b[2J" * 200_000  # 800,000 characters, a fifth of them ESC
    assert printable(text) == r"\x1b[2J" * 200_000


# --- errors and warnings -------------------------------------------------------------------------------------


def test_a_problem_escapes_its_location_vertex_and_message_but_keeps_its_own_line_breaks():
    p = Problem("bad value '\x1b]0;t\x07'\n  second line", Location("f\x9b.yaml", 2, 3), "v\x1b[2J", ("x",))
    assert str(p) == "f\\x9b.yaml:2:3: vertex 'v\\x1b[2J': bad value '\\x1b]0;t\\x07'\n  second line"
    assert str(GraphspecError("e\x1b", location=Location("f.yaml"))) == "f.yaml: e\\x1b"


@pytest.mark.parametrize("command", [["validate"], ["summary"], ["summary", "--format", "markdown"],
                                     ["draw", "-o", "OUT.dot"]])
def test_a_hostile_vertex_name_is_refused_with_an_escaped_error(command, tmp_path, cli):
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(vertex=r"d\e[2J\x9b31m\a"))
    argv = [c.replace("OUT", str(tmp_path / "out")) for c in command]
    rc, out, err = cli(argv[0], path, *argv[1:])
    assert rc == 2
    assert_safe(out, err)
    assert (f"error: {path}:6:3: vertex 'd\\x1b[2J\\x9b31m\\x07': invalid vertex name: 'd\\x1b[2J\\x9b31m\\x07' may "
            "contain only letters, digits, '_' and '-', and must not start with '-'") in err


def test_a_lone_surrogate_in_a_name_is_refused_with_an_error_a_terminal_can_show(tmp_path, cli):
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(name=r"net\ud800"))
    rc, out, err = cli("summary", path)
    assert rc == 2
    assert_safe(out, err)
    assert r"received 'net\ud800'" in err


# --- every rendering of a spec whose name is hostile ---------------------------------------------------------


@pytest.fixture
def hostile(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(spec_text(name=HOSTILE))
    return path


def test_summary_table_shows_the_name_escaped_and_its_markup_as_written(hostile, cli):
    rc, out, err = cli("summary", hostile)
    assert rc == 0, err
    assert_safe(out, err)
    assert HOSTILE_ESCAPED in "".join(out.split())  # the title (wrapped to the table's width), markup as written
    assert "d (dense)" in out


def test_summary_markdown_and_json_escape_the_name(hostile, cli):
    rc, out, err = cli("summary", hostile, "--format", "markdown")
    assert rc == 0 and out.startswith(f"# {HOSTILE_ESCAPED}\n")
    assert_safe(out, err)
    rc, out, err = cli("summary", hostile, "--format", "json")
    assert rc == 0
    assert_safe(out, err)
    import yaml
    assert json.loads(out)["name"] == yaml.safe_load(f'n: "{HOSTILE}"')["n"]  # JSON keeps the value, escaped


def test_validate_prints_no_raw_control_character(hostile, cli):
    rc, out, err = cli("validate", hostile)
    assert rc == 0 and out == f"{hostile}: ok (2 vertices, outputs: o)\n"
    assert_safe(out, err)


@pytest.mark.parametrize("suffix", [".dot", ".mmd"])
def test_draw_writes_the_name_escaped(hostile, tmp_path, cli, suffix):
    out_file = tmp_path / f"g{suffix}"
    rc, out, err = cli("draw", hostile, "-o", out_file)
    assert rc == 0, err
    text = out_file.read_text()
    assert_safe(out, err, text)
    first = text.splitlines()[0]
    if suffix == ".dot":  # a DOT string: the escapes' backslashes doubled, so DOT shows them as written
        assert first == 'digraph "' + HOSTILE_ESCAPED.replace("\\", "\\\\") + '" {'
    else:
        assert first == f"%% {HOSTILE_ESCAPED}"


def test_draw_escapes_quotes_and_backslashes_in_dot_strings():
    from graphspec.draw import Drawing, Node, to_dot, to_mermaid
    d = Drawing(nodes={"a": Node("a", 'x"y\\z\x1b\\ndense', "layer", ())})
    dot, mermaid = to_dot(d, 'n"\\'), to_mermaid(d, "t\nflowchart LR")
    assert 'digraph "n\\"\\\\" {' in dot
    assert '"a" [label="x\\"y\\\\z\\\\x1b\\ndense"];' in dot
    assert mermaid.startswith("%% t\\nflowchart LR\nflowchart TD\n")  # no second statement smuggled in
    assert 'n_a["x#quot;y\\z\\x1b<br/>dense"]' in mermaid


# --- log lines and the dataset report ------------------------------------------------------------------------


def test_log_records_are_escaped_on_the_command_line(capsys):
    from graphspec.log import command_line, logger
    with command_line():
        logger.warning("skipped faces/\x1b]0;pwned\x07/a.jpg: not an image")
        logger.info("image cache: \x9b2J\nsecond line")
    err = capsys.readouterr().err
    assert err == "warning: skipped faces/\\x1b]0;pwned\\x07/a.jpg: not an image\nimage cache: \\x9b2J\nsecond line\n"
    assert all(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_the_dataset_report_escapes_folder_names_and_their_markup():
    from graphspec.faces.data.report import DatasetReport, render_text
    evil = "[red]Eve\x1b[2J"
    report = DatasetReport("faces\x1b]0;t\x07", 2, 5, per_person={"min": 2, "median": 2.5, "mean": 2.5, "max": 3},
                           histogram=[{"images": "2", "people": 1, "total": 2}], largest=[[evil, 3], ["Bob", 2]],
                           skipped=[{"path": f"{evil}/x.jpg", "reason": "not an image\x07"}],
                           empty_folders=[evil], missing_people=[evil], count_mismatches=[[evil, 4, 3]])
    out = io.StringIO()
    render_text(report, Console(file=out, width=200, highlight=False))
    text = out.getvalue()
    assert_safe(text)
    assert text.startswith("faces\\x1b]0;t\\x07: 2 identities, 5 images\n")
    assert "largest: [red]Eve\\x1b[2J (3), Bob (2)\n" in text
    assert "  [red]Eve\\x1b[2J/x.jpg: not an image\\x07\n" in text
    assert "ignored 1 empty folder(s): [red]Eve\\x1b[2J\n" in text
    assert "[red]Eve\\x1b[2J: the people file lists 4 images, the folder has 3\n" in text


def test_models_escapes_what_plugins_contribute(cli, monkeypatch, tmp_path):
    """A plugin's model folder names the models (file names) and describes them (model cards): its text is a file's
    text like any other."""
    from graphspec import catalog
    name = "evil\x1b]0;pwned\a"
    monkeypatch.setattr(catalog, "available", lambda: {name: tmp_path / f"{name}.safetensors"})
    monkeypatch.setattr(catalog, "summary", lambda _: "card \x1b[2J\u202e")
    rc, out, err = cli("models")
    assert rc == 0
    assert_safe(out, err)
    assert r"evil\x1b]0;pwned\x07  card \x1b[2J\u202e  " in out
