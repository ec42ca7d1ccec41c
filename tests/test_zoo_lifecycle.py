"""Every zoo architecture through the front door: validate, summary, draw, train a step from an .npz, save, load,
export to ONNX (checked with onnxruntime) — at a small input size, which the zoo's blocks adapt to."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import graphspec
from graphspec import zoo
from graphspec.cli import main

SMALL = {"resnet18": 32, "resnet50": 32, "mobilenet_v2": 32, "vit_b_16": 32, "unet": 32, "nn4small2": 96}


def _small_spec(name: str, tmp_path) -> tuple[str, dict]:
    d = yaml.safe_load(zoo.path(name).read_text())
    image = next(iter(d["inputs"]))
    d["inputs"][image].update(height=SMALL[name], width=SMALL[name])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(path), d


def _targets(spec, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name in spec.outputs:
        shape = spec.analysis.shapes[name]
        classes = shape[0]
        per_position = spec.vertices[name].entry.per_position
        out[name] = rng.integers(0, min(classes, 4), (n, *shape[1:]) if per_position else n)
    return out


def test_every_architecture_has_a_lifecycle_case():
    assert set(SMALL) == set(zoo.names())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zoo_architecture_lifecycle(name, tmp_path, capsys):
    path, d = _small_spec(name, tmp_path)
    spec = graphspec.load_spec(path)
    assert main(["validate", path]) == 0
    assert main(["summary", path]) == 0
    assert f"{graphspec.summarize(path).trainable:,}" in capsys.readouterr().out
    assert main(["draw", path, "-o", str(tmp_path / "net.dot")]) == 0
    n = 4
    image = next(iter(spec.inputs))
    arrays = {image: np.random.default_rng(1).standard_normal((n, *spec.input_shape(image))).astype(np.float32),
              **_targets(spec, n)}
    np.savez(tmp_path / "data.npz", **arrays)
    run = tmp_path / "run"
    assert main(["train", path, "--data", str(tmp_path / "data.npz"), "--epochs", "1", "--batch-size", "2",
                 "--semantics", "pytorch", "--eval-fraction", "0", "--out", str(run)]) == 0
    trained = graphspec.load(run / "model.safetensors").eval()
    initial = graphspec.build(path)
    moved = [k for k, v in trained.state_dict().items() if not torch.equal(v, initial.state_dict()[k])]
    assert moved, "training changed no parameter"
    x = torch.from_numpy(arrays[image][:2])
    onnx = tmp_path / "net.onnx"
    assert main(["export", str(run / "model.safetensors"), "-o", str(onnx)]) == 0
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = trained(x)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-4)
