"""Preprocessing, pixel for pixel against direct Pillow calls; augmentation; the value a model file records."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from graphspec.data import Augmentation, DataError, Preprocessing
from graphspec.data.preprocessing import crop_box


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 250x250 RGB JPEG with structure in every channel (a gradient plus a pattern)."""
    y, x = np.mgrid[0:250, 0:250]
    rgb = np.stack([x, y, (x * y) % 256], axis=-1).astype(np.uint8)
    rgb[100:150, 60:190, 0] = 255
    path = tmp_path_factory.mktemp("img") / "Some_One_0001.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    return path


def pillow(path, box, size, resample=Image.Resampling.BILINEAR):
    """The reference: crop then resize with Pillow, as uint8 HWC RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").crop(box).resize(size[::-1], resample))


def test_dl4j_is_the_default_and_is_whole_image_bgr_raw_96():
    p = Preprocessing.dl4j()
    assert p == Preprocessing()
    assert (p.size, p.crop, p.channels, p.scale, p.interpolation) == ((96, 96), 1.0, "bgr", "raw", "bilinear")


def test_bgr_resize_equals_pillow_resize_with_channels_reversed(photo):
    out = Preprocessing.dl4j().load(photo)
    ref = pillow(photo, (0, 0, 250, 250), (96, 96))
    assert out.shape == (3, 96, 96) and out.dtype == np.uint8
    assert np.array_equal(out, ref[:, :, ::-1].transpose(2, 0, 1))
    assert not np.array_equal(out[0], out[2])  # the test would not see a channel swap otherwise


def test_rgb_center_crop_equals_pillow_crop_then_resize(photo):
    p = Preprocessing(size=(64, 80), crop=0.8, channels="rgb")
    box = crop_box((250, 250), 0.8)
    assert box == (25, 25, 225, 225)  # round(0.8 * 250) = 200 pixels, centred
    assert np.array_equal(p.load(photo), pillow(photo, box, (64, 80)).transpose(2, 0, 1))


@pytest.mark.parametrize("name,filt", [("nearest", Image.Resampling.NEAREST), ("bicubic", Image.Resampling.BICUBIC),
                                       ("lanczos", Image.Resampling.LANCZOS)])
def test_other_pillow_filters(photo, name, filt):
    p = Preprocessing(channels="rgb", interpolation=name)
    assert np.array_equal(p.load(photo), pillow(photo, (0, 0, 250, 250), (96, 96), filt).transpose(2, 0, 1))


def test_cv_linear_matches_torch_bilinear_without_antialiasing(photo):
    """OpenCV INTER_LINEAR geometry (half-pixel centres) = torch's align_corners=False, antialias=False."""
    out = Preprocessing(channels="rgb", interpolation="cv-linear").load(photo)
    with Image.open(photo) as im:
        src = torch.from_numpy(np.asarray(im.convert("RGB")).astype(np.float32)).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(src, size=(96, 96), mode="bilinear", align_corners=False)
    ref = ref[0].round().clamp(0, 255).numpy()
    assert np.abs(out.astype(np.float32) - ref).max() <= 1
    pil = Preprocessing(channels="rgb").load(photo)
    assert np.abs(out.astype(int) - pil).mean() > 0.5  # antialiased Pillow differs: the option is not a no-op


def test_scales(photo):
    raw = Preprocessing(channels="rgb").load(photo)
    u8 = np.stack([raw, raw])
    assert torch.equal(Preprocessing().to_tensor(u8), torch.from_numpy(u8.astype(np.float32)))
    unit = Preprocessing(scale="unit").to_tensor(u8)
    assert unit.dtype == torch.float32 and torch.equal(unit, torch.from_numpy(u8.astype(np.float32) / 255))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    z = Preprocessing(scale="standardize", mean=mean, std=std).to_tensor(u8)
    ref = (u8.astype(np.float64) / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert np.allclose(z.numpy(), ref, atol=1e-5)
    assert Preprocessing().to_tensor(torch.from_numpy(raw)).shape == (3, 96, 96)  # single image, torch input


def test_to_tensor_rejects_floats_and_wrong_shapes():
    with pytest.raises(DataError, match="uint8"):
        Preprocessing().to_tensor(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(DataError, match=r"\[N, 3, H, W\]"):
        Preprocessing().to_tensor(np.zeros((1, 4, 4, 4), np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_any_mode_becomes_three_channels_like_pillow_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
        expected = np.asarray(rgb.convert("L").convert("RGB"))  # v*257 >> 8 == v: back to the 8-bit grey
    else:
        image = rgb.convert(mode)
        expected = np.asarray(image.convert("RGB"))
    path = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.tif"
    image.save(path)
    out = Preprocessing(size=(40, 50), channels="rgb").load(path)
    assert out.shape == (3, 40, 50)
    assert np.array_equal(out, expected.transpose(2, 0, 1))
    if mode in ("L", "LA", "I;16"):
        assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])


def test_json_round_trip_and_validation():
    p = Preprocessing(size=(112, 96), crop=0.75, channels="rgb", scale="standardize", mean=(0.5, 0.5, 0.5),
                      std=(0.5, 0.5, 0.5), interpolation="cv-linear")
    assert Preprocessing.model_validate_json(p.model_dump_json()) == p
    with pytest.raises(ValidationError):
        p.crop = 0.5  # frozen
    with pytest.raises(ValidationError, match="needs both mean and std"):
        Preprocessing(scale="standardize")
    with pytest.raises(ValidationError, match="only used with scale"):
        Preprocessing(mean=(0, 0, 0))
    with pytest.raises(ValidationError):
        Preprocessing(crop=0.0)
    with pytest.raises(ValidationError):
        Preprocessing(interpolation="cubic")


def test_unreadable_image_is_a_located_error(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"junk" * 10)
    with pytest.raises(DataError) as e:
        Preprocessing().load(bad)
    assert e.value.problem.location.file == str(bad) and "unreadable image" in str(e.value)


def test_augmentation_padding_crop_and_flip():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8)
    aug = Augmentation(padding=2, pad_mode="zeros", flip=1.0, seed=3)
    out = aug(x, epoch=0, step=0)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output is some 6x6 window of the padded image, mirrored
        windows = [padded[i, :, t:t + 6, l:l + 6].flip(-1) for t in range(5) for l in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert torch.equal(aug(x, epoch=0, step=0), out)  # a function of (seed, epoch, step)
    assert any(not torch.equal(aug(x, epoch=e, step=0), out) for e in range(1, 6))
    assert torch.equal(Augmentation(flip=0.0)(x), x)  # no padding, no flip: identity


def test_augmentation_random_window_from_larger_images_and_center():
    x = np.arange(1 * 3 * 10 * 10, dtype=np.int64).reshape(1, 3, 10, 10).astype(np.uint8)
    aug = Augmentation(size=(8, 8), flip=0.0)
    out = aug(x, step=1)
    assert isinstance(out, np.ndarray) and out.shape == (1, 3, 8, 8)
    assert any(np.array_equal(out[0], x[0, :, t:t + 8, l:l + 8]) for t in range(3) for l in range(3))
    assert np.array_equal(aug.center(x), x[:, :, 1:9, 1:9])
    with pytest.raises(ValueError, match="^images are 10x10 but the crop needs 12x12$"):
        Augmentation(size=(12, 12))(x)
