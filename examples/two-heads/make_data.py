"""Write two-heads.npz: 2,000 examples of two inputs, a class (3 values) and a 2-value target, from fixed formulas.

    .venv/bin/python examples/two-heads/make_data.py [OUT.npz]
"""
import sys
from pathlib import Path

import numpy as np

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("two-heads.npz")
out.parent.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
a = rng.normal(size=(2000, 5)).astype(np.float32)
b = rng.normal(size=(2000, 3)).astype(np.float32)
cls = (a[:, 0] + b[:, 0] > 0).astype(np.int64) + (a[:, 1] > 0.8)  # 0, 1 or 2
reg = np.stack([a[:, 2] * b[:, 1], a[:, 3] - 0.5 * b[:, 2]], axis=1).astype(np.float32)
np.savez(out, a=a, b=b, cls=cls, reg=reg)
print(f"wrote {out}: a {a.shape}, b {b.shape}, cls {cls.shape} (classes {np.bincount(cls).tolist()}), reg {reg.shape}")
