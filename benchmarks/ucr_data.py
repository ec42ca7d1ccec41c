"""UCR/UEA time-series classification data sets as graphspec arrays (.npz named after a spec's inputs and outputs).

    .venv/bin/python benchmarks/ucr_data.py GunPoint runs/ucr            # runs/ucr/GunPoint-{train,test}.npz + .json
    .venv/bin/python benchmarks/ucr_data.py JapaneseVowels runs/ucr

The series come from the `aeon` toolkit (a benchmark/test-only dependency: `pip install aeon`), whose wheel ships
a few archive problems offline — GunPoint (UCR, univariate, length 150, 2 classes, 50 train / 150 test) and
JapaneseVowels (UEA, 12 channels, variable length 7..29, 9 classes, 270 / 370) among them; other names are read
from `--extract-path` or downloaded by aeon.

Each split becomes one .npz:

* `series` float32 [N, channels, T]: every series zero-padded at the END to T, the longest series of both splits
  (DL4J's ALIGN_START), so that train and test have the same T;
* `series_mask` float32 [N, T]: 1 for a real step, 0 for padding (graphspec's feature mask `<input>_mask`), by
  default only for a problem whose series differ in length (`--mask always` writes it for any): a mask, even of
  ones, makes the recurrent layers run their step loop instead of the fused kernel;
* `label` int64 [N]: class indices into the training split's class names, sorted (numerically when they
  are numbers).

A JSON file beside them records the class names, each split's lengths and the normalisation. Normalisation, as
the literature does it: UCR's univariate series are already z-normalised per series by the archive and are used as
they are (`none`); a multivariate problem (or `--normalise channel`) is standardised per channel with the mean and
standard deviation of the real (unpadded) steps of the TRAINING split, applied to both splits (`channel`), the
usual choice for JapaneseVowels' LPC cepstra, whose channels differ in scale. Padding stays exactly 0.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

INPUT, OUTPUT = "series", "label"  # the names the spec specs/examples/ucr-lstm-fcn.yaml uses
MASK = "_mask"


def load_split(name: str, split: str, extract_path: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """One split of an archive problem via aeon: a list of [channels, length] float arrays and the labels."""
    from aeon.datasets import load_classification  # benchmark/test-only dependency

    X, y = load_classification(name, split=split, extract_path=extract_path)
    series = [np.asarray(x, dtype=np.float64) for x in X]  # a 3-D array (equal length) or a list (unequal)
    return series, np.asarray(y).astype(str)


def pad(series: list[np.ndarray], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded at the end to ``steps`` (DL4J's ALIGN_START): values [N, C, steps] and the mask [N, steps]."""
    channels = {s.shape[0] for s in series}
    if len(channels) != 1:
        raise ValueError(f"series with different numbers of channels: {sorted(channels)}")
    values = np.zeros((len(series), channels.pop(), steps), dtype=np.float32)
    mask = np.zeros((len(series), steps), dtype=np.float32)
    for i, s in enumerate(series):
        if np.isnan(s).any():
            raise ValueError(f"series {i} has missing values (NaN); this converter pads, it does not impute")
        values[i, :, :s.shape[1]] = s
        mask[i, :s.shape[1]] = 1.0
    return values, mask


def class_order(labels) -> list[str]:
    """The training split's class names, sorted numerically when they are all numbers ("2" before "10")."""
    names = sorted(set(labels))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def channel_statistics(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over the real steps only (padding excluded)."""
    weights = mask[:, None, :]
    count = weights.sum(axis=(0, 2))
    mean = (values * weights).sum(axis=(0, 2)) / count
    var = (((values - mean[None, :, None]) ** 2) * weights).sum(axis=(0, 2)) / count
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


def convert(name: str, out_dir: str | Path, normalise: str = "auto", extract_path: str | None = None,
            input_name: str = INPUT, output_name: str = OUTPUT, mask: str = "auto") -> dict:
    """Write ``<out_dir>/<name>-train.npz``, ``-test.npz`` and ``<name>.json``; returns the JSON's content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = {split: load_split(name, split, extract_path) for split in ("train", "test")}
    classes = class_order(raw["train"][1])
    unknown = sorted(set(raw["test"][1]) - set(classes))
    if unknown:
        raise ValueError(f"{name}: test labels {unknown} do not occur in the training split")
    steps = max(s.shape[1] for series, _ in raw.values() for s in series)
    padded = {split: pad(series, steps) for split, (series, _) in raw.items()}
    channels = padded["train"][0].shape[1]
    if normalise == "auto":
        normalise = "channel" if channels > 1 else "none"
    info: dict = {"name": name, "classes": classes, "channels": channels, "length": steps,
                  "input": input_name, "output": output_name, "normalise": normalise, "splits": {}}
    if normalise == "channel":
        mean, std = channel_statistics(*padded["train"])
        info["channel_mean"], info["channel_std"] = mean.tolist(), std.tolist()
    elif normalise != "none":
        raise ValueError(f"normalise must be auto, none or channel; received {normalise!r}")
    if mask not in ("auto", "always", "never"):
        raise ValueError(f"mask must be auto, always or never; received {mask!r}")
    variable = any(m.min() == 0 for _, m in padded.values())
    write_mask = mask == "always" or (mask == "auto" and variable)
    info["mask"] = input_name + MASK if write_mask else None
    index = {c: i for i, c in enumerate(classes)}
    for split, (values, real) in padded.items():
        if normalise == "channel":
            values = ((values - mean[None, :, None]) / std[None, :, None] * real[:, None, :]).astype(np.float32)
        labels = np.array([index[c] for c in raw[split][1]], dtype=np.int64)
        lengths = real.sum(axis=1).astype(int)
        arrays = {input_name: values, output_name: labels, **({input_name + MASK: real} if write_mask else {})}
        np.savez(out / f"{name}-{split}.npz", **arrays)
        info["splits"][split] = {"file": f"{name}-{split}.npz", "examples": len(labels),
                                 "min_length": int(lengths.min()), "max_length": int(lengths.max()),
                                 "class_counts": np.bincount(labels, minlength=len(classes)).tolist()}
    (out / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="an archive problem: GunPoint, JapaneseVowels, ... (aeon's names)")
    ap.add_argument("out", help="folder for <name>-train.npz, <name>-test.npz and <name>.json")
    ap.add_argument("--normalise", choices=["auto", "none", "channel"], default="auto",
                    help="auto: per-channel standardisation (training statistics) for multivariate problems, "
                         "none for univariate UCR series (already z-normalised)")
    ap.add_argument("--mask", choices=["auto", "always", "never"], default="auto",
                    help="write series_mask: auto = only when the series differ in length")
    ap.add_argument("--extract-path", help="where aeon looks for (or downloads) problems it does not ship")
    ap.add_argument("--input-name", default=INPUT)
    ap.add_argument("--output-name", default=OUTPUT)
    args = ap.parse_args(argv)
    info = convert(args.name, args.out, args.normalise, args.extract_path, args.input_name, args.output_name,
                   args.mask)
    for split, s in info["splits"].items():
        print(f"{args.out}/{s['file']}: {s['examples']} series, {info['channels']} channel(s), lengths "
              f"{s['min_length']}..{s['max_length']} padded to {info['length']}, {len(info['classes'])} classes"
              + (f", mask {info['mask']}" if info["mask"] else ", no mask"))


if __name__ == "__main__":
    main()
