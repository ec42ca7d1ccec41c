"""Round trip through ONNX (issue 19): every spec in specs/ and specs/zoo/ and the shipped model, exported by
`graphspec export`, imported by `graphspec import`, compared with the original network on the same inputs, and
checked for its vertex names. Prints whether the import translated the operators or used the spec graphspec
recorded in the file (docs/import.md).

    .venv/bin/python benchmarks/import_roundtrip.py            # all of them (vit_b_16 writes a 330 MB file)
    .venv/bin/python benchmarks/import_roundtrip.py resnet18   # one
"""
from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import torch

import graphspec
from graphspec.export import example_inputs, export
from graphspec.importers import import_model

SOURCES = ["specs/nn4small2.yaml", "specs/siamese-nn4small2.yaml", "nn4small2-lfw", "resnet18", "resnet50",
           "mobilenet_v2", "unet", "vit_b_16"]


def first(out):
    return next(iter(out.values())) if isinstance(out, dict) else out


def round_trip(source: str, folder: Path) -> str:
    net = (graphspec.load(source) if source.endswith("-lfw") else graphspec.build(source, seed=0)).eval()
    path = folder / (source.replace("/", "_") + ".onnx")
    export(net, path, check=False)
    imported = import_model(path)
    xs = example_inputs(net, 2, 0)
    with torch.no_grad():
        diff = float((first(net(*xs)) - first(imported.model()(*xs))).abs().max())
    kept = set(net.graphspec.spec.vertices) & set(imported.document["vertices"])
    how = "recorded spec" if imported.notes else "translated"
    path.unlink()
    return (f"| {source} | {how} | {diff:.3g} | {len(kept)}/{len(net.graphspec.spec.vertices)} |")


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    print("| source | import | max abs difference | vertex names kept |")
    print("|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for source in argv or SOURCES:
            print(round_trip(source, Path(folder)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
