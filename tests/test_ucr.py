"""benchmarks/ucr_data.py: real UCR/UEA problems (shipped inside the aeon wheel) as graphspec arrays, and the
LSTM-FCN spec that benchmarks/bench_ucr.py trains on them. Skipped where aeon, a benchmark/test-only dependency,
is not installed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import graphspec
from graphspec.data.named import NamedArrays

# ImportError too: an aeon whose numba refuses the installed numpy skips as well, saying so
aeon_datasets = pytest.importorskip("aeon.datasets", exc_type=ImportError)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"ucr_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ucr_data = _module("ucr_data")


@pytest.fixture(scope="module")
def gunpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ucr")
    return out, ucr_data.convert("GunPoint", out)


@pytest.fixture(scope="module")
def vowels(tmp_path_factory):
    out = tmp_path_factory.mktemp("ucr")
    return out, ucr_data.convert("JapaneseVowels", out)


def test_gunpoint_becomes_the_archive_split_unchanged(gunpoint):
    out, info = gunpoint
    raw = {s: aeon_datasets.load_gunpoint(split=s) for s in ("train", "test")}
    assert info["channels"] == 1 and info["length"] == 150 and info["normalise"] == "none"
    assert info["classes"] == sorted(set(raw["train"][1])) and len(info["classes"]) == 2
    assert json.loads((out / "GunPoint.json").read_text()) == info
    for split, count in (("train", 50), ("test", 150)):
        with np.load(out / f"GunPoint-{split}.npz") as f:
            arrays = {k: f[k] for k in f.files}
        assert sorted(arrays) == ["label", "series"]  # equal lengths: no mask by default
        assert arrays["series"].shape == (count, 1, 150) and arrays["series"].dtype == np.float32
        np.testing.assert_allclose(arrays["series"], raw[split][0], rtol=1e-6)  # UCR's own z-normalised values
        assert arrays["label"].dtype == np.int64 and set(arrays["label"]) == {0, 1}
        np.testing.assert_array_equal(np.array(info["classes"])[arrays["label"]], raw[split][1])
        assert info["splits"][split]["examples"] == count
        assert sum(info["splits"][split]["class_counts"]) == count


def test_mask_always_writes_a_mask_of_ones_for_equal_lengths(tmp_path):
    info = ucr_data.convert("GunPoint", tmp_path, mask="always")
    with np.load(tmp_path / "GunPoint-train.npz") as f:
        assert info["mask"] == "series_mask" and f["series_mask"].shape == (50, 150)
        assert (f["series_mask"] == 1).all()


def test_japanese_vowels_is_padded_at_the_end_with_masks_of_the_real_lengths(vowels):
    out, info = vowels
    assert info["channels"] == 12 and info["length"] == 29 and len(info["classes"]) == 9
    assert info["normalise"] == "channel" and info["mask"] == "series_mask"
    mean, std = np.array(info["channel_mean"]), np.array(info["channel_std"])
    for split, count in (("train", 270), ("test", 370)):
        raw_x, raw_y = aeon_datasets.load_japanese_vowels(split=split)
        lengths = np.array([x.shape[1] for x in raw_x])
        with np.load(out / f"JapaneseVowels-{split}.npz") as f:
            x, m, y = f["series"], f["series_mask"], f["label"]
        assert x.shape == (count, 12, 29) and m.shape == (count, 29) and y.shape == (count,)
        np.testing.assert_array_equal(m.sum(axis=1), lengths)
        np.testing.assert_array_equal(m, (np.arange(29)[None, :] < lengths[:, None]).astype(np.float32))  # ALIGN_START
        assert (x * (1 - m[:, None, :]) == 0).all()  # padding is exactly zero
        for i in (0, int(np.argmin(lengths)), int(np.argmax(lengths))):  # the real steps are the series, standardised
            np.testing.assert_allclose(x[i, :, :lengths[i]] * std[:, None] + mean[:, None], raw_x[i], atol=1e-4)
        assert y.min() >= 0 and y.max() <= 8
        np.testing.assert_array_equal(np.array(info["classes"])[y], raw_y)
        assert (lengths.min(), lengths.max()) == (info["splits"][split]["min_length"],
                                                  info["splits"][split]["max_length"])
    assert info["splits"]["train"]["class_counts"] == [30] * 9
    with np.load(out / "JapaneseVowels-train.npz") as f:  # training statistics: standardised real steps
        real = f["series"].transpose(1, 0, 2)[:, f["series_mask"] > 0]
    np.testing.assert_allclose(real.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=1), 1, atol=1e-4)


def test_the_lstm_fcn_spec_reads_the_converted_arrays(vowels, one_thread):
    out, info = vowels
    bench = _module("bench_ucr")
    net = graphspec.build(str(bench.adapt_spec(info, out / "spec.yaml"))).eval()
    shapes = {k: net.graphspec.analysis.pattern(k) for k in ("series", "label")}
    data = NamedArrays.from_npz(out / "JapaneseVowels-test.npz", {"series": shapes["series"]},
                                {"label": shapes["label"]})
    assert len(data) == 370 and "series_mask" in data.masks
    with np.load(out / "JapaneseVowels-test.npz") as f:
        x, m = torch.from_numpy(f["series"][:8]), torch.from_numpy(f["series_mask"][:8])
    with torch.no_grad():
        p = net(x, series_mask=m)
    assert p.shape == (8, 9)
    torch.testing.assert_close(p.sum(1), torch.ones(8))
