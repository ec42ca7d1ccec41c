"""examples/char-lm: the data windows and the bits-per-character measure it reports."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import graphspec

HERE = Path(__file__).resolve().parents[1] / "examples" / "char-lm"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"char_lm_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_windows_pair_every_character_with_the_next():
    data = _module("make_data")
    text = bytes(range(32, 127)) * 3
    chars, following = data.windows(text, 5, 8, seed=0)
    assert chars.shape == (5, 1, 8) and following.shape == (5, 8)
    np.testing.assert_array_equal(chars[:, 0, 1:], following[:, :-1])  # the next character is the next input
    assert all(c < 128 for c in data.corpus()[:10_000])


def test_bits_per_character_is_the_mean_negative_log2_probability_of_the_next_character():
    sample = _module("sample")
    d = yaml.safe_load((HERE / "char-lm.yaml").read_text())
    d["inputs"]["chars"]["length"] = 6
    for name in ("lstm1", "lstm2"):
        d["vertices"][name]["out"] = 8
    net = graphspec.build(d).eval()
    g = np.random.default_rng(0)
    chars = g.integers(0, 128, (4, 1, 6)).astype(np.float32)
    following = g.integers(0, 128, (4, 6))
    with torch.no_grad():
        p = net(torch.from_numpy(chars))
    expected = -np.mean([math.log2(float(p[i, following[i, t], t])) for i in range(4) for t in range(6)])
    assert sample.bits_per_character(net, chars, following, batch=3) == pytest.approx(expected, rel=1e-5)
    text = sample.sample(net, "def ", 5, temperature=0.7, seed=0)
    assert text.startswith("def ") and len(text) == 9
    # the carried state gives what re-reading the whole text at every step gives
    g, again = torch.Generator().manual_seed(0), [ord(c) for c in "def "]
    with torch.no_grad():
        for _ in range(5):
            p = net(torch.tensor(again, dtype=torch.float32).view(1, 1, -1))[0, :, -1]
            again.append(int(torch.multinomial(torch.softmax(torch.log(p.clamp_min(1e-12)) / 0.7, 0), 1, generator=g)))
    assert text == "".join(map(chr, again))
