"""The one data pipeline (graphspec.data.Batches): training, evaluation and make_loader draw the same batches from
(seed, epoch, step), whatever the split over ranks or loader workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import graphspec
from graphspec.data import ArrayData, Augmentation, Batches, Jitter, Preprocessing, make_loader
from graphspec.train.recipe import AugmentationRecipe, DataRecipe, Recipe
from graphspec.train.trainer import Trainer, TrainingError
from specs_tiny import tiny_conv

RAW = Preprocessing(size=(14, 14), channels="bgr", scale="raw")  # uint8 values as floats: easy to compare


def _data(n=10, size=14) -> ArrayData:
    images = np.random.default_rng(1).integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    return ArrayData(images, np.arange(n) % 3, ["a", "b", "c"])


def test_the_trainer_consumes_exactly_what_make_loader_gives():
    aug = AugmentationRecipe(flip=True, rotate=10, brightness=0.2)
    recipe = Recipe(semantics="pytorch", batch_size=4, seed=9, augmentation=aug, data=DataRecipe(shuffle=True))
    data = _data()
    trainer = Trainer(graphspec.build(tiny_conv(0.05)), recipe, data, preprocessing=RAW, progress=False)
    loader = make_loader(data, 4, shuffle=True, seed=9, preprocessing=RAW, workers=0,
                         augmentation=aug.pipeline((12, 12), seed=9))  # tiny_conv's input is 12x12
    for epoch in range(2):
        for step, (x, y) in enumerate(loader):
            want_x, want_y = trainer.batches.batch(epoch, step)
            assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert len(loader) == trainer.batches_per_epoch == 3


def test_each_epoch_is_a_permutation_and_the_parts_of_a_batch_make_the_whole():
    batches = Batches(_data(), 4, shuffle=True, seed=3, preprocessing=RAW,
                      augmentation=Augmentation(size=(12, 12), flip=0.5, seed=3, jitter=Jitter(contrast=0.3)))
    orders = [batches.order(e) for e in range(3)]
    assert all(sorted(o) == list(range(10)) for o in orders) and not np.array_equal(orders[0], orders[1])
    assert np.array_equal(batches.order(1), orders[1])  # a function of (seed, epoch)
    whole, labels = batches.batch(1, 2)
    assert whole.shape == (2, 3, 12, 12)  # the last batch of 10 in fours
    assert torch.equal(labels, torch.from_numpy(np.arange(10)[orders[1][8:]] % 3))
    halves = [batches.batch(1, 2, part)[0] for part in (slice(0, 1), slice(1, 2))]
    assert torch.equal(torch.cat(halves), whole)


def test_evaluation_is_every_example_in_order_through_the_centre_window():
    data = _data(5)
    batches = Batches(data, 2, shuffle=True, preprocessing=RAW, augmentation=Augmentation(size=(12, 12), flip=1.0))
    xs, ys = zip(*batches.evaluation())
    assert [len(y) for y in ys] == [2, 2, 1]
    want = torch.from_numpy(data.images[:, :, 1:13, 1:13].astype(np.float32))
    assert torch.equal(torch.cat(xs), want) and torch.equal(torch.cat(ys), torch.tensor([0, 1, 2, 0, 1]))


def test_a_crop_larger_than_the_images_is_refused_before_any_work():
    with pytest.raises(ValueError, match="^images are 10x10 but the crop needs 12x12$"):
        Batches(_data(size=10), 4, preprocessing=RAW, augmentation=Augmentation(size=(12, 12)))
    with pytest.raises(TrainingError, match=r"^images are 10x10 but the crop needs 12x12 \(the network's input\)$"):
        Trainer(graphspec.build(tiny_conv(0.05)), Recipe(), _data(size=10), preprocessing=RAW, progress=False)


def test_per_class_batches_hold_k_examples_of_each_class():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 4])  # class 2 has one example: left out
    data = ArrayData(np.zeros((12, 3, 2, 2), np.uint8), labels, list("abcde"))
    batches = Batches(data, 4, per_class=2, seed=5, preprocessing=RAW)
    assert len(batches) == 2  # 4 classes x 2 examples, in batches of 4
    for epoch in range(3):
        order = batches.order(epoch)
        assert len(order) == 8 and 5 not in order
        pairs = labels[order].reshape(4, 2)
        assert (pairs[:, 0] == pairs[:, 1]).all() and sorted(pairs[:, 0]) == [0, 1, 3, 4]
        for step in range(2):
            _, y = batches.batch(epoch, step)
            assert len(set(y.tolist())) == 2  # two classes of two
    assert not np.array_equal(batches.order(0), batches.order(1))
    with pytest.raises(ValueError, match="^per_class must be at least 2 and divide the batch size 4; received 3$"):
        Batches(data, 4, per_class=3, preprocessing=RAW)
    with pytest.raises(TrainingError, match="^the training data: per_class batches need at least 2 classes"):
        Trainer(graphspec.build(tiny_conv(0.05)), Recipe(batch_size=2, data=DataRecipe(per_class=2)),
                ArrayData(np.zeros((3, 3, 12, 12), np.uint8), np.array([0, 0, 1]), ["a", "b"]), preprocessing=RAW,
                progress=False)
