"""Hostile documents through the command line: every generated attack on the spec language — template expressions
(``**``, ``*``, ``%``, repetition, nesting, ``range``, ``sum``, fan-out), YAML aliases (billion laughs, one big value
quoted by many errors), NaN/infinity and 5,000-digit numbers, huge shapes, thousands of mistyped names, control
characters in names — ends `validate`, `summary` and `forward` with exit 0 or 2, never 3 (internal error), within
graphspec.fuzz.CASE_SECONDS and a 3 GB address space, and prints no raw control character.

The documents come from graphspec.fuzz's generators, driven here by hypothesis (which shrinks a failure to a small
document); benchmarks/fuzz_specs.py runs the same families for ten thousands of cases. A few dozen cases per run.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from graphspec.fuzz import (CASE_MEMORY, CASE_SECONDS, COMMANDS, Sandbox, alias_spec, control_spec, expression_spec,
                            mistyped_spec, number_spec, shape_spec)

# Few examples, no deadline (the bound is the sandbox's alarm); no shrinking in the suite: a hanging case costs
# CASE_SECONDS per attempt (the failing document is printed whole; the long run minimises offline).
CASES = settings(max_examples=8, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate),
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])
MISTYPED_MOST = 3000  # the suite's largest count of mistyped names (the long run goes to 20,000)


class Choices:
    """The generators' chooser, drawing from hypothesis (so a failure shrinks through the choices)."""

    def __init__(self, data):
        self.data = data

    def choice(self, seq):
        return self.data.draw(st.sampled_from(list(seq)))

    def randint(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(CASE_SECONDS, CASE_MEMORY) as box:
        yield box


def check(sandbox, data, document: str) -> None:
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    outcome = sandbox.run(command, document)
    shown = document if len(document) < 3000 else document[:3000] + f"... ({len(document):,} characters)"
    assert outcome.survived, f"{outcome.describe()}\n--- document ---\n{shown}"


@CASES
@given(st.data())
def test_template_expressions(sandbox, data):
    check(sandbox, data, expression_spec(Choices(data)))


@CASES
@given(st.data())
def test_yaml_aliases(sandbox, data):
    check(sandbox, data, alias_spec(Choices(data)))


@CASES
@given(st.data())
def test_non_finite_and_huge_numbers(sandbox, data):
    check(sandbox, data, number_spec(Choices(data)))


@CASES
@given(st.data())
def test_huge_shapes(sandbox, data):
    check(sandbox, data, shape_spec(Choices(data)))


@CASES
@given(st.data())
def test_mistyped_names(sandbox, data):
    check(sandbox, data, mistyped_spec(Choices(data), most=MISTYPED_MOST))


@CASES
@given(st.data())
def test_control_characters_in_names(sandbox, data):
    check(sandbox, data, control_spec(Choices(data)))


# --- the sandbox itself: it must see what it is there to see ---------------------------------------------------


def test_the_sandbox_tells_exit_codes_and_raw_control_characters_apart(sandbox):
    ok = "version: 1\nname: n\ninputs: {x: {type: feed_forward, size: 4}}\nvertices:\n" \
         "  o: {type: output, inputs: [x], out: 2}\noutputs: [o]\n"
    assert sandbox.run(("validate",), ok).status == "ok"
    assert sandbox.run(("validate",), "version: 1\n").status == "error"
    from graphspec.fuzz import _status
    assert _status(3, "", "internal error: MemoryError") == "internal"
    assert _status(0, "\x1b[2J", "") == "unsafe output"
    assert _status(2, "", "error: a\x9bb") == "unsafe output"
    assert _status("timeout", "", "") == "hang"


def test_a_case_past_its_time_is_a_hang_and_the_next_case_runs():
    with Sandbox(seconds=0.5) as box:
        assert box.run(("validate",), "version: 1\n").status == "error"  # warm: the lazy imports are done
        # 20,000 vertices, 1.3 MB: far more than half a second of work (reading the YAML alone takes longer)
        outcome = box.run(("validate",), mistyped_spec(_Largest(), most=20000))
        assert outcome.status == "hang" and not outcome.survived
        assert box.run(("validate",), "version: 1\n").status == "error"


def test_the_worker_runs_under_the_memory_limit(sandbox):
    outcome = sandbox.run(("validate",), "version: 1\n")
    assert outcome.limit_mb == CASE_MEMORY / 2**20
    assert 0 < outcome.peak_mb < outcome.limit_mb


class _Largest:
    """A chooser that takes the last option of a list of numbers (the largest count), the first of strings."""

    def choice(self, seq):
        seq = list(seq)
        return seq[0] if isinstance(seq[0], str) else seq[-1]

    def randint(self, lo, hi):
        return hi
