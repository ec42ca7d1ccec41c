"""``graphspec draw``: the graph as DOT or Mermaid text (always), SVG/PNG through Graphviz when installed.

Blocks appear as clusters (nested as the block instances nest), edges carry the shape flowing along them, frozen
vertices are drawn differently, and ``depth`` collapses block instances nested deeper than that into one node.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GraphspecError, Location
from .text import printable


LINE = "\\n"  # how a node's label separates its lines (DOT's line break, written as it is in DOT)


@dataclass
class Node:
    id: str
    label: str  # lines joined by LINE
    kind: str  # input | layer | vertex | block
    group: tuple[str, ...]
    frozen: bool = False


@dataclass
class Drawing:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, label)
    outputs: list[str] = field(default_factory=list)
    shares: list[tuple[str, str]] = field(default_factory=list)  # (owner, user) of a shared layer: a dashed link


def _shape(shape, varies=()) -> str:
    """``3×64``; a dimension that follows a variable sequence length T as the summary shows it (``T``, ``T/2``)."""
    from .summary import time_dim
    return "×".join(time_dim(d) if i < len(varies) and varies[i] else str(d) for i, d in enumerate(shape))


def layout(spec, frozen=frozenset(), depth: int | None = None) -> Drawing:
    """Nodes and edges of the drawing; vertices deeper than ``depth`` block levels become their block's node."""
    a = spec.analysis
    d = Drawing(outputs=list(spec.outputs))

    def owner(name: str) -> str:
        v = spec.vertices.get(name)
        if v is None or depth is None or len(v.group) <= depth:
            return name
        return "block:" + "/".join(v.group[:depth + 1])

    for name in spec.inputs:
        d.nodes[name] = Node(name, f"{name}{LINE}input {_shape(a.shapes[name], a.varies.get(name, ()))}", "input", ())
    for name in a.order:
        v = spec.vertices[name]
        node_id = owner(name)
        if node_id == name:
            kind = f"{v.type} (shares {v.shares})" if v.shares else v.type
            d.nodes[name] = Node(name, f"{name}{LINE}{kind}", v.entry.kind, v.group, name in frozen)
        elif node_id not in d.nodes:
            group = v.group[:depth + 1]
            d.nodes[node_id] = Node(node_id, f"{group[-1]}{LINE}(block)", "block", group[:-1], name in frozen)
    seen = set()
    for name in a.order:
        target = owner(name)
        for src in spec.vertices[name].inputs:
            origin = owner(src)
            if origin != target and (origin, target) not in seen:
                seen.add((origin, target))
                d.edges.append((origin, target, _shape(a.shapes[src], a.varies.get(src, ()))))
        v = spec.vertices[name]
        link = (owner(v.shares), target) if v.shares else None
        if link and link[0] != link[1] and link not in d.shares:
            d.shares.append(link)
    return d


def _tree(d: Drawing) -> dict[tuple, list[Node]]:
    """Nodes by the block-instance path they sit in."""
    tree: dict[tuple, list[Node]] = {}
    for n in d.nodes.values():
        tree.setdefault(n.group, []).append(n)
    return tree


def _children(tree: dict[tuple, list[Node]], group: tuple) -> list[tuple]:
    """The block instances directly inside ``group`` that hold nodes (at any depth below them)."""
    return sorted({g[:len(group) + 1] for g in tree if len(g) > len(group) and g[:len(group)] == group})


def _dot_text(text: str) -> str:
    """A name inside a DOT string: control characters escaped (the file is read in terminals and editors too),
    backslashes and quotes escaped for DOT."""
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(label: str) -> str:
    """A node label: its parts (names) made safe, joined by DOT's line break."""
    return LINE.join(map(_dot_text, label.split(LINE)))


def _dot_id(name: str) -> str:
    return '"' + _dot_text(name) + '"'


def to_dot(d: Drawing, title: str) -> str:
    lines = [f"digraph {_dot_id(title)} {{", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", '
             'fillcolor="#eef3fb", fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=8];']
    style = {"input": 'shape=ellipse, fillcolor="#fff4d6"', "vertex": 'fillcolor="#f3f3f3"',
             "block": 'shape=box3d, fillcolor="#e6f2e6"', "layer": ""}
    tree = _tree(d)

    def node_line(n: Node, indent: str) -> str:
        attrs = [f'label="{_dot_label(n.label)}"'] + ([style[n.kind]] if style[n.kind] else [])
        if n.frozen:
            attrs.append('fillcolor="#dddddd", fontcolor="#555555", style="rounded,filled,dashed"')
        if n.id in d.outputs:
            attrs.append("penwidth=2")
        return f"{indent}{_dot_id(n.id)} [{', '.join(attrs)}];"

    def emit(group: tuple, indent: str) -> None:
        for n in tree.get(group, []):
            lines.append(node_line(n, indent))
        for child in _children(tree, group):
            lines.append(f"{indent}subgraph {_dot_id('cluster_' + '/'.join(child))} {{")
            lines.append(f'{indent}  label="{_dot_text(child[-1])}"; style="rounded,dashed"; color="#7a9cc6";')
            emit(child, indent + "  ")
            lines.append(f"{indent}}}")

    emit((), "  ")
    for a, b, label in d.edges:
        lines.append(f'  {_dot_id(a)} -> {_dot_id(b)} [label="{label}"];')
    for a, b in d.shares:
        lines.append(f'  {_dot_id(a)} -> {_dot_id(b)} [label="shares", style=dashed, arrowhead=none, '
                     'color="#b05f00", fontcolor="#b05f00", constraint=false];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """A name inside a Mermaid label or comment: control characters (a line break would start a new statement)
    escaped, quotes as Mermaid's entity."""
    return printable(text).replace('"', "#quot;")


def _mermaid_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else f"_{ord(c):x}_" for c in name)


def to_mermaid(d: Drawing, title: str) -> str:
    lines = [f"%% {_mermaid_text(title)}", "flowchart TD"]
    tree = _tree(d)
    shapes = {"input": ('(["', '"])'), "block": ('[["', '"]]'), "vertex": ('{{"', '"}}'), "layer": ('["', '"]')}

    def emit(group: tuple, indent: str) -> None:
        for n in tree.get(group, []):
            left, right = shapes[n.kind]
            label = "<br/>".join(map(_mermaid_text, n.label.split(LINE)))
            lines.append(f"{indent}{_mermaid_id(n.id)}{left}{label}{right}")
        for child in _children(tree, group):
            lines.append(f'{indent}subgraph {_mermaid_id("cluster/" + "/".join(child))}["{_mermaid_text(child[-1])}"]')
            emit(child, indent + "  ")
            lines.append(f"{indent}end")

    emit((), "  ")
    for a, b, label in d.edges:
        lines.append(f'  {_mermaid_id(a)} -- "{label}" --> {_mermaid_id(b)}')
    for a, b in d.shares:
        lines.append(f"  {_mermaid_id(a)} -. shares .- {_mermaid_id(b)}")
    frozen = [_mermaid_id(n.id) for n in d.nodes.values() if n.frozen]
    if frozen:
        lines.append("  classDef frozen fill:#ddd,stroke-dasharray: 4 2,color:#555")
        lines.append(f"  class {','.join(frozen)} frozen")
    return "\n".join(lines) + "\n"


def render(text: str, out: Path) -> None:
    """SVG or PNG from DOT text through Graphviz's ``dot``."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphspecError("drawing SVG/PNG needs Graphviz's 'dot' program (e.g. apt install graphviz); "
                             "write .dot or .mmd (Mermaid) instead, which need nothing", location=Location(str(out)))
    fmt = out.suffix.lstrip(".")
    result = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=text, text=True, capture_output=True,
                            timeout=120)
    if result.returncode != 0:
        raise GraphspecError(f"Graphviz failed: {result.stderr.strip()}", location=Location(str(out)))


def draw(spec, out: str | Path, *, frozen=frozenset(), depth: int | None = None, fmt: str | None = None) -> Path:
    out = Path(out)
    kind = fmt or {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".md": "mermaid", ".svg": "svg",
                   ".png": "png"}.get(out.suffix.lower())
    if kind is None:
        raise GraphspecError(f"cannot tell the format from '{out.name}'; use .dot, .mmd, .svg or .png (or --format)",
                             location=Location(str(out)))
    d = layout(spec, frozen, depth)
    if kind == "mermaid":
        out.write_text(to_mermaid(d, spec.name))
    elif kind == "dot":
        out.write_text(to_dot(d, spec.name))
    else:
        render(to_dot(d, spec.name), out.with_suffix("." + kind) if out.suffix.lower() != "." + kind else out)
    return out
