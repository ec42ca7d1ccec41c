"""Turning pydantic's validation errors into located, readable problems."""
from __future__ import annotations

from pydantic import BaseModel, ValidationError

from ..errors import Problem, did_you_mean, shown
from .yaml_source import Source


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def problems(err: ValidationError, source: Source, base: tuple, model: type[BaseModel], vertex: str | None = None,
             extra_keys: tuple = (), suffix: str = "") -> list[Problem]:
    """One Problem per pydantic error, located at ``base + error path`` in ``source``."""
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        # Drop pydantic's union/discriminator tags from the key path shown to users.
        keys = tuple(x for x in loc if not (isinstance(x, str) and x in ("convolutional", "feed_forward", "recurrent")))
        key = ".".join(str(k) for k in keys)
        kind = e["type"]
        if kind == "extra_forbidden":
            names = _fields(model) + list(extra_keys) if len(keys) == 1 else []
            msg = f"unknown key '{keys[-1]}'{did_you_mean(keys[-1], names)}"
            if names:
                msg += f"; expected one of: {', '.join(sorted(names))}"
        elif kind == "missing":
            msg = f"missing required key '{key}'"
        elif kind == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"'{key}': expected {expected}; received {shown(e['input'])}"
            if isinstance(e["input"], str):
                msg += did_you_mean(e["input"], [x.strip(" '") for x in expected.replace(" or ", ",").split(",")])
        elif kind == "union_tag_invalid":
            msg = f"'{key}.type': expected {e['ctx']['expected_tags']}; received {shown(e['ctx']['tag'])}"
        elif kind == "value_error" and "received" in e["msg"]:  # our validators say it all
            text = e["msg"].removeprefix("Value error, ")
            msg = f"'{key}': {text}" if key else text
        else:
            text = e["msg"].removeprefix("Value error, ")
            text = text[0].lower() + text[1:] if text else text
            received = f"; received {shown(e['input'])}" if not isinstance(e["input"], (dict,)) else ""
            msg = f"'{key}': {text}{received}" if key else f"{text}{received}"
        out.append(Problem(msg + suffix, source.loc(base + keys), vertex, base + keys))
    return out
