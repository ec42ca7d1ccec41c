"""Reading an ONNX file without running anything: protobuf, external data from inside its folder only, declared sizes checked, old opsets converted."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import Location
from ..common import ImportRefused


OPSET = 13  # older files are converted to this opset before translation
MAX_OPSET = 25  # the newest the installed onnx package defines here (1.23)
MAX_ELEMENTS = 1 << 30  # any one tensor (declared or folded): 4 GiB of float32
MAX_DIMS = 8


# --- reading ------------------------------------------------------------------------------------------------


def read(path: Path):
    """The ModelProto of ``path``: parsed, its external data loaded from inside its folder, every tensor's
    declared size checked against its bytes, converted to ``OPSET`` when older."""
    import onnx
    where = Location(str(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not a model file
        raise ImportRefused(f"cannot read {path.name} as ONNX: {type(e).__name__}: {e}", location=where) from e
    if not model.HasField("graph") or not model.graph.node:
        raise ImportRefused(f"{path.name} holds no ONNX graph (an empty or foreign file)", location=where)
    _load_external(model, path)
    for t in _all_tensors(model.graph):
        _check_tensor(t, path)
    version = _opset(model, path)
    if version < OPSET:
        from onnx import version_converter
        try:
            model = version_converter.convert_version(model, OPSET)
        except Exception as e:
            raise ImportRefused(f"cannot convert {path.name} from opset {version} to {OPSET}: {e}",
                                location=where) from e
    return model


def _opset(model, path: Path) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    others = sorted({o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")})
    if not versions:
        raise ImportRefused(f"{path.name} declares no ONNX opset", location=Location(str(path)))
    if versions[0] > MAX_OPSET:
        raise ImportRefused(f"{path.name} uses opset {versions[0]}; graphspec reads opsets 7..{MAX_OPSET}",
                            location=Location(str(path)))
    used = {n.domain for n in model.graph.node} - {"", "ai.onnx"}
    if used:
        raise ImportRefused(f"{path.name} uses operators of other domains ({', '.join(sorted(used or others))}); "
                            "graphspec reads the standard ONNX operators only", location=Location(str(path)))
    return versions[0]


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors


def _load_external(model, path: Path) -> None:
    """External data only from regular files inside the model's folder, each read within its declared range."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    folder = path.resolve().parent
    for t in _all_tensors(model.graph):
        if not uses_external_data(t):
            continue
        info = ExternalDataInfo(t)
        target = (folder / info.location).resolve()
        if os.path.isabs(info.location) or folder not in target.parents or not target.is_file():
            raise ImportRefused(f"tensor '{t.name}' points to external data '{info.location}', outside the model's "
                                f"folder {folder} (or not a file); refused", location=Location(str(path)))
        size = target.stat().st_size
        offset, length = int(info.offset or 0), info.length
        length = size - offset if length is None else int(length)
        if offset < 0 or length < 0 or offset + length > size:
            raise ImportRefused(f"tensor '{t.name}': external data range {offset}+{length} exceeds "
                                f"{info.location} ({size} bytes)", location=Location(str(path)))
        with open(target, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        del t.external_data[:]
        t.data_location = 0  # onnx.TensorProto.DEFAULT


def _check_tensor(t, path: Path) -> None:
    """Dimensions that are sane, and bytes enough for the declared size (a hostile file may claim more)."""
    from onnx import helper
    where = Location(str(path))
    dims = list(t.dims)
    if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
        raise ImportRefused(f"tensor '{t.name}' declares dimensions {dims}", location=where)
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if count > MAX_ELEMENTS:
        raise ImportRefused(f"tensor '{t.name}' declares {count:,} values ({dims}); more than graphspec reads "
                            f"({MAX_ELEMENTS:,})", location=where)
    if t.raw_data:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if len(t.raw_data) != count * itemsize:
            raise ImportRefused(f"tensor '{t.name}' declares {dims} ({count * itemsize} bytes) but holds "
                                f"{len(t.raw_data)} bytes", location=where)
