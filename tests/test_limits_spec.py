"""Issue 23, spec language: every attack on block templates, YAML values and error paths ends in a located error
naming the limit (exit 2), each limit checked before the work it bounds.

Each attack is a real spec run through ``graphspec validate``; the expected ``line:col`` is computed from the
spec's text. Limits that need much work to reach are shrunk with ``monkeypatch`` (the code reads them at run
time), so the tests prove the check exists without doing the work; nothing here allocates more than a few MB.
"""
from __future__ import annotations

import difflib
import time

import pytest

from graphspec.cli import MAX_PRINTED_PROBLEMS, main
from graphspec.errors import MAX_SUGGESTION_WORK, did_you_mean, listing, shown, suggestion_budget
from graphspec.registry import all_types
from graphspec.spec import blocks, expr
from graphspec.spec.expr import ExprError, evaluate
from graphspec.spec.model import Defaults, Document, TrainConfig, Updater

HEAD = """version: 1
name: attack
inputs:
  x: {type: feed_forward, size: 4}
"""
IMAGE = HEAD.replace("feed_forward, size: 4", "convolutional, channels: 3, height: 4, width: 4")


def templated(vertices: str, params: str = "{}") -> str:
    """A spec whose block ``blk`` has the template ``vertices`` (indented under it), used once as ``b``."""
    return (HEAD + f"blocks:\n  blk:\n    params: {params}\n    vertices:\n{vertices}"
            "vertices:\n  b: {block: blk, inputs: [x]}\noutputs: [b]\n")


def dense_out(expression: str) -> str:
    """A template whose one vertex's ``out`` is ``${expression}``."""
    return templated(f'      $name: {{type: dense, inputs: [$input], out: "${{{expression}}}"}}\n')


def at(text: str, needle: str) -> str:
    """``line:col`` of the first occurrence of ``needle`` in ``text``."""
    index = text.index(needle)
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def validate(text: str, tmp_path, capsys) -> tuple[int, list[str], str]:
    """Run ``graphspec validate`` on ``text``: (exit status, stderr lines, the file's path)."""
    path = tmp_path / "attack.yaml"
    path.write_text(text)
    start = time.perf_counter()
    rc = main(["validate", str(path)])
    assert time.perf_counter() - start < 5  # a backstop only: each limit is checked before its work
    return rc, capsys.readouterr().err.splitlines(), str(path)


def refused(text: str, tmp_path, capsys, where: str, message: str, vertex: str | None = "b") -> None:
    rc, err, path = validate(text, tmp_path, capsys)
    who = f"vertex '{vertex}': " if vertex else ""
    assert rc == 2
    assert err == [f"error: {path}:{at(text, where)}: {who}{message}"]


# --- expressions: integers, sizes, formats ------------------------------------------------------------------

DIGITS = "integers are limited to 100 digits (MAX_INT_DIGITS)"
SIZE = "items or characters; the limit is 100,000 (MAX_SEQUENCE)"


@pytest.mark.parametrize("expression, message", [
    ("10**10**10", f"the result would have about 9,030,900,000 digits; {DIGITS}"),
    ("2**2**2**2**2**30", f"the result would have about 323,228,501 digits; {DIGITS}"),
    ("((10**64)**64)**64", f"the result would have about 4,084 digits; {DIGITS}"),
    ("10**60 * 10**60", f"the result would have about 121 digits; {DIGITS}"),
    ("10**100", f"the result has 101 digits; {DIGITS}"),
    ("len(str(['x' * 100000] * 100000))", f"the result would have 10,000,000,000 {SIZE}"),
    ("len('ab' * 10**9)", f"the result would have 2,000,000,000 {SIZE}"),
    ("len([[0] * 60000] + [[0] * 60000])", f"the result would have 120,000 {SIZE}"),
    ("len(sum([[1] * 90000] * 10000, []))", f"the result would have 900,000,000 {SIZE}"),
    ("len('%999999999d' % 1)", f"the result would have 1,000,000,011 {SIZE}"),
    ("len('%.999999999f' % 1.0)", f"the result would have 1,000,000,012 {SIZE}"),
    ("len('%*d' % (999999999, 1))", "'*' widths and precisions are not allowed in % formatting; write the number "
                                    "in the format"),
    ("len(range(10**12))", "range of 1,000,000,000,000 items exceeds the limit of 10,000 (MAX_RANGE)"),
])
def test_expression_results_are_bounded_before_they_are_computed(expression, message, tmp_path, capsys):
    text = dense_out(expression)
    refused(text, tmp_path, capsys, "out:", message)


def test_a_5000_digit_literal_in_an_expression_is_refused(tmp_path, capsys):
    text = dense_out("9" * 5000)
    refused(text, tmp_path, capsys, "out:", "expression of 5,000 characters; the limit is 2,000 (MAX_EXPRESSION_CHARS)")


@pytest.mark.parametrize("expression", ["-" * 1500 + "1", "+".join(["1"] * 60), "not " * 400 + "1",
                                        "[" * 60 + "1" + "]" * 60])
def test_deep_expressions_are_refused_by_depth(expression, tmp_path, capsys):
    text = dense_out(expression)
    quoted = expression[:57] + "..."
    refused(text, tmp_path, capsys, "out:",
            f"expression '{quoted}' nests deeper than 50 levels (MAX_EXPRESSION_DEPTH)")


def test_pythons_own_nesting_limit_is_a_located_error(tmp_path, capsys):
    text = dense_out("(" * 300 + "1" + ")" * 300)
    refused(text, tmp_path, capsys, "out:", f"invalid expression '{'(' * 57}...': too many nested parentheses")


def test_long_expressions_are_refused_before_parsing(tmp_path, capsys):
    text = dense_out("+".join(["1"] * 100_000))
    refused(text, tmp_path, capsys, "out:",
            "expression of 199,999 characters; the limit is 2,000 (MAX_EXPRESSION_CHARS)")


def test_sum_of_lists_is_linear():
    assert evaluate("sum([[1, 2]] * 5000, [])", {}) == [1, 2] * 5000
    assert evaluate("sum([(1,), (2,)], ())", {}) == (1, 2)
    with pytest.raises(ExprError, match="can only concatenate list"):
        evaluate("sum([[1], 2], [])", {})


def test_sizes_count_shared_items_each_time():
    """A list repeated by `*` is as big as its copy would be, though it shares its items."""
    budget = expr.Budget()
    shared = [["x" * 10] * 10] * 10
    assert budget.size(shared) == 1000
    assert budget.size({"a": [1, 2], "b": "xyz"}) == 1 + 2 + 1 + 3


# --- templates: loops, instances, vertices, amplification ----------------------------------------------------

WORK = ("the block templates of this spec take more than 10,000 steps (loop iterations, expression steps, values "
        "substituted and built); the limit is 10,000 (MAX_TEMPLATE_WORK)")


def test_nested_loops_spend_the_template_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(expr, "MAX_TEMPLATE_WORK", 10_000)
    text = templated("      for i in range(10000):\n        for j in range(10000):\n          if i < 0:\n"
                     "            $name-$i-$j: {type: dense, inputs: [$input], out: 2}\n"
                     "      $name: {type: dense, inputs: [$input], out: 2}\n")
    refused(text, tmp_path, capsys, "for i", WORK)  # 10,000 iterations of 5 names in scope: over at once


def test_list_directives_spend_the_template_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(expr, "MAX_TEMPLATE_WORK", 10_000)
    text = templated('      $name: {type: merge, inputs: [{"for i in range(10000)": [{"for j in range(10000)": '
                     '[{"if i < 0": [$input]}]}]}]}\n')
    refused(text, tmp_path, capsys, '"for i', WORK)


def test_a_huge_loop_count_is_refused_before_looping(tmp_path, capsys):
    text = templated('      $name: {type: merge, inputs: [{"for i in [0] * 10**9": [$input]}]}\n')
    refused(text, tmp_path, capsys, '"for i', f"the result would have 1,000,000,000 {SIZE}")


def test_substitution_amplification_is_bounded(tmp_path, capsys):
    text = templated('      $name: {type: dense, inputs: [$input], out: 2, activation: "' + "$s" * 200 + '"}\n',
                     params="{s: " + "y" * 1000 + "}")
    refused(text, tmp_path, capsys, "activation:", f"the substituted text would have 101,000 {SIZE}")


def test_a_large_value_referenced_everywhere_spends_the_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(expr, "MAX_TEMPLATE_WORK", 10_000)
    text = templated('      for i in range(100):\n        $name-$i: {type: dense, inputs: [$input], out: 2, '
                     'bias: $big}\n      $name: {type: dense, inputs: [$input], out: 2}\n',
                     params="{big: " + str(list(range(1000))) + "}")
    refused(text, tmp_path, capsys, "bias:", WORK, vertex="b-3")  # ~2,900 steps a vertex (1,000 numbers of 1-3 digits)


FAN_OUT = HEAD + """blocks:
  leaf:
    vertices:
      $name: {type: dense, inputs: [$input], out: 2}
  mid:
    vertices:
      for i in range(1000):
        $name-$i: {block: leaf, inputs: [$input]}
      $name: {type: dense, inputs: [$input], out: 2}
  top:
    vertices:
      for i in range(1000):
        $name-$i: {block: mid, inputs: [$input]}
      $name: {type: dense, inputs: [$input], out: 2}
vertices:
  b: {block: top, inputs: [x]}
outputs: [b]
"""


def test_a_wide_fan_out_stops_at_the_instance_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(blocks, "MAX_INSTANCES", 500)
    refused(FAN_OUT, tmp_path, capsys, "$name-$i: {block: leaf",
            "blocks are instantiated more than 500 times; the limit is 500 (MAX_INSTANCES)", vertex="b-0-498")


def test_a_wide_fan_out_stops_at_the_vertex_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(blocks, "MAX_EXPANDED", 300)
    refused(FAN_OUT, tmp_path, capsys, "$name: {type: dense, inputs: [$input], out: 2}\n  mid",
            "blocks expand to more than 300 vertices; the limit is 300 (MAX_EXPANDED)", vertex="b-0-300")


def test_the_real_limits_end_an_attack_quickly(tmp_path, capsys):
    """The default limits (no monkeypatch): the fan-out ends with one error (the expansion stops)."""
    rc, err, _ = validate(FAN_OUT, tmp_path, capsys)
    assert rc == 2 and len(err) == 1
    assert err[0].endswith("blocks are instantiated more than 20,000 times; the limit is 20,000 (MAX_INSTANCES)")


# --- YAML values --------------------------------------------------------------------------------------------

def test_a_5000_digit_integer_is_a_located_error(tmp_path, capsys):
    text = HEAD + "vertices:\n  b: {type: dense, inputs: [x], out: " + "9" * 5000 + "}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "9999", f"integer of 5,000 digits; {DIGITS}",
            vertex=None)


def test_an_integer_over_100_digits_is_a_located_error(tmp_path, capsys):
    text = HEAD.replace("name: attack", "name: attack\nseed: 0b" + "1" * 400) + \
        "vertices:\n  b: {type: dense, inputs: [x], out: 2}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "0b1", f"integer of 121 digits; {DIGITS}", vertex=None)


def test_a_base_60_integer_is_refused_before_converting(tmp_path, capsys):
    text = HEAD.replace("name: attack", "name: attack\nseed: " + ":".join(["59"] * 2000)) + \
        "vertices:\n  b: {type: dense, inputs: [x], out: 2}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "59:", f"integer written with 5,999 characters; {DIGITS}",
            vertex=None)


ALIASED = "y" * 100_000


def test_an_aliased_huge_value_is_quoted_briefly(tmp_path, capsys):
    text = IMAGE + f"description: &s {ALIASED}\n" + "vertices:\n  b: {type: conv, inputs: [x], out: 2, kernel: [" + \
        ", ".join(["*s"] * 1000) + "]}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "kernel:", "'kernel': expected a positive integer or a list of 2 positive "
            f"integers; received ['{'y' * 55}...")


def test_an_aliased_huge_name_is_refused_by_length(tmp_path, capsys):
    text = HEAD + f"description: &s {ALIASED}\n" + "vertices:\n  b: {type: dense, inputs: [" + \
        ", ".join(["*s"] * 1000) + "], out: 2}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "inputs: [*s", f"'inputs': '{'y' * 57}...' is 100,000 characters long; names are "
            "limited to 200 characters (MAX_NAME_CHARS)")


def test_an_aliased_huge_output_name_is_refused_by_length(tmp_path, capsys):
    """Found by the hostile fuzzer (aliases #139): a 4 MB output name, aliased 100 times, was quoted whole in every
    message (10 s, 2.6 GB)."""
    text = HEAD + f"description: &s {ALIASED}\n" + "vertices:\n  b: {type: dense, inputs: [x], out: 2}\n" + \
        "outputs: [*s]\n"
    refused(text, tmp_path, capsys, "*s]", f"output '{'y' * 57}...' is 100,000 characters long; names are limited "
            "to 200 characters (MAX_NAME_CHARS)", vertex=None)


def test_a_type_longer_than_every_type_name_is_refused_without_searching(tmp_path, capsys):
    """Found by the hostile fuzzer (aliases #374): a 500 KB type aliased by 10,000 vertices was lowered (for DL4J's
    case-insensitive names) once a vertex: 14 s. Longer than every type name, it cannot name one."""
    text = HEAD + f"description: &s {ALIASED}\n" + "vertices:\n  b: {type: *s, inputs: [x], out: 2}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "type: *s", f"unknown vertex type '{'y' * 56}... (100,000 characters: longer "
            f"than every type name); known types: {', '.join(sorted(all_types()))}")


def test_shown_never_builds_more_than_its_limit():
    huge = [["x" * 1_000_000] * 1000] * 1000  # a repr would be 10^12 characters
    assert shown(huge) == "[['" + "x" * 54 + "..."
    assert shown([1, (2,), {"a": None}]) == repr([1, (2,), {"a": None}])
    assert shown(10 ** 5000) == "<an integer of 16,610 bits>"
    assert listing(range(40), 3) == "0, 1, 2, ... and 37 more"


# --- NaN and infinity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, shown_as", [("n", ".inf", "inf"), ("k", ".nan", "nan"),
                                                   ("beta", "-.inf", "-inf")])
def test_lrn_refuses_non_finite_numbers(key, value, shown_as, tmp_path, capsys):
    text = IMAGE + f"vertices:\n  b: {{type: lrn, inputs: [x], {key}: {value}}}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, f"{key}: {value}", f"'{key}': input should be a finite number; received {shown_as}")


def test_an_lrn_window_wider_than_any_layer_is_refused(tmp_path, capsys):
    """Found by the hostile fuzzer: n = 2^63 is finite, and reached torch's LRN as a negative padding (exit 3)."""
    text = IMAGE + "vertices:\n  b: {type: lrn, inputs: [x], n: 9223372036854775808}\noutputs: [b]\n"
    refused(text, tmp_path, capsys, "n: 9223", "'n': input should be less than or equal to 100000000; received "
                                               "9223372036854775808")


def test_defaults_refuse_non_finite_numbers_with_the_key_path(tmp_path, capsys):
    text = HEAD.replace("inputs:", "defaults: {l2: .nan, updater: {type: sgd, lr: .inf}}\ninputs:") + \
        "vertices:\n  b: {type: dense, inputs: [x], out: 2}\noutputs: [b]\n"
    rc, err, path = validate(text, tmp_path, capsys)
    assert rc == 2
    assert err == [f"error: {path}:{at(text, 'l2:')}: 'defaults.l2': input should be a finite number; received nan",
                   f"error: {path}:{at(text, 'lr:')}: 'defaults.updater.lr': input should be a finite number; "
                   "received inf"]


def test_every_parameter_model_refuses_non_finite_numbers():
    """One shared setting: every registered type's parameters, and the document's own models."""
    models = [entry.Params for entry in all_types().values()] + [Defaults, Document, TrainConfig, Updater]
    assert [m for m in models if m.model_config.get("allow_inf_nan") is not False] == []


# --- error paths: did-you-mean and the number printed ---------------------------------------------------------

def typos(n: int) -> str:
    return HEAD + "vertices:\n" + "".join(f"  v{i}: {{type: dense, inputs: [v{i}x], out: 2}}\n" for i in range(n)) + \
        "outputs: [v0]\n"


def test_many_mistyped_names_print_50_errors_and_a_count(tmp_path, capsys):
    rc, err, path = validate(typos(2000), tmp_path, capsys)
    assert rc == 2 and len(err) == MAX_PRINTED_PROBLEMS + 1 == 51
    assert err[0] == (f"error: {path}:6:30: vertex 'v0': input 'v0x' does not exist (did you mean 'v0'?); inputs "
                      "must name a network input or another vertex")
    assert err[-1] == "... and 1,950 more errors"


def test_did_you_mean_work_is_capped_per_command(tmp_path, capsys, monkeypatch):
    compared = []
    real = difflib.get_close_matches

    def counting(word, pool, n, cutoff):
        compared.append(len(pool))
        return real(word, pool, n=n, cutoff=cutoff)
    monkeypatch.setattr(difflib, "get_close_matches", counting)
    rc, err, _ = validate(typos(2000), tmp_path, capsys)  # uncapped: 2,000 searches of 2,001 names each
    assert rc == 2
    assert 0 < len(compared) <= MAX_SUGGESTION_WORK // 2000 + 60  # searches: ~50 over the graph's names, a few small


def test_did_you_mean_budget_stops_suggesting():
    names = [f"name{i}" for i in range(1000)]
    with suggestion_budget(2500):
        found = [did_you_mean("name1x", names) for _ in range(5)]
    assert found == [" (did you mean 'name1'?)"] * 2 + [""] * 3
    assert did_you_mean("name1x", names) == " (did you mean 'name1'?)"  # outside a budget: always


def test_did_you_mean_shortlists_a_large_pool():
    names = [f"inception-{i}-conv" for i in range(20_000)]
    assert did_you_mean("inception-12-cnv", names) == " (did you mean 'inception-12-conv'?)"
    assert did_you_mean("x" * 1000, names) == ""


def test_a_name_ending_in_a_newline_is_invalid(tmp_path, capsys):
    """Found by the hostile fuzzer: the name pattern ended in '$', which also matches before a final newline, so
    'v\\n' was a valid name until torch.fx's generated code broke on it (exit 3)."""
    text = HEAD + 'vertices:\n  "v\\n": {type: dense, inputs: [x], out: 2}\noutputs: ["v\\n"]\n'
    rc, err, path = validate(text, tmp_path, capsys)
    assert rc == 2
    assert err[0] == (f"error: {path}:{at(text, chr(34) + 'v')}: vertex 'v\\n': invalid vertex name: 'v\\n' may "
                      "contain only letters, digits, '_' and '-', and must not start with '-'")
