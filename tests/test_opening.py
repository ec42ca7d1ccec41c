"""One way to open anything: graphspec.open / open_spec, and every command going through them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import graphspec
from graphspec import catalog
from graphspec.cli import main
from graphspec.errors import GraphspecError

ROOT = Path(__file__).resolve().parents[1]
NN4 = ROOT / "specs" / "nn4small2.yaml"

TINY = """
version: 1
name: tiny
seed: 3
inputs:
  x: {type: feed_forward, size: 4}
vertices:
  d: {type: dense, inputs: [x], out: 3, activation: relu}
  e: {type: dense, inputs: [d], out: 2}
outputs: [e]
"""

EXPECTED_TYPO = ("nn4small2-lwf: no such file, and no catalogued model or zoo architecture of that name (did you "
                 "mean 'nn4small2-lfw'?); expected a spec file, a model file, one of the catalogued models "
                 "('nn4small2-lfw') or one of the zoo's architectures (mobilenet_v2, nn4small2, resnet18, resnet50, "
                 "unet, vit_b_16)")


@pytest.fixture
def tiny_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture
def tiny_model(tmp_path) -> tuple[torch.nn.Module, Path]:
    net = graphspec.build(TINY, seed=11, frozen=["d"])
    return net, graphspec.save(net, tmp_path / "tiny.safetensors")


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- graphspec.open: each kind of source ---------------------------------------------------------------------


def test_a_built_module_is_returned_as_is():
    net = graphspec.build(TINY)
    assert graphspec.open(net) is net


def test_a_spec_object_a_dict_and_yaml_text_are_built_seeded():
    spec = graphspec.load_spec(TINY)
    from_spec = graphspec.open(spec, seed=5)
    from_dict = graphspec.open(yaml.safe_load(TINY), seed=5)
    from_text = graphspec.open(TINY, seed=5)
    assert all(hasattr(m, "graphspec") for m in (from_spec, from_dict, from_text))
    assert _same_weights(from_spec, from_dict) and _same_weights(from_spec, from_text)
    assert _same_weights(from_spec, graphspec.build(TINY, seed=5))
    assert not _same_weights(from_spec, graphspec.open(TINY, seed=6))


def test_a_spec_file_is_built_with_fresh_weights(tiny_file):
    net = graphspec.open(str(tiny_file), seed=5)
    assert net.graphspec.spec.name == "tiny"
    assert _same_weights(net, graphspec.build(str(tiny_file), seed=5))
    assert _same_weights(graphspec.open(tiny_file, seed=5), net)  # a Path too


def test_a_model_file_is_loaded_with_its_weights(tiny_model):
    net, path = tiny_model
    opened = graphspec.open(str(path), seed=99)  # the seed does not touch a model's weights
    assert _same_weights(opened, net)
    assert opened.graphspec.frozen == frozenset({"d"})


def test_a_catalogued_model_is_opened_by_name():
    net = graphspec.open("nn4small2-lfw")
    assert _same_weights(net, graphspec.load(catalog.path("nn4small2-lfw")))


def test_an_unknown_name_says_what_was_expected_and_suggests_the_catalogued_one():
    with pytest.raises(GraphspecError) as e:
        graphspec.open("nn4small2-lwf")
    assert str(e.value) == EXPECTED_TYPO
    assert "did you mean 'nn4small2-lfw'?" in str(e.value)
    with pytest.raises(GraphspecError, match="did you mean 'nn4small2-lfw'"):
        graphspec.open_spec("nn4small2-lwf")


def test_a_name_far_from_every_catalogued_one_suggests_nothing_but_lists_them():
    with pytest.raises(GraphspecError) as e:
        graphspec.open("alexnet")
    assert "did you mean" not in str(e.value)
    assert "one of the catalogued models ('nn4small2-lfw')" in str(e.value)
    with pytest.raises(GraphspecError, match=r"\(did you mean 'resnet50'\?\)"):
        graphspec.open("resnet")


def test_a_missing_path_keeps_the_readers_error(tmp_path):
    with pytest.raises(GraphspecError, match="cannot read spec: No such file or directory"):
        graphspec.open(str(tmp_path / "nothing"))
    with pytest.raises(GraphspecError, match="cannot read model file"):
        graphspec.open(str(tmp_path / "nothing.safetensors"))




def test_open_spec_of_each_kind(tiny_file, tiny_model):
    net, path = tiny_model
    for source in (TINY, yaml.safe_load(TINY), graphspec.load_spec(TINY), str(tiny_file)):
        spec, frozen = graphspec.open_spec(source)
        assert (spec.name, frozen) == ("tiny", frozenset())
    spec, frozen = graphspec.open_spec(str(path))
    assert (spec.name, frozen) == ("tiny", frozenset({"d"}))
    spec, frozen = graphspec.open_spec(net)
    assert spec is net.graphspec.spec and frozen == frozenset({"d"})
    spec, frozen = graphspec.open_spec("nn4small2-lfw")
    assert list(spec.outputs) == ["embeddings"] and frozen


def test_open_spec_of_a_model_file_does_not_read_its_weights(tiny_model, monkeypatch):
    _, path = tiny_model
    import graphspec.model_io as model_io

    def refuse(*args, **kwargs):
        raise AssertionError("read the weights")
    monkeypatch.setattr(model_io, "read_tensors", refuse)
    spec, frozen = graphspec.open_spec(str(path))
    assert spec.name == "tiny" and frozen == {"d"}


# --- graphspec.summarize -------------------------------------------------------------------------------------


def test_summarize_a_built_module_marks_its_frozen_vertices(tiny_model):
    net, path = tiny_model
    s = graphspec.summarize(net)
    assert s.total == 4 * 3 + 3 + 3 * 2 + 2
    assert [r.name for r in s.rows if r.frozen] == ["d"]
    assert graphspec.summarize(str(path)).total == s.total
    assert graphspec.summarize(TINY).total == s.total
    assert not any(r.frozen for r in graphspec.summarize(TINY).rows)


def test_summarize_a_catalogued_model_by_name():
    assert graphspec.summarize("nn4small2-lfw").total == graphspec.summarize(graphspec.open("nn4small2-lfw")).total


# --- the command line ----------------------------------------------------------------------------------------


def test_cli_validate_a_model_file_checks_its_embedded_spec(tmp_path, capsys):
    out_file = tmp_path / "x.safetensors"
    assert main(["init", str(NN4), "-o", str(out_file)]) == 0
    capsys.readouterr()
    assert main(["validate", str(out_file)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{out_file}: ok (") and "outputs: " in out
    assert "error" not in err and "limited to" not in err


def test_cli_summary_of_a_typo_exits_2_with_the_suggestion(capsys):
    assert main(["summary", "nn4small2-lwf"]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {EXPECTED_TYPO}\n"
    assert "No such file or directory" not in err


@pytest.mark.parametrize("command", ["validate", "forward", "draw"])
def test_every_command_suggests_the_catalogued_name(command, tmp_path, capsys):
    argv = [command, "nn4small2-lwf"] + (["-o", str(tmp_path / "g.dot")] if command == "draw" else [])
    assert main(argv) == 2
    assert "did you mean 'nn4small2-lfw'?" in capsys.readouterr().err


def test_cli_summary_and_draw_of_a_model_file(tiny_model, tmp_path, capsys):
    _, path = tiny_model
    assert main(["summary", str(path), "--format", "json"]) == 0
    assert '"d"' in capsys.readouterr().out
    assert main(["draw", str(path), "-o", str(tmp_path / "g.dot")]) == 0
    assert (tmp_path / "g.dot").is_file()


def test_cli_forward_of_a_model_file(tiny_model, capsys):
    _, path = tiny_model
    assert main(["forward", str(path)]) == 0
    assert "e: [2, 2] ok" in capsys.readouterr().out


def test_cli_models_lists_the_catalog(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("  nn4small2-lfw "))
    assert str(catalog.path("nn4small2-lfw")) in line
    about = catalog.summary("nn4small2-lfw")
    assert about and about in line and not about.startswith("#")
    zoo_lines = out.split("architectures (", 1)[1].splitlines()[1:]
    assert [line.split()[0] for line in zoo_lines] == ["mobilenet_v2", "nn4small2", "resnet18", "resnet50", "unet",
                                                     "vit_b_16"]
    resnet50 = next(line for line in zoo_lines if line.split()[0] == "resnet50")
    summary = graphspec.summarize("resnet50")  # the line reports the architecture's own summary
    assert f"{summary.trainable:,} params" in resnet50 and f"{summary.macs / 1e9:.2f} G MACs" in resnet50
    assert summary.trainable == 25_557_032 and "3x224x224" in resnet50  # torchvision's documented count


def test_open_spec_refuses_a_truncated_model_file_as_loading_does(tiny_model, tmp_path):
    _, path = tiny_model
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(GraphspecError, match=r"cannot read the tensors: .*\(truncated\)") as e:
        graphspec.open_spec(str(cut))
    assert str(cut) in str(e.value)
    assert main(["validate", str(cut)]) == 2
