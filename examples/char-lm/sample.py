"""Bits per character of a trained char-lm on held-out windows, and a sample of generated text.

    python examples/char-lm/sample.py runs/char-lm/model.safetensors --data runs/char-lm-heldout.npz

Bits per character: the mean over every step of every held-out window of −log2 p(next character). The sample
continues a prompt one character at a time, as DL4J's rnnTimeStep does: the LSTMs carry their state from one
character to the next (graphspec.state.carried_state), so each step reads one character and the whole text so far
conditions it (sampling with a temperature, seeded).
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import graphspec
from graphspec.state import carried_state


def bits_per_character(net, chars: np.ndarray, following: np.ndarray, batch: int = 256) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(chars), batch):
            p = net(torch.from_numpy(chars[i:i + batch]))  # [N, 128, T] probabilities
            target = torch.from_numpy(following[i:i + batch])
            picked = p.gather(1, target.unsqueeze(1)).squeeze(1).clamp_min(1e-12)
            total += float(-torch.log2(picked).sum())
            count += target.numel()
    return total / count


def sample(net, prompt: str, length: int, temperature: float, seed: int) -> str:
    text = [ord(c) for c in prompt if ord(c) < 128] or [ord("\n")]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad(), carried_state(net):
        read = text  # the prompt once, then one character per step
        for _ in range(length):
            p = net(torch.tensor(read, dtype=torch.float32).view(1, 1, -1))[0, :, -1]
            logits = torch.log(p.clamp_min(1e-12)) / temperature
            read = [int(torch.multinomial(torch.softmax(logits, 0), 1, generator=g))]
            text.append(read[0])
    return "".join(map(chr, text))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="held-out windows from make_data.py --held-out")
    ap.add_argument("--prompt", default="def ")
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    net = graphspec.load(args.model).eval()
    with np.load(args.data, allow_pickle=False) as data:
        bpc = bits_per_character(net, data["chars"], data["next"])
    print(f"held-out bits per character: {bpc:.3f} (uniform over 128: {math.log2(128):.0f})")
    print("sample:")
    print(sample(net, args.prompt, args.length, args.temperature, args.seed))


if __name__ == "__main__":
    main()
