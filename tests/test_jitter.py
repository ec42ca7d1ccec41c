"""Training regularisers added for face verification: per-image jitter (rotation, zoom, brightness, contrast)
against hand-computed images, its place in the trainer's batches (seeded, split-invariant), its recipe validation,
and label smoothing against torch's own cross-entropy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphspec
from graphspec.data.augment import Jitter
from graphspec.data.preprocessing import Preprocessing
from graphspec.errors import SpecError
from graphspec.layers.losses import per_example
from graphspec.data import ArrayData
from graphspec.train.recipe import AugmentationRecipe, Recipe, load_recipe
from graphspec.train.trainer import Trainer
from specs_tiny import tiny_conv


def params(n=1, angle=0.0, zoom=1.0, brightness=1.0, contrast=1.0) -> np.ndarray:
    return np.tile([np.deg2rad(angle), zoom, brightness, contrast], (n, 1))


def test_identity_parameters_return_the_image_unchanged():
    x = np.random.RandomState(0).randint(0, 256, (3, 3, 10, 10), dtype=np.uint8)
    got = Jitter(rotate=10, zoom=(0.9, 1.1), brightness=0.2, contrast=0.2).apply(x, params(3))
    np.testing.assert_array_equal(got, x)


def test_rotation_by_90_degrees_is_a_quarter_turn():
    x = np.arange(2 * 3 * 6 * 6).reshape(2, 3, 6, 6).astype(np.uint8)
    got = Jitter(rotate=90).apply(x, params(2, angle=90))
    # output pixel (row r, col c) samples input (row c', col -r') about the centre: a positive angle turns the
    # picture anticlockwise as displayed, numpy's rot90 with k=1
    np.testing.assert_array_equal(got, np.rot90(x, k=1, axes=(2, 3)))
    np.testing.assert_array_equal(Jitter(rotate=90).apply(x, params(2, angle=-90)), np.rot90(x, k=-1, axes=(2, 3)))


def test_zoom_magnifies_about_the_centre():
    # value = 10 * column: bilinear resampling of a linear ramp is exact, so zoom 2 halves the slope about the
    # centre column c = 4: out[j] = 10 * (4 + (j - 4) / 2)
    x = np.broadcast_to((10 * np.arange(9)).astype(np.uint8), (1, 3, 9, 9)).copy()
    got = Jitter(zoom=(2.0, 2.0)).apply(x, params(zoom=2.0))
    want = 10 * (4 + (np.arange(9) - 4) / 2)
    np.testing.assert_array_equal(got[0, 0, 4, 1:8], want[1:8])  # away from the reflected border


def test_brightness_multiplies_and_contrast_scales_around_the_image_mean():
    flat = np.full((1, 3, 4, 4), 100, np.uint8)
    assert (Jitter(brightness=0.5).apply(flat, params(brightness=1.2)) == 120).all()
    two = np.full((1, 3, 4, 4), 50, np.uint8)
    two[..., 2:] = 150  # mean 100
    got = Jitter(contrast=0.5).apply(two, params(contrast=1.5))
    assert (got[..., :2] == 25).all() and (got[..., 2:] == 175).all()
    assert (Jitter(brightness=0.5).apply(flat * 2, params(brightness=1.5)) == 255).all()  # clipped, not wrapped


def test_draws_stay_in_range_and_depend_only_on_the_generator():
    j = Jitter(rotate=10, zoom=(0.9, 1.1), brightness=0.2, contrast=0.3)
    p = j.draw(10_000, torch.Generator().manual_seed(3))
    assert p.shape == (10_000, 4)
    assert np.abs(p[:, 0]).max() <= np.deg2rad(10) and np.abs(p[:, 0]).max() > np.deg2rad(9.9)
    assert 0.9 <= p[:, 1].min() and p[:, 1].max() <= 1.1
    assert np.abs(p[:, 2] - 1).max() <= 0.2 and np.abs(p[:, 3] - 1).max() <= 0.3
    np.testing.assert_array_equal(p, j.draw(10_000, torch.Generator().manual_seed(3)))
    # the same uniforms whatever is switched on: turning brightness off does not move the rotations
    q = Jitter(rotate=10, zoom=(0.9, 1.1), contrast=0.3).draw(10_000, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(q[:, [0, 1, 3]], p[:, [0, 1, 3]])
    assert not Jitter().active and Jitter(contrast=0.1).active


def _trainer(aug: AugmentationRecipe) -> Trainer:
    rs = np.random.RandomState(0)
    data = ArrayData(rs.randint(0, 256, (12, 3, 14, 14), dtype=np.uint8), np.arange(12) % 3, ["a", "b", "c"])
    r = Recipe(semantics="pytorch", batch_size=6, seed=5, augmentation=aug)
    return Trainer(graphspec.build(tiny_conv(0.05)), r, data, None,
                   preprocessing=Preprocessing(size=(12, 12), channels="bgr", scale="raw"), progress=False)


def test_trainer_batches_are_jittered_seeded_and_the_same_split_across_ranks():
    jittered = _trainer(AugmentationRecipe(flip=True, rotate=15, zoom=(0.8, 1.2), brightness=0.3, contrast=0.3))
    plain = _trainer(AugmentationRecipe(flip=True))
    whole, _ = jittered.batches.batch(0, 1)
    again, _ = jittered.batches.batch(0, 1)
    torch.testing.assert_close(whole, again, rtol=0, atol=0)
    assert not torch.equal(whole, plain.batches.batch(0, 1)[0])
    assert not torch.equal(whole, jittered.batches.batch(1, 1)[0])  # another epoch, other draws
    halves = [jittered.batches.batch(0, 1, part)[0] for part in (slice(0, 3), slice(3, 6))]
    torch.testing.assert_close(torch.cat(halves), whole, rtol=0, atol=0)
    # evaluation batches are never jittered: the centre crop exactly, in dataset order
    centre, _ = next(jittered.batches.evaluation())
    want = torch.from_numpy(jittered.train_data.images[:6, :, 1:13, 1:13].astype(np.float32))
    torch.testing.assert_close(centre.contiguous(), want, rtol=0, atol=0)


def test_recipe_refuses_a_zoom_range_the_wrong_way_round(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("augmentation:\n  zoom: [1.2, 0.9]\n")
    with pytest.raises(SpecError) as e:
        load_recipe(path)
    assert "zoom must be [low, high] with 0 < low <= high; received [1.2, 0.9]" in str(e.value)
    assert f"{path}:2" in str(e.value)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch_cross_entropy(eps):
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 2])
    want = F.cross_entropy(z, y, label_smoothing=eps, reduction="none")
    torch.testing.assert_close(per_example("mcxent", "softmax", z, y, eps), want)


def test_label_smoothing_reaches_the_training_loss_and_is_refused_for_regression_losses():
    from graphspec.train.session import replace_head
    model = graphspec.build(tiny_conv(0.05))  # its head trains with squared_loss
    with pytest.raises(SpecError) as e:
        replace_head(model, {"label_smoothing": 0.2}, None)
    assert str(e.value) == ("<graph surgery>:1:1: vertex 'head': 'label_smoothing' applies to the mcxent and "
                            "negativeloglikelihood losses only, not 'squared_loss'")
    model = replace_head(model, {"loss": "mcxent", "label_smoothing": 0.2}, None)
    head = model.head
    assert head.label_smoothing == 0.2 and "label_smoothing=0.2" in repr(head)
