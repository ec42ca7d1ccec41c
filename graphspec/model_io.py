"""Model files: one safetensors file holding the tensors plus, in its metadata, the spec, the frozen set, the
input preprocessing, a spec hash and a format version. Loading never executes code: safetensors is a JSON header
followed by raw tensor bytes, and the spec is YAML read by graphspec's safe loader.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .errors import GraphspecError, Location

FORMAT = "graphspec-model"
FORMAT_VERSION = 1
MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(GraphspecError):
    """A model file is unreadable, not a graphspec model, or does not fit its spec."""


@dataclass
class WeightReport:
    """What loading weights into a module found, by vertex."""

    missing: dict[str, list[str]] = field(default_factory=dict)  # vertex -> state keys absent from the file
    unexpected: dict[str, list[str]] = field(default_factory=dict)  # vertex -> keys the module does not have
    mismatched: dict[str, list[str]] = field(default_factory=dict)  # vertex -> "key: file [..] vs model [..]"
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def lines(self) -> list[str]:
        out = []
        for title, table in (("missing from the file", self.missing), ("not in the model", self.unexpected),
                             ("wrong shape", self.mismatched)):
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
        with open(path, "rb") as f:
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
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"not a valid model file: its header is not JSON ({e})", location=Location(label)) \
            from e
    if not isinstance(header, dict):
        raise ModelFileError("not a valid model file: its header is not a JSON object", location=Location(label))
    return header


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
    from .compiler import build

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
    from .spec.yaml_source import parse_yaml
    if not weights_needed:
        _check_tensor_extents(path, read_header(path))
    meta = read_metadata(path)
    spec_yaml = meta.get("spec", "")
    if spec_hash(spec_yaml) != meta.get("spec_sha256"):
        raise ModelFileError("the spec stored in the model file does not match its hash (the file was edited or "
                             "corrupted)", location=Location(str(path)))
    spec = load_spec(parse_yaml(spec_yaml, f"{path}[spec]"), check_graph=check_graph)  # errors point into it
    try:
        frozen = json.loads(meta.get("frozen", "[]"))
    except json.JSONDecodeError:
        frozen = None
    if not isinstance(frozen, list) or not all(isinstance(n, str) and n in spec.vertices for n in frozen):
        raise ModelFileError("the model file's frozen set is invalid", location=Location(str(path)))
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
    if not text:
        return None
    try:
        from .data.preprocessing import Preprocessing
    except ImportError:  # data package not available: keep the raw dict
        return json.loads(text)
    try:
        return Preprocessing.model_validate_json(text)
    except Exception as e:  # a pydantic ValidationError: the file's record is invalid
        raise ModelFileError(f"the model file's preprocessing record is invalid: {e}",
                             location=Location(str(path))) from e


def load_weights(model: torch.nn.Module, weights: "Mapping[str, torch.Tensor] | str | os.PathLike", *,
                 strict: bool = True, label: str = "<weights>") -> WeightReport:
    """Copy tensors into ``model`` by name; report by vertex what is missing, unexpected or of the wrong shape.

    With ``strict`` (the default) any problem raises :class:`ModelFileError` listing all of them and nothing is
    loaded; otherwise the matching tensors are loaded and the report says what was skipped.
    """
    if not isinstance(weights, Mapping):
        label = str(weights)
        weights = read_tensors(weights)
    state = model.state_dict()
    report = WeightReport()
    for key, tensor in weights.items():
        vertex = key.split(".", 1)[0]
        if key not in state:
            report.unexpected.setdefault(vertex, []).append(key)
        elif tuple(tensor.shape) != tuple(state[key].shape):
            report.mismatched.setdefault(vertex, []).append(
                f"{key}: file {list(tensor.shape)} vs model {list(state[key].shape)}")
    for key in state:
        if key not in weights:
            report.missing.setdefault(key.split(".", 1)[0], []).append(key)
    if strict and not report.ok:
        raise ModelFileError("the weights do not fit the model:\n  " + "\n  ".join(report.lines()),
                             location=Location(label))
    with torch.no_grad():
        for key, tensor in weights.items():
            if key in state and tuple(tensor.shape) == tuple(state[key].shape):
                state[key].copy_(tensor)
                report.loaded += 1
    return report
