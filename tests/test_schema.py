"""``graphspec schema`` checked with an independent validator (jsonschema): the shipped specs conform, and the
mistakes the loader refuses are refused by the schema too."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from graphspec.registry import all_types
from graphspec.schema import json_schema

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _tiny(**vertex) -> dict:
    body = {"type": "dense", "inputs": ["x"], "out": 3, **vertex}
    return {"version": 1, "name": "t", "inputs": {"x": {"type": "feed_forward", "size": 4}},
            "vertices": {"d": body}, "outputs": ["d"]}


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_specs_conform(validator, path):
    assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []


def test_every_registered_type_and_its_dl4j_name_is_offered():
    variants = json_schema()["properties"]["vertices"]["additionalProperties"]["oneOf"]
    offered = {name for v in variants if "type" in v["properties"] for name in v["properties"]["type"]["enum"]}
    for entry in all_types().values():
        assert {entry.name, entry.dl4j} <= offered


@pytest.mark.parametrize("vertex, why", [
    ({"type": "dens"}, "unknown type"),
    ({"units": 3}, "unknown key"),
    ({"out": "three"}, "wrong value type"),
    ({"inputs": "x"}, "inputs must be a list"),
])
def test_mistakes_the_loader_refuses_are_refused(validator, vertex, why):
    assert list(validator.iter_errors(_tiny(**vertex))), why


def test_a_valid_tiny_spec_passes_and_the_cli_prints_the_same_schema(validator, cli):
    assert list(validator.iter_errors(_tiny())) == []
    rc, out, _ = cli("schema")
    assert rc == 0 and json.loads(out) == json_schema()
