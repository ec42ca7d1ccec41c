"""The catalog of ready-made models, by name (``graphspec embed nn4small2-lfw ...``).

Models are contributed by applications and plugins through the ``graphspec.models`` entry-point group: each entry
point names a folder of ``<name>.safetensors`` model files (with a model card ``<name>.md`` beside each). The face
application contributes ``graphspec/faces/models``; a plugin package adds its own folder in its
``pyproject.toml``::

    [project.entry-points."graphspec.models"]
    my_models = "my_package.models:FOLDER"
"""
from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

GROUP = "graphspec.models"


def folders() -> list[Path]:
    """The model folders of every installed application and plugin, in entry-point name order."""
    found = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        folder = Path(ep.load())
        if folder.is_dir() and folder not in found:
            found.append(folder)
    return found


def available() -> dict[str, Path]:
    """Every catalogued model: name -> model file (the first folder wins when two use one name)."""
    models: dict[str, Path] = {}
    for folder in folders():
        for f in sorted(folder.glob("*.safetensors")):
            models.setdefault(f.stem, f)
    return models


def path(name: str) -> Path | None:
    """The model file of a catalogued model, or None when ``name`` is not one."""
    if "/" in name or "\\" in name:
        return None
    return available().get(name)


def card(name: str) -> Path | None:
    """The model card (markdown) beside a catalogued model, if it has one."""
    model = path(name)
    card = model.with_suffix(".md") if model is not None else None
    return card if card is not None and card.is_file() else None


def summary(name: str) -> str:
    """The first line of a catalogued model's card that says what it is ('' without a card).

    The first prose line, else the first heading (without its ``#``), else ''.
    """
    found = card(name)
    if found is None:
        return ""
    try:
        lines = [line.strip() for line in found.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError):
        return ""
    lines = [line for line in lines if line and not line.startswith(("```", "<!--", "|", "---"))]
    prose = [line for line in lines if not line.startswith("#")]
    headings = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    return (prose or headings or [""])[0]
