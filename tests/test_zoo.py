"""The model zoo against independent implementations: torchvision's networks of the same name with their
weights copied by name (graphspec.zoo.torchvision.convert), at full size, in eval mode."""
from __future__ import annotations

import pytest
import torch

import graphspec
from graphspec import zoo
from graphspec.zoo.torchvision import convert

from references import HandWrittenUNet, torchvision as _torchvision

torchvision = _torchvision()

# name -> (torchvision's trainable parameters, as torchvision's docs state them, input size)
TORCHVISION = {
    "resnet18": (11_689_512, 224),
    "resnet50": (25_557_032, 224),
    "mobilenet_v2": (3_504_872, 224),
    "vit_b_16": (86_567_656, 224),
}
# name -> (graphspec vertex, torchvision module) whose outputs are the last features before the classifier
FEATURES = {
    "resnet18": ("layer4-1-relu2", "layer4"),
    "resnet50": ("layer4-2-relu3", "layer4"),
    "mobilenet_v2": ("features-18-2", "features"),
    "vit_b_16": ("encoder-ln", "encoder"),  # graphspec's tokens [768, 197], torchvision's [197, 768]
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
    vertex, module = FEATURES[name]
    net.get_submodule(vertex).register_forward_hook(lambda m, i, o: mine.append(o.clone()))
    reference.get_submodule(module).register_forward_hook(lambda m, i, o: theirs.append(o.clone()))
    with torch.no_grad():
        probabilities, logits = net(x), reference(x)
    features = mine[0] if mine[0].shape == theirs[0].shape else mine[0].transpose(1, 2)
    torch.testing.assert_close(features, theirs[0], rtol=0, atol=1e-4)  # the features
    torch.testing.assert_close(probabilities, torch.softmax(logits, 1), rtol=0, atol=1e-4)


WEIGHTED = ("conv", "depthwise_conv", "dense", "output", "self_attention")


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
    weighted = {r.name: r.macs for r in summary.rows if r.type in WEIGHTED}
    attention = {r.name: _attention_macs(r.out_shape[1], net.get_submodule(r.name)) for r in summary.rows
                 if r.type == "self_attention"}
    assert weighted == {k: v + attention.get(k, 0) for k, v in counted.items() if k in weighted}
    total = sum(counter.get_flop_counts()["Global"].values()) // 2
    assert sum(weighted.values()) == total + sum(attention.values())


def _attention_macs(steps: int, attention) -> int:
    """torch's FLOP counter does not count the CPU's fused attention kernel (only the CUDA ones): count the same
    product written as batched matrix products, softmax(q·kᵀ)·v per head, instead."""
    from torch.utils.flop_counter import FlopCounterMode
    q = k = v = torch.zeros(attention.n_heads, steps, attention.head_size)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.softmax(q @ k.transpose(1, 2), -1) @ v
    return counter.get_total_flops() // 2


def test_every_zoo_architecture_builds_by_name_and_is_listed():
    assert set(TORCHVISION) | {"nn4small2"} <= set(zoo.names())
    assert zoo.path("resnet18").name == "resnet18.yaml"
    assert zoo.path("specs/resnet18") is None and zoo.path("no_such_net") is None


@pytest.mark.parametrize("size", [32, 48])
def test_unet_equals_a_hand_written_unet_at_any_size(size):
    import yaml
    d = yaml.safe_load(zoo.path("unet").read_text())
    d["inputs"]["image"].update(height=size, width=size)  # the levels read their widths: nothing else changes
    torch.manual_seed(0)
    reference, net = HandWrittenUNet().eval(), graphspec.build(d).eval()
    assert graphspec.summarize("unet").trainable == sum(p.numel() for p in reference.parameters()) == 31_030_658
    net.load_state_dict(convert(net.state_dict(), reference.state_dict()))
    x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-5)
