"""ONNX's own backend node tests through `graphspec import` (issue 19): for every operator graphspec claims, each of
the `onnx` package's node test cases (model, inputs, expected outputs) is imported and run through graphspec's
forward.

    .venv/bin/python benchmarks/onnx_backend.py          # the table recorded in BENCHMARKS.md

A case's weights come as graph inputs (Conv's W, Gemm's B and C, ...); as a file exported from a framework would
hold them, every input after the operator's data inputs becomes an initializer. A case is `passed` when the
imported network gives the expected outputs (rtol 1e-4, atol 1e-5), `refused` when the import refuses it with its
reason (an attribute or shape graphspec cannot express exactly), `failed` when the numbers differ or anything
else goes wrong — which must never happen.
"""
from __future__ import annotations

import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

# operators `graphspec import` translates, and how many leading inputs are data (the rest become constants)
CLAIMED = {"Conv": 1, "Gemm": 1, "MatMul": 1, "BatchNormalization": 1, "Relu": 1, "Sigmoid": 1, "Tanh": 1,
           "LeakyRelu": 1, "Elu": 1, "Selu": 1, "Softplus": 1, "Softsign": 1, "HardSigmoid": 1, "HardSwish": 1,
           "Mish": 1, "Gelu": 1, "Abs": 1, "Clip": 1, "Softmax": 1, "Identity": 1, "Dropout": 1, "MaxPool": 1,
           "AveragePool": 1, "GlobalAveragePool": 1, "GlobalMaxPool": 1, "Flatten": 1, "Reshape": 1, "Concat": 99,
           "Add": 99, "Sub": 99, "Mul": 99, "Div": 99, "Sum": 99, "Max": 99, "Min": 99, "Mean": 99, "LRN": 1,
           "Pad": 1, "Resize": 1, "Upsample": 1, "ConvTranspose": 1, "ReduceMean": 1, "ReduceMax": 1}


def cases():
    from onnx.backend.test.case.node import collect_testcases
    for case in collect_testcases():  # once, unfiltered (the filter only works on a process's first call)
        nodes = case.model.graph.node
        if "_expanded" in case.name or len(nodes) != 1 or nodes[0].op_type not in CLAIMED:
            continue
        yield case


def frozen(case):
    """The case's model with the inputs after the data inputs as initializers, and the data inputs' values."""
    import onnx
    from onnx import numpy_helper
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    data = CLAIMED[model.graph.node[0].op_type]
    values = case.data_sets[0][0]
    names = [i.name for i in model.graph.input]
    keep = names[:data]
    for name, value in zip(names[data:], values[data:]):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    del model.graph.input[data:]
    return model, dict(zip(keep, values[:data]))


def run_case(case, folder: Path) -> tuple[str, str]:
    """(passed | refused | failed, detail)."""
    import onnx
    import torch

    from graphspec.importers import ImportRefused, import_model
    model, feeds = frozen(case)
    path = folder / f"{case.name}.onnx"
    onnx.save(model, str(path))
    expected = case.data_sets[0][1]
    try:
        imported = import_model(path)
        net = imported.model()
        spec = net.graphspec.spec
        xs = [torch.from_numpy(np.asarray(feeds[imported.file_inputs.get(n, n)], dtype=np.float32))
              for n in spec.inputs]
        if any(np.asarray(v).dtype.kind not in "f" for v in feeds.values()):
            return "refused", "integer inputs (graphspec networks take float tensors)"
        with torch.no_grad():
            out = net(*xs)
    except ImportRefused as e:
        return "refused", str(e).split("\n", 1)[-1].strip()
    except Exception as e:  # noqa: BLE001 - a failure to report, whatever it is
        return "failed", f"{type(e).__name__}: {e}"
    outs = list(out.values()) if isinstance(out, dict) else [out]
    for got, want in zip(outs, expected):
        if got.shape != np.shape(want) or not np.allclose(got.numpy(), want, rtol=1e-4, atol=1e-5):
            return "failed", f"output differs (shape {list(got.shape)} vs {list(np.shape(want))})"
    return "passed", ""


def table() -> dict[str, Counter]:
    results: dict[str, Counter] = defaultdict(Counter)
    details: dict[str, list] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases():
            status, detail = run_case(case, Path(tmp))
            op = case.model.graph.node[0].op_type
            results[op][status] += 1
            details[op].append((case.name, status, detail))
    return results, details


def main() -> int:
    import warnings
    warnings.filterwarnings("ignore")
    results, details = table()
    print("| operator | cases | passed | refused (unsupported attributes/shapes) | failed |")
    print("|---|---:|---:|---:|---:|")
    for op in sorted(results):
        r = results[op]
        print(f"| {op} | {sum(r.values())} | {r['passed']} | {r['refused']} | {r['failed']} |")
    total = sum((results[op] for op in results), Counter())
    print(f"| all | {sum(total.values())} | {total['passed']} | {total['refused']} | {total['failed']} |")
    if "-v" in sys.argv:
        for op in sorted(details):
            for name, status, detail in details[op]:
                if status != "passed":
                    print(f"{status:8} {name}: {detail[:200]}")
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
