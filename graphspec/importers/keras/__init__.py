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

import re
from pathlib import Path

from ..common import Imported
from .config import _Parser
from .convert import _Converter
from .files import _Reader
from .model import _Restart


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
    from ...errors import GraphspecError
    from ...spec.loader import load_spec
    try:
        load_spec(imported.document)
    except GraphspecError as e:
        raise reader.refuse(f"internal error: the imported spec is not valid (please report this): {e}") from None
