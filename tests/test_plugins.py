"""Vertex types from plugins: a package's ``graphspec.vertex_types`` entry point makes ``type: my_gate`` validate,
summarise, build, train, save, load and export; without the package, a located error names the missing type.

The plugin (tests/plugins/gate) is installed the way pip installs any package, as a folder on ``sys.path`` with
its ``.dist-info``; each check runs in a fresh process, because the registry reads entry points once per process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graphspec import registry
from graphspec.registry import Params, VertexType

PLUGINS = Path(__file__).parent / "plugins"
NET = PLUGINS / "gate_net.yaml"


def _run(code: str, *paths: Path, args=()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in paths), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", textwrap.dedent(code), *args] if code else [sys.executable, "-m", "graphspec.cli",
                                                                           *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


EXERCISE = """
    import json, sys
    import numpy as np, torch, onnxruntime
    import graphspec
    from graphspec.summary import summarize
    from graphspec.train.recipe import Recipe
    from graphspec.train.session import run_session
    from graphspec.data import ArrayData

    net_path, out = sys.argv[1], sys.argv[2]
    summary = summarize(net_path, batch_size=2)
    gate_row = next(r for r in summary.rows if r.name == "gate")
    net = graphspec.build(net_path)
    before = net.get_submodule("gate").gate.detach().clone()
    x = torch.rand(2, 3, 12, 12)
    manual = net.get_submodule("conv")(x) * torch.sigmoid(before).view(6, 1, 1)
    forward_matches = bool(torch.allclose(net.get_submodule("gate")(net.get_submodule("conv")(x)), manual))
    images = np.random.default_rng(0).integers(0, 255, (16, 3, 12, 12), dtype=np.uint8)
    data = ArrayData(images, np.arange(16) % 4, list("abcd"))
    recipe = Recipe(semantics="pytorch", epochs=2, batch_size=8)
    trained = run_session(net, recipe, data, out=out + "/run").model
    loaded = graphspec.load(out + "/run/model.safetensors")
    from graphspec.export import export
    export(loaded, out + "/gated.onnx")
    loaded.eval()
    session = onnxruntime.InferenceSession(out + "/gated.onnx")
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    print(json.dumps({
        "gate_row": [gate_row.type, gate_row.params, gate_row.trainable, gate_row.macs, gate_row.out_shape],
        "macs_total": summary.macs, "macs_unknown": summary.macs_unknown,
        "forward_matches": forward_matches,
        "init": before.tolist(),
        "trained_moved": bool((trained.get_submodule("gate").gate != before).all()),
        "keys": sorted(loaded.state_dict()),
        "reloaded_equal": bool(torch.equal(loaded.get_submodule("gate").gate, trained.get_submodule("gate").gate)),
        "onnx_max_diff": float(np.abs(onnx_out - loaded(x).detach().numpy()).max()),
    }))
"""


def test_a_plugin_type_validates_summarises_builds_trains_saves_loads_and_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    done = _run(EXERCISE, PLUGINS / "gate", args=[str(NET), str(tmp_path)])
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["gate_row"] == ["my_gate", 6, 6, None, [6, 10, 10]]  # one gate per channel; MACs unknown
    assert r["macs_total"] is None and r["macs_unknown"] == ["gate"]
    assert r["forward_matches"] and r["init"] == [0.5] * 6
    assert r["trained_moved"] and r["reloaded_equal"]
    assert "gate.gate" in r["keys"]
    assert r["onnx_max_diff"] < 1e-5


def test_the_cli_uses_plugin_types(tmp_path):
    done = _run("", PLUGINS / "gate", args=["summary", str(NET), "--format", "markdown"])
    assert done.returncode == 0, done.stderr
    assert "| gate (my_gate) | conv | 6*→6 | [6, 10, 10] | 6 | yes | ? |" in done.stdout
    assert "| MACs per example | ? (at least " in done.stdout and "unknown for gate) |" in done.stdout
    done = _run("", PLUGINS / "gate", args=["validate", str(NET)])
    assert done.returncode == 0 and done.stdout.strip() == f"{NET}: ok (4 vertices, outputs: head)"


def test_without_the_plugin_the_type_is_a_located_error():
    done = _run("", args=["validate", str(NET)])
    line = NET.read_text().splitlines().index("  gate: {type: my_gate, inputs: [conv], init: 0.5}") + 1
    col = len("  gate: {") + 1  # the 'type' key
    assert done.returncode == 2
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: {NET}:{line}:{col}: vertex 'gate': unknown vertex type 'my_gate'; known types: ")
    assert first.endswith("(a type from a plugin needs the plugin's package installed)")
    assert "Traceback" not in done.stderr


def test_a_broken_plugin_is_a_warning_and_the_others_still_load():
    done = _run("", PLUGINS / "gate", PLUGINS / "broken", args=["validate", str(NET)])
    assert done.returncode == 0, done.stderr
    assert ("warning: vertex-type plugin 'broken' (graphspec_no_such_module:Type) was not registered: "
            "ModuleNotFoundError: No module named 'graphspec_no_such_module'") in done.stderr


def test_register_refuses_what_is_not_a_vertex_type():
    with pytest.raises(TypeError, match="a vertex type must be a subclass of graphspec.registry.VertexType"):
        registry.register(int)

    class NoName(VertexType):
        dl4j = "NoName"
    with pytest.raises(ValueError, match=r"^vertex type NoName needs a class attribute 'name' \(a non-empty string\)$"):
        registry.register(NoName)

    class Taken(VertexType):
        name, dl4j = "conv", "Taken"
    with pytest.raises(ValueError, match="^vertex type 'conv' is registered twice$"):
        registry.register(Taken)

    class DL4JTaken(VertexType):
        name, dl4j = "my_conv", "ConvolutionLayer"
    with pytest.raises(ValueError, match="^vertex type 'my_conv': DL4J name 'ConvolutionLayer' already names 'conv'$"):
        registry.register(DL4JTaken)

    class BadKind(VertexType):
        name, dl4j, kind = "bad_kind", "BadKind", "module"
    with pytest.raises(ValueError, match="^vertex kind must be one of"):
        registry.register(BadKind)
    assert not {"my_conv", "bad_kind"} & set(registry.all_types())
    assert Params is registry.Params
