"""The model zoo against independent implementations: torchvision's networks of the same name with their
weights copied by name (graphspec.zoo.torchvision.convert), at full size, in eval mode."""
from __future__ import annotations

import pytest
import torch

import graphspec
from graphspec import zoo
from graphspec.zoo.torchvision import convert

from references import torchvision as _torchvision

torchvision = _torchvision()

# name -> (torchvision's trainable parameters, as the issue and torchvision's docs state them, input size)
TORCHVISION = {
    "resnet18": (11_689_512, 224),
    "resnet50": (25_557_032, 224),
}


def _pair(name: str):
    """(graphspec net, torchvision net) with torchvision's random weights copied into graphspec's, both eval."""
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)().eval()
    with torch.no_grad():  # give batch norm non-trivial statistics, so the eps conversion matters
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    net = graphspec.build(name).eval()
    net.load_state_dict(convert(net.state_dict(), reference.state_dict()))
    return net, reference


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_zoo_net_equals_torchvision(name):
    params, size = TORCHVISION[name]
    net, reference = _pair(name)
    summary = graphspec.summarize(name)
    assert summary.trainable == params == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    mine, theirs = [], []
    h1 = net.avgpool.register_forward_hook(lambda m, i, o: mine.append(o))
    h2 = reference.avgpool.register_forward_hook(lambda m, i, o: theirs.append(o))
    with torch.no_grad():
        probabilities, logits = net(x), reference(x)
    h1.remove(), h2.remove()
    torch.testing.assert_close(mine[0], theirs[0].flatten(1), rtol=0, atol=1e-4)  # the features
    torch.testing.assert_close(probabilities, torch.softmax(logits, 1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_zoo_macs_equal_torch_flop_counter_layer_by_layer(name):
    """The summary's MACs of every convolution and dense layer equal torch's FLOP counter's (2 FLOPs per MAC) on
    the same net; the other rows (pooling, batch norm, additions) are what the summary adds by its documented
    rule (docs/spec.md, 'MACs') and torch does not count."""
    from torch.utils.flop_counter import FlopCounterMode
    _, size = TORCHVISION[name]
    net = graphspec.build(name).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, 3, size, size))
    counted = {k.split(".", 1)[1] if "." in k else k: sum(v.values()) // 2
               for k, v in counter.get_flop_counts().items() if k != "Global"}
    summary = graphspec.summarize(name)
    weighted = {r.name: r.macs for r in summary.rows if r.type in ("conv", "dense", "output")}
    assert weighted == {k: v for k, v in counted.items() if k in weighted}
    assert sum(weighted.values()) == sum(counter.get_flop_counts()["Global"].values()) // 2


def test_every_zoo_architecture_builds_by_name_and_is_listed():
    assert set(TORCHVISION) | {"nn4small2"} <= set(zoo.names())
    assert zoo.path("resnet18").name == "resnet18.yaml"
    assert zoo.path("specs/resnet18") is None and zoo.path("no_such_net") is None
