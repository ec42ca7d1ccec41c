"""Fuzzing the spec language: random documents and random mutations of the tutorial's spec end in a spec or a
located graphspec error — never another exception. A small budget here; benchmarks/fuzz_specs.py runs 10,000+."""
from __future__ import annotations

import random
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphspec.fuzz import check, dump, mutate, random_yaml

SPEC = yaml.safe_load((Path(__file__).resolve().parents[1] / "specs" / "nn4small2.yaml").read_text())
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.integers(0, 2**32 - 1))
def test_random_documents(seed):
    doc = random_yaml(random.Random(seed))
    assert check(dump(doc)) in ("ok", "error")


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_mutations_of_the_tutorial_spec(seed, steps):
    doc = mutate(SPEC, random.Random(seed), steps)
    assert check(dump(doc)) in ("ok", "error")
    assert check(doc) in ("ok", "error")  # the same as a dict (no positions)


_text = st.text(alphabet=st.sampled_from(list("abc:-[]{}!&*#|>'\"\n\t 0123456789$%.,?@`~")), max_size=120)


@FAST
@given(_text)
def test_random_text(text):
    assert check(text if "\n" in text else text + "\n") in ("ok", "error")
