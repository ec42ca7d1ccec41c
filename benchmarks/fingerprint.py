"""A fingerprint of the compiled NN4.Small2: generated code, every submodule's repr (in-place flags included) and
every tensor's shape and sum. Equal fingerprints at two commits mean the module that bench_core times is the same,
so a moved ratio between them is the machine's noise, not the change.

    .venv/bin/python benchmarks/fingerprint.py            # this checkout
    PYTHONPATH=OTHER_CHECKOUT .venv/bin/python benchmarks/fingerprint.py
"""
import hashlib
from pathlib import Path

import graphspec

SPEC = Path(__file__).resolve().parents[1] / "specs" / "nn4small2.yaml"


def fingerprint(net) -> str:
    parts = [net.code] + [f"{n}:{type(m).__name__}:{m.extra_repr()}" for n, m in net.named_modules()]
    parts += [f"{k}:{tuple(v.shape)}:{float(v.double().sum()):.6e}" for k, v in net.state_dict().items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


if __name__ == "__main__":
    net = graphspec.build(SPEC)
    in_place = sum(1 for _, m in net.named_modules() if getattr(m, "inplace", False))
    print(f"{fingerprint(net)}  ({in_place} activations in place)")
