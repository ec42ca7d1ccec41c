"""Time-series classification on real UCR/UEA problems (issue 18): LSTM-FCN written as a graphspec spec, trained
with `graphspec train` from arrays, its test accuracy printed next to the published figures.

    .venv/bin/python benchmarks/bench_ucr.py                    # GunPoint and JapaneseVowels, ~5 minutes, 1 thread
    .venv/bin/python benchmarks/bench_ucr.py JapaneseVowels --dtw --seed 2

For each problem: benchmarks/ucr_data.py converts the archive's train and test splits (shipped inside the `aeon`
wheel, a benchmark/test-only dependency) to `series` [N, C, T] zero-padded at the end, `series_mask` [N, T] where
the lengths differ, and `label` class indices; specs/examples/ucr-lstm-fcn.yaml gets the problem's channels,
length and classes; `graphspec train` trains it on the whole training split with
specs/examples/ucr-lstm-fcn-recipe.yaml (epochs and batch size per problem below, a time cap); the final model
classifies the test split (with the mask when the data has one; for a variable-length problem the accuracy
without the mask is printed too). `--dtw` also runs aeon's 1-NN DTW (full window) on the same splits, a check
that the data are the archive's (its GunPoint figure is the archive's published 0.907).

The published figures are the usual references for these two problems; PUBLISHED gives each one's source.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402
import yaml  # noqa: E402

import ucr_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs/examples/ucr-lstm-fcn.yaml"
RECIPE = ROOT / "specs/examples/ucr-lstm-fcn-recipe.yaml"

# epochs and batch size per problem: about the same number of updates (~2,000), in a few minutes on 2 cores
SETTINGS = {"GunPoint": {"epochs": 500, "batch_size": 16}, "JapaneseVowels": {"epochs": 200, "batch_size": 32}}

FAWAZ_UCR = "https://github.com/hfawaz/dl-4-tsc/blob/master/results/results-uea-avg-std.csv"
FAWAZ_MTS = "https://github.com/hfawaz/dl-4-tsc/blob/master/results/results-mts-avg-std.csv"
KARIM_UCR = "https://github.com/titu1994/LSTM-FCN/blob/master/Results/train_loss_old_datasets.csv"
KARIM_MTS = "https://github.com/titu1994/MLSTM-FCN (README, images/MLSTM-FCN-scores2.jpg)"
INCEPTION = "https://github.com/hfawaz/InceptionTime/blob/master/results-InceptionTime-128.csv"
# (method, test accuracy, source): each figure as its source prints it, on the archive's own train/test split
PUBLISHED = {
    "GunPoint": [
        ("1-NN DTW, full window", 0.907, f"UCR archive baseline, as tabulated by Karim et al. 2019 ({KARIM_UCR})"),
        ("1-NN DTW, window set by CV", 0.913, f"UCR archive baseline, as tabulated by Karim et al. 2019 ({KARIM_UCR})"),
        ("FCN, mean of 10 runs", 1.000, f"Fawaz et al. 2019, DMKD 33:917 ({FAWAZ_UCR})"),
        ("ResNet, mean of 10 runs", 0.991, f"Fawaz et al. 2019, DMKD 33:917 ({FAWAZ_UCR})"),
        ("InceptionTime", 1.000, f"Fawaz et al. 2020, DMKD 34:1936 ({INCEPTION})"),
        ("LSTM-FCN", 1.000, f"Karim et al. 2018/2019, IEEE Access ({KARIM_UCR})"),
    ],
    "JapaneseVowels": [
        ("FCN, mean of 10 runs", 0.993, f"Fawaz et al. 2019, Baydogan's MTS archive, same 270/370 split ({FAWAZ_MTS})"),
        ("ResNet, mean of 10 runs", 0.992, f"Fawaz et al. 2019, Baydogan's MTS archive ({FAWAZ_MTS})"),
        ("LSTM-FCN", 0.99, f"Karim et al. 2019, Neural Networks 116:237, arXiv 1801.04503 ({KARIM_MTS})"),
        ("MLSTM-FCN", 1.00, f"Karim et al. 2019, Neural Networks 116:237, arXiv 1801.04503 ({KARIM_MTS})"),
    ],
}


def adapt_spec(info: dict, path: Path) -> Path:
    """specs/examples/ucr-lstm-fcn.yaml with the problem's channels, padded length and number of classes."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["inputs"][info["input"]].update(size=info["channels"], length=info["length"])
    spec["vertices"][info["output"]]["out"] = len(info["classes"])
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def train(spec: Path, data: Path, run: Path, epochs: int, batch_size: int, seed: int, max_minutes: float,
          threads: int) -> float:
    """`graphspec train` in a fresh run directory; returns the wall time in seconds."""
    if run.exists():
        shutil.rmtree(run)  # the benchmark's own run folder: always a new run
    command = [str(Path(sys.executable).parent / "graphspec"), "train", str(spec), "--data", str(data),
               "--recipe", str(RECIPE), "--out", str(run), "--epochs", str(epochs), "--batch-size", str(batch_size),
               "--seed", str(seed), "--max-minutes", str(max_minutes), "--print-every", "200"]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return time.perf_counter() - start


def accuracy(model_path: Path, data: Path, info: dict) -> dict[str, float]:
    """Test accuracy of the trained model: with the feature mask when the data has one, and without it."""
    import torch

    import graphspec
    net = graphspec.load(str(model_path)).eval()
    mask_name = info["input"] + ucr_data.MASK
    with np.load(data, allow_pickle=False) as f:
        x, y = torch.from_numpy(f[info["input"]]), f[info["output"]]
        mask = torch.from_numpy(f[mask_name]) if mask_name in f.files else None
    results = {}
    with torch.no_grad():
        results["plain"] = float((net(x).argmax(1).numpy() == y).mean())
        if mask is not None:
            if mask_name not in inspect.signature(net.forward).parameters:
                raise SystemExit(f"the built network takes no '{mask_name}' argument")
            results["masked"] = float((net(x, **{mask_name: mask}).argmax(1).numpy() == y).mean())
    return results


def dtw_baseline(name: str) -> float:
    """aeon's 1-NN DTW (full warping window) on the archive's splits, as the archive's baseline is computed."""
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    (xtr, ytr), (xte, yte) = (ucr_data.load_split(name, s) for s in ("train", "test"))
    clf = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw").fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=list(SETTINGS), help="archive problems (default: %(default)s)")
    ap.add_argument("--work", default=str(ROOT / "runs/ucr-bench"), help="data and run folders go here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, help="override the per-problem epochs")
    ap.add_argument("--max-minutes", type=float, default=4.0, help="time cap of each training run")
    ap.add_argument("--dtw", action="store_true", help="also run aeon's 1-NN DTW on the same splits")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the training run (default 1: these small batches gain little from a "
                         "second thread, and lose 3-5x when another process shares the two cores)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    rows = []
    for name in args.names:
        settings = SETTINGS.get(name, {"epochs": 200, "batch_size": 32})
        info = ucr_data.convert(name, work / "data")
        data = {s: work / "data" / info["splits"][s]["file"] for s in ("train", "test")}
        run = work / name
        spec = adapt_spec(info, work / "data" / f"{name}-lstm-fcn.yaml")
        seconds = train(spec, data["train"], run, args.epochs or settings["epochs"], settings["batch_size"],
                        args.seed, args.max_minutes, args.threads)
        result = {"name": name, "seconds": round(seconds, 1), **accuracy(run / "model.safetensors", data["test"], info)}
        if args.dtw:
            result["dtw"] = dtw_baseline(name)
        (run / "ucr-result.json").write_text(json.dumps(result, indent=1) + "\n")
        rows.append((name, info, result))
    for name, info, result in rows:
        splits = info["splits"].values()
        lengths = {s["min_length"] for s in splits} | {s["max_length"] for s in splits}
        print(f"\n{name}: {info['channels']} channel(s), length {min(lengths)}..{max(lengths)} (padded to "
              f"{info['length']}), {len(info['classes'])} classes, {info['splits']['train']['examples']} train / "
              f"{info['splits']['test']['examples']} test, normalisation {info['normalise']}")
        measured = result.get("masked", result["plain"])
        label = f"graphspec LSTM-FCN (this run, seed {args.seed}, {result['seconds']:.0f} s)"
        print(f"  {label:<48} {measured:.3f}"
              + (f"   (without the mask at test time: {result['plain']:.3f})" if "masked" in result else ""))
        if "dtw" in result:
            print(f"  {'1-NN DTW, full window (aeon, measured here)':<48} {result['dtw']:.3f}")
        for method, acc, source in PUBLISHED.get(name, []):
            print(f"  {method:<48} {acc:.3f}   {source}")


if __name__ == "__main__":
    main()
