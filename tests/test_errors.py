"""Every way a user can get a spec wrong gives one clean, located error: never a traceback.

``tests/corpus/`` holds one small broken spec per error class. For each file the table below says which
problems ``load_spec`` must report: the exact message, the vertex, and *where*, given as a piece of the file's
text (``At``); the expected ``line:col`` is computed from the file itself, never copied from program output.
The same expectations are checked through the command line (``validate`` and ``summary``): exit status 2 and
``error: FILE:LINE:COL: vertex 'NAME': message`` on stderr.

Cases marked ``xfail(strict=True)`` are real bugs or poor messages in graphspec (see the reason); they assert
what a user should see, so they start passing (and must then be unmarked) once graphspec is fixed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import pytest

import graphspec
from graphspec import GraphspecError, load_spec
from graphspec.cli import main
from graphspec.graph import SpecWarning
from graphspec.layers.activations import ACTIVATIONS
from graphspec.registry import all_types

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"
GRAPHSPEC = ROOT / ".venv" / "bin" / "graphspec"
MAX_BYTES = 4 * 1024 * 1024  # the documented file-size limit (4 MiB)


# --- locating expectations in the file text ---------------------------------------------------------------


@dataclass(frozen=True)
class At:
    """The position of the ``nth`` occurrence of ``needle`` (after the first line containing ``after``),
    moved right by ``offset`` characters. ``any_col`` accepts any column on that line."""

    needle: str
    nth: int = 1
    offset: int = 0
    after: Optional[str] = None
    any_col: bool = False

    def resolve(self, path: Path) -> tuple[int, int]:
        text = path.read_text(encoding="utf-8")
        start = 0
        if self.after is not None:
            start = text.index(self.after)
        idx = start - 1
        for _ in range(self.nth):
            idx = text.index(self.needle, idx + 1)
        idx += self.offset
        line = text.count("\n", 0, idx) + 1
        col = idx - (text.rfind("\n", 0, idx) + 1) + 1
        return line, col


def loc(path: Path, at: At) -> str:
    """``FILE:LINE:COL`` of a position, as messages that refer to another place print it."""
    line, col = at.resolve(path)
    return f"{path}:{line}:{col}"


Message = Union[str, "re.Pattern[str]", Callable[[Path], Union[str, "re.Pattern[str]"]]]


@dataclass(frozen=True)
class Expect:
    message: Message  # exact text, a regex (for bugs whose fixed wording is open) or a function of the path
    at: Optional[At]  # None: the whole file (no line)
    vertex: Optional[str] = None

    def text(self, path: Path):
        return self.message(path) if callable(self.message) else self.message


@dataclass(frozen=True)
class Case:
    file: str
    problems: tuple[Expect, ...]
    bug: Optional[str] = None  # xfail(strict) reason: what graphspec does wrong

    @property
    def path(self) -> Path:
        return CORPUS / self.file

    def param(self):
        marks = [pytest.mark.xfail(strict=True, reason=self.bug)] if self.bug else []
        return pytest.param(self, id=self.file.removesuffix(".yaml"), marks=marks)


def E(message, at=None, vertex=None) -> Expect:
    return Expect(message, at, vertex)


def one_of(names) -> str:
    """How the messages list allowed values: 'a', 'b' or 'c'."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


EMPTY = "the spec is empty; expected a mapping with at least 'version', 'inputs', 'vertices' and 'outputs'"
ROOT_MSG = "expected a mapping at the top level (version, name, inputs, vertices, outputs); received "
NOT_PLAIN = " is not allowed; graphspec reads plain YAML only (no Python objects or custom tags)"
TOP_KEYS = "blocks, defaults, description, inputs, name, outputs, seed, version, vertices"
CONV_KEYS = ("activation, bias, bias_init, convolution_mode, dilation, gradient_normalization, "
             "gradient_normalization_threshold, group, groups, in, inputs, kernel, l1, l1_bias, l2, l2_bias, out, "
             "padding, stride, type, updater, weight_init")
DUP = "; every key may appear once"
NAME_CHARS = "may contain only letters, digits, '_' and '-', and must not start with '-'"
UNIQUE = "vertex and input names must be unique"
ACTS = one_of(ACTIVATIONS)
PAIR = "expected a positive integer or a list of 2 positive integers"

def known_types() -> str:
    return ", ".join(sorted(all_types()))


def unknown_type(name: str, suggestion: str = "conv1d") -> str:
    return f"unknown vertex type '{name}' (did you mean '{suggestion}'?); known types: {known_types()}"


CASES = [
    # --- the file and its YAML ---------------------------------------------------------------------------
    Case("empty.yaml", (E(EMPTY, At("", 1)),)),
    Case("comments_only.yaml", (E(EMPTY, At("#")),)),
    Case("root_list.yaml", (E(ROOT_MSG + "a list", At("- version")),)),
    Case("root_scalar.yaml", (E(ROOT_MSG + "a string", At("just")),)),
    Case("root_number.yaml", (E(ROOT_MSG + "a number", At("42")),)),
    Case("yaml_syntax.yaml", (E("YAML syntax error: mapping values are not allowed here", At(": oops")),)),
    Case("tab_indent.yaml", (E("YAML syntax error: found character '\\t' that cannot start any token "
                               "(while scanning for the next token)", At("\t")),)),
    Case("bad_indent.yaml", (E("YAML syntax error: expected <block end>, but found '<block mapping start>' "
                               "(while parsing a block mapping)", At(" e:", offset=1)),)),
    Case("unclosed_flow.yaml", (E("YAML syntax error: this '[' is never closed (expected ',' or ']', but got '}' "
                                  "at line 6, column 39)", At("[x, out")),)),
    Case("unclosed_flow_next_line.yaml", (E("YAML syntax error: this '[' is never closed (expected ',' or ']', "
                                            "but got ':' at line 7, column 8)", At("[x\n")),)),
    Case("control_char.yaml", (E("character '\\x07' (U+0007) is not allowed in YAML; remove it", At("\x07")),)),
    Case("python_apply.yaml", (E("YAML tag '!!python/object/apply:os.system'" + NOT_PLAIN, At("!!python")),)),
    Case("python_name.yaml", (E("YAML tag '!!python/name:os.system'" + NOT_PLAIN, At("!!python")),)),
    Case("python_object_new.yaml", (E("YAML tag '!!python/object/new:subprocess.check_output'" + NOT_PLAIN,
                                      At("!!python")),)),
    Case("custom_tag.yaml", (E("YAML tag '!foo'" + NOT_PLAIN, At("!foo")),)),
    # Which expanded value crosses the limit depends on the counting; every leaf of the bomb is on line 'a'.
    Case("alias_bomb.yaml", (E("the document expands to more than 200,000 values (an alias bomb?)",
                               At("a: &a", any_col=True)),)),
    # root mapping = level 1, so the 64th '[' opens level 65
    Case("deep_nesting.yaml", (E("nesting is deeper than 64 levels", At("[", offset=63)),)),
    Case("deep_nesting_block.yaml", (E("nesting is deeper than 64 levels", At("-", nth=64)),)),
    Case("invalid_utf8.yaml", ()),  # positions are byte-based: see test_invalid_utf8
    Case("dup_key_top.yaml", (E("duplicate key 'name' (first defined at line 2)" + DUP, At("name:", 2)),)),
    Case("dup_key_vertex.yaml", (E("duplicate key 'out' (first defined at line 9)" + DUP, At("out:", 2)),)),
    Case("dup_key_flow.yaml", (E("duplicate key 'out' (first defined at line 6)" + DUP, At("out: 3")),)),
    Case("dup_vertex_name.yaml", (E("duplicate key 'h' (first defined at line 6)" + DUP, At("  h:", 2, 2)),)),
    Case("two_documents.yaml", (E("expected a single YAML document, found several ('---')", At("---")),)),

    # --- the document ------------------------------------------------------------------------------------
    Case("missing_version.yaml", (E("missing required key 'version'; this graphspec reads version 1 "
                                    "(add 'version: 1')", At("name:")),)),
    Case("version_2.yaml", (E("spec version 2 is newer than this graphspec understands (up to 1); "
                              "upgrade graphspec", At("version:")),)),
    Case("version_one.yaml", (E("'version': expected a positive integer; received 'one'", At("version:")),)),
    Case("version_zero.yaml", (E("'version': expected a positive integer; received 0", At("version:")),)),
    Case("version_float.yaml", (E("'version': expected a positive integer; received 1.5", At("version:")),)),
    Case("version_bool.yaml", (E("'version': expected a positive integer; received True", At("version:")),)),
    Case("missing_inputs.yaml", (E("missing required key 'inputs'", At("version")),)),
    Case("missing_vertices.yaml", (E("missing required key 'vertices'", At("version")),)),
    Case("missing_outputs.yaml", (E("missing required key 'outputs'", At("version")),)),
    Case("empty_outputs.yaml", (E("'outputs': list should have at least 1 item after validation, not 0; "
                                  "received []", At("outputs:")),)),
    Case("unknown_top_key.yaml", (E(f"unknown key 'descripton' (did you mean 'description'?); expected one of: "
                                    f"{TOP_KEYS}", At("descripton:")),)),
    Case("misspelled_vertices.yaml", (
        E("missing required key 'vertices'", At("version")),
        E(f"unknown key 'vertice' (did you mean 'vertices'?); expected one of: {TOP_KEYS}", At("vertice:")))),
    Case("enum_defaults_activation.yaml", (E(f"'defaults.activation': expected {ACTS}; received 'relux' "
                                             "(did you mean 'relu'?)", At("activation:")),)),
    Case("input_type_unknown.yaml", (E("'inputs.x.type': expected 'convolutional', 'feed_forward', 'recurrent'; "
                                       "received 'image'", At("x:")),)),

    # --- vertices ----------------------------------------------------------------------------------------
    Case("unknown_type_convv.yaml", (E(lambda p: unknown_type("convv", "conv"), At("type: convv"), "c1"),)),
    Case("unknown_type_conv2d.yaml", (E(lambda p: unknown_type("conv2d"), At("type: conv2d"), "c1"),)),
    Case("missing_type.yaml", (E("missing required key 'type'", At("c1:"), "c1"),)),
    Case("unknown_param.yaml", (E(f"unknown key 'kernal' (did you mean 'kernel'?); expected one of: {CONV_KEYS}",
                                  At("kernal:"), "c1"),)),
    Case("param_out_abc.yaml", (E("'out': input should be a valid integer; received 'abc'", At("out:"), "c1"),)),
    Case("param_out_float.yaml", (E("'out': input should be a valid integer; received 4.5", At("out:"), "c1"),)),
    Case("param_out_negative.yaml", (E("'out': input should be greater than or equal to 1; received -4",
                                       At("out:"), "c1"),)),
    Case("param_out_huge.yaml", (E("'out': input should be less than or equal to 100000000; "
                                   "received 1000000000000", At("out:"), "c1"),)),
    Case("param_out_bool.yaml", (E(re.compile(r"'out': .*integer.*; received (True|true)"), At("out:"), "c1"),)),
    Case("param_padding_negative.yaml", (E("'padding': expected a non-negative integer or a list of 2 non-negative "
                                           "integers; received [1, -1]", At("padding:"), "c1"),)),
    Case("param_kernel_negative.yaml", (E(f"'kernel': {PAIR}; received -1", At("kernel:"), "c1"),)),
    Case("param_kernel_huge.yaml", (E(f"'kernel': {PAIR}; received 1000000000000", At("kernel:"), "c1"),)),
    Case("param_stride_zero.yaml", (E(f"'stride': {PAIR}; received 0", At("stride:"), "c1"),)),
    Case("param_kernel_short.yaml", (E(f"'kernel': {PAIR}; received [3]", At("kernel:"), "c1"),)),
    Case("param_kernel_triple.yaml", (E(f"'kernel': {PAIR}; received [3, 3, 3]", At("kernel:"), "c1"),)),
    Case("param_kernel_string.yaml", (E(f"'kernel': {PAIR}; received 'three'", At("kernel:"), "c1"),)),
    Case("enum_pooling_maxx.yaml", (E("'pooling': expected 'max', 'avg', 'sum' or 'pnorm'; received 'maxx' "
                                      "(did you mean 'max'?)", At("pooling:"), "p"),)),
    Case("enum_activation_relux.yaml", (E(f"'activation': expected {ACTS}; received 'relux' "
                                          "(did you mean 'relu'?)", At("activation:"), "p"),)),
    Case("enum_convmode_valid.yaml", (E("'convolution_mode': expected 'same', 'truncate' or 'strict'; "
                                        "received 'valid'", At("convolution_mode:"), "p"),)),
    Case("enum_op_sum.yaml", (E("'op': expected 'add', 'subtract', 'product', 'average', 'max', 'min' or 'divide'; "
                                "received 'sum'", At("op:"), "p"),)),
    Case("vertex_not_mapping.yaml", (E("expected a mapping with 'type' and 'inputs'; received 'dense'",
                                       At("h:"), "h"),)),
    Case("inputs_not_list.yaml", (E("'inputs' must be a list of vertex or input names; received 5",
                                    At("inputs:", 2), "d"),)),

    # --- names -------------------------------------------------------------------------------------------
    Case("name_dot.yaml", (E(f"invalid vertex name: 'a.b' {NAME_CHARS}", At("a.b:"), "a.b"),)),
    Case("name_reserved.yaml", (E("invalid vertex name: 'forward' is reserved by torch.nn.Module",
                                  At("forward:"), "forward"),)),
    Case("name_leading_space_dash.yaml", (E(f"invalid vertex name: ' -x' {NAME_CHARS}", At('" -x":'), " -x"),)),
    Case("input_name_dot.yaml", (E(f"invalid input name: 'x.y' {NAME_CHARS}", At("x.y:"), "x.y"),)),
    Case("input_name_reserved.yaml", (E("invalid input name: 'forward' is reserved by torch.nn.Module",
                                        At("forward:"), "forward"),)),
    Case("input_vertex_same_name.yaml", (E(lambda p: f"the name 'x' is defined twice (first at "
                                           f"{loc(p, At('x:'))}); {UNIQUE}", At("x: {type: dense"), "x"),)),
    Case("block_name_clash.yaml", (E(lambda p: f"the name 'b1-conv' is defined twice (first at "
                                     f"{loc(p, At('$name-conv:'))}); {UNIQUE}", At("b1-conv:"), "b1-conv"),)),
    Case("block_name_clash_reversed.yaml", (
        E(lambda p: f"the name 'b1-conv' is defined twice (first at {loc(p, At('b1-conv:'))});"
                    f" {UNIQUE} (from block 'conv_relu' used at {loc(p, At('b1:'))})",
          At("$name-conv:"), "b1-conv"),
        # independent of the clash, reported in the same run
        E("'output' takes exactly 1 input(s); received 2", At("inputs: [b1,"), "d"))),
    # a document, a shape and a graph problem, all in one run (the valid parts are analysed as far as they allow)
    Case("all_at_once.yaml", (
        E("unknown key 'strid' (did you mean 'stride'?); expected one of: " + ", ".join(sorted(
            ["activation", "bias", "bias_init", "convolution_mode", "dilation", "gradient_normalization",
             "gradient_normalization_threshold", "group", "groups", "in", "inputs", "kernel", "l1", "l1_bias", "l2", "l2_bias",
             "out", "padding", "stride", "type", "updater", "weight_init"])), At("strid"), "c1"),
        E("kernel 30 is larger than the input 8 plus padding 0 (convolution_mode 'truncate'); input shapes: "
          "x [3, 8, 8]", At("kernel: 30"), "c3"),
        E("input 'nope' does not exist; inputs must name a network input or another vertex", At("nope"), "m"))),

    # --- graph -------------------------------------------------------------------------------------------
    Case("unknown_input.yaml", (E("input 'conv11' does not exist (did you mean 'conv1'?); inputs must name a "
                                  "network input or another vertex", At("conv11"), "d"),)),
    Case("self_input.yaml", (E("a vertex cannot be its own input", At("[x, a]", offset=4), "a"),)),
    Case("output_missing.yaml", (E("output 'haed' is not a vertex (did you mean 'head'?)", At("haed")),)),
    Case("output_is_input.yaml", (E("output 'x' is not a vertex (outputs must be vertices, not network inputs)",
                                    At("x]", after="outputs:")),)),
    Case("output_twice.yaml", (E("output 'd' is listed twice", At("d]", after="outputs")),)),
    Case("arity_subtract3.yaml", (E("op 'subtract' needs exactly 2 inputs; received 3; input shapes: "
                                    "x [4], a [4], a [4]", At("inputs:", after="  s:"), "s"),)),
    Case("arity_l2_distance1.yaml", (E("'l2_distance' takes exactly 2 input(s); received 1",
                                       At("inputs:", after="  l2:"), "l2"),)),
    Case("arity_conv2.yaml", (E("'conv' takes exactly 1 input(s); received 2", At("inputs:", after="  c1:"), "c1"),)),
    Case("arity_no_inputs.yaml", (E("'dense' takes exactly 1 input(s); received 0", At("h:"), "h"),)),

    # --- shapes (8x8 input, conv kernel 3 -> 6x6, with stride 2 -> 3x3, truncate mode) ---------------------
    Case("merge_spatial.yaml", (E("inputs must agree on every dimension but the first (spatial sizes differ); "
                                  "received [4, 6, 6], [4, 3, 3]; input shapes: a [4, 6, 6], b [4, 3, 3]",
                                  At("inputs:", after="  m:"), "m"),)),
    Case("elementwise_shapes.yaml", (E("inputs must have identical shapes; received [4, 6, 6], [8, 6, 6]; "
                                       "input shapes: a [4, 6, 6], b [8, 6, 6]", At("inputs:", after="  s:"), "s"),)),
    Case("in_mismatch_conv.yaml", (E("'in' is 5 but the input has 3 channels; remove 'in' to infer it or fix the "
                                     "input; input shapes: x [3, 8, 8]", At("in: 5"), "c1"),)),
    Case("in_mismatch_dense.yaml", (E("'in' is 100 but the input has 144 features after flattening; remove 'in' "
                                      "to infer it or fix the input; input shapes: c1 [4, 6, 6]", At("in: 100"), "d"),)),
    Case("kernel_too_large.yaml", (E("kernel 11 is larger than the input 8 plus padding 0 (convolution_mode "
                                     "'truncate'); input shapes: x [3, 8, 8]", At("kernel:"), "c1"),)),
    Case("strict_not_divisible.yaml", (E("convolution_mode 'strict': (input 8 - kernel 3 + 2·padding 0) = 5 is not "
                                         "divisible by stride 2; use 'truncate' or 'same'; input shapes: x [3, 8, 8]",
                                         At("stride:"), "c1"),)),
    Case("conv_after_dense.yaml", (E("expected a convolutional input [channels, height, width]; received [10]; "
                                     "input shapes: h [10]", At("c1:"), "c1"),)),

    # --- blocks ------------------------------------------------------------------------------------------
    Case("block_unknown.yaml", (E("unknown block 'mpl' (did you mean 'mlp'?); defined blocks: mlp",
                                  At("block: mpl"), "h"),)),
    Case("block_missing_param.yaml", (
        E("block 'mlp' needs parameter(s) 'out'", At("h:"), "h"),
        E("block 'mlp' has no parameter 'uot' (did you mean 'out'?); its parameters: out", At("uot:"), "h"))),
    Case("block_bad_param_value.yaml", (E(lambda p: "'out': input should be greater than or equal to 1; received -8"
                                          f" (from block 'mlp' used at {loc(p, At('h:'))})",
                                          At("out: $out"), "h-hidden"),)),
    Case("block_recursive.yaml", (E("block 'loop' uses itself (blocks nest: loop:h); blocks must not be recursive",
                                    At("block: loop"), "h-inner"),)),
    Case("block_expr_unknown_name.yaml", (E("unknown name 'widht' (did you mean 'width'?); known: input, inputs, "
                                            "name, width", At("out:"), "h"),)),
    Case("block_expr_repeat_bomb.yaml", (E(re.compile(r".*(larger than|exceeds|limit).*"), At("out:"), "h"),)),
    Case("block_name_not_string.yaml", (E(re.compile(r".*\bblock\b.*"), At("block:"), "h"),)),
]

BY_FILE = {c.file: c for c in CASES}
SPECIAL = {"invalid_utf8.yaml", "cycle.yaml"}  # checked by their own tests below
WARN_ONLY = {"warn_unreachable.yaml"}


def _located(case: Case):
    """(file, line, col, vertex, message-or-regex) for every expected problem, sorted by position."""
    out = []
    for e in case.problems:
        line, col = e.at.resolve(case.path) if e.at else (0, 0)
        out.append((line, None if e.at and e.at.any_col else col, e.vertex, e.text(case.path)))
    return sorted(out, key=lambda t: (t[0], t[1] or 0))


def _same_message(expected, actual: str) -> bool:
    return bool(expected.fullmatch(actual)) if isinstance(expected, re.Pattern) else expected == actual


# --- real processes (slow to start: torch), run side by side while the in-process tests run -----------------


REAL_RUNS = {"python_apply": ("validate", "python_apply.yaml"), "summary_warning": ("summary", "warn_unreachable.yaml")}


@pytest.fixture(scope="module", autouse=True)
def real_runs(tmp_path_factory):
    """The real ``graphspec`` executable, each in an empty folder (to see whether a tag ran a command)."""
    started = {}
    for key, (command, name) in REAL_RUNS.items():
        cwd = tmp_path_factory.mktemp(key)
        proc = subprocess.Popen([str(GRAPHSPEC), command, str(CORPUS / name)], cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started[key] = (proc, cwd, [str(GRAPHSPEC), command])

    class Lazy(dict):
        def __missing__(self, key):
            proc, cwd, args = started[key]
            out, err = proc.communicate(timeout=120)
            self[key] = (subprocess.CompletedProcess(args, proc.returncode, out, err), cwd)
            return self[key]

    results = Lazy()
    yield results
    for proc, _, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- the corpus itself --------------------------------------------------------------------------------------


def test_every_corpus_file_has_a_case():
    files = {p.name for p in CORPUS.glob("*.yaml")}
    assert files == set(BY_FILE) | WARN_ONLY | SPECIAL, "corpus files and cases differ"
    assert len(files) >= 60


def test_corpus_files_are_small():
    for p in CORPUS.glob("*.yaml"):
        assert p.stat().st_size < 64 * 1024, p


# --- load_spec ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c.param() for c in CASES if c.file not in SPECIAL])
def test_load_spec_reports_located_problems(case: Case):
    start = time.process_time()
    with pytest.raises(GraphspecError) as info:
        load_spec(str(case.path))
    # alias bombs (9**9 values), deep nesting and block bombs are refused without expanding them (CPU time: the
    # bound must hold on a busy machine; a real expansion would take minutes)
    assert time.process_time() - start < 10.0
    problems = info.value.problems
    assert all(p.severity == "error" for p in problems)
    assert all(p.location.file == str(case.path) for p in problems)
    actual = sorted(((p.location.line, p.location.col, p.vertex, p.message) for p in problems),
                    key=lambda t: (t[0], t[1]))
    expected = _located(case)
    assert len(actual) == len(expected), "\n".join(str(p) for p in problems)
    for (line, col, vertex, message), (eline, ecol, evertex, emessage) in zip(actual, expected):
        assert _same_message(emessage, message), message
        assert (line, vertex) == (eline, evertex), message
        if ecol is not None:
            assert col == ecol, message
        assert col >= 1


# --- the command line ---------------------------------------------------------------------------------------


def _expected_lines(case: Case):
    lines = []
    for line, col, vertex, message in _located(case):
        where = f"{case.path}:{line}:{col}" if line else str(case.path)
        if col is None:
            where = f"{case.path}:{line}:" + r"\d+"
        else:
            where = re.escape(where)
        who = re.escape(f"vertex '{vertex}': ") if vertex else ""
        text = message.pattern if isinstance(message, re.Pattern) else re.escape(message)
        lines.append(re.compile(f"error: {where}: {who}{text}"))
    return lines


def _check_cli_failure(case: Case, command: str, capsys):
    rc = main([command, str(case.path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == 2, err
    assert "internal error" not in err
    err_lines = err.splitlines()
    expected = _expected_lines(case)
    assert len(err_lines) == len(expected), err
    for pattern in expected:
        assert any(pattern.fullmatch(line) for line in err_lines), f"{pattern.pattern!r} not in:\n{err}"


@pytest.mark.parametrize("case", [c.param() for c in CASES if c.file not in SPECIAL])
def test_cli_validate_prints_located_errors(case: Case, capsys):
    _check_cli_failure(case, "validate", capsys)


@pytest.mark.parametrize("case", [c.param() for c in CASES if c.file not in SPECIAL])
def test_cli_summary_fails_cleanly(case: Case, capsys):
    _check_cli_failure(case, "summary", capsys)


# --- special cases ------------------------------------------------------------------------------------------


def test_invalid_utf8(capsys):
    path = CORPUS / "invalid_utf8.yaml"
    raw = path.read_bytes()
    offset = raw.index(b"\xe9")
    line = raw.count(b"\n", 0, offset) + 1
    col = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    message = f"invalid UTF-8 (byte 0xe9 at offset {offset}); expected UTF-8 text"
    with pytest.raises(GraphspecError) as info:
        load_spec(str(path))
    (p,) = info.value.problems
    assert (p.message, p.location.file, p.location.line, p.location.col, p.vertex) == (
        message, str(path), line, col, None)
    for command in ("validate", "summary"):
        assert main([command, str(path)]) == 2
        out, err = capsys.readouterr()
        assert err == f"error: {path}:{line}:{col}: {message}\n"


def test_cycle_is_printed_in_data_flow_order(capsys):
    """a -> b -> c -> a (c feeds a); any rotation, reported on a vertex of the cycle at its 'inputs'."""
    path = CORPUS / "cycle.yaml"
    rotations = ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
    with pytest.raises(GraphspecError) as info:
        load_spec(str(path))
    (p,) = info.value.problems
    assert p.message in [f"the graph has a cycle: {r}" for r in rotations]
    assert p.vertex in ("a", "b", "c")
    line, col = At("inputs:", after=f"  {p.vertex}:").resolve(path)
    assert (p.location.file, p.location.line, p.location.col) == (str(path), line, col)
    for command in ("validate", "summary"):
        assert main([command, str(path)]) == 2
        out, err = capsys.readouterr()
        assert err == f"error: {p}\n"
        assert "Traceback" not in out + err


def test_file_larger_than_the_limit_is_refused_before_reading(tmp_path, capsys):
    spec = (ROOT / "specs" / "nn4small2.yaml").read_text(encoding="utf-8")
    path = tmp_path / "big.yaml"
    path.write_text(spec + "#" + "x" * (MAX_BYTES - len(spec.encode())) + "\n", encoding="utf-8")
    size = path.stat().st_size
    assert size == MAX_BYTES + 2
    message = f"file is {size:,} bytes; specs are limited to {MAX_BYTES:,} bytes"
    start = time.process_time()
    with pytest.raises(GraphspecError) as info:
        load_spec(str(path))
    assert time.process_time() - start < 1.0
    (p,) = info.value.problems
    assert (p.message, p.location.file) == (message, str(path))
    for command in ("validate", "summary"):
        assert main([command, str(path)]) == 2
        out, err = capsys.readouterr()
        assert err == f"error: {path}: {message}\n"


@pytest.mark.parametrize("name", ["deep_nesting.yaml", "deep_nesting_block.yaml"])
def test_deep_nesting_needs_no_deep_recursion(name):
    """1000 nested lists are refused by the event stream; a low recursion limit must not matter."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        with pytest.raises(GraphspecError) as info:
            load_spec(str(CORPUS / name))
    finally:
        sys.setrecursionlimit(old)
    assert not isinstance(info.value.__context__, RecursionError)
    assert info.value.problems[0].message == "nesting is deeper than 64 levels"


@pytest.mark.parametrize("name", ["python_apply.yaml", "python_name.yaml", "python_object_new.yaml"])
def test_python_tags_execute_nothing(name, monkeypatch, tmp_path):
    calls = []

    def record(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"executed {args!r}")

    import subprocess as sp
    monkeypatch.setattr(os, "system", record)
    monkeypatch.setattr(sp, "check_output", record)
    monkeypatch.setattr(sp, "Popen", record)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphspecError) as info:
        load_spec(str(CORPUS / name))
    assert calls == []
    assert list(tmp_path.iterdir()) == []
    assert "is not allowed" in info.value.problems[0].message


def test_python_tags_execute_nothing_in_a_real_process(real_runs):
    path = CORPUS / "python_apply.yaml"
    r, cwd = real_runs["python_apply"]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stdout == ""  # 'echo hi' did not run
    assert list(cwd.iterdir()) == []  # nor did 'touch'
    line, col = At("!!python").resolve(path)
    assert r.stderr == f"error: {path}:{line}:{col}: YAML tag '!!python/object/apply:os.system'{NOT_PLAIN}\n"


# --- warnings and controls ----------------------------------------------------------------------------------


WARNING = "reaches no output; it will be computed but never used"


def test_unreachable_vertex_is_a_warning():
    path = CORPUS / "warn_unreachable.yaml"
    line, col = At("unused:").resolve(path)
    with pytest.warns(SpecWarning) as record:
        spec = load_spec(str(path))
    assert [str(w.message) for w in record] == [f"{path}:{line}:{col}: warning: vertex 'unused': {WARNING}"]
    (w,) = graphspec.analyze(spec, warn=False).warnings
    assert (w.severity, w.vertex, w.message, w.location.line, w.location.col) == ("warning", "unused", WARNING,
                                                                                   line, col)


def test_cli_validate_prints_the_warning_and_exits_0(capsys):
    path = CORPUS / "warn_unreachable.yaml"
    line, col = At("unused:").resolve(path)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == f"{path}:{line}:{col}: warning: vertex 'unused': {WARNING}\n"
    assert out == f"{path}: ok (2 vertices, outputs: d)\n"


def test_cli_summary_prints_the_warning_once(real_runs):
    path = CORPUS / "warn_unreachable.yaml"
    line, col = At("unused:").resolve(path)
    r, _ = real_runs["summary_warning"]
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"{path}:{line}:{col}: warning: vertex 'unused': {WARNING}\n"


def test_dense_after_conv_flattens(tmp_path):
    """The positive twin of conv_after_dense / in_mismatch_dense: without a wrong 'in' it is valid."""
    text = (CORPUS / "in_mismatch_dense.yaml").read_text(encoding="utf-8").replace("    in: 100\n", "")
    path = tmp_path / "dense_after_conv.yaml"
    path.write_text(text, encoding="utf-8")
    a = graphspec.analyze(load_spec(str(path)))
    assert a.shapes["c1"] == (4, 6, 6)
    assert a.inference["d"].n_in == 4 * 6 * 6 and a.shapes["d"] == (2,)


def test_valid_example_still_validates(capsys):
    assert main(["validate", str(ROOT / "specs" / "nn4small2.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{ROOT / 'specs' / 'nn4small2.yaml'}: ok (")
    assert "error" not in err


# --- the spec argument is a path ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "summary"])
def test_cli_missing_file_without_suffix(command, tmp_path, capsys):
    path = tmp_path / "no_such_spec"
    assert main([command, str(path)]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {path}: cannot read spec: No such file or directory\n"


@pytest.mark.parametrize("command", ["validate", "summary"])
def test_cli_missing_yaml_file(command, tmp_path, capsys):
    path = tmp_path / "no_such_spec.yaml"
    assert main([command, str(path)]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {path}: cannot read spec: No such file or directory\n"


@pytest.mark.parametrize("command", ["validate", "summary"])
def test_cli_directory_named_yaml(command, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.mkdir()
    rc = main([command, str(path)])
    out, err = capsys.readouterr()
    assert (rc, err) == (2, f"error: {path}: cannot read spec: Is a directory\n")


def test_cli_directory_without_suffix(tmp_path, capsys):
    rc = main(["validate", str(tmp_path)])
    out, err = capsys.readouterr()
    assert (rc, err) == (2, f"error: {tmp_path}: cannot read spec: Is a directory\n")
