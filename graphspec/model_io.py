"""Model files: one safetensors file holding the tensors plus, in its metadata, the spec, the frozen set, the
input preprocessing, a spec hash and a format version. Loading never executes code: safetensors is a JSON header
followed by raw tensor bytes, and the spec is YAML read by graphspec's safe loader.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .errors import GraphspecError, Location
from .files import open_regular
from .compiler import build

FORMAT = "graphspec-model"
FORMAT_VERSION = 1
# Bytes of the safetensors JSON header. It holds the embedded spec (at most the 4 MiB of a spec file,
# graphspec.spec.yaml_source.MAX_BYTES, which JSON escaping at most doubles for the characters YAML allows) and about
# 100 bytes per tensor (nn4small2 has 250 tensors): 16 MiB leaves room for 80,000 tensors, and bounds what
# json.loads builds from the densest header ("[],[],...": 5.6 million lists, ~0.4 GB) where 100 MiB allowed 2 GB.
MAX_HEADER = 16 * 1024 * 1024
# Nesting of the JSON in a model file (its header, frozen set and preprocessing record): the deepest legitimate one is
# 3 (header, tensor entry, shape); 32 leaves room, and stays far below the recursion limits of Python's json decoder
# (1,000 frames: a RecursionError) and of serde_json in safetensors (128).
MAX_JSON_DEPTH = 32
# Digits of a number in that JSON: tensor offsets and sizes are unsigned 64-bit integers (at most 20 digits), and
# the preprocessing record's floats are written in their shortest form (at most 17). Python refuses to convert
# integers over 4,300 digits (a ValueError) and converts long ones in quadratic time.
MAX_JSON_DIGITS = 20
# Values (numbers, strings, arrays, objects) in that JSON: a tensor entry has about 8, so a million is room for over
# 100,000 tensors; it keeps json.loads to about a second and 100 MB where a 16 MiB header of "[],[],..." or "1,1,..."
# (5 to 8 million values) took 10 s and 0.4 GB.
MAX_JSON_VALUES = 1_000_000
# Tensors named in a warning or an error before "and N more" (a model has hundreds).
NAMED_IN_MESSAGES = 5


class ModelFileError(GraphspecError):
    """A model file is unreadable, not a graphspec model, or does not fit its spec."""


class ModelFileWarning(UserWarning):
    """A model file loads, but its weights hold NaN or infinity: the model's outputs will be meaningless."""


@dataclass
class WeightReport:
    """What loading weights into a module found, by vertex."""

    missing: dict[str, list[str]] = field(default_factory=dict)  # vertex -> state keys absent from the file
    unexpected: dict[str, list[str]] = field(default_factory=dict)  # vertex -> keys the module does not have
    mismatched: dict[str, list[str]] = field(default_factory=dict)  # vertex -> "key: file [..] vs model [..]"
    wrong_dtype: dict[str, list[str]] = field(default_factory=dict)  # vertex -> "key: file int8 vs model float32"
    loaded: int = 0
    non_finite: dict[str, int] = field(default_factory=dict)  # loaded key -> how many of its values are NaN or inf
    source: str = ""  # the file the weights came from (for errors about what the model computes)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.wrong_dtype)

    def lines(self) -> list[str]:
        out = []
        for title, table in (("missing from the file", self.missing), ("not in the model", self.unexpected),
                             ("wrong shape", self.mismatched), ("wrong dtype", self.wrong_dtype)):
            for vertex, items in sorted(table.items()):
                out.append(f"vertex '{vertex}': {title}: {', '.join(items)}")
        return out


def spec_hash(spec_yaml: str) -> str:
    return hashlib.sha256(spec_yaml.encode("utf-8")).hexdigest()


def save(model: torch.nn.Module, path: str | os.PathLike, *, preprocessing: Any = None,
         metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` (a module from :func:`graphspec.build`) to ``path`` atomically.

    ``preprocessing`` (a :class:`graphspec.data.Preprocessing` or a JSON-able dict) records how inputs must be
    prepared; by default the model's own recorded preprocessing is kept.
    """
    info = _info(model)
    spec_yaml = info.spec.to_yaml()
    prep = preprocessing if preprocessing is not None else info.preprocessing
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "spec": spec_yaml,
            "spec_sha256": spec_hash(spec_yaml), "frozen": json.dumps(sorted(info.frozen)),
            "preprocessing": _prep_json(prep)}
    meta.update(metadata or {})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return atomic_save_file(tensors, path, meta)


def atomic_save_file(tensors: dict, path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """safetensors, written atomically (:func:`atomic_write`)."""
    from safetensors.torch import save_file
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, fsync, then rename: readers see the old file or the new
    one, never half of one (a failed write leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _prep_json(prep: Any) -> str:
    if prep is None:
        return ""
    if hasattr(prep, "model_dump_json"):
        return prep.model_dump_json()
    return json.dumps(prep)


def _info(model):
    info = getattr(model, "graphspec", None)
    if info is None:
        raise GraphspecError("expected a module built by graphspec (it carries its spec as `module.graphspec`)")
    return info


def read_header(path: str | os.PathLike) -> dict:
    """The safetensors JSON header, validated before anything else is read."""
    label = str(path)
    try:
        size = os.path.getsize(path)
        with open_regular(path, "model file", error=ModelFileError) as f:  # never blocks on a FIFO or device
            head = f.read(8)
            if len(head) < 8:
                raise ModelFileError(f"not a model file: {size} bytes is too short for a safetensors header",
                                     location=Location(label))
            # A safetensors header length may well start with 0x80 (a pickle's first byte): only a length that
            # fits, followed by a JSON object, makes a safetensors file; anything else is checked for pickles.
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                _refuse_other_formats(head, label)
                if head[:1] in _PICKLE_0_1:
                    _refuse_other_formats(b"\x80", label)
                raise ModelFileError(f"not a valid model file: header length {n:,} exceeds the file "
                                     f"({size:,} bytes) or the {MAX_HEADER:,}-byte limit (truncated or corrupt)",
                                     location=Location(label))
            raw = f.read(n)
            if not raw.startswith(b"{"):
                _refuse_other_formats(head, label)
    except OSError as e:
        raise ModelFileError(f"cannot read model file: {e.strerror or e}", location=Location(label)) from e
    header = parse_json(raw, "not a valid model file: its header", label)
    if not isinstance(header, dict):
        raise ModelFileError("not a valid model file: its header is not a JSON object", location=Location(label))
    return header


class _BadJSON(ValueError):
    """Why a model file's JSON text is refused: the end of a sentence whose subject is the text ("is not JSON ...")."""


def parse_json(text: "str | bytes", subject: str, label: str) -> Any:
    """JSON from a model file, refused with ``f"{subject} {reason}"`` (a :class:`ModelFileError` located at
    ``label``) when it is not JSON, holds more than :data:`MAX_JSON_VALUES` values, nests deeper than
    :data:`MAX_JSON_DEPTH`, holds a number of more than :data:`MAX_JSON_DIGITS` digits or a non-finite one (NaN,
    Infinity, 1e999). The limits are checked by a linear
    scan before the text is parsed, so no input reaches the decoder's recursion or Python's integer conversion."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        _check_json_structure(raw)
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except _BadJSON as e:
        raise ModelFileError(f"{subject} {e}", location=Location(label)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{subject} is not JSON ({e})", location=Location(label)) from e


# +1 for a byte that opens a JSON array or object, -1 for one that closes it: the running sum is the nesting depth
_NESTING_STEP = np.zeros(256, dtype=np.int8)
_NESTING_STEP[list(b"[{")] = 1
_NESTING_STEP[list(b"]}")] = -1
_OPENS, _CLOSES, _COMMA = _NESTING_STEP == 1, _NESTING_STEP == -1, np.arange(256) == ord(",")
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\r\n")] = True
_LONG_NUMBER = re.compile(rb"\d{%d,}" % (MAX_JSON_DIGITS + 1))


def _check_json_structure(raw: bytes) -> None:
    """Nesting depth, number of values and number length of JSON text, outside its strings, in linear time without
    parsing (a few vectorised passes, whatever the text holds)."""
    # Escapes first, left to right as JSON reads them (an escaped backslash cannot escape a quote); then every byte
    # after an odd number of quotes is inside a string, where brackets and digits are text, not structure.
    text = np.frombuffer(raw.replace(b"\\\\", b"__").replace(b'\\"', b"__"), dtype=np.uint8)
    structure = text[~np.logical_xor.accumulate(text == ord('"'))] if text.size else text
    long_number = _LONG_NUMBER.search(structure.tobytes())
    if long_number:
        digits = long_number.end() - long_number.start()
        raise _BadJSON(f"holds a {digits:,}-digit number; at most {MAX_JSON_DIGITS} digits are allowed "
                       "(MAX_JSON_DIGITS)")
    values = _count_values(structure)
    if values > MAX_JSON_VALUES:
        raise _BadJSON(f"holds {values:,} values; at most {MAX_JSON_VALUES:,} are allowed (MAX_JSON_VALUES)")
    depth = int(np.cumsum(_NESTING_STEP[structure], dtype=np.int32).max(initial=0))
    if depth > MAX_JSON_DEPTH:
        raise _BadJSON(f"nests {depth:,} levels deep; at most {MAX_JSON_DEPTH} are allowed (MAX_JSON_DEPTH)")


def _count_values(structure: np.ndarray) -> int:
    """The values of JSON text whose strings are removed: the top one, plus one per element of each array or object
    (its commas, plus one if it is not empty)."""
    tokens = structure[~_SPACE[structure]]
    if not tokens.size:
        return 0
    non_empty = np.count_nonzero(_OPENS[tokens[:-1]] & ~_CLOSES[tokens[1:]])
    return 1 + int(np.count_nonzero(_COMMA[tokens])) + int(non_empty)


def _refuse_constant(name: str):
    raise _BadJSON(f"holds a non-finite number ({name}); numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJSON(f"holds a non-finite number ({text}); numbers must be finite")
    return value


# Protocol 0/1 pickles start with an opcode such as '(' MARK, 'c' GLOBAL, ']' EMPTY_LIST, '}' EMPTY_DICT.
_PICKLE_0_1 = (b"(", b"c", b"]", b"}", b"l", b"d", b"I", b"S", b"V", b"N")


def looks_like_checkpoint(head: bytes) -> bool:
    """A pickle or a torch.save zip, which must never be read as YAML or unpickled."""
    return head[:1] == b"\x80" or head[:2] == b"PK"


def _refuse_other_formats(head: bytes, label: str) -> None:
    if looks_like_checkpoint(head):
        raise ModelFileError("this is a pickle or torch.save checkpoint, not a graphspec model file; graphspec never "
                             "unpickles files (that can run code). Convert it in a trusted environment: load it with "
                             "torch.load(..., weights_only=True) and save with graphspec.save",
                             location=Location(label))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    meta = read_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ModelFileError("not a valid model file: its safetensors metadata must map strings to strings",
                             location=Location(str(path)))
    if meta.get("format") != FORMAT:
        raise ModelFileError("not a graphspec model file: its safetensors metadata has no "
                             f"'format: {FORMAT}' (plain weights can be loaded with graphspec.load_weights)",
                             location=Location(str(path)))
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise ModelFileError(f"model file format version {version!r} is not supported (this graphspec reads up to "
                             f"{FORMAT_VERSION}); upgrade graphspec", location=Location(str(path)))
    return meta


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    read_header(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"cannot read the tensors: {e}", location=Location(str(path))) from e


def load(path: str | os.PathLike, *, strict: bool = True) -> torch.nn.Module:
    """Load a model file: rebuild its spec, load its tensors (strictly, by default), restore frozen vertices."""
    from .catalog import path as catalogued  # (not `from . import catalog`: that reads as the package, a cycle)
    if not os.path.exists(path) and catalogued(str(path)) is not None:
        path = catalogued(str(path))  # a model shipped with graphspec, by name
    spec, frozen, preprocessing = read_spec(path)
    model = build(spec, frozen=frozen, preprocessing=preprocessing)
    report = load_weights(model, read_tensors(path), strict=strict, label=str(path))
    model.graphspec.weights = report
    return model


def read_spec(path: str | os.PathLike, *, check_graph: bool = True,
              weights_needed: bool = True) -> tuple[Any, list[str], Any]:
    """(spec, frozen vertices, preprocessing) recorded in a model file, each checked (the spec against its hash).
    Without ``weights_needed`` (a summary, a drawing) the tensors are not read, but must lie inside the file."""
    from .spec.loader import load_spec
    from .spec.yaml_source import MAX_BYTES, parse_yaml
    if not weights_needed:
        _check_tensor_extents(path, read_header(path))
    meta = read_metadata(path)
    label = str(path)
    spec_yaml = meta.get("spec", "")
    if spec_hash(spec_yaml) != meta.get("spec_sha256"):
        raise ModelFileError("the spec stored in the model file does not match its hash (the file was edited or "
                             "corrupted)", location=Location(label))
    spec_bytes = len(spec_yaml.encode("utf-8", "surrogatepass"))
    if spec_bytes > MAX_BYTES:  # the limit of a spec file (the same loader follows)
        raise ModelFileError(f"the spec stored in the model file is {spec_bytes:,} bytes; specs are limited to "
                             f"{MAX_BYTES:,} bytes", location=Location(label))
    # the spec goes through the spec loader, with all of its limits (expressions, expansion, depth, size)
    spec = load_spec(parse_yaml(spec_yaml, f"{path}[spec]"), check_graph=check_graph)  # errors point into it
    frozen = parse_json(meta.get("frozen", "[]"), "the model file's frozen set is invalid: it", label)
    if not isinstance(frozen, list) or not all(isinstance(n, str) and n in spec.vertices for n in frozen):
        raise ModelFileError("the model file's frozen set is invalid", location=Location(label))
    return spec, frozen, _parse_prep(meta.get("preprocessing", ""), path)


def _check_tensor_extents(path, header: dict) -> None:
    """The tensors the header lists must lie inside the file (a truncated file is refused, as loading refuses it)."""
    import struct

    label = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    available = size - 8 - n
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise ModelFileError(f"cannot read the tensors: tensor '{name}' has invalid data offsets",
                                 location=Location(label))
        end = max(end, offsets[1])
    if end > available:
        raise ModelFileError(f"cannot read the tensors: the tensor data needs {end:,} bytes but the file holds "
                             f"{available:,} (truncated)", location=Location(label))


def _parse_prep(text: str, path) -> Any:
    """The preprocessing record, every number checked (finite: :func:`parse_json`; sizes within
    ``graphspec.data.preprocessing.MAX_IMAGE_SIDE``, by the record's own fields) before any image is read with it."""
    if not text:
        return None
    record = parse_json(text, "the model file's preprocessing record is invalid: it", str(path))
    try:
        from .data.preprocessing import Preprocessing
    except ImportError:  # data package not available: keep the raw dict
        return record
    from pydantic import ValidationError
    try:
        return Preprocessing.model_validate(record)
    except ValidationError as e:  # the file's record is invalid: each field with its reason, on one line
        reasons = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'record'}: {err['msg']}" for err in e.errors())
        raise ModelFileError(f"the model file's preprocessing record is invalid: {reasons}",
                             location=Location(str(path))) from e


def load_weights(model: torch.nn.Module, weights: "Mapping[str, torch.Tensor] | str | os.PathLike", *,
                 strict: bool = True, label: str = "<weights>") -> WeightReport:
    """Copy tensors into ``model`` by name; report by vertex what is missing, unexpected, of the wrong shape or of the
    wrong dtype (:func:`dtype_fits`).

    With ``strict`` (the default) any problem raises :class:`ModelFileError` listing all of them and nothing is
    loaded; otherwise the matching tensors are loaded and the report says what was skipped. Loaded tensors that
    hold NaN or infinity are counted in ``report.non_finite`` and named in a :class:`ModelFileWarning`.
    """
    if not isinstance(weights, Mapping):
        label = str(weights)
        weights = read_tensors(weights)
    state = model.state_dict()
    report = WeightReport(source=label)
    fits = []
    for key, tensor in weights.items():
        vertex = key.split(".", 1)[0]
        if key not in state:
            report.unexpected.setdefault(vertex, []).append(key)
        elif tuple(tensor.shape) != tuple(state[key].shape):
            report.mismatched.setdefault(vertex, []).append(
                f"{key}: file {list(tensor.shape)} vs model {list(state[key].shape)}")
        elif not dtype_fits(tensor.dtype, state[key].dtype):
            report.wrong_dtype.setdefault(vertex, []).append(
                f"{key}: file {_dtype_name(tensor.dtype)} vs model {_dtype_name(state[key].dtype)}")
        else:
            fits.append(key)
    for key in state:
        if key not in weights:
            report.missing.setdefault(key.split(".", 1)[0], []).append(key)
    if strict and not report.ok:
        raise ModelFileError("the weights do not fit the model:\n  " + "\n  ".join(report.lines()),
                             location=Location(label))
    with torch.no_grad():
        for key in fits:
            state[key].copy_(weights[key])
            report.loaded += 1
    report.non_finite = _count_non_finite(state, fits)  # after the copy: a float64 1e300 is infinite in float32
    if report.non_finite:
        warnings.warn(ModelFileWarning(f"{label}: {_non_finite_summary(report.non_finite)}; the model's outputs "
                                       "will be NaN or infinite"), stacklevel=2)
    return report


def dtype_fits(file_dtype: torch.dtype, model_dtype: torch.dtype) -> bool:
    """Whether a tensor of ``file_dtype`` may be loaded into one of ``model_dtype``: a floating-point parameter or
    buffer takes any floating-point tensor (a float16 file loads into float32, rounded as ``copy_`` rounds); an
    integer or boolean buffer (batch norm's ``num_batches_tracked``) only its own dtype. An int8 or bool tensor in
    place of weights is a wrong file, not a quantised model: graphspec writes no quantised models."""
    if model_dtype.is_floating_point:
        return file_dtype.is_floating_point
    return file_dtype == model_dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _count_non_finite(state: Mapping[str, torch.Tensor], keys) -> dict[str, int]:
    counts = {}
    for key in keys:
        t = state[key]
        if t.is_floating_point():
            bad = int(t.numel() - torch.isfinite(t).sum())
            if bad:
                counts[key] = bad
    return counts


def _non_finite_summary(counts: Mapping[str, int]) -> str:
    """``2 tensors hold NaN or infinity: c.weight (108 values), d.bias (5 values)``, naming at most
    :data:`NAMED_IN_MESSAGES`."""
    named = [f"{key} ({n:,} values)" for key, n in list(counts.items())[:NAMED_IN_MESSAGES]]
    more = len(counts) - len(named)
    listing = ", ".join(named) + (f" and {more:,} more" if more else "")
    noun = "tensor holds" if len(counts) == 1 else "tensors hold"
    return f"{len(counts):,} {noun} NaN or infinity: {listing}"
