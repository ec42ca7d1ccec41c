"""Character windows of real text every machine has — the Python standard library's own source — for the
character-level language model (char-lm.yaml): inputs `chars` [N, 1, T] (byte values 0..127 as class indices),
targets `next` [N, T] (each step's next character).

    python examples/char-lm/make_data.py runs/char-lm.npz [--windows 20000] [--length 64]

The text: the stdlib's modules in sorted order (a fixed corpus for a given Python), non-ASCII bytes dropped;
windows start at random offsets (seeded); the last 5% of the text is held out for `--held-out`.
"""
from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

import numpy as np

MODULES = ["argparse", "collections/__init__", "dataclasses", "difflib", "enum", "functools", "inspect", "json/decoder",
           "json/encoder", "pathlib", "pprint", "re/_parser", "shutil", "string", "textwrap", "typing"]


def corpus() -> bytes:
    """ASCII source of the standard-library modules above, concatenated."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    text = b"".join((lib / f"{m}.py").read_bytes() for m in MODULES if (lib / f"{m}.py").is_file())
    return bytes(b for b in text if b < 128)


def windows(text: bytes, count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(text, dtype=np.uint8)
    starts = np.random.default_rng(seed).integers(0, len(data) - length - 1, count)
    idx = starts[:, None] + np.arange(length + 1)[None, :]
    chunk = data[idx]
    return chunk[:, None, :-1].astype(np.float32), chunk[:, 1:].astype(np.int64)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--windows", type=int, default=20000)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--held-out", action="store_true", help="windows of the held-out last 5%% instead")
    args = ap.parse_args(argv)
    text = corpus()
    cut = int(len(text) * 0.95)
    part = text[cut:] if args.held_out else text[:cut]
    chars, following = windows(part, args.windows, args.length, seed=2 if args.held_out else 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, chars=chars, next=following)
    print(f"wrote {args.out}: {len(chars):,} windows of {args.length} characters from {len(part):,} characters "
          f"of the standard library's source")


if __name__ == "__main__":
    main()
