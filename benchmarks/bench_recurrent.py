"""graphspec's recurrent layers against torch.nn's, side by side: forward and forward+backward of lstm (one and two
directions), gru and simple_rnn, interleaved round by round, with the same weights.

    .venv/bin/python benchmarks/bench_recurrent.py            # ~3 minutes on the project's 2-vCPU machine
    .venv/bin/python benchmarks/bench_recurrent.py --quick

graphspec's side is a built spec (a `recurrent` input, one layer) called on [N, size, T]; torch's is the nn
module (batch_first) called on [N, T, size] — each in its own layout, as a user would. Goal (issue 18): the LSTM
within 1.10x of torch.nn.LSTM.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import torch  # noqa: E402
from torch import nn  # noqa: E402

import graphspec  # noqa: E402
from bench_core import paired, summarize  # noqa: E402

N, SIZE, OUT, T = 64, 64, 128, 100
CASES = [("lstm", nn.LSTM, None), ("lstm", nn.LSTM, "concat"), ("gru", nn.GRU, None), ("simple_rnn", nn.RNN, None)]
NAMES = {"weight_ih": "weight_ih_l0", "weight_hh": "weight_hh_l0", "bias": "bias_ih_l0", "bias_ih": "bias_ih_l0",
         "bias_hh": "bias_hh_l0"}


def pair(type_name: str, torch_class, bidirectional):
    layer = {"type": type_name, "inputs": ["x"], "out": OUT, **({"bidirectional": bidirectional} if bidirectional
                                                                   else {})}
    net = graphspec.build({"version": 1, "name": "rnn", "seed": 0, "inputs": {"x": {"type": "recurrent",
                                                                               "size": SIZE, "length": T}},
                           "vertices": {"rnn": layer}, "outputs": ["rnn"]})
    reference = torch_class(SIZE, OUT, batch_first=True, bidirectional=bidirectional is not None)
    with torch.no_grad():
        for _, t in reference.named_parameters():
            t.zero_()  # torch's second bias is 0 where DL4J's layers have one
        for name, t in net.rnn.named_parameters():
            base, suffix = name.removesuffix("_reverse"), "_reverse" if name.endswith("_reverse") else ""
            reference.get_parameter(NAMES[base] + suffix).copy_(t)
    return net, reference


def runners(net, reference, x, train: bool):
    xt = x.transpose(1, 2).contiguous()  # torch's batch-first layout, made once outside the timing

    def ours():
        with torch.set_grad_enabled(train):
            y = net(x)
            if train:
                y.square().sum().backward()

    def theirs():
        with torch.set_grad_enabled(train):
            y = reference(xt)[0]
            if train:
                y.square().sum().backward()
    return ours, theirs


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = 3 if args.quick else 41
    x = torch.randn(N, SIZE, T, generator=torch.Generator().manual_seed(0), requires_grad=True)
    results = []
    for type_name, torch_class, bidirectional in CASES:
        net, reference = pair(type_name, torch_class, bidirectional)
        with torch.no_grad():
            torch.testing.assert_close(net(x).transpose(1, 2), reference(x.transpose(1, 2))[0], rtol=1e-4,
                                       atol=1e-5)
        label = type_name + (f" bidirectional {bidirectional}" if bidirectional else "")
        for train in (False, True):
            what = "forward+backward" if train else "forward"
            results.append(summarize(f"{label} {what}", *paired(*runners(net, reference, x, train), rounds,
                                                                 warmup=2)))
    print(f"N={N}, size={SIZE}, out={OUT}, T={T}; {rounds} interleaved rounds")
    print("| measurement | graphspec (median) | torch.nn (median) | ratio g/t: median of paired rounds | "
          "ratio of minima |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['g'] * 1e3:.1f} ms | {r['h'] * 1e3:.1f} ms | {r['ratio']:.3f} | "
              f"{r['ratio_of_minima']:.3f} |")
    return results


if __name__ == "__main__":
    main()
