"""The rendered text of `graphspec summary`: the rich table (``--format table``, the default) and the markdown.

Every expected number is computed here, by hand from the layer formulas (the ``macs`` definitions in
graphspec/layers/types.py) or by torch.nn, never read back from the summary itself.
"""
from __future__ import annotations

import io
import json
import math
import re
from collections import Counter

import pytest
import torch
from rich.console import Console

import graphspec
from graphspec import registry
from graphspec.layers.types import ActivationLayer
from graphspec.summary import render_table, summarize

from conftest import REPO

# input [3, 8, 8] -> conv (out 4, kernel 3) -> batchnorm -> relu -> max pool 2/2 -> dense 5 -> output 3.
# The output layer writes `in: 5`, so its nIn carries no `*`; the conv's, batchnorm's and dense's are inferred.
TINY = """
version: 1
name: tiny
defaults: {activation: identity, weight_init: relu}
inputs:
  image: {type: convolutional, channels: 3, height: 8, width: 8}
vertices:
  conv: {type: conv, inputs: [image], out: 4, kernel: 3}
  bn: {type: batchnorm, inputs: [conv]}
  act: {type: ACTIVATION, inputs: [bn], activation: relu}
  pool: {type: subsampling, inputs: [act], pooling: max, kernel: 2, stride: 2}
  fc: {type: dense, inputs: [pool], out: 5}
  head: {type: output, inputs: [fc], in: 5, out: 3, activation: softmax}
outputs: [head]
"""


def tiny(activation_type: str = "activation", name: str = "tiny") -> str:
    return TINY.replace("ACTIVATION", activation_type).replace("name: tiny", f"name: {name}")


# --- hand computations --------------------------------------------------------------------------------------


def conv_params(c_in: int, out: int, k: int) -> int:
    return out * c_in * k * k + out


def dense_params(n_in: int, out: int) -> int:
    return n_in * out + out


def kib(n_bytes: int) -> str:
    assert 1024 <= n_bytes < 1024 ** 2, "the hand-formatted value is meant to fall in the KiB range"
    return f"{n_bytes / 1024:.1f} KiB"


# conv: 8 - 3 + 1 = 6; pool: (6 - 2) // 2 + 1 = 3; dense: 4·3·3 = 36 inputs after flattening.
CONV_OUT, POOL_OUT = (4, 6, 6), (4, 3, 3)
# (name, type, inputs, nIn→nOut, output shape, params, trained by gradient, MACs)
ROWS = [
    ("conv", "conv", "image", "3*→4", CONV_OUT, conv_params(3, 4, 3), conv_params(3, 4, 3),
     math.prod(CONV_OUT) * 3 * 3 * 3),
    ("bn", "batchnorm", "conv", "4*→4", CONV_OUT, 4 * 4, 2 * 4, math.prod(CONV_OUT)),  # γ, β + mean, var
    ("act", "activation", "bn", "-", CONV_OUT, 0, 0, 0),
    ("pool", "subsampling", "act", "-", POOL_OUT, 0, 0, math.prod(POOL_OUT) * 2 * 2),
    ("fc", "dense", "pool", "36*→5", (5,), dense_params(36, 5), dense_params(36, 5), 36 * 5),
    ("head", "output", "fc", "5→3", (3,), dense_params(5, 3), dense_params(5, 3), 5 * 3),
]
TRAINED = sum(r[6] for r in ROWS)
TOTAL = sum(r[5] for r in ROWS)
STATE = TOTAL - TRAINED
MACS = sum(r[7] for r in ROWS)
ACTIVATION_VALUES = sum(math.prod(r[4]) for r in ROWS)  # every vertex output (the input itself is not counted)


def shape(s) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def trainable_cell(params: int, trained: int, frozen: bool = False) -> str:
    return "-" if not params else "frozen" if frozen else "yes" if trained == params else f"{trained:,}"


def row_cells(row, frozen=(), macs: str | None = None, type_: str | None = None) -> list[str]:
    name, type_name, inputs, n_in_out, out, params, trained, row_macs = row
    return [f"{name} ({type_ or type_name})", inputs, n_in_out, shape(out), f"{params:,}",
            trainable_cell(params, trained, name in frozen), f"{row_macs:,}" if macs is None else macs]


def totals(trained=TRAINED, frozen=0, batch=1, macs=None, batch_macs=None) -> list[tuple[str, str]]:
    return [("Trained by gradient", f"{trained:,}"), ("Frozen", f"{frozen:,}"),
            ("Other state (BN running statistics, centers)", f"{STATE:,}"),
            ("Total parameters (as DL4J counts them)", f"{TOTAL:,}"),
            ("Parameter memory (float32)", kib(TOTAL * 4)),
            (f"Activation memory, batch {batch} (float32, forward)", kib(ACTIVATION_VALUES * 4 * batch)),
            ("MACs per example", macs or f"{MACS:,}"), (f"MACs, batch {batch}", batch_macs or f"{MACS * batch:,}")]


def markdown(title: str, rows: list[list[str]], total_rows) -> str:
    head = ["vertex (type)", "inputs", "nIn→nOut", "output shape", "params", "trainable", "MACs"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|---|---|---|---|---|---|---|",
             "| image (input) |  | - | [3, 8, 8] | 0 | - | 0 |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += ["", "| total | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in total_rows]
    return "\n".join(lines + ["", "`*` nIn inferred from the input shapes.", ""])


def table_cells(text: str) -> dict[str, list[str]]:
    """The rich table's rows (the header's too), by their first cell, split into stripped cells."""
    return {cells[0]: cells for line in text.splitlines() if line[:1] in ("│", "┃")
            for cells in [[c.strip() for c in re.split("[│┃]", line)[1:-1]]]}


def total_pairs(text: str) -> list[tuple[str, str]]:
    """The totals printed below the table: a label, then its value right-aligned, on one line."""
    return [(m[1], m[2]) for line in text.splitlines()
            if (m := re.fullmatch(r" (\S.*?)  +(\S.*?) ?", line)) and "│" not in line and "━" not in line]


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture
def plain_cli(cli, monkeypatch):
    """The shared in-process CLI, with no environment variable forcing rich into terminal mode (and width)."""
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(var, raising=False)
    return cli


@pytest.fixture
def tiny_path(tmp_path):
    def write(text: str = tiny()):
        path = tmp_path / "tiny.yaml"
        path.write_text(text)
        return path
    return write


@pytest.fixture
def temporary_type(monkeypatch):
    """Put a vertex type into the registry for one test only; monkeypatch takes it out again afterwards."""
    registry.all_types()  # built-ins and plugins first, so that their loading never meets the test's type

    def add(cls):
        monkeypatch.setitem(registry.REGISTRY, cls.name, cls())
        return cls.name
    return add


class UnknownMacs(ActivationLayer):
    name, dl4j = "mystery", "MysteryLayer"

    def macs(self, p, inf):
        return None


# --- the small spec -----------------------------------------------------------------------------------------


def test_hand_counts_agree_with_torch_nn():
    # the formulas above against torch.nn; DL4J counts BN's running mean and variance (not num_batches_tracked)
    def count(m):
        return sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.parameters() if p.requires_grad)
    bn = torch.nn.BatchNorm2d(4)
    assert conv_params(3, 4, 3) == count(torch.nn.Conv2d(3, 4, 3))[0]
    assert dense_params(36, 5) == count(torch.nn.Linear(36, 5))[0]
    assert dense_params(5, 3) == count(torch.nn.Linear(5, 3))[0]
    assert (count(bn)[0] + bn.running_mean.numel() + bn.running_var.numel(), count(bn)[1]) == (ROWS[1][5], ROWS[1][6])
    # and against the network graphspec builds from the spec
    net = graphspec.build(tiny(), seed=0)
    assert sum(p.numel() for p in net.parameters()) == TRAINED
    assert sum(b.numel() for b in net.buffers()) == STATE


def test_markdown_is_the_expected_document(plain_cli, tiny_path):
    rc, out, err = plain_cli("summary", tiny_path(), "--format", "markdown")
    assert (rc, err) == (0, "")
    assert out == markdown("tiny", [row_cells(r) for r in ROWS], totals())


def test_table_has_each_vertex_on_its_line_and_the_totals(plain_cli, tiny_path):
    rc, out, _ = plain_cli("summary", tiny_path())  # --format table is the default
    assert rc == 0
    assert out.splitlines()[0].strip() == "tiny"
    cells = table_cells(out)
    assert cells.pop("vertex (type)") == ["vertex (type)", "inputs", "nIn→nOut", "output shape", "params",
                                          "trainable", "MACs"]
    assert cells.pop("image (input)") == ["image (input)", "", "-", "[3, 8, 8]", "0", "-", "0"]
    assert list(cells.values()) == [row_cells(r) for r in ROWS]
    assert total_pairs(out) == totals()
    assert out.rstrip().endswith("* nIn inferred from the input shapes")


def test_batch_size_scales_activation_memory_and_batch_macs(plain_cli, tiny_path):
    path = tiny_path()
    for batch in (1, 7):
        rc, out, _ = plain_cli("summary", path, "--format", "markdown", "--batch-size", batch)
        assert rc == 0
        assert out == markdown("tiny", [row_cells(r) for r in ROWS], totals(batch=batch))
    t1, t7 = (json.loads(plain_cli("summary", path, "--format", "json", "--batch-size", b)[1])["totals"]
              for b in (1, 7))
    assert t7["activation_bytes"] == 7 * t1["activation_bytes"] == 7 * 4 * ACTIVATION_VALUES
    assert (t7["macs"], t7["macs_per_example"]) == (7 * t1["macs"], t1["macs_per_example"]) == (7 * MACS, MACS)
    assert {k: v for k, v in t7.items() if k not in ("activation_bytes", "macs", "batch_size")} == \
        {k: v for k, v in t1.items() if k not in ("activation_bytes", "macs", "batch_size")}


# --- frozen vertices ----------------------------------------------------------------------------------------


def test_frozen_vertices_of_a_model_file(plain_cli, tmp_path, one_thread):
    net = graphspec.build(tiny(), seed=0)
    frozen_net = graphspec.GraphBuilder(net).set_feature_extractor("bn").build()  # bn and its ancestor conv
    path = graphspec.save(frozen_net, tmp_path / "frozen.safetensors")
    frozen = {"conv", "bn"}
    moved = sum(r[6] for r in ROWS if r[0] in frozen)  # the conv's weights and the batchnorm's γ and β
    assert moved == conv_params(3, 4, 3) + 2 * 4

    rc, out, _ = plain_cli("summary", path, "--format", "markdown")
    assert rc == 0
    assert out == markdown("tiny", [row_cells(r, frozen) for r in ROWS], totals(trained=TRAINED - moved, frozen=moved))

    rc, out, _ = plain_cli("summary", path)
    cells = table_cells(out)
    assert [cells[f"{r[0]} ({r[1]})"][5] for r in ROWS] == ["frozen", "frozen", "-", "-", "yes", "yes"]
    assert total_pairs(out)[:2] == [("Trained by gradient", f"{TRAINED - moved:,}"), ("Frozen", f"{moved:,}")]

    # and the table dims the frozen rows
    console = Console(record=True, width=200, file=io.StringIO(), force_terminal=True, color_system="standard")
    render_table(graphspec.summarize(path), console)
    dim = {re.sub(r"\x1b\[[0-9;]*m", "", line).split()[1] for line in console.export_text(styles=True).splitlines()
           if line.startswith("│\x1b[2m")}  # the body rows styled dim (SGR 2), by vertex name
    assert dim == frozen


# --- escaping, unknown MACs ---------------------------------------------------------------------------------


class Piped(ActivationLayer):
    name, dl4j = "act|ivation", "PipedActivationLayer"


def test_a_pipe_in_a_cell_is_escaped_in_markdown(plain_cli, tiny_path, temporary_type):
    # Vertex and input names are restricted to [A-Za-z0-9_-], so of the cells only the type can hold a '|':
    # a vertex type (here a test-only one) whose name contains one.
    temporary_type(Piped)
    path = tiny_path(tiny("'act|ivation'"))
    rc, out, _ = plain_cli("summary", path, "--format", "markdown")
    assert rc == 0
    assert out == markdown("tiny", [row_cells(r, type_="act\\|ivation" if r[0] == "act" else None) for r in ROWS],
                           totals())
    act_line = next(line for line in out.splitlines() if line.startswith("| act "))
    assert len(re.split(r"(?<!\\)\|", act_line)) == 7 + 2  # seven cells between the outer bars
    rc, out, _ = plain_cli("summary", path)  # the table shows the name as it is
    assert table_cells(out)["act (act|ivation)"] == row_cells(ROWS[2], type_="act|ivation")


def test_unknown_macs_show_a_question_mark_and_a_lower_bound(plain_cli, tiny_path, temporary_type):
    temporary_type(UnknownMacs)
    path = tiny_path(tiny("mystery"))
    known = MACS - ROWS[2][7]  # the activation's 0 is what becomes unknown
    rows = [row_cells(r, type_="mystery", macs="?") if r[0] == "act" else row_cells(r) for r in ROWS]

    rc, out, _ = plain_cli("summary", path, "--format", "markdown", "--batch-size", 2)
    assert rc == 0
    assert out == markdown("tiny", rows, totals(batch=2, macs=f"? (at least {known:,}; unknown for act)",
                                                batch_macs=f"? (at least {2 * known:,}; unknown for act)"))
    rc, out, _ = plain_cli("summary", path, "--batch-size", 2)
    assert table_cells(out)["act (mystery)"] == rows[2]
    assert total_pairs(out)[-2:] == [("MACs per example", f"? (at least {known:,}; unknown for act)"),
                                     ("MACs, batch 2", f"? (at least {2 * known:,}; unknown for act)")]


def test_more_than_three_unknown_macs_are_counted_not_listed(plain_cli, tiny_path, temporary_type):
    temporary_type(UnknownMacs)
    extra = "".join(f"  m{i}: {{type: mystery, inputs: [{'act' if i == 1 else f'm{i - 1}'}], activation: relu}}\n"
                    for i in range(1, 4))
    spec = tiny("mystery").replace("inputs: [act], pooling", "inputs: [m3], pooling").replace(
        "  pool:", extra + "  pool:")
    rc, out, _ = plain_cli("summary", tiny_path(spec), "--format", "markdown")
    assert rc == 0
    known = MACS - ROWS[2][7]
    assert f"| MACs per example | ? (at least {known:,}; unknown for act, m1, m2, ... (4 in all)) |\n" in out


# --- nn4small2 ----------------------------------------------------------------------------------------------


def test_nn4small2_table_counts_as_dl4j(one_thread):
    # DL4J's counts for nn4small2: 4,311,749 trained by gradient, 5,056,933 in all (BN statistics and centers)
    net = graphspec.build(REPO / "specs" / "nn4small2.yaml", seed=0)
    assert sum(p.numel() for p in net.parameters()) == 4_311_749
    per_vertex = Counter()
    for key, value in net.state_dict().items():  # torch's own count of every stored value, by vertex
        per_vertex[key.split(".")[0]] += value.numel()
    assert sum(per_vertex.values()) == 5_056_933

    console = Console(record=True, width=200, file=io.StringIO())
    s = summarize(REPO / "specs" / "nn4small2.yaml")
    render_table(s, console)
    text = console.export_text()
    cells = table_cells(text)
    assert len(s.rows) > 100
    for r in s.rows:
        row = cells[f"{r.name} ({r.type})"]  # the row's first line; only the inputs of merges wrap below it
        assert (row[3], row[4]) == (shape(r.out_shape), f"{per_vertex[r.name]:,}")
    assert cells["stem-cnn1 (conv)"][4] == f"{conv_params(3, 64, 7):,}" == "9,472"
    # the center-loss head: a dense 128 -> 5749 plus 5749 centers of 128 values
    assert cells["lossLayer (center_loss_output)"][4:6] == [f"{dense_params(128, 5749) + 5749 * 128:,}",
                                                            f"{dense_params(128, 5749):,}"]
    pairs = dict(total_pairs(text))
    assert pairs["Trained by gradient"] == "4,311,749"
    assert pairs["Total parameters (as DL4J counts them)"] == "5,056,933"
    assert pairs["Frozen"] == "0"


# --- names are text, never rich markup ('[v2]' was once taken for a style, '[/v2]' failed with exit 3) ------


@pytest.mark.parametrize("title", ["tiny [v2]", "tiny [/v2]"])
def test_a_name_with_brackets_is_shown_as_written(plain_cli, tiny_path, title):
    path = tiny_path(tiny(name=f"'{title}'"))
    assert plain_cli("summary", path, "--format", "markdown")[1].startswith(f"# {title}\n")  # markdown is right
    rc, out, _ = plain_cli("summary", path)
    assert rc == 0
    assert out.splitlines()[0].strip() == title
