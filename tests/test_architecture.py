"""The package's shape: the framework never imports the face application, and no two modules import each other.

Imports are read statically from the source (every ``import`` statement, including those inside functions, which
run later but are cycles all the same).
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "graphspec"
APPLICATION = "graphspec.faces"
#: The one framework module allowed to name the face application: where the command line registers its commands.
REGISTRATION_POINT = "graphspec.cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The graphspec modules that ``path`` imports (``from pkg import module`` counts as the module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "graphspec"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "graphspec":
                continue
            modules = {f"{base}.{a.name}" for a in node.names if is_module(f"{base}.{a.name}")}
            found |= modules if modules and len(modules) == len(node.names) else {base} | modules
    return found - {name}


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in imports_of(path))
    return graph


def in_application(name: str) -> bool:
    return name == APPLICATION or name.startswith(APPLICATION + ".")


def test_the_framework_never_imports_the_face_application():
    offenders = sorted(f"{a} imports {b}" for a, b in import_graph().edges
                       if not in_application(a) and in_application(b) and a != REGISTRATION_POINT)
    assert offenders == []


def test_the_registration_point_is_the_only_bridge():
    bridges = {a for a, b in import_graph().edges if not in_application(a) and in_application(b)}
    assert bridges == {REGISTRATION_POINT}


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


def test_the_checker_sees_cycles_and_bridges(tmp_path, monkeypatch):
    """The two tests above can fail: a tiny package with a cycle and a bridge is caught by the same code."""
    root = tmp_path / "graphspec"
    (root / "faces").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from . import b\n")
    (root / "b.py").write_text("def f():\n    from .a import x\n")
    (root / "c.py").write_text("from .faces.app import run\n")
    (root / "faces" / "__init__.py").write_text("")
    (root / "faces" / "app.py").write_text("from ..a import x\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", root)
    graph = import_graph()
    assert [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1] == [["graphspec.a",
                                                                                           "graphspec.b"]]
    assert {(a, b) for a, b in graph.edges if not in_application(a) and in_application(b)} == {
        ("graphspec.c", "graphspec.faces.app")}


@pytest.mark.parametrize("folder", ["faces", "faces/data", "faces/verify", "faces/models"])
def test_the_boundary_shows_in_the_folder_names(folder):
    assert (PACKAGE / folder / "__init__.py").is_file()
