"""What every importer shares: the imported network (a spec document and its weights by state_dict key), the
names it gets, the refusal that lists everything unsupported, and writing the result.

An importer never approximates: an operator or attribute graphspec cannot express exactly is collected in
:class:`Unsupported`, and the import is refused with one line per (operator, detail) naming the nodes that use it,
before anything is written.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GraphspecError, Location
from ..spec.loader import NAME  # the spec's vertex names


class ImportRefused(GraphspecError):
    """The file cannot be imported exactly (unsupported operators or attributes) or is not a sound model file."""

    exit_code = 2


@dataclass
class Imported:
    """An imported network: ``document`` is a spec (version 1) a person can read and edit, ``weights`` its
    parameters and state by state_dict key (``<vertex>.<param>``), ``source`` the file it came from."""

    name: str
    document: dict[str, Any]
    weights: dict[str, np.ndarray]
    source: str
    notes: list[str] = field(default_factory=list)  # what the import decided (folded constants, dropped nodes)
    file_inputs: dict[str, str] = field(default_factory=dict)  # spec input -> the file's name for it, where different
    preprocessing: Any = None  # how the model's inputs are prepared (graphspec.data.Preprocessing), when known

    def model(self):
        """The network built from the spec with the imported weights (strictly: every tensor, every shape)."""
        import torch

        from ..compiler import build
        from ..model_io import load_weights
        net = build(self.document, seed=0, preprocessing=self.preprocessing)
        load_weights(net, {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in self.weights.items()},
                     label=self.source)
        return net.eval()

    def write(self, out_dir: "str | os.PathLike") -> tuple[Path, Path]:
        """``out_dir/NAME.yaml`` (the spec) and ``out_dir/NAME.safetensors`` (a model file: spec and weights)."""
        import yaml

        from ..model_io import save
        model = self.model()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec_path, model_path = out / f"{self.name}.yaml", out / f"{self.name}.safetensors"
        header = f"# imported from {Path(self.source).name} by `graphspec import`; weights: {model_path.name}\n"
        # flow style for each vertex, as specs are written by hand: `conv1: {type: conv, inputs: [image], ...}`
        spec_path.write_text(header + yaml.safe_dump(self.document, sort_keys=False, width=120,
                                                     default_flow_style=None))
        save(model, model_path, metadata={"graphspec.imported_from": Path(self.source).name})
        return spec_path, model_path


class Unsupported:
    """Collects what cannot be imported exactly: (operator, detail) -> the node names that use it."""

    def __init__(self, source: str):
        self.source = source
        self.found: dict[tuple[str, str], list[str]] = defaultdict(list)

    def add(self, op: str, detail: str, node: str) -> None:
        self.found[(op, detail)].append(node)

    def raise_if_any(self) -> None:
        if not self.found:
            return
        lines = [f"{op}: {detail} (nodes: {_few(nodes)})" for (op, detail), nodes in sorted(self.found.items())]
        raise ImportRefused(f"cannot import {Path(self.source).name} exactly; graphspec cannot express:\n  "
                            + "\n  ".join(lines), location=Location(self.source))


def _few(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


class Names:
    """Stable, unique vertex names from the names a file gives (sanitised to the spec's alphabet)."""

    def __init__(self, reserved=()):
        from ..spec.loader import RESERVED  # torch.nn.Module's attribute names: never vertex names
        self.taken: set[str] = set(reserved) | set(RESERVED)

    def __call__(self, raw: str, fallback: str = "node") -> str:
        """A new name for each call (two things the file names alike get ``x`` and ``x_2``)."""
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", raw or "").strip("_-") or fallback
        base = base if NAME.match(base) else f"n_{base}"
        name, i = base, 2
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name
