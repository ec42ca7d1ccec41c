"""JSON Schema of the spec language, for editor completion (``graphspec schema``)."""
from __future__ import annotations

import copy

from .registry import all_types
from .spec.model import TRAIN_KEYS, BlockDef, Document, TrainConfig


def _vertex_schema(entry, train_props: dict, defs: dict) -> dict:
    schema = copy.deepcopy(entry.Params.model_json_schema(by_alias=True))
    defs.update(schema.pop("$defs", {}))
    props = schema.get("properties", {})
    required = [r for r in schema.get("required", []) if r not in entry.uses]
    props = {"type": {"enum": sorted({entry.name, entry.dl4j})}, "inputs": {"type": "array", "items": {"type": "string"}},
             "group": {"type": "string"}, **props, **train_props}
    return {"title": f"{entry.name} ({entry.dl4j})", "description": entry.doc, "type": "object",
            "properties": props, "required": ["type", *required], "additionalProperties": False}


def json_schema() -> dict:
    doc = Document.model_json_schema(by_alias=True)
    defs = doc.setdefault("$defs", {})
    train = TrainConfig.model_json_schema(by_alias=True)
    defs.update(train.pop("$defs", {}))
    train_props = {k: v for k, v in train["properties"].items() if k in TRAIN_KEYS}
    variants = [_vertex_schema(e, train_props, defs) for e in all_types().values()]
    block_instance = {"title": "block instance", "type": "object", "required": ["block"],
                      "properties": {"block": {"type": "string"}, "inputs": {"type": "array",
                                                                             "items": {"type": "string"}}},
                      "additionalProperties": True}
    names = {"type": "array", "items": {"type": "string"}}
    sharer = {"title": "shared layer", "description": "applies another vertex's layer (or block instance, or with "
              "`from`, the part of the network from `from` to it) to its own inputs, with the same weights",
              "type": "object", "required": ["shares"], "additionalProperties": False,
              "properties": {"shares": {"type": "string"}, "from": {"type": "string"}, "inputs": names,
                             "group": {"type": "string"}}}
    doc["properties"]["vertices"] = {"type": "object",
                                     "additionalProperties": {"oneOf": variants + [block_instance, sharer]}}
    doc["properties"]["blocks"] = {"type": "object",
                                   "additionalProperties": BlockDef.model_json_schema(by_alias=True)}
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "graphspec spec (version 1)"
    return doc
