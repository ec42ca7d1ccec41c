"""Keras models as graphspec specs with their weights: ``.keras`` files (Keras 3: a zip of ``config.json``,
``model.weights.h5`` and ``metadata.json``) and ``.h5`` files (the Keras 2 HDF5 layout: a ``model_config``
attribute and ``model_weights/<layer>`` groups, also what Keras 3 writes for ``model.save("m.h5")``).

The files are read as data only: ``json`` for the configuration and ``h5py`` for the weights. Keras and
TensorFlow are never imported, no Python code stored in a file is decoded or run (a ``Lambda`` layer is refused by
name), and a file that is not sound is refused before anything is built: zip members outside the archive, zip
bombs, absurdly nested JSON, HDF5 links to other files, datasets stored elsewhere or shaped unlike what the layer
needs.

Keras keeps images channels-last (NHWC) and sequences time-first (``[N, T, features]``); graphspec keeps
channels-first images ``[N, C, H, W]`` and sequences ``[N, features, T]`` (DL4J's layouts). The imported spec
takes and gives graphspec's layouts; every place where the order of values matters is converted exactly:
convolution kernels are transposed, the rows of a Dense layer after a ``Flatten`` of an image are permuted from
Keras's (H, W, C) order to graphspec's (C, H, W) order, concatenation axes and ``Reshape``/``Permute`` layers are
mapped (with ``permute`` vertices where the order of values has to be Keras's). docs/import.md lists what is
supported and why the rest is refused.
"""
from __future__ import annotations

import io
import json
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import Location
from .common import Imported, ImportRefused, Names, Unsupported

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


# --- the parsed configuration ------------------------------------------------------------------------------------
Ref = tuple  # (layer name, node index, tensor index): a Keras tensor


@dataclass
class _Layer:
    cls: str
    name: str
    config: dict
    nodes: list = field(default_factory=list)  # per call: the list of input Refs
    kwargs: list = field(default_factory=list)  # per call: the call's keyword arguments (non-tensor)
    module: str | None = None
    registered: str | None = None
    index: tuple = (0,)  # position in the config (nested models: the position of each enclosing model first)
    keras_path: str = ""  # .keras: where model.weights.h5 keeps its weights ('layers/functional/layers/conv2d')
    h5_group: str = ""  # .h5: its group under model_weights (a nested model's layers: the nested model's group)
    h5_filter: str | None = None  # .h5, in a nested model's group: the weight names of this layer
    original: str = ""  # the name Keras gave it (a nested model's layer may be renamed to stay unique)
    inner: "_Model | None" = None  # a nested model


@dataclass
class _Model:
    name: str
    layers: list[_Layer]
    inputs: list[Ref]
    outputs: list[Ref]
    weight_layers: list[_Layer]  # Keras's model.layers order (what a .keras file's weight paths count)


@dataclass(frozen=True)
class _Perm:
    """A vector whose graphspec feature j is Keras feature ``index[j]`` (after a Flatten of an image/sequence)."""

    index: np.ndarray
    origins: frozenset  # the Flatten layers it comes from

    def __eq__(self, other):
        return isinstance(other, _Perm) and np.array_equal(self.index, other.index)

    __hash__ = None


@dataclass
class _T:
    """A Keras tensor in the spec: the vertex that computes it and its Keras shape per example."""

    vertex: str
    shape: tuple  # Keras layout, without the batch (None: unknown length)
    perm: _Perm | None = None
    nonneg: bool = False  # known to be >= 0 (decides whether 0-padding of a max pooling is exact)
    indices: bool = False  # class indices for an Embedding, graphspec [1, T]


class _Restart(Exception):
    """A Flatten's permuted vector reached a layer that cannot take it: convert again with exact Flatten vertices."""

    def __init__(self, origins):
        self.origins = set(origins)


class _Poisoned(Exception):
    pass


def _graphspec_shape(shape: tuple) -> tuple:
    """Keras per-example shape (channels/features last) -> graphspec's (channels/features first)."""
    return tuple(shape) if len(shape) <= 1 else (shape[-1], *shape[:-1])


def _to_graphspec_axes(rank: int) -> list[int]:
    """graphspec axis i is Keras axis result[i] (per example, 0-based)."""
    return list(range(rank)) if rank <= 1 else [rank - 1, *range(rank - 1)]


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def _keeps_order(shape: tuple, axes: list[int]) -> bool:
    """Whether transposing ``shape`` by ``axes`` leaves the values in the same flat order (only size-1 axes move)."""
    moved = [a for a in axes if shape[a] != 1]
    return moved == sorted(moved)


def _pair(v, what="value") -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return (int(v[0]), int(v[1]))
    raise _BadConfig(f"{what} must be an integer or two integers, not {v!r}")


def _single(v, what="value") -> int:
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = v[0]
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    raise _BadConfig(f"{what} must be an integer, not {v!r}")


class _BadConfig(Exception):
    pass


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


# --- the configuration ---------------------------------------------------------------------------------------------
def _snake(name: str) -> str:  # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Parser:
    def __init__(self, reader: _Reader):
        self.r = reader

    def bad(self, msg: str) -> ImportRefused:
        return self.r.refuse(f"the model configuration is not one Keras writes: {msg}")

    def model(self, top: Any) -> _Model:
        if not isinstance(top, dict) or "class_name" not in top:
            raise self.bad("no 'class_name' at the top")
        cls, cfg = top.get("class_name"), top.get("config")
        if cls not in MODEL_CLASSES:
            raise self.r.refuse(f"model class '{cls}' is not a Sequential or Functional model: a subclassed "
                                "model's structure is Python code, not configuration, and is not imported")
        m = self.parse(cls, cfg, 0)
        self.place(m, "", None)
        return self.flatten(m)

    def parse(self, cls: str, cfg: Any, depth: int) -> _Model:
        if depth > 16:
            raise self.r.refuse("models nested more than 16 deep")
        if cls == "Sequential":
            m = self.sequential(cfg)
        else:
            if not isinstance(cfg, dict) or "layers" not in cfg:
                raise self.bad(f"a {cls} model without 'layers'")
            m = self.functional(cfg)
        for L in m.layers:
            if L.cls in MODEL_CLASSES and L.registered in (None, L.cls) and (
                    isinstance(L.config.get("layers"), list)):
                L.inner = self.parse(L.cls, L.config, depth + 1)
        return m

    def place(self, m: _Model, prefix: str, h5_group: str | None) -> None:
        """Where each layer's weights are: a .keras file's paths count ``snake_case(class)`` names in
        model.layers order, not layer names (keras/src/saving/saving_lib.py, _save_container_state); an .h5
        file's groups are layer names, and a nested model's group holds all its layers' weights."""
        used: dict[str, int] = {}
        for L in m.weight_layers:
            base = _snake(L.cls)
            if base in used:
                used[base] += 1
                base = f"{base}_{used[base]}"
            else:
                used[base] = 0
            L.keras_path = f"{prefix}layers/{base}"
            L.h5_group, L.h5_filter = (h5_group, L.name) if h5_group else (L.name, None)
            if L.inner is not None:
                self.place(L.inner, f"{L.keras_path}/", h5_group or L.name)

    def flatten(self, m: _Model) -> _Model:
        """A nested model's layers become layers of the enclosing model, called once per call of the nested
        model (a nested model called twice: its layers are shared)."""
        if not any(L.inner for L in m.layers):
            return m
        taken = {L.name for L in m.layers}
        layers, alias = [], {}
        for N in m.layers:
            if N.inner is None:
                layers.append(N)
                continue
            inner = self.flatten(N.inner)
            entry = {r[0] for r in inner.inputs}
            flat, counts = {}, {}
            for X in inner.layers:
                if X.cls == "InputLayer":
                    continue
                name = X.name if X.name not in taken else f"{N.name}/{X.name}"
                while name in taken:
                    name += "_"
                taken.add(name)
                counts[X.name] = len(X.nodes)
                flat[X.name] = _Layer(cls=X.cls, name=name, config=X.config, module=X.module,
                                      registered=X.registered, index=N.index + X.index, keras_path=X.keras_path,
                                      h5_group=X.h5_group, h5_filter=X.h5_filter, original=X.original or X.name)
            for k, (args, kwargs) in enumerate(zip(N.nodes, N.kwargs)):
                if len(args) != len(inner.inputs):
                    raise self.bad(f"nested model '{N.name}' is called with {len(args)} inputs; it takes "
                                   f"{len(inner.inputs)}")
                given = dict(zip(inner.inputs, args))

                def mapped(r, k=k, given=given):
                    if r[0] in entry:
                        if r not in given:
                            raise self.bad(f"nested model '{N.name}' reads its input '{r[0]}' oddly")
                        return given[r]
                    if r[0] not in flat:
                        raise self.bad(f"nested model '{N.name}' has no layer '{r[0]}'")
                    return (flat[r[0]].name, k * counts[r[0]] + r[1], r[2])

                for X in inner.layers:
                    if X.cls != "InputLayer":
                        for refs, kw in zip(X.nodes, X.kwargs):
                            flat[X.name].nodes.append([mapped(r) for r in refs])
                            flat[X.name].kwargs.append({**kwargs, **kw})
                for t, r in enumerate(inner.outputs):
                    alias[(N.name, k, t)] = mapped(r)
            layers.extend(flat.values())

        def resolve(r):
            for _ in range(len(alias) + 1):
                if r not in alias:
                    return r
                r = alias[r]
            raise self.bad("nested models refer to each other in a circle")

        for L in layers:
            L.nodes = [[resolve(r) for r in refs] for refs in L.nodes]
        m.layers, m.outputs = layers, [resolve(r) for r in m.outputs]
        return m

    def entry(self, e: Any, i: int) -> _Layer:
        if not isinstance(e, dict) or not isinstance(e.get("class_name"), str):
            raise self.bad(f"layer entry {i} has no class_name")
        cfg = e.get("config")
        if not isinstance(cfg, dict):
            cfg = {}
        name = e.get("name", cfg.get("name"))
        if not isinstance(name, str) or not name:
            raise self.bad(f"layer entry {i} ({e['class_name']}) has no name")
        return _Layer(cls=e["class_name"], name=name, config=cfg, module=e.get("module"),
                      registered=e.get("registered_name"), index=(i,))

    def sequential(self, cfg: Any) -> _Model:
        if isinstance(cfg, list):  # Keras 2.0-2.2: the config is the list of layers
            cfg = {"layers": cfg}
        if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
            raise self.bad("a Sequential model without 'layers'")
        entries = [self.entry(e, i) for i, e in enumerate(cfg["layers"])]
        if entries and entries[0].cls == "InputLayer":
            first, rest = entries[0], entries[1:]
        else:
            rest = entries
            shape = None
            if rest:
                c = rest[0].config
                shape = c.get("batch_shape") or c.get("batch_input_shape")
            shape = shape or cfg.get("build_input_shape")
            if shape is None:
                raise self.r.refuse("the Sequential model has no input shape (it was never built); build it "
                                    "with an Input before saving")
            first = _Layer(cls="InputLayer", name="input", config={"batch_shape": shape}, index=(-1,))
        if not rest:
            raise self.r.refuse("the Sequential model has no layers")
        names = {first.name}
        prev = first.name
        for L in rest:
            if L.name in names:
                raise self.bad(f"two layers are named '{L.name}'")
            names.add(L.name)
            L.nodes, L.kwargs = [[(prev, 0, 0)]], [{}]
            prev = L.name
        return _Model(name=str(cfg.get("name") or "model"), layers=[first, *rest], inputs=[(first.name, 0, 0)],
                      outputs=[(prev, 0, 0)], weight_layers=rest)

    def functional(self, cfg: dict) -> _Model:
        if not isinstance(cfg["layers"], list):
            raise self.bad("'layers' is not a list")
        layers = [self.entry(e, i) for i, e in enumerate(cfg["layers"])]
        by_name = {}
        for L, e in zip(layers, cfg["layers"]):
            if L.name in by_name:
                raise self.bad(f"two layers are named '{L.name}'")
            by_name[L.name] = L
            nodes = e.get("inbound_nodes", [])
            if not isinstance(nodes, list):
                raise self.bad(f"layer '{L.name}': inbound_nodes is not a list")
            for node in nodes:
                refs, kwargs = self.node(L, node)
                L.nodes.append(refs)
                L.kwargs.append(kwargs)
        inputs, outputs = self.refs(cfg.get("input_layers")), self.refs(cfg.get("output_layers"))
        if not inputs or not outputs:
            raise self.bad("the model has no input_layers or output_layers")
        return _Model(name=str(cfg.get("name") or "model"), layers=layers, inputs=inputs, outputs=outputs,
                      weight_layers=layers)

    def refs(self, x) -> list[Ref]:
        if isinstance(x, list) and len(x) >= 3 and isinstance(x[0], str) and all(
                isinstance(v, int) for v in x[1:3]):
            return [(x[0], int(x[1]), int(x[2]))]
        if isinstance(x, list):
            return [r for v in x for r in self.refs(v)]
        if isinstance(x, dict):
            return [r for v in x.values() for r in self.refs(v)]
        raise self.bad(f"cannot read {x!r} as a layer reference")

    def node(self, L: _Layer, node: Any) -> tuple[list[Ref], dict]:
        if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
            refs: list[Ref] = []
            args = node.get("args", [])
            if not isinstance(args, list):
                raise self.bad(f"layer '{L.name}': a call's args are not a list")
            for a in args:
                self.tensors(L, a, refs)
            kwargs = node.get("kwargs", {})
            if not isinstance(kwargs, dict):
                raise self.bad(f"layer '{L.name}': a call's kwargs are not a mapping")
            for k, v in kwargs.items():
                found: list = []
                self.tensors(L, v, found, constants=True)
                if found:
                    kwargs = {**kwargs, k: "<tensor>"}
            return refs, kwargs
        if isinstance(node, list):  # Keras 1/2: [[layer, node, tensor, kwargs], ...]
            refs, kwargs = [], {}
            for item in node:
                if not (isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str)
                        and isinstance(item[1], int) and isinstance(item[2], int)):
                    raise self.bad(f"layer '{L.name}': cannot read inbound node {item!r}")
                refs.append((item[0], item[1], item[2]))
                if len(item) > 3 and isinstance(item[3], dict):
                    kwargs.update(item[3])
            return refs, kwargs
        raise self.bad(f"layer '{L.name}': cannot read inbound node {node!r}")

    def tensors(self, L, x, out: list, constants: bool = False) -> None:
        if isinstance(x, dict) and x.get("class_name") == "__keras_tensor__":
            h = (x.get("config") or {}).get("keras_history")
            if not (isinstance(h, list) and len(h) == 3 and isinstance(h[0], str)
                    and isinstance(h[1], int) and isinstance(h[2], int)):
                raise self.bad(f"layer '{L.name}': a tensor without a readable keras_history")
            out.append((h[0], h[1], h[2]))
        elif isinstance(x, (list, tuple)):
            for v in x:
                self.tensors(L, v, out, constants)
        elif x is None or isinstance(x, (bool, int, float, str)) or isinstance(x, dict):
            if not constants:
                raise self.bad(f"layer '{L.name}': called with a constant argument {x!r}")


# --- activations -------------------------------------------------------------------------------------------------
ACTIVATIONS = {  # Keras name -> graphspec name (docs/spec.md; formulas checked in tests/test_import_keras.py)
    "linear": "identity", None: "identity", "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
    "softmax": "softmax", "elu": "elu", "selu": "selu", "gelu": "gelu", "swish": "swish", "silu": "swish",
    "softplus": "softplus", "softsign": "softsign", "mish": "mish", "hard_swish": "hardswish",
    "hard_silu": "hardswish",
}
NONNEG = {"relu", "relu6", "sigmoid", "softmax", "softplus", "hardsigmoid"}


# --- conversion ------------------------------------------------------------------------------------------------------
class _Converter:
    def __init__(self, reader: _Reader, model: _Model, exact_flatten: set[str], cache: dict):
        from ..spec.loader import RESERVED
        self.r = reader
        self.model = model
        self.keras3 = not reader.keras_version.startswith(("1", "2"))
        self.exact_flatten = exact_flatten
        self.cache = cache  # layer name -> weights, kept across restarts
        self.names = Names(reserved=RESERVED)
        self.inputs: dict[str, dict] = {}
        self.index_inputs: set[str] = set()
        self.vertices: dict[str, dict] = {}
        self.params: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.noted: dict[str, list[str]] = {}
        self.unsupported = Unsupported(reader.source)
        self.tensors: dict[Ref, _T | None] = {}
        self.layers = {L.name: L for L in model.layers}
        self.first_call: dict[str, list] = {}
        self.call: tuple | None = None  # (layer, node index, emitted list)

    # -- bookkeeping
    def bad(self, L: _Layer, detail: str, op: str | None = None) -> None:
        self.unsupported.add(op or L.cls, detail, L.name)
        self.failed = True

    def note(self, key: str, layer: str) -> None:
        self.noted.setdefault(key, []).append(layer)

    def name(self, suffix: str = "") -> str:
        layer, k, _ = self.call
        raw = layer if k == 0 else f"{layer}#{k}"
        return self.names(f"{raw}/{suffix}" if suffix else raw)

    def emit(self, vertex: dict, params: dict | None = None, suffix: str = "") -> str:
        """Add a vertex for the current call (a shared layer's later calls share the first call's vertices)."""
        layer, k, emitted = self.call
        name = self.name(suffix)
        if k > 0:
            first = self.first_call.get(layer)
            i = len(emitted)
            if first is None or i >= len(first):
                raise self.r.refuse(f"layer '{layer}': its call {k} cannot be matched with its first call")
            fname, fparams = first[i]
            if params:
                if fparams is None or set(fparams) != set(params) or not all(
                        np.array_equal(fparams[p], params[p]) for p in params):
                    self.bad(self.layers[layer], "a shared layer called on inputs of different layouts",
                             op="shared layer")
                    raise _Poisoned()
                vertex = {"shares": fname, "inputs": vertex["inputs"]}
                params = None
        emitted.append((name, params))
        self.vertices[name] = vertex
        for p, a in (params or {}).items():
            self.params[f"{name}.{p}"] = np.ascontiguousarray(a, dtype=np.float32)
        return name

    def read(self, L: _Layer, parts) -> list[np.ndarray]:
        if L.name not in self.cache:
            self.cache[L.name] = self.r.weights(L, parts)
        return self.cache[L.name]

    # -- common checks
    def activation(self, L: _Layer, value: Any) -> str | None:
        name = value
        if isinstance(value, dict):  # Keras 3 may serialise the function: {"module": "keras.activations", ...}
            cfg = value.get("config")
            if _keras_module(value.get("module")) and isinstance(cfg, str):
                name = cfg
            elif value.get("class_name") in ACTIVATIONS and not value.get("config"):
                name = value.get("class_name")
            else:
                self.bad(L, "a custom activation function (Python code) is not imported", op="activation")
                return None
        if name == "hard_sigmoid":
            if not self.keras3:
                return "hardsigmoid"  # Keras 2: clip(0.2x + 0.5, 0, 1) = graphspec's (DL4J's) hardsigmoid
            self.bad(L, "Keras 3's hard_sigmoid is clip(x/6 + 1/2, 0, 1); graphspec's hardsigmoid is DL4J's "
                        "clip(0.2x + 1/2, 0, 1)", op="activation hard_sigmoid")
            return None
        if name not in ACTIVATIONS:
            detail = ("Keras's leaky_relu activation has slope 0.2; graphspec's leakyrelu 0.01 (use a LeakyReLU "
                      "layer)" if name == "leaky_relu" else "not a graphspec activation")
            self.bad(L, detail, op=f"activation {name}")
            return None
        return ACTIVATIONS[name]

    def channels_last(self, L: _Layer) -> None:
        fmt = L.config.get("data_format")
        if fmt not in (None, "channels_last"):
            self.bad(L, f"data_format '{fmt}' (only channels_last, Keras's default, is imported)")

    def training_only(self, L: _Layer) -> None:
        c = L.config
        if any(c.get(k) for k in c if k.endswith("_regularizer")):
            self.note("regularizers", L.name)
        if any(c.get(k) for k in c if k.endswith("_constraint")):
            self.note("constraints", L.name)

    def dtype(self, L: _Layer) -> None:
        d = L.config.get("dtype")
        name = d.get("config", {}).get("name") if isinstance(d, dict) else d
        if isinstance(d, dict) and d.get("class_name") not in (None, "DTypePolicy", "FloatDTypePolicy", "Policy"):
            self.bad(L, f"dtype policy {d.get('class_name')} (quantized weights)", op="dtype")
        elif name not in (None, "float32", "float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16"):
            self.bad(L, f"dtype '{name}'", op="dtype")
        if L.config.get("quantization_config") or L.config.get("lora_rank"):
            self.bad(L, "quantization or LoRA weights", op="dtype")

    # -- the whole model
    def convert(self) -> Imported:
        m = self.model
        self.failed = False
        order = self.order()
        for ref in m.inputs:
            self.input(ref)
        for layer, k in order:
            L = self.layers[layer]
            if L.cls == "InputLayer":
                continue
            self.convert_call(L, k)
        outputs = []
        for ref in m.outputs:
            t = self.tensor(ref, None)
            if t is None:
                continue
            if t.perm is not None:
                raise _Restart(t.perm.origins)
            if t.vertex in self.inputs:  # a network input returned as it is: graphspec outputs are vertices
                self.call = (f"{t.vertex}_output", 0, [])
                t = _T(self.emit({"type": "identity", "inputs": [t.vertex]}), t.shape)
            if t.vertex in outputs:
                self.unsupported.add("output", "the same tensor returned twice", t.vertex)
                continue
            outputs.append(t.vertex)
        self.unsupported.raise_if_any()
        return self.finish(outputs)

    def order(self) -> list[tuple[str, int]]:
        """Every call (layer, node) after the calls it reads, in config order where free."""
        import heapq
        m = self.model
        deps: dict[tuple, set] = {}
        for L in m.layers:
            if L.cls == "InputLayer":
                deps[(L.name, 0)] = set()
                continue
            for k, refs in enumerate(L.nodes):
                d = set()
                for (src, node, _t) in refs:
                    if src not in self.layers:
                        raise self.r.refuse(f"layer '{L.name}' reads layer '{src}', which the model does not have")
                    d.add((src, node))
                if k > 0:
                    d.add((L.name, k - 1))
                deps[(L.name, k)] = d
        for src, node, _t in m.inputs + m.outputs:
            if (src, node) not in deps:
                raise self.r.refuse(f"the model's input or output '{src}' (call {node}) is not a layer call")
        for key, d in deps.items():
            for dep in d:
                if dep not in deps:
                    raise self.r.refuse(f"layer '{key[0]}' reads call {dep[1]} of layer '{dep[0]}', which does "
                                        "not exist")
        users: dict[tuple, list] = {k: [] for k in deps}
        for key, d in deps.items():
            for dep in d:
                users[dep].append(key)
        rank = {L.name: L.index for L in m.layers}
        waiting = {k: len(d) for k, d in deps.items()}
        heap = [(rank[k[0]], k[1], k) for k, n in waiting.items() if n == 0]
        heapq.heapify(heap)
        out = []
        while heap:
            _, _, key = heapq.heappop(heap)
            out.append(key)
            for u in users[key]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(heap, (rank[u[0]], u[1], u))
        if len(out) != len(deps):
            raise self.r.refuse("the model's layers form a cycle")
        return out

    def input(self, ref: Ref) -> None:
        layer, _, _ = ref
        L = self.layers[layer]
        if L.cls != "InputLayer":
            raise self.r.refuse(f"the model input '{layer}' is a {L.cls}, not an InputLayer")
        c = L.config
        shape = c.get("batch_shape", c.get("batch_input_shape"))
        name = self.names(layer)
        if not isinstance(shape, list) or len(shape) < 2 or not all(
                s is None or (isinstance(s, int) and s > 0) for s in shape):
            self.unsupported.add("InputLayer", f"input shape {shape!r}", layer)
            self.tensors[ref] = None
            return
        shape = tuple(shape[1:])
        if c.get("sparse") or c.get("ragged"):
            self.unsupported.add("InputLayer", "sparse or ragged inputs", layer)
        dtype = c.get("dtype")
        dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
        feeds_embedding = self.feeds_only(layer, {"Embedding"})
        if dtype not in (None, "float32", "float16", "float64", "bfloat16") and not feeds_embedding:
            self.unsupported.add("InputLayer", f"dtype {dtype} (graphspec inputs are float tensors; integer inputs "
                                 "only as class indices of an Embedding)", layer)
        if feeds_embedding and len(shape) == 1:
            self.inputs[name] = {"type": "recurrent", "size": 1, **({"length": shape[0]} if shape[0] else {})}
            self.tensors[ref] = _T(name, shape, indices=True)
            self.index_inputs.add(name)
            self.notes.append(f"input '{name}' holds class indices for an Embedding: graphspec reads them as a "
                              f"sequence [N, 1, T] (Keras: [N, T]; feed x[:, None, :])")
            return
        if len(shape) == 1 and shape[0] is not None:
            self.inputs[name] = {"type": "feed_forward", "size": shape[0]}
        elif len(shape) == 2 and shape[1] is not None:
            self.inputs[name] = {"type": "recurrent", "size": shape[1], **({"length": shape[0]} if shape[0] else {})}
        elif len(shape) == 3 and None not in shape:
            self.inputs[name] = {"type": "convolutional", "channels": shape[2], "height": shape[0],
                                 "width": shape[1]}
        else:
            self.unsupported.add("InputLayer", f"input shape {list(shape)} (graphspec takes vectors [F], sequences "
                                 "[T, F] and images [H, W, C] of known height and width)", layer)
            self.tensors[ref] = None
            return
        self.tensors[ref] = _T(name, shape)

    def feeds_only(self, layer: str, classes: set) -> bool:
        users = [L for L in self.model.layers for refs in L.nodes for r in refs if r[0] == layer]
        return bool(users) and all(L.cls in classes for L in users)

    def tensor(self, ref: Ref, reader: _Layer | None) -> _T | None:
        if ref not in self.tensors:
            layer, node, t = ref
            if t != 0 and (layer, node, 0) in self.tensors:
                self.unsupported.add("multiple outputs", f"reads output {t} of layer '{layer}' (only single-output "
                                     "layers are imported: no return_state)", reader.name if reader else "output")
                return None
            raise self.r.refuse(f"layer '{reader.name if reader else '?'}' reads call {node} of layer '{layer}', "
                                "which the model does not compute")
        return self.tensors[ref]

    def convert_call(self, L: _Layer, k: int) -> None:
        refs = L.nodes[k]
        ins = [self.tensor(r, L) for r in refs]
        out_ref = (L.name, k, 0)
        self.tensors[out_ref] = None
        fn = CONVERTERS.get(L.cls)
        if L.cls in LAMBDA:
            self.unsupported.add("Lambda", "runs Python code stored in the file; graphspec never decodes or runs "
                                 "it (write the operation as graphspec vertices)", L.name)
            return
        if fn is None:
            detail = ("a subclassed model (its structure is Python code)" if L.cls in MODEL_CLASSES
                      else "layer type not supported")
            self.unsupported.add(L.cls, detail, L.name)
            return
        if L.registered not in (None, L.cls) or (L.module and not _keras_module(L.module)):
            self.unsupported.add(L.cls, f"a custom layer ({L.registered or L.module}): its code is not Keras's",
                                 L.name)
            return
        for key, value in L.kwargs[k].items():
            if key == "training" and value in (None, False):
                continue
            if key == "mask" and value is None:
                continue
            self.unsupported.add("call argument", f"{key}={value!r}", L.name)
            return
        if not refs:
            raise self.r.refuse(f"layer '{L.name}' has a call without inputs")
        if k > 0 and self.first_call.get(L.name) is None:
            return  # the first call was refused (and reported): the later ones share its problem
        self.call = (L.name, k, [])
        self.failed = False
        self.dtype(L)
        self.training_only(L)
        if any(t is None for t in ins):
            # an input already refused: still check this layer's own configuration, without shapes
            try:
                fn(self, L, None)
            except _BadConfig as e:
                self.bad(L, str(e), op=f"{L.cls} configuration")
            except (_Poisoned, TypeError, KeyError, AttributeError, IndexError, ValueError):
                pass
            return
        if any(t.perm is not None for t in ins) and fn not in PERM_AWARE:
            raise _Restart(set().union(*(t.perm.origins for t in ins if t.perm is not None)))
        if any(t.indices for t in ins) and fn is not _embedding:
            self.bad(L, "reads class indices meant for an Embedding")
            return
        try:
            out = fn(self, L, ins)
        except _Poisoned:
            out = None
        except _BadConfig as e:
            self.bad(L, str(e), op=f"{L.cls} configuration")
            out = None
        except (TypeError, KeyError, AttributeError, IndexError, ValueError) as e:
            raise self.r.refuse(f"layer '{L.name}' ({L.cls}): its configuration cannot be read ({e!r})") from None
        if self.failed:
            out = None
        if k == 0:
            self.first_call[L.name] = self.call[2] if out is not None else None
        self.tensors[out_ref] = out

    def finish(self, outputs: list[str]) -> Imported:
        notes = list(self.notes)
        explain = {
            "regularizers": "regularizers are training settings and are not imported (set l1/l2 on the vertices "
                            "to train with them)",
            "constraints": "weight constraints are training settings and are not imported",
            "batchnorm": "batchnorm running_var holds Keras's moving_variance + epsilon: graphspec's inference "
                         "divides by sqrt(running_var) without eps; eps and decay (Keras's momentum) are set for "
                         "training",
            "flatten": "the rows of the Dense layer after a Flatten are permuted from Keras's (H, W, C) order to "
                       "graphspec's (C, H, W) order",
            "exact flatten": "a Flatten whose values reach a layer that cares about their order is imported as "
                             "a permute to Keras's (H, W, C) order and a reshape",
            "dropout": "Dropout is identity at inference (imported as graphspec dropout with the same rate)",
            "noise": "noise and spatial-dropout layers are identity at inference (imported as identity)",
            "no scale": "batch/layer normalisation without scale: the gamma of 1 is an ordinary (trainable) "
                        "parameter in graphspec",
            "no center": "batch normalisation without center: the beta of 0 is an ordinary (trainable) parameter "
                         "in graphspec",
            "no bias": "recurrent layers without bias: graphspec's zero bias is an ordinary (trainable) parameter",
            "recurrent dropout": "the recurrent layers' dropout and recurrent_dropout apply only in training and "
                                 "are not imported",
            "leaky": "LeakyReLU with a slope other than 0.01 is max(x, slope*x): a scale and an elementwise max",
            "last step": "a recurrent layer with return_sequences=False is imported as the recurrent layer "
                         "followed by a time_step vertex (index -1, named <layer>_last)",
        }
        for key, layers in self.noted.items():
            notes.append(f"{explain[key]} ({', '.join(dict.fromkeys(layers))})")
        notes.append("the training configuration (optimizer, loss, metrics) is not imported")
        kinds = {i["type"] for n, i in self.inputs.items() if n not in self.index_inputs}
        layout = [n for k, n in (("convolutional", NOTE_IMAGES), ("recurrent", NOTE_SEQUENCES)) if k in kinds]
        notes[:0] = layout
        description = f"Imported from the Keras model '{self.model.name}' ({self.r.path.name}, Keras " \
                      f"{self.r.keras_version})." + "".join(f" {n[0].upper()}{n[1:]}." for n in layout)
        doc = {"version": 1, "name": self.model_name(), "description": description,
               "inputs": self.inputs, "vertices": self.vertices, "outputs": outputs}
        return Imported(name="", document=doc, weights=self.params, source=self.r.source, notes=notes)

    def model_name(self) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", self.model.name).strip("_-") or "model"
        return base


# --- layer converters: (converter, layer, inputs) -> output tensor ---------------------------------------------
def _one(cx: _Converter, L: _Layer, ins) -> _T | None:
    if ins is None:
        return None
    if len(ins) != 1:
        raise cx.r.refuse(f"layer '{L.name}' ({L.cls}) is called with {len(ins)} inputs; it takes one")
    return ins[0]


def _need_rank(cx, L, t: _T, ranks: tuple, what: str) -> None:
    if len(t.shape) not in ranks:
        cx.bad(L, f"an input of shape {list(t.shape)} (expects {what})")
        raise _Poisoned()


def _hw(a: int, b: int):
    """[a, b] as the spec writes it: one number when both are equal."""
    return a if a == b else [a, b]


def _tidy(v: dict) -> dict:
    """Leave out what the spec's defaults already say (stride 1, no padding or dilation, a bias)."""
    for key, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("bias", True), ("groups", 1),
                         ("depth_multiplier", 1)):
        if v.get(key, object()) == default:
            del v[key]
    return v


def _conv_out(n: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if n is None:
        return None
    ke = (k - 1) * d + 1
    if padding == "same" or padding == "causal":
        return -(-n // s)
    return (n - ke) // s + 1


def _mode(cx, L, padding) -> str:
    if padding == "valid":
        return "truncate"
    if padding == "same":
        return "same"
    cx.bad(L, f"padding '{padding}'")
    raise _Poisoned()


class _Window:
    """What Conv2D, DepthwiseConv2D and SeparableConv2D read alike: activation, kernel, strides, dilation, padding
    and graphspec's mode for it, the input tensor (an image [H, W, C]) and the output's height and width."""

    def __init__(self, cx: _Converter, L: _Layer, ins):
        c = L.config
        cx.channels_last(L)
        self.act = cx.activation(L, c.get("activation"))
        self.kernel = _pair(c["kernel_size"], "kernel_size")
        self.stride = _pair(c.get("strides", 1), "strides")
        self.dilation = _pair(c.get("dilation_rate", 1), "dilation_rate")
        padding = c.get("padding", "valid")
        self.mode = _mode(cx, L, padding)
        self.t = _one(cx, L, ins)
        if self.t is None or cx.failed:
            raise _Poisoned()
        _need_rank(cx, L, self.t, (3,), "an image [H, W, C]")
        h, w, self.cin = self.t.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        self.oh, self.ow = _conv_out(h, kh, sh, dh, padding), _conv_out(w, kw, sw, dw, padding)
        if self.oh < 1 or self.ow < 1:
            raise cx.r.refuse(f"layer '{L.name}': a {kh}x{kw} kernel does not fit its {h}x{w} input")
        self.use_bias = bool(c.get("use_bias", True))

    def params(self) -> dict:
        return {"kernel": _hw(*self.kernel), "stride": _hw(*self.stride), "dilation": _hw(*self.dilation),
                "convolution_mode": self.mode, "activation": self.act, "bias": self.use_bias}

    def out(self, cx: _Converter, v: dict, params: dict, filters: int) -> _T:
        return _T(cx.emit(_tidy(v), params), (self.oh, self.ow, filters), nonneg=self.act in NONNEG)


def _conv2d(cx: _Converter, L: _Layer, ins):
    c = L.config
    win = _Window(cx, L, ins)
    groups, filters, cin = int(c.get("groups", 1) or 1), int(c["filters"]), win.cin
    if cin % groups or filters % groups:
        raise cx.r.refuse(f"layer '{L.name}': {cin} input channels and {filters} filters do not split into "
                          f"{groups} groups")
    kh, kw = win.kernel
    wanted = [("kernel", (kh, kw, cin // groups, filters))] + ([("bias", (filters,))] if win.use_bias else [])
    ws = cx.read(L, [("", wanted)])
    params = {"weight": ws[0].transpose(3, 2, 0, 1)}
    if win.use_bias:
        params["bias"] = ws[1]
    v = {"type": "conv", "inputs": [win.t.vertex], "out": filters, "groups": groups, **win.params()}
    return win.out(cx, v, params, filters)


def _depthwise(cx: _Converter, L: _Layer, ins):
    c = L.config
    win = _Window(cx, L, ins)
    m, cin, (kh, kw) = int(c.get("depth_multiplier", 1)), win.cin, win.kernel
    sep = L.cls == "SeparableConv2D"
    if sep:
        filters = int(c["filters"])
        wanted = [("depthwise_kernel", (kh, kw, cin, m)), ("pointwise_kernel", (1, 1, cin * m, filters))]
    else:
        filters = cin * m
        wanted = [("depthwise_kernel|kernel", (kh, kw, cin, m))]
    wanted += [("bias", (filters,))] if win.use_bias else []
    ws = cx.read(L, [("", wanted)])
    depthwise = ws[0].transpose(2, 3, 0, 1).reshape(cin * m, 1, kh, kw)  # channel c·m + j, as Keras
    v = {"type": "separable_conv" if sep else "depthwise_conv", "inputs": [win.t.vertex]}
    if sep:
        v["out"] = filters
        params = {"depthwise_weight": depthwise, "pointwise_weight": ws[1].transpose(3, 2, 0, 1)}
    else:
        params = {"weight": depthwise}
    v.update({"depth_multiplier": m, **win.params()})
    if win.use_bias:
        params["bias"] = ws[-1]
    return win.out(cx, v, params, filters)


def _deconv(cx: _Converter, L: _Layer, ins):
    c = L.config
    cx.channels_last(L)
    act = cx.activation(L, c.get("activation"))
    kh, kw = _pair(c["kernel_size"], "kernel_size")
    sh, sw = _pair(c.get("strides", 1), "strides")
    if _pair(c.get("dilation_rate", 1)) != (1, 1):
        cx.bad(L, "dilation_rate other than 1")
    if c.get("output_padding") is not None:
        cx.bad(L, "output_padding")
    padding = c.get("padding", "valid")
    mode = _mode(cx, L, padding)
    if padding == "valid" and (kh < sh or kw < sw):
        cx.bad(L, "padding 'valid' with a kernel smaller than the stride (Keras pads the output to n·s; "
                  "graphspec's deconv gives s·(n-1)+k)")
    if padding == "same" and (kh < sh or kw < sw):
        cx.bad(L, "padding 'same' with a kernel smaller than the stride (Keras and graphspec crop differently)")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (3,), "an image [H, W, C]")
    h, w, cin = t.shape
    filters = int(c["filters"])
    oh, ow = (h * sh, w * sw) if padding == "same" else ((h - 1) * sh + kh, (w - 1) * sw + kw)
    use_bias = bool(c.get("use_bias", True))
    ws = cx.read(L, [("", [("kernel", (kh, kw, filters, cin))] + ([("bias", (filters,))] if use_bias else []))])
    params = {"weight": ws[0].transpose(3, 2, 0, 1)}  # [kh, kw, out, in] -> [in, out, kh, kw]
    if use_bias:
        params["bias"] = ws[1]
    v = _tidy({"type": "deconv", "inputs": [t.vertex], "out": filters, "kernel": _hw(kh, kw), "stride": _hw(sh, sw),
               "convolution_mode": mode, "activation": act, "bias": use_bias})
    return _T(cx.emit(v, params), (oh, ow, filters), nonneg=act in NONNEG)


def _conv1d(cx: _Converter, L: _Layer, ins):
    c = L.config
    cx.channels_last(L)
    act = cx.activation(L, c.get("activation"))
    k = _single(c["kernel_size"], "kernel_size")
    s = _single(c.get("strides", 1), "strides")
    d = _single(c.get("dilation_rate", 1), "dilation_rate")
    if int(c.get("groups", 1) or 1) != 1:
        cx.bad(L, "groups other than 1 (graphspec's conv1d has no groups)")
    padding = c.get("padding", "valid")
    modes = {"valid": "truncate", "same": "same", "causal": "causal"}
    if padding not in modes:
        cx.bad(L, f"padding '{padding}'")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (2,), "a sequence [T, F]")
    n, cin = t.shape
    out_n = _conv_out(n, k, s, d, padding)
    if out_n is not None and out_n < 1:
        raise cx.r.refuse(f"layer '{L.name}': a kernel of {k} does not fit its {n} steps")
    filters = int(c["filters"])
    use_bias = bool(c.get("use_bias", True))
    ws = cx.read(L, [("", [("kernel", (k, cin, filters))] + ([("bias", (filters,))] if use_bias else []))])
    params = {"weight": ws[0].transpose(2, 1, 0)}
    if use_bias:
        params["bias"] = ws[1]
    v = _tidy({"type": "conv1d", "inputs": [t.vertex], "out": filters, "kernel": k, "stride": s, "dilation": d,
               "convolution_mode": modes[padding], "activation": act, "bias": use_bias})
    return _T(cx.emit(v, params), (out_n, filters), nonneg=act in NONNEG)


def _dense(cx: _Converter, L: _Layer, ins):
    c = L.config
    act = cx.activation(L, c.get("activation"))
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (1, 2, 3), "a vector, a sequence or an image")
    units, fin = int(c["units"]), t.shape[-1]
    use_bias = bool(c.get("use_bias", True))
    ws = cx.read(L, [("", [("kernel", (fin, units))] + ([("bias", (units,))] if use_bias else []))])
    kernel = ws[0]
    if t.perm is not None:
        kernel = kernel[t.perm.index]  # graphspec feature j is Keras feature perm[j]
        cx.note("flatten", L.name)
    params = {"weight": kernel.T}
    if use_bias:
        params["bias"] = ws[1]
    if len(t.shape) == 3:  # Keras applies Dense to the channels of every pixel: a 1x1 convolution
        params["weight"] = kernel.T[:, :, None, None]
        v = {"type": "conv", "inputs": [t.vertex], "out": units, "kernel": 1, "convolution_mode": "truncate",
             "activation": act, "bias": use_bias}
    else:  # a vector, or every step of a sequence (graphspec's dense on [F, T])
        v = {"type": "dense", "inputs": [t.vertex], "out": units, "activation": act, "bias": use_bias}
    _tidy(v)
    return _T(cx.emit(v, params), (*t.shape[:-1], units), nonneg=act in NONNEG)


def _axis_last(cx, L, rank: int) -> None:
    axis = L.config.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if axis not in (-1, rank):  # rank counts the batch: the last axis of a rank-r-per-example tensor is r
        cx.bad(L, f"axis {axis} (only the last axis: channels/features)")
        raise _Poisoned()


def _normalised(cx: _Converter, L: _Layer, ins, unsupported: str):
    """A normalisation layer's input (normalised along its last axis), its width, and whether the layer has a
    scale (gamma) and a center (beta), whose weights come first in the file."""
    c = L.config
    if c.get(unsupported):
        cx.bad(L, unsupported)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (1, 2, 3), "a vector, a sequence or an image")
    _axis_last(cx, L, len(t.shape))
    n = t.shape[-1]
    scale, center = bool(c.get("scale", True)), bool(c.get("center", True))
    wanted = ([("gamma", (n,))] if scale else []) + ([("beta", (n,))] if center else [])
    if not scale:
        cx.note("no scale", L.name)
    return t, n, scale, center, wanted


def _emit_normalised(cx: _Converter, t: _T, v: dict, params: dict) -> _T:
    if t.perm is not None:
        params = {k: x[t.perm.index] for k, x in params.items()}
    return _T(cx.emit(v, params), t.shape, perm=t.perm)


def _batchnorm(cx: _Converter, L: _Layer, ins):
    c = L.config
    t, n, scale, center, wanted = _normalised(cx, L, ins, "renorm")
    eps = float(c.get("epsilon", 1e-3))
    ws = list(cx.read(L, [("", wanted + [("moving_mean", (n,)), ("moving_variance", (n,))])]))
    gamma = ws.pop(0) if scale else np.ones(n, np.float32)
    beta = ws.pop(0) if center else np.zeros(n, np.float32)
    mean, var = ws
    if not center:
        cx.note("no center", L.name)
    params = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": (var.astype(np.float64) + eps)}
    cx.note("batchnorm", L.name)
    v = {"type": "batchnorm", "inputs": [t.vertex], "eps": eps, "decay": float(c.get("momentum", 0.99))}
    return _emit_normalised(cx, t, v, params)


def _layernorm(cx: _Converter, L: _Layer, ins):
    t, n, scale, center, wanted = _normalised(cx, L, ins, "rms_scaling")
    ws = list(cx.read(L, [("", wanted)]))
    params = {"weight": ws.pop(0) if scale else np.ones(n, np.float32)}
    if center:
        params["bias"] = ws.pop(0)
    v = {"type": "layer_norm", "inputs": [t.vertex], "eps": float(L.config.get("epsilon", 1e-3)), "bias": center}
    return _emit_normalised(cx, t, v, params)


def _pooling(cx: _Converter, L: _Layer, ins, read, ranks: tuple, what: str):
    """What the pooling layers read alike: the window and strides (``read``: _pair or _single; the strides default
    to the window), the padding, max or avg, and the input tensor."""
    c = L.config
    cx.channels_last(L)
    window = read(c.get("pool_size", 2), "pool_size")
    strides = c.get("strides")
    stride = read(strides if strides is not None else window, "strides")
    padding = c.get("padding", "valid")
    _mode(cx, L, padding)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, ranks, what)
    return window, stride, padding, "max" if L.cls.startswith("Max") else "avg", t


def _pool2d(cx: _Converter, L: _Layer, ins):
    (kh, kw), (sh, sw), padding, pooling, t = _pooling(cx, L, ins, _pair, (3,), "an image [H, W, C]")
    h, w, ch = t.shape
    oh, ow = _conv_out(h, kh, sh, 1, padding), _conv_out(w, kw, sw, 1, padding)
    if oh < 1 or ow < 1:
        raise cx.r.refuse(f"layer '{L.name}': a {kh}x{kw} window does not fit its {h}x{w} input")
    mode = "truncate"
    if padding == "same":
        pads = [max((o - 1) * s + k - n, 0) for o, s, k, n in ((oh, sh, kh, h), (ow, sw, kw, w))]
        if any(pads) and not (pooling == "max" and t.nonneg):
            cx.bad(L, "padding 'same' where windows reach past the edge: Keras ignores the padded cells, graphspec "
                      "pools them as 0" + ("" if pooling == "avg" else " (exact only after a non-negative "
                                                                          "activation such as relu)"))
            raise _Poisoned()
        mode = "same"
    v = {"type": "subsampling", "inputs": [t.vertex], "pooling": pooling, "kernel": _hw(kh, kw),
         "stride": _hw(sh, sw), "convolution_mode": mode}
    return _T(cx.emit(v), (oh, ow, ch), nonneg=t.nonneg)


def _pool1d(cx: _Converter, L: _Layer, ins):
    k, s, padding, pooling, t = _pooling(cx, L, ins, _single, (2,), "a sequence [T, F]")
    n, ch = t.shape
    out_n = _conv_out(n, k, s, 1, padding)
    mode = "truncate"
    if padding == "same":
        pad = None if n is None else max((out_n - 1) * s + k - n, 0)
        if (pad is None or pad) and not (pooling == "max" and t.nonneg):
            cx.bad(L, "padding 'same' where windows may reach past the end: Keras ignores the padded steps, "
                      "graphspec pools them as 0")
            raise _Poisoned()
        mode = "same"
    v = {"type": "subsampling1d", "inputs": [t.vertex], "pooling": pooling, "kernel": k, "stride": s,
         "convolution_mode": mode}
    return _T(cx.emit(v), (out_n, ch), nonneg=t.nonneg)


def _global_pool(cx: _Converter, L: _Layer, ins):
    c = L.config
    cx.channels_last(L)
    keep = bool(c.get("keepdims", False))
    pooling = "max" if "Max" in L.cls else "avg"
    rank = 3 if L.cls.endswith("2D") else 2
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (rank,), "an image [H, W, C]" if rank == 3 else "a sequence [T, F]")
    v = {"type": "global_pool", "inputs": [t.vertex], "pooling": pooling, "collapse": not keep}
    shape = (*(1,) * (rank - 1), t.shape[-1]) if keep else (t.shape[-1],)
    return _T(cx.emit(v), shape, nonneg=t.nonneg)


def _flatten(cx: _Converter, L: _Layer, ins):
    cx.channels_last(L)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    if any(s is None for s in t.shape):
        cx.bad(L, "an input of unknown length")
        raise _Poisoned()
    if len(t.shape) <= 1:
        return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), t.shape, perm=t.perm, nonneg=t.nonneg)
    n = _prod(t.shape)
    to_keras = _keras_order_dims(len(t.shape))
    gshape = _graphspec_shape(t.shape)
    if _keeps_order(gshape, [d - 1 for d in to_keras]):  # e.g. 1x1 pixels: both orders agree
        return _T(cx.emit({"type": "reshape", "inputs": [t.vertex], "shape": [-1]}), (n,), nonneg=t.nonneg)
    if L.name in cx.exact_flatten:
        cx.note("exact flatten", L.name)
        p = cx.emit({"type": "permute", "inputs": [t.vertex], "dims": to_keras}, suffix="keras_order")
        return _T(cx.emit({"type": "reshape", "inputs": [p], "shape": [-1]}), (n,), nonneg=t.nonneg)
    index = np.moveaxis(np.arange(n).reshape(t.shape), -1, 0).ravel()  # graphspec feature j = Keras feature index[j]
    return _T(cx.emit({"type": "reshape", "inputs": [t.vertex], "shape": [-1]}), (n,),
              perm=_Perm(index, frozenset({L.name})), nonneg=t.nonneg)


def _keras_order_dims(rank: int) -> list[int]:
    """1-based graphspec ``permute`` dims turning graphspec's layout (channels first) into Keras's (channels last)."""
    return [*range(2, rank + 1), 1]


def _graphspec_order_dims(rank: int) -> list[int]:
    """1-based ``permute`` dims turning Keras's layout (channels last) into graphspec's (channels first)."""
    return [rank, *range(1, rank)]


def _reshape(cx: _Converter, L: _Layer, ins):
    target = L.config.get("target_shape")
    t = _one(cx, L, ins)
    if t is None:
        raise _Poisoned()
    if not isinstance(target, list) or not all(isinstance(x, int) for x in target):
        raise _BadConfig(f"target_shape {target!r}")
    if any(s is None for s in t.shape):
        cx.bad(L, "an input of unknown length")
        raise _Poisoned()
    n = _prod(t.shape)
    if target.count(-1) > 1 or any(x < -1 or x == 0 for x in target):
        raise _BadConfig(f"target_shape {target!r}")
    if -1 in target:
        known = _prod(x for x in target if x != -1)
        target = [n // known if x == -1 else x for x in target]
    if _prod(target) != n:
        raise cx.r.refuse(f"layer '{L.name}': target_shape {target} does not hold the {n} values of its input")
    if len(target) > 3:
        cx.bad(L, f"target_shape {target} (graphspec tensors have up to 3 dimensions per example)")
        raise _Poisoned()
    src = t.vertex
    rank = len(t.shape)
    if rank > 1 and not _keeps_order(_graphspec_shape(t.shape), [d - 1 for d in _keras_order_dims(rank)]):
        src = cx.emit({"type": "permute", "inputs": [src], "dims": _keras_order_dims(rank)}, suffix="keras_order")
    out_rank = len(target)
    if out_rank > 1 and not _keeps_order(tuple(target), [d - 1 for d in _graphspec_order_dims(out_rank)]):
        src = cx.emit({"type": "reshape", "inputs": [src], "shape": list(target)}, suffix="keras_layout")
        name = cx.emit({"type": "permute", "inputs": [src], "dims": _graphspec_order_dims(out_rank)})
    else:
        name = cx.emit({"type": "reshape", "inputs": [src], "shape": list(_graphspec_shape(tuple(target)))})
    return _T(name, tuple(target), nonneg=t.nonneg)


def _permute(cx: _Converter, L: _Layer, ins):
    dims = L.config.get("dims")
    t = _one(cx, L, ins)
    if t is None:
        raise _Poisoned()
    r = len(t.shape)
    if not isinstance(dims, list) or sorted(dims) != list(range(1, r + 1)):
        raise _BadConfig(f"dims {dims!r}")
    d = [x - 1 for x in dims]  # Keras: out axis i = in axis d[i] (per example)
    to_g = _to_graphspec_axes(r)  # graphspec axis i = Keras axis to_g[i]
    inv = [to_g.index(a) for a in range(r)]  # Keras axis a = graphspec axis inv[a]
    p = [inv[d[to_g[i]]] for i in range(r)]
    shape = tuple(t.shape[a] for a in d)
    if p == list(range(r)):
        return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), shape, nonneg=t.nonneg)
    return _T(cx.emit({"type": "permute", "inputs": [t.vertex], "dims": [x + 1 for x in p]}), shape,
              nonneg=t.nonneg)


def _activation_layer(cx: _Converter, L: _Layer, ins):
    c = L.config
    cls = L.cls
    t = _one(cx, L, ins)
    if cls == "Activation":
        act = cx.activation(L, c.get("activation"))
    elif cls == "ReLU":
        mx, slope, th = c.get("max_value"), float(c.get("negative_slope", 0) or 0), float(c.get("threshold", 0) or 0)
        if slope == 0 and th == 0 and mx is None:
            act = "relu"
        elif slope == 0 and th == 0 and mx is not None and float(mx) == 6.0:
            act = "relu6"
        else:
            cx.bad(L, f"max_value={mx}, negative_slope={slope}, threshold={th} (graphspec has relu and relu6)")
            act = None
    elif cls == "Softmax":
        axis = c.get("axis", -1)
        if axis not in (-1, [-1]) and not (t is not None and axis in (len(t.shape), [len(t.shape)])):
            cx.bad(L, f"axis {axis} (only the last axis: channels/features)")
        act = "softmax"
    elif cls == "ELU":
        if float(c.get("alpha", 1.0)) != 1.0:
            cx.bad(L, f"alpha {c.get('alpha')} (graphspec's elu has alpha 1)")
        act = "elu"
    elif cls == "LeakyReLU":
        slope = float(c.get("negative_slope", c.get("alpha", 0.3)))
        if not 0 <= slope <= 1:
            cx.bad(L, f"slope {slope} outside [0, 1]")
        act = "leakyrelu"
    else:  # pragma: no cover
        raise AssertionError(cls)
    if t is None or cx.failed:
        raise _Poisoned()
    if cls == "LeakyReLU" and slope != 0.01:  # max(x, slope·x) is exact for 0 <= slope <= 1
        cx.note("leaky", L.name)
        s = cx.emit({"type": "scale", "inputs": [t.vertex], "factor": slope}, suffix="scaled")
        name = cx.emit({"type": "elementwise", "inputs": [t.vertex, s], "op": "max"})
        return _T(name, t.shape, perm=t.perm, nonneg=t.nonneg)
    # (softmax over all of a vector's features does not depend on their order: a permuted vector passes)
    return _T(cx.emit({"type": "activation", "inputs": [t.vertex], "activation": act}), t.shape, perm=t.perm,
              nonneg=act in NONNEG or (t.nonneg and act in ("relu", "relu6", "leakyrelu", "elu", "identity")))


def _dropout(cx: _Converter, L: _Layer, ins):
    t = _one(cx, L, ins)
    if t is None:
        raise _Poisoned()
    if L.cls == "Dropout":
        rate = float(L.config.get("rate", 0.5))
        if L.config.get("noise_shape") is not None:
            cx.note("noise", L.name)
            return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), t.shape, perm=t.perm, nonneg=t.nonneg)
        cx.note("dropout", L.name)
        return _T(cx.emit({"type": "dropout", "inputs": [t.vertex], "rate": rate}), t.shape, perm=t.perm,
                  nonneg=t.nonneg)
    cx.note("noise", L.name)
    return _T(cx.emit({"type": "identity", "inputs": [t.vertex]}), t.shape, perm=t.perm,
              nonneg=t.nonneg and L.cls not in ("GaussianNoise", "AlphaDropout"))


MERGE_OPS = {"Add": "add", "Subtract": "subtract", "Multiply": "product", "Average": "average", "Maximum": "max",
             "Minimum": "min"}


def _elementwise(cx: _Converter, L: _Layer, ins):
    if ins is None:
        raise _Poisoned()
    if len(ins) < 2 or (L.cls == "Subtract" and len(ins) != 2):
        raise cx.r.refuse(f"layer '{L.name}' ({L.cls}) is called with {len(ins)} inputs")
    shapes = {t.shape for t in ins}
    if len(shapes) != 1:
        cx.bad(L, f"inputs of different shapes {sorted(map(list, shapes))} (Keras broadcasts; graphspec's "
                  "elementwise needs equal shapes)")
        raise _Poisoned()
    perms = [t.perm for t in ins]
    if any(p is not None for p in perms) and not all(p is not None and p == perms[0] for p in perms):
        raise _Restart(set().union(*(p.origins for p in perms if p is not None)))
    op = MERGE_OPS[L.cls]
    nonneg = all(t.nonneg for t in ins) and op in ("add", "product", "average", "max", "min")
    return _T(cx.emit({"type": "elementwise", "inputs": [t.vertex for t in ins], "op": op}), ins[0].shape,
              perm=perms[0], nonneg=nonneg)


def _concatenate(cx: _Converter, L: _Layer, ins):
    if ins is None:
        raise _Poisoned()
    r = len(ins[0].shape)
    axis = L.config.get("axis", -1)
    if not isinstance(axis, int) or not -(r + 1) <= axis <= r:
        raise _BadConfig(f"axis {axis!r}")
    axis = axis + r + 1 if axis < 0 else axis
    if axis == 0:
        cx.bad(L, "concatenation along the batch")
        raise _Poisoned()
    if any(len(t.shape) != r for t in ins):
        raise cx.r.refuse(f"layer '{L.name}': its inputs have different ranks")
    k = axis - 1  # per-example Keras axis
    for t in ins:
        if any(a != b for i, (a, b) in enumerate(zip(t.shape, ins[0].shape)) if i != k):
            raise cx.r.refuse(f"layer '{L.name}': inputs {[list(t.shape) for t in ins]} do not fit together "
                              f"along axis {axis}")
    g_axis = _to_graphspec_axes(r).index(k) + 1  # graphspec merge axis counts the batch as 0
    shape = list(ins[0].shape)
    shape[k] = None if any(t.shape[k] is None for t in ins) else sum(t.shape[k] for t in ins)
    perm = None
    if any(t.perm is not None for t in ins):  # vectors after a Flatten: the permutation of the concatenation
        parts, off, origins = [], 0, set()
        for t in ins:
            n = t.shape[0]
            parts.append((t.perm.index if t.perm is not None else np.arange(n)) + off)
            origins |= t.perm.origins if t.perm is not None else set()
            off += n
        perm = _Perm(np.concatenate(parts), frozenset(origins))
    v = {"type": "merge", "inputs": [t.vertex for t in ins], "axis": g_axis}
    return _T(cx.emit(v), tuple(shape), perm=perm, nonneg=all(t.nonneg for t in ins))


def _zero_padding(cx: _Converter, L: _Layer, ins, crop: bool = False):
    cx.channels_last(L)
    value = L.config.get("cropping" if crop else "padding", 0 if crop else 1)
    if isinstance(value, int):
        pads = [value] * 4
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(x, int) for x in value):
        pads = [value[0], value[0], value[1], value[1]]
    elif isinstance(value, list) and len(value) == 2 and all(isinstance(x, list) and len(x) == 2 for x in value):
        pads = [*value[0], *value[1]]
    else:
        raise _BadConfig(f"{'cropping' if crop else 'padding'} {value!r}")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (3,), "an image [H, W, C]")
    h, w, ch = t.shape
    sign = -1 if crop else 1
    shape = (h + sign * (pads[0] + pads[1]), w + sign * (pads[2] + pads[3]), ch)
    if crop:
        v = {"type": "cropping", "inputs": [t.vertex], "cropping": pads}
    else:
        v = {"type": "zero_padding", "inputs": [t.vertex], "padding": pads}
    return _T(cx.emit(v), shape, nonneg=t.nonneg)


def _cropping(cx, L, ins):
    return _zero_padding(cx, L, ins, crop=True)


def _upsampling(cx: _Converter, L: _Layer, ins):
    cx.channels_last(L)
    sh, sw = _pair(L.config.get("size", 2), "size")
    interp = L.config.get("interpolation", "nearest")
    if interp not in ("nearest", "bilinear"):
        cx.bad(L, f"interpolation '{interp}'")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (3,), "an image [H, W, C]")
    h, w, ch = t.shape
    v = {"type": "upsampling", "inputs": [t.vertex], "size": _hw(sh, sw)}
    if interp != "nearest":
        v["interpolation"] = interp
    return _T(cx.emit(v), (h * sh, w * sw, ch), nonneg=t.nonneg)


def _rescaling(cx: _Converter, L: _Layer, ins):
    scale, offset = L.config.get("scale", 1.0), L.config.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        cx.bad(L, "per-channel scale or offset (graphspec's scale and shift take one number)")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    if offset == 0:
        return _T(cx.emit({"type": "scale", "inputs": [t.vertex], "factor": float(scale)}), t.shape, perm=t.perm)
    s = cx.emit({"type": "scale", "inputs": [t.vertex], "factor": float(scale)}, suffix="scale")
    return _T(cx.emit({"type": "shift", "inputs": [s], "amount": float(offset)}), t.shape, perm=t.perm)


RNN_KINDS = {"LSTM": ("lstm", 4), "GRU": ("gru", 3), "SimpleRNN": ("simple_rnn", 1)}


def _rnn_settings(cx: _Converter, L: _Layer, c: dict) -> dict:
    kind, _ = RNN_KINDS[L.cls]
    for key in ("stateful", "return_state", "time_major"):
        if c.get(key):
            cx.bad(L, f"{key}=True")
    if c.get("dropout") or c.get("recurrent_dropout"):
        cx.note("recurrent dropout", L.name)
    v = {"activation": cx.activation(L, c.get("activation", "tanh"))}
    if kind != "simple_rnn":
        v["gate_activation"] = cx.activation(L, c.get("recurrent_activation", "sigmoid"))
    if kind == "gru" and not c.get("reset_after", cx.keras3):  # absent in Keras < 2.1: the original GRU
        cx.bad(L, "reset_after=False (the original GRU; graphspec's gru is torch's, Keras's reset_after=True)")
    return v


def _rnn_params(L: _Layer, c: dict, fin: int) -> tuple[list, dict]:
    """The weights Keras keeps for one direction: [(label, shape)], and the units and use_bias."""
    kind, gates = RNN_KINDS[L.cls]
    units = int(c["units"])
    use_bias = bool(c.get("use_bias", True))
    bias_shape = (2, 3 * units) if kind == "gru" else (gates * units,)
    wanted = [("kernel", (fin, gates * units)), ("recurrent_kernel", (units, gates * units))]
    wanted += [("bias", bias_shape)] if use_bias else []
    return wanted, {"units": units, "use_bias": use_bias}


def _rnn_convert(kind: str, units: int, ws: list, use_bias: bool) -> dict:
    kernel, recurrent = ws[0], ws[1]
    if kind == "gru":  # Keras blocks z, r, h -> torch r, z, n
        order = np.r_[units:2 * units, 0:units, 2 * units:3 * units]
        bias = ws[2] if use_bias else np.zeros((2, 3 * units), np.float32)
        return {"weight_ih": kernel[:, order].T, "weight_hh": recurrent[:, order].T,
                "bias_ih": bias[0][order], "bias_hh": bias[1][order]}
    bias = ws[2] if use_bias else np.zeros(kernel.shape[1], np.float32)
    return {"weight_ih": kernel.T, "weight_hh": recurrent.T, "bias": bias}  # LSTM: i, f, c, o = torch's i, f, g, o


def _rnn(cx: _Converter, L: _Layer, ins):
    c = L.config
    kind, _ = RNN_KINDS[L.cls]
    settings = _rnn_settings(cx, L, c)
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (2,), "a sequence [T, F]")
    wanted, info = _rnn_params(L, c, t.shape[1])
    ws = cx.read(L, [("cell", wanted)])
    units = info["units"]
    if not info["use_bias"]:
        cx.note("no bias", L.name)
    params = _rnn_convert(kind, units, ws, info["use_bias"])
    src = t.vertex
    if c.get("go_backwards"):  # Keras reads the sequence backwards and returns the outputs in that order
        src = cx.emit({"type": "reverse_time_series", "inputs": [src]}, suffix="reversed")
    name = cx.emit({"type": kind, "inputs": [src], "out": units, **settings}, params)
    if c.get("return_sequences"):
        return _T(name, (t.shape[0], units))
    cx.note("last step", L.name)
    return _T(cx.emit({"type": "time_step", "inputs": [name], "index": -1}, suffix="last"), (units,))


def _bidirectional(cx: _Converter, L: _Layer, ins):
    c = L.config
    inner = c.get("layer")
    if not isinstance(inner, dict) or inner.get("class_name") not in RNN_KINDS:
        cx.bad(L, f"wrapping {inner.get('class_name') if isinstance(inner, dict) else inner!r} (LSTM, GRU and "
                  "SimpleRNN are imported)")
        raise _Poisoned()
    fwd = _Layer(cls=inner["class_name"], name=L.name, config=inner.get("config") or {})
    back_cfg = c.get("backward_layer")
    bwd = _Layer(cls=back_cfg["class_name"], name=L.name, config=back_cfg.get("config") or {}) if isinstance(
        back_cfg, dict) else _Layer(cls=fwd.cls, name=L.name, config={**fwd.config, "go_backwards": True})
    if bwd.cls != fwd.cls:
        cx.bad(L, "different layer types in the two directions")
    mode = c.get("merge_mode", "concat")
    modes = {"concat": "concat", "sum": "add", "mul": "mul", "ave": "average"}
    if mode not in modes:
        cx.bad(L, f"merge_mode {mode!r}")
    settings = _rnn_settings(cx, fwd, fwd.config)
    other = _rnn_settings(cx, bwd, bwd.config)
    for key in ("units", "use_bias", "return_sequences"):
        if fwd.config.get(key) != bwd.config.get(key):
            cx.bad(L, f"different {key} in the two directions")
    if settings != other:
        cx.bad(L, "different activations in the two directions")
    if fwd.config.get("go_backwards") or not bwd.config.get("go_backwards", True):
        cx.bad(L, "directions other than one forward and one backward layer")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    _need_rank(cx, L, t, (2,), "a sequence [T, F]")
    kind, _ = RNN_KINDS[fwd.cls]
    wanted, info = _rnn_params(fwd, fwd.config, t.shape[1])
    units, use_bias = info["units"], info["use_bias"]
    ws = cx.read(L, [("forward_layer/cell", wanted), ("backward_layer/cell", wanted)])
    n = len(wanted)
    pf, pb = _rnn_convert(kind, units, ws[:n], use_bias), _rnn_convert(kind, units, ws[n:], use_bias)
    if not use_bias:
        cx.note("no bias", L.name)
    width = 2 * units if mode == "concat" else units
    if fwd.config.get("return_sequences"):
        params = {**pf, **{f"{k}_reverse": v for k, v in pb.items()}}
        name = cx.emit({"type": kind, "inputs": [t.vertex], "out": units, **settings,
                        "bidirectional": modes[mode]}, params)
        return _T(name, (t.shape[0], width))
    # Keras returns the forward layer's last step and the backward layer's last step (which read step 0 last):
    # two layers, each followed by its last step, then combined.
    cx.note("last step", L.name)
    f = cx.emit({"type": kind, "inputs": [t.vertex], "out": units, **settings}, pf, suffix="forward")
    fl = cx.emit({"type": "time_step", "inputs": [f], "index": -1}, suffix="forward_last")
    r = cx.emit({"type": "reverse_time_series", "inputs": [t.vertex]}, suffix="reversed")
    b = cx.emit({"type": kind, "inputs": [r], "out": units, **settings}, pb, suffix="backward")
    bl = cx.emit({"type": "time_step", "inputs": [b], "index": -1}, suffix="backward_last")
    if mode == "concat":
        v = {"type": "merge", "inputs": [fl, bl], "axis": 1}
    else:
        v = {"type": "elementwise", "inputs": [fl, bl], "op": {"sum": "add", "mul": "product", "ave": "average"}[mode]}
    return _T(cx.emit(v), (width,))


def _embedding(cx: _Converter, L: _Layer, ins):
    c = L.config
    if c.get("mask_zero"):
        cx.bad(L, "mask_zero=True (a mask computed from the values)")
    t = _one(cx, L, ins)
    if t is None or cx.failed:
        raise _Poisoned()
    if not t.indices:
        cx.bad(L, "an input that is not a model input of class indices")
        raise _Poisoned()
    vocab, dim = int(c["input_dim"]), int(c["output_dim"])
    (w,) = cx.read(L, [("", [("embeddings", (vocab, dim))])])
    v = {"type": "embedding_sequence", "inputs": [t.vertex], "num_embeddings": vocab, "out": dim, "bias": False,
         "activation": "identity"}
    return _T(cx.emit(v, {"weight": w}), (t.shape[0], dim))


CONVERTERS: dict[str, Callable] = {
    "Conv2D": _conv2d, "Convolution2D": _conv2d, "DepthwiseConv2D": _depthwise, "SeparableConv2D": _depthwise,
    "SeparableConvolution2D": _depthwise, "Conv2DTranspose": _deconv, "Conv1D": _conv1d, "Convolution1D": _conv1d,
    "Dense": _dense, "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "MaxPooling2D": _pool2d, "AveragePooling2D": _pool2d, "MaxPool2D": _pool2d, "AvgPool2D": _pool2d,
    "MaxPooling1D": _pool1d, "AveragePooling1D": _pool1d, "MaxPool1D": _pool1d, "AvgPool1D": _pool1d,
    "GlobalAveragePooling2D": _global_pool, "GlobalMaxPooling2D": _global_pool, "GlobalAvgPool2D": _global_pool,
    "GlobalMaxPool2D": _global_pool, "GlobalAveragePooling1D": _global_pool, "GlobalMaxPooling1D": _global_pool,
    "Flatten": _flatten, "Reshape": _reshape, "Permute": _permute,
    "Activation": _activation_layer, "ReLU": _activation_layer, "LeakyReLU": _activation_layer,
    "Softmax": _activation_layer, "ELU": _activation_layer,
    "Dropout": _dropout, "SpatialDropout1D": _dropout, "SpatialDropout2D": _dropout, "GaussianNoise": _dropout,
    "GaussianDropout": _dropout, "AlphaDropout": _dropout, "ActivityRegularization": _dropout,
    **{k: _elementwise for k in MERGE_OPS}, "Concatenate": _concatenate,
    "ZeroPadding2D": _zero_padding, "Cropping2D": _cropping, "UpSampling2D": _upsampling, "Rescaling": _rescaling,
    "LSTM": _rnn, "GRU": _rnn, "SimpleRNN": _rnn, "Bidirectional": _bidirectional, "Embedding": _embedding,
}
PERM_AWARE = {_dense, _batchnorm, _layernorm, _activation_layer, _dropout, _elementwise, _concatenate, _rescaling,
              _flatten}
LAMBDA = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def import_keras(path: "str | Path", name: str | None = None) -> Imported:
    """Read a Keras model file (``.keras`` or ``.h5``) into an :class:`Imported` network: a spec whose vertices
    are named after the Keras layers, and the weights by state_dict key. Refuses, listing everything at once,
    what graphspec cannot compute exactly; refuses files that are not sound."""
    path = Path(path)
    reader = _Reader(path)
    try:
        reader.open()
        if reader.keras_version.startswith("1"):
            raise reader.refuse(f"a Keras {reader.keras_version} file: Keras 1 configurations are not imported "
                                "(load and save the model with Keras 2 or 3 first)")
        model = _Parser(reader).model(reader.config)
        exact: set[str] = set()
        cache: dict = {}
        for _ in range(len(model.layers) + 1):
            try:
                imported = _Converter(reader, model, exact, cache).convert()
                break
            except _Restart as r:
                if r.origins <= exact:  # pragma: no cover - a Flatten is always exact after its restart
                    raise reader.refuse("internal error: a Flatten's order could not be resolved") from None
                exact |= r.origins
        else:  # pragma: no cover
            raise reader.refuse("internal error: too many Flatten restarts")
    finally:
        reader.close()
    imported.name = name or re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_-") or "model"
    if name:
        imported.document["name"] = name
    _check(imported, reader)
    return imported


def _check(imported: Imported, reader: _Reader) -> None:
    """The spec must be valid: anything else is a bug of this importer, reported as such."""
    from ..errors import GraphspecError
    from ..spec.loader import load_spec
    try:
        load_spec(imported.document)
    except GraphspecError as e:
        raise reader.refuse(f"internal error: the imported spec is not valid (please report this): {e}") from None
