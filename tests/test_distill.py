"""Knowledge distillation: a teacher's rows by image path (``graphspec embed``'s .npy + .paths.txt) as the targets of
one output (``graphspec.data.targets``, the recipe's ``distill``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import graphspec
from graphspec.data import Preprocessing
from graphspec.data.errors import DataError
from graphspec.data.targets import RowTargets
from graphspec.errors import GraphspecError

STUDENT = """
version: 1
name: student
seed: 3
inputs:
  image: {type: convolutional, channels: 3, height: 32, width: 32}
vertices:
  conv: {type: conv, inputs: [image], kernel: 3, stride: 2, out: 4, activation: relu}
  pool: {type: global_pool, inputs: [conv], pooling: avg}
  dense: {type: dense, inputs: [pool], out: 6}
  embeddings: {type: l2_normalize, inputs: [dense]}
outputs: [embeddings]
"""


@pytest.fixture
def faces(tmp_path):
    from graphspec.faces.data import synthetic_faces
    return synthetic_faces(tmp_path / "faces", identities=3, images=4, seed=0, size=32)


def _teacher(faces, out, width=6, leave_out=1, seed=0):
    """Rows for the images of ``faces`` (all but the first ``leave_out``), in a shuffled order, as embed writes
    them; returns {path: row}."""
    from graphspec.faces.embed import image_files, write
    files = image_files([faces])[leave_out:]
    order = np.random.default_rng(seed).permutation(len(files))
    rows = np.random.default_rng(seed + 1).normal(size=(len(files), width)).astype(np.float32)
    write(rows[order], [files[i] for i in order], out)
    return {str(files[i].resolve()): rows[i] for i in range(len(files))}


def test_rows_are_matched_with_the_images_by_path_and_images_without_one_are_left_out(faces, tmp_path):
    from graphspec.faces.data import lfw_dataset
    expected = _teacher(faces, tmp_path / "t.npy")
    dataset = lfw_dataset(faces, preprocessing=Preprocessing(size=(32, 32)), cache_dir=tmp_path / "cache")
    data = RowTargets.read(dataset, tmp_path / "t.npy", "embeddings")
    assert len(dataset) == 12 and len(data) == 11 and len(data.missing) == 1
    assert data.missing[0] not in [p for p in dataset.paths if str(p.resolve()) in expected]
    kept = [p for p in dataset.paths if str(p.resolve()) in expected]
    images, targets = data.batch([0, 5, 10])
    for row, i in zip(targets["embeddings"], [0, 5, 10]):
        np.testing.assert_array_equal(row, expected[str(kept[i].resolve())])
    whole, _ = dataset.batch([dataset.paths.index(kept[5])])
    assert torch.equal(images[1], whole[0])
    assert list(data.labels) == [int(dataset.labels[dataset.paths.index(p)]) for p in kept]


def test_normalize_scales_every_row_to_unit_length(faces, tmp_path):
    from graphspec.faces.data import lfw_dataset
    _teacher(faces, tmp_path / "t.npy", leave_out=0)
    dataset = lfw_dataset(faces, preprocessing=Preprocessing(size=(32, 32)), cache_dir=tmp_path / "cache")
    data = RowTargets.read(dataset, tmp_path / "t.npy", "embeddings", normalize=True)
    np.testing.assert_allclose(np.linalg.norm(data.targets["embeddings"], axis=1), 1.0, rtol=1e-6)


def test_training_with_distill_minimises_the_squared_distance_to_the_unit_teacher_rows(faces, tmp_path):
    from graphspec.faces.training import train
    expected = _teacher(faces, tmp_path / "t.npy", leave_out=0)
    spec, recipe = tmp_path / "student.yaml", tmp_path / "recipe.yaml"
    spec.write_text(STUDENT)
    recipe.write_text("semantics: pytorch\nepochs: 1\nbatch_size: 12\nseed: 3\ndata: {shuffle: false}\n"
                      "preprocessing: {size: [32, 32]}\noptimizer: {type: sgd, lr: 1.0e-9, momentum: 0}\n"
                      f"distill: {{targets: {tmp_path / 't.npy'}, output: embeddings}}\n"
                      "losses: {embeddings: {loss: l2}}\n")
    student = graphspec.build(spec.read_text())
    trainer = train(str(spec), data=str(faces), recipe_path=str(recipe), out=str(tmp_path / "run"),
                    cache_dir=tmp_path / "cache")
    # the one step's loss, by hand: mean over the images of ||student(x) - t/|t|||^2 (weights barely moved)
    from graphspec.faces.data import lfw_dataset
    dataset = lfw_dataset(faces, preprocessing=Preprocessing(size=(32, 32)), cache_dir=tmp_path / "cache")
    x = dataset.preprocessing.to_tensor(dataset.batch(range(len(dataset)))[0])
    t = np.stack([expected[str(p.resolve())] for p in dataset.paths])
    t = torch.from_numpy(t / np.linalg.norm(t, axis=1, keepdims=True))
    with torch.no_grad():
        s = student.eval()(x)["embeddings"] if isinstance(student(x), dict) else student(x)
    want = float(((s - t) ** 2).sum(1).mean())
    import json
    scores = [json.loads(line)["score"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"score"' in line]
    assert trainer.iteration == 1
    assert scores[0] == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("recipe, message", [
    ("distill: {targets: T, output: embedding}\nlosses: {embeddings: {loss: l2}}\n",
     "distill.output 'embedding' is not an output of 'student' (did you mean 'embeddings'?); outputs: embeddings"),
    ("distill: {targets: T, output: embeddings}\n",
     "distill.output 'embeddings' needs a loss toward the targets: add losses: {embeddings: {loss: l2}} (or mse, l1) "
     "to the recipe"),
    ("distill: {targets: T, output: embeddings}\nlosses: {embeddings: {loss: l2}}\ndata: {pairs: 10}\n",
     "distill trains on single images with a target each; drop data.pairs / data.triplets"),
])
def test_a_distill_recipe_that_cannot_work_is_refused_before_any_data_is_read(faces, tmp_path, recipe, message):
    from graphspec.faces.training import train
    _teacher(faces, tmp_path / "t.npy")
    (tmp_path / "student.yaml").write_text(STUDENT)
    (tmp_path / "recipe.yaml").write_text(recipe.replace("T", str(tmp_path / "t.npy")))
    with pytest.raises(GraphspecError) as e:
        train(str(tmp_path / "student.yaml"), data=str(faces), recipe_path=str(tmp_path / "recipe.yaml"),
              cache_dir=tmp_path / "cache")
    assert e.value.problem.message == message
    assert not (tmp_path / "cache").exists()


def test_targets_of_the_wrong_width_are_refused_naming_the_file(faces, tmp_path):
    from graphspec.faces.training import train
    _teacher(faces, tmp_path / "t.npy", width=5)
    (tmp_path / "student.yaml").write_text(STUDENT)
    (tmp_path / "recipe.yaml").write_text(f"distill: {{targets: {tmp_path / 't.npy'}, output: embeddings}}\n"
                                          "losses: {embeddings: {loss: l2}}\n")
    with pytest.raises(GraphspecError) as e:
        train(str(tmp_path / "student.yaml"), data=str(faces), recipe_path=str(tmp_path / "recipe.yaml"),
              cache_dir=tmp_path / "cache")
    assert e.value.problem.message == "distill.targets rows have 5 values; 'embeddings' gives [6]"
    assert str(e.value.problem.location) == str(tmp_path / "t.npy")


def test_a_targets_file_that_does_not_fit_its_listing_is_refused(tmp_path):
    from graphspec.data.targets import read_rows
    np.save(tmp_path / "t.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(DataError, match="file not found"):
        read_rows(tmp_path / "t.npy")
    (tmp_path / "t.paths.txt").write_text("a.jpg\nb.jpg\n")
    with pytest.raises(DataError) as e:
        read_rows(tmp_path / "t.npy")
    assert e.value.problem.message == "2 paths for 3 rows in t.npy"
    np.save(tmp_path / "t.npy", np.array([[np.nan] * 4, [0] * 4], dtype=np.float32))
    with pytest.raises(DataError, match="rows hold NaN or infinity"):
        read_rows(tmp_path / "t.npy")
    np.save(tmp_path / "t.npy", np.zeros((2, 4), dtype=np.int32))
    with pytest.raises(DataError, match=r"expected float rows \[N, D\]; received int32 \[2, 4\]"):
        read_rows(tmp_path / "t.npy")
