"""The zoo against its references, side by side: inference forward and training step of every zoo network and
the torchvision model of the same name (the U-Net: a hand-written torch.nn U-Net), interleaved round by round.

    .venv/bin/python benchmarks/bench_zoo.py            # ~12 minutes on the project's 2-vCPU machine
    .venv/bin/python benchmarks/bench_zoo.py --quick    # smoke run

graphspec's training step is its own (graphspec.train.steps.TorchStep: the spec's loss heads, SGD); the
reference's is F.cross_entropy on its logits and the same SGD. Both start from the same weights (converted by
name, graphspec.zoo.torchvision.convert). Goal (issue 17): graphspec within 1.05x of the reference for every net.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import graphspec  # noqa: E402
from bench_core import paired, summarize  # noqa: E402
from graphspec.train.steps import TorchStep  # noqa: E402
from graphspec.zoo.torchvision import convert  # noqa: E402
from references import HandWrittenUNet, torchvision  # noqa: E402

# name -> (batch, input size); sizes as the networks are used (the U-Net smaller than its 512x512 default)
NETS = {"resnet18": (8, 224), "resnet50": (4, 224), "mobilenet_v2": (8, 224), "vit_b_16": (2, 224),
        "unet": (1, 256)}


def pair(name: str, size: int):
    """(graphspec net, reference) with the same weights."""
    import yaml
    d = yaml.safe_load(graphspec.zoo.path(name).read_text())
    d["inputs"]["image"].update(height=size, width=size)
    net = graphspec.build(d)
    reference = HandWrittenUNet() if name == "unet" else getattr(torchvision().models, name)()
    net.load_state_dict(convert(net.state_dict(), reference.state_dict()))
    return net, reference


def data(name: str, batch: int, size: int, net):
    spec = net.graphspec.spec
    channels = spec.input_shape("image")[0]
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    classes = net.graphspec.analysis.shapes[spec.outputs[0]][0]
    per_pixel = name == "unet"
    y = torch.randint(0, classes, (batch, size, size) if per_pixel else (batch,),
                      generator=torch.Generator().manual_seed(1))
    return x, y


def forward(m, x):
    def f():
        with torch.no_grad():
            m(x)
    return f


def reference_step(m, x, y, per_pixel: bool):
    optimizer = torch.optim.SGD(m.parameters(), lr=1e-3)

    def f():
        optimizer.zero_grad(set_to_none=True)
        out = m(x)
        loss = (F.nll_loss(torch.log(out), y, reduction="none").sum((1, 2)).mean() if per_pixel  # softmax output
                else F.cross_entropy(out, y))
        loss.backward()
        optimizer.step()
    return f


def graphspec_step(net, x, y):
    step = TorchStep(net, torch.optim.SGD(net.parameters(), lr=1e-3))
    return lambda: step(x, y)


def bench(name: str, rounds: int) -> list[dict]:
    batch, size = NETS[name]
    net, reference = pair(name, size)
    x, y = data(name, batch, size, net)
    net.eval(), reference.eval()
    results = [summarize(f"{name} forward (batch {batch}, {size}x{size})",
                         *paired(forward(net, x), forward(reference, x), rounds, warmup=1))]
    net.train(), reference.train()
    results.append(summarize(f"{name} train step (batch {batch})",
                             *paired(graphspec_step(net, x, y), reference_step(reference, x, y, name == "unet"),
                                     rounds, warmup=1)))
    return results


def table(results) -> str:
    lines = ["| measurement | graphspec (median) | reference (median) | ratio g/r: median of paired rounds | "
             "ratio of minima | rounds |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['g'] * 1e3:.0f} ms | {r['h'] * 1e3:.0f} ms | {r['ratio']:.3f} | "
                     f"{r['ratio_of_minima']:.3f} | {r['n']} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nets", nargs="*", default=list(NETS))
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 15)  # fewer rounds leave ±10% noise on this 2-core machine
    results = []
    for name in args.nets:
        results += bench(name, rounds)
        print(table(results[-2:]).split("\n", 2)[2] if results[:-2] else table(results), flush=True)
    return results


if __name__ == "__main__":
    main()
