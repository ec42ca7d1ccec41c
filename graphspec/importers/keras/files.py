"""Reading .keras zips and Keras 2 HDF5 files as data, within limits (hostile files are refused)."""
from __future__ import annotations

import io
import json
import posixpath
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import Location
from ..common import ImportRefused
from .model import _Layer, _prod


# --- limits for files from elsewhere -----------------------------------------------------------------------------
MAX_TOTAL_BYTES = 4 << 30  # uncompressed members of a .keras zip, all together
MAX_CONFIG_BYTES = 64 << 20  # config.json / metadata.json / the model_config attribute
MAX_RATIO = 100  # uncompressed / compressed size of a zip member (a zip bomb compresses far better)
RATIO_FLOOR = 1 << 20  # members smaller than this are not judged by their ratio (tiny JSON compresses well)
MAX_TENSOR_BYTES = 2 << 30  # one weight, as declared by its dataset
MAX_WEIGHT_BYTES = 8 << 30  # all weights read, together
MAX_MEMBERS = 10_000  # entries of a .keras zip (Keras writes three, plus assets)
MAX_DEPTH = 100  # nesting of the configuration JSON (a Keras config is about 10 deep)
KERAS_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")

NOTE_IMAGES = ("images are NCHW [N, C, H, W] in graphspec (Keras: NHWC [N, H, W, C]): feed "
               "x.permute(0, 3, 1, 2); image outputs come back NCHW")
NOTE_SEQUENCES = ("sequences are [N, features, T] in graphspec (Keras: [N, T, features]): feed x.transpose(1, 2); "
                  "sequence outputs come back [N, features, T]")


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportRefused("importing Keras files needs h5py: pip install 'graphspec[import]' (or pip install h5py)"
                            ) from None
    return h5py


# --- reading the files --------------------------------------------------------------------------------------------
class _Reader:
    """A Keras file opened for reading: its configuration and a way to read each layer's weights safely."""

    def __init__(self, path: Path):
        self.path = path
        self.source = str(path)
        self.h5 = None
        self.keras_version = ""
        self.format = ""
        self.config: dict = {}
        self.bytes_read = 0

    def refuse(self, message: str) -> ImportRefused:
        return ImportRefused(message, location=Location(self.source))

    def json(self, data: bytes | str, what: str) -> Any:
        if len(data) > MAX_CONFIG_BYTES:
            raise self.refuse(f"{what} is {len(data)} bytes; a Keras configuration is far smaller "
                              f"(the limit is {MAX_CONFIG_BYTES} bytes)")
        try:
            obj = json.loads(data)
        except RecursionError:
            raise self.refuse(f"{what} is nested too deeply to be a Keras configuration") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise self.refuse(f"{what} is not valid JSON: {e}") from None
        if not _depth_ok(obj):
            raise self.refuse(f"{what} is nested more than {MAX_DEPTH} levels deep; a Keras configuration is not")
        return obj

    # -- opening
    def open(self) -> None:
        with open(self.path, "rb") as f:
            magic = f.read(8)
        if magic[:4] == b"PK\x03\x04" or magic[:4] == b"PK\x05\x06":
            self._open_zip()
        elif magic == b"\x89HDF\r\n\x1a\n":
            self._open_h5()
        else:
            raise self.refuse("not a Keras model file: neither a .keras zip nor an HDF5 (.h5) file")

    def _open_zip(self) -> None:
        h5py = _h5py()
        self.format = "keras"
        try:
            z = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise self.refuse(f"not a readable .keras zip: {e}") from e
        with z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise self.refuse(f"the zip has {len(infos)} members; a .keras file has a handful")
            seen, total = set(), 0
            for i in infos:
                n = i.filename
                if n.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", n) or ".." in re.split(r"[/\\]", n):
                    raise self.refuse(f"zip member '{n}' points outside the archive; refusing the whole file")
                if "\\" in n or "\x00" in n or posixpath.normpath(n) != n.rstrip("/"):
                    raise self.refuse(f"zip member '{n}' is not a plain relative path; refusing the whole file")
                if n in seen:
                    raise self.refuse(f"zip member '{n}' appears twice")
                seen.add(n)
                total += i.file_size
                if total > MAX_TOTAL_BYTES:
                    raise self.refuse(f"the zip declares more than {MAX_TOTAL_BYTES} uncompressed bytes")
                if i.file_size >= RATIO_FLOOR and i.file_size > MAX_RATIO * max(i.compress_size, 1):
                    raise self.refuse(f"zip member '{n}' expands {i.file_size} bytes from {i.compress_size} "
                                      f"(more than {MAX_RATIO}x): a zip bomb, not a Keras file")
            members = {}
            for name in KERAS_MEMBERS:
                if name not in seen:
                    continue
                info = z.getinfo(name)
                if info.flag_bits & 0x1:
                    raise self.refuse(f"zip member '{name}' is encrypted")
                if name != "model.weights.h5" and info.file_size > MAX_CONFIG_BYTES:
                    raise self.refuse(f"{name} is {info.file_size} bytes; a Keras configuration is far smaller")
                try:
                    with z.open(info) as f:
                        data = f.read(info.file_size + 1)  # never more than declared (+1 shows a lying header)
                except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as e:
                    raise self.refuse(f"zip member '{name}' cannot be read: {e}") from e
                if len(data) != info.file_size:
                    raise self.refuse(f"zip member '{name}' holds {len(data)} bytes, not the {info.file_size} "
                                      "its header declares")
                members[name] = data
        for needed in ("config.json", "model.weights.h5"):
            if needed not in members:
                raise self.refuse(f"not a Keras 3 model file: the zip has no {needed}")
        if "metadata.json" in members:
            meta = self.json(members["metadata.json"], "metadata.json")
            if isinstance(meta, dict):
                self.keras_version = str(meta.get("keras_version", ""))
        self.keras_version = self.keras_version or "3"
        self.config = self.json(members["config.json"], "config.json")
        try:
            self.h5 = h5py.File(io.BytesIO(members["model.weights.h5"]), "r")
        except OSError as e:
            raise self.refuse(f"model.weights.h5 in the zip is not a readable HDF5 file: {e}") from e

    def _open_h5(self) -> None:
        h5py = _h5py()
        self.format = "h5"
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise self.refuse(f"not a readable HDF5 file: {e}") from e
        attrs = self.h5.attrs
        if "model_config" not in attrs:
            raise self.refuse("the HDF5 file has no 'model_config' attribute: a weights-only file (save the whole "
                              "model with model.save) or not a Keras model")
        raw = _attr(self.h5, "model_config", self)
        self.keras_version = _text(_attr(self.h5, "keras_version", self) or b"") or "2"
        self.config = self.json(_text(raw), "the 'model_config' attribute")

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()

    # -- weights
    def _node(self, path: str, layer: str):
        """The HDF5 object at ``path``, following hard links only (no links to other files, no soft links)."""
        h5py = _h5py()
        node = self.h5
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, h5py.Group):
                raise self.refuse(f"layer '{layer}': '{path}' in the weights is not where a group should be")
            link = node.get(part, getlink=True)
            if link is None:
                return None
            if isinstance(link, h5py.ExternalLink):
                raise self.refuse(f"layer '{layer}': '{path}' is an external link to {link.filename}:{link.path}; "
                                  "only data stored in the file itself is read")
            if not isinstance(link, h5py.HardLink):
                raise self.refuse(f"layer '{layer}': '{path}' is a {type(link).__name__}; only data stored in the "
                                  "file itself is read")
            node = node[part]
        return node

    def dataset(self, path: str, layer: str, label: str, shape: tuple) -> np.ndarray:
        h5py = _h5py()
        label = label.split("|")[0]
        d = self._node(path, layer)
        if d is None:
            raise self.refuse(f"layer '{layer}': weight '{label}' is missing from the file ({path})")
        if not isinstance(d, h5py.Dataset):
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) is not a dataset")
        if d.is_virtual:
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) is a virtual dataset mapping other "
                              "files; only data stored in the file itself is read")
        if d.external:
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) keeps its data in an external file "
                              f"({d.external[0][0]}); only data stored in the file itself is read")
        if d.dtype.kind != "f":
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) holds {d.dtype}, not floating-point "
                              "numbers")
        if tuple(d.shape) != tuple(shape):
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) has shape {tuple(d.shape)}, but the "
                              f"layer's configuration needs {tuple(shape)}")
        nbytes = _prod(d.shape) * d.dtype.itemsize
        if nbytes > MAX_TENSOR_BYTES:
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) declares {nbytes} bytes (the limit is "
                              f"{MAX_TENSOR_BYTES})")
        if nbytes and d.id.get_storage_size() == 0:
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) declares {nbytes} bytes but stores none")
        self.bytes_read += nbytes
        if self.bytes_read > MAX_WEIGHT_BYTES:
            raise self.refuse(f"layer '{layer}': the weights exceed {MAX_WEIGHT_BYTES} bytes in all")
        try:
            data = d[()]
        except (OSError, ValueError) as e:
            raise self.refuse(f"layer '{layer}': weight '{label}' ({path}) cannot be read: {e}") from e
        return np.asarray(data, dtype=np.float32)

    def weights(self, L: _Layer, parts: list[tuple[str, list[tuple[str, tuple]]]]) -> list[np.ndarray]:
        """The layer's weights in Keras's order; ``parts`` = [(sub-object, [(label, shape), ...]), ...] where the
        sub-object is '' (the layer), 'cell' (a recurrent layer's cell), 'forward_layer/cell', ..."""
        if self.format == "keras":
            return self._keras_weights(L, parts)
        return self._h5_weights(L, parts)

    def _keras_weights(self, L, parts):
        base = L.keras_path
        if not base:
            raise self.refuse(f"layer '{L.name}': no place for its weights in model.weights.h5")
        out = []
        for sub, wanted in parts:
            group_path = "/".join(p for p in (base, sub, "vars") if p)
            group = self._node(group_path, L.name)
            keys = sorted(group.keys(), key=lambda k: (len(k), k)) if group is not None else []
            expected = [str(i) for i in range(len(wanted))]
            if keys != expected:
                raise self.refuse(f"layer '{L.name}': model.weights.h5 holds {len(keys)} weights at {group_path}, "
                                  f"but the layer's configuration needs {len(wanted)} "
                                  f"({', '.join(lbl.split('|')[0] for lbl, _ in wanted) or 'none'})")
            stored = _text(group.attrs.get("name", b"")) if group is not None and not sub else ""
            if stored and stored != (L.original or L.name):
                raise self.refuse(f"layer '{L.name}': its weights at {group_path} belong to layer '{stored}' in "
                                  "model.weights.h5; the weights do not match the configuration")
            for i, (label, shape) in enumerate(wanted):
                out.append(self.dataset(f"{group_path}/{i}", L.name, label, shape))
        return out

    def _h5_weights(self, L, parts):
        wanted = [w for _, ws in parts for w in ws]
        root = self._node("model_weights", L.name)
        if root is None:
            root = self.h5  # Keras 1/2 weights-at-root layout ("layer_names" on the file)
        where = L.h5_group or L.name
        group = self._node(f"{root.name.strip('/')}/{where}", L.name) if where in root else None
        names = [_text(n) for n in _attr_list(group, "weight_names", self)] if group is not None else []
        if L.h5_filter is not None:  # a nested model's group holds the weights of all its layers, by layer name
            names = [n for n in names if L.h5_filter in n.split("/")[:-1]]
        if len(names) != len(wanted):
            raise self.refuse(f"layer '{L.name}': the file holds {len(names)} weights for it "
                              f"({', '.join(names) or 'none'}), but its configuration needs {len(wanted)} "
                              f"({', '.join(lbl.split('|')[0] for lbl, _ in wanted) or 'none'})")
        out = []
        for name, (label, shape) in zip(names, wanted):
            stem = name.split("/")[-1].split(":")[0]
            if stem not in label.split("|"):  # 'depthwise_kernel|kernel': Keras 2's name, then Keras 3's
                raise self.refuse(f"layer '{L.name}': the file's weight '{name}' stands where its configuration "
                                  f"needs '{label.split('|')[0]}'")
            out.append(self.dataset(f"{group.name.strip('/')}/{name}", L.name, label, shape))
        return out


def _keras_module(module) -> bool:
    """Whether a Keras 3 config's ``module`` is Keras's own (not a package merely named keras_something)."""
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v[()])
    return str(v)


def _attr(obj, name: str, reader: "_Reader"):
    """An HDF5 attribute, after checking its declared size (a hostile file may declare gigabytes)."""
    if name not in obj.attrs:
        return None
    h5py = _h5py()
    size = h5py.h5a.open(obj.id, name.encode()).get_storage_size()
    if size > MAX_CONFIG_BYTES:
        raise reader.refuse(f"the HDF5 attribute '{name}' of '{obj.name}' declares {size} bytes; Keras writes far "
                            "smaller ones")
    return obj.attrs[name]


def _attr_list(obj, name: str, reader: "_Reader") -> list:
    """An attribute list that Keras may split into name0, name1, ... (the 64 KiB HDF5 header limit)."""
    if name in obj.attrs:
        return list(_attr(obj, name, reader))
    out, i = [], 0
    while f"{name}{i}" in obj.attrs and i < MAX_MEMBERS:
        out.extend(_attr(obj, f"{name}{i}", reader))
        i += 1
    return out


def _depth_ok(obj, limit: int = MAX_DEPTH) -> bool:
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True
