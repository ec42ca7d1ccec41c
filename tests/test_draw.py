"""graphspec draw: DOT/Mermaid text, clusters per block instance, shapes on edges, frozen styling, --depth."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import graphspec
from graphspec.cli import main
from graphspec.draw import layout, to_dot, to_mermaid

SPEC = Path(__file__).resolve().parents[1] / "specs" / "nn4small2.yaml"


@pytest.fixture(scope="module")
def spec():
    return graphspec.load_spec(SPEC)


def test_every_vertex_and_edge_is_drawn_with_its_shape(spec):
    d = layout(spec)
    assert set(d.nodes) == set(spec.inputs) | set(spec.vertices)
    expected = {(src, name) for name, v in spec.vertices.items() for src in v.inputs}
    assert {(a, b) for a, b, _ in d.edges} == expected
    labels = {(a, b): label for a, b, label in d.edges}
    assert labels[("inception-3a", "inception-3b-cnn1-0")] == "256×12×12"
    assert labels[("embeddings", "lossLayer")] == "128"
    dot = to_dot(d, spec.name)
    assert dot.count(" -> ") == len(expected)
    assert '"inception-3a" -> "inception-3b-cnn1-0" [label="256×12×12"];' in dot


def test_block_instances_are_clusters(spec):
    dot = to_dot(layout(spec), spec.name)
    for block in ("inception-3a", "inception-3b", "inception-4a", "3c-1x1", "5b-3-1x1reduce"):
        assert f'subgraph "cluster_{block}" {{' in dot
    cluster = dot.split('subgraph "cluster_inception-3a" {')[1].split("}")[0]
    names = set(re.findall(r'^\s+"([^"]+)" \[', cluster, re.M))
    assert names == {n for n, v in spec.vertices.items() if v.group == ("inception-3a",)}
    assert len(names) == 2 * 6 + 4 + 3 + 1  # two k×k branches, the pool branch, the 1×1 branch, the merge
    mermaid = to_mermaid(layout(spec), spec.name)
    assert mermaid.count("subgraph ") == mermaid.count("\n  end") + mermaid.count("\n    end")


def test_depth_zero_collapses_each_block_into_one_node(spec):
    d = layout(spec, depth=0)
    assert "block:inception-3a" in d.nodes and "inception-3a-cnn1-0" not in d.nodes
    assert ("inception-2-pool1", "block:inception-3a", "192×12×12") in d.edges
    assert ("block:inception-3a", "block:inception-3b", "256×12×12") in d.edges
    n_blocks = len({v.group[0] for v in spec.vertices.values() if v.group})
    n_plain = sum(1 for v in spec.vertices.values() if not v.group)
    assert len(d.nodes) == len(spec.inputs) + n_plain + n_blocks


def test_frozen_vertices_are_styled(spec):
    net = graphspec.build(spec)
    snipped = graphspec.snip(net, ["embeddings"])
    d = layout(snipped.graphspec.spec, snipped.graphspec.frozen)
    assert all(n.frozen for name, n in d.nodes.items() if name != "input1")
    assert to_dot(d, "x").count('style="rounded,filled,dashed"') == len(snipped.graphspec.spec.vertices)
    assert "class " in to_mermaid(d, "x") and "classDef frozen" in to_mermaid(d, "x")


def test_cli_writes_dot_and_mermaid_and_explains_missing_graphviz(tmp_path, capsys, monkeypatch):
    assert main(["draw", str(SPEC), "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").read_text().startswith('digraph "nn4small2" {')
    assert main(["draw", str(SPEC), "-o", str(tmp_path / "g.mmd"), "--depth", "0"]) == 0
    assert (tmp_path / "g.mmd").read_text().splitlines()[1] == "flowchart TD"
    monkeypatch.setattr("shutil.which", lambda name: None)
    capsys.readouterr()
    assert main(["draw", str(SPEC), "-o", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'g.svg'}: drawing SVG/PNG needs Graphviz's 'dot' program (e.g. apt install "
                   "graphviz); write .dot or .mmd (Mermaid) instead, which need nothing\n")
