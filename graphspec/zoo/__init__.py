"""The model zoo: classic architectures as readable specs, built by name.

>>> import graphspec
>>> net = graphspec.build("resnet50")        # doctest: +SKIP  (as timm's create_model)

The specs live in ``graphspec/zoo/specs/`` (``specs/zoo/`` in the repository points there); each one is laid out
and named like the torchvision model of the same name, so :func:`graphspec.zoo.torchvision.convert` copies
torchvision's weights over by name. ``graphspec models`` lists them with their parameters and MACs.
"""
from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).parent / "specs"


def names() -> list[str]:
    """The zoo's architectures, by name."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def path(name) -> Path | None:
    """The spec file of the zoo architecture ``name``, or None when ``name`` is not one (a path, a file that
    exists, or an unknown name)."""
    if not isinstance(name, str) or os.path.exists(name) or any(c in name for c in "/\\\n:. "):
        return None
    found = FOLDER / f"{name}.yaml"
    return found if found.is_file() else None

