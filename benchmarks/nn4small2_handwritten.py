"""NN4.Small2 (DL4J "Train FaceNet Using Center Loss" variant), written by hand in plain PyTorch.

This is an *independent* implementation used as a numeric reference and as the speed baseline for
graphspec's compiled ``specs/nn4small2.yaml``; it deliberately does not import graphspec.

DL4J 0.9.x CPU semantics it reproduces (see SEMANTICS.md §1-4, §7):

* Every conv/pool is in ``ConvolutionMode.Same``: output ``ceil(n/s)``, total padding
  ``P = (out-1)*s + k - n``, ``top = P//2``, ``bottom = P - top`` (extra pixel bottom/right). Symmetric
  pads go into ``nn.Conv2d(padding=...)``; the asymmetric ones (every stride-2 layer) use ``F.pad`` first.
  The pads are written out per layer (§1.2 table) rather than computed.
* MAX pooling reads 0 outside the input (zero ``F.pad``); AVG divides by k·k; PNORM p=2 is
  ``F.lp_pool2d`` on the zero-padded input (all pooled inputs here are post-ReLU, so ``|x|`` is moot).
* LRN(k=1, n=5, alpha=1e-4, beta=0.75) of DL4J does not divide alpha by n: ``nn.LocalResponseNorm(5, 5e-4, 0.75, 1)``.
* BatchNorm: ``nn.BatchNorm2d(eps=1e-5, momentum=0.1)``. Torch keeps the *unbiased* running variance
  without eps and adds eps at inference; DL4J stores ``biased_var + eps`` and adds nothing. Hence
  :func:`load_graphspec_state` maps ``running_var_hand = running_var_graphspec - eps``, which gives
  identical inference outputs. Training steps then update the two differently: torch blends in the
  *unbiased* batch variance, DL4J the biased one plus eps. :func:`dl4j_running_var` gives the DL4J value that
  is equivalent for inference (``var + eps``), not the value DL4J itself would have accumulated.
* Merge orders: FaceNetHelper modules ``[3x3, 5x5, pool->1x1, 1x1]``; 3c/4e ``[3x3, "5x5" (a 3x3 kernel!), pool]``;
  5a/5b ``[1x1, 3x3, pool->1x1]``.
* Head: AVG 3x3/3 -> flatten -> Linear(736,128) -> ``x / max(||x||, 1e-6)`` -> Linear(128,5749) -> softmax.
  ``centers`` ([5749, 128]) is carried as a buffer, as in DL4J's CenterLossOutputLayer.

``forward`` returns the softmax of the loss layer ([N, 5749]); ``embed`` returns the 128-d embeddings.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # = 1 - DL4J decay 0.9


class ConvBNReLU(nn.Module):
    """conv -> batchnorm -> relu. ``pad`` is an F.pad tuple (l, r, t, b) for asymmetric Same padding."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, padding: int = 0, pad=None):
        super().__init__()
        self.pad = pad
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return F.relu(self.bn(self.conv(x)), inplace=True)


class FaceNetInception(nn.Module):
    """FaceNetHelper.appendGraph with kernels [3, 5], strides [1, 1], reduce [r3, r5, rpool, r1]."""

    def __init__(self, cin: int, out3: int, out5: int, r3: int, r5: int, rpool: int, r1: int, pool: str):
        super().__init__()
        self.pool = pool
        self.b3_reduce = ConvBNReLU(cin, r3)
        self.b3 = ConvBNReLU(r3, out3, 3, padding=1)
        self.b5_reduce = ConvBNReLU(cin, r5)
        self.b5 = ConvBNReLU(r5, out5, 5, padding=2)
        self.pool_proj = ConvBNReLU(cin, rpool)
        self.proj = ConvBNReLU(cin, r1)

    def forward(self, x):
        xp = F.pad(x, (1, 1, 1, 1))  # 3x3 stride 1 Same: (1, 1); DL4J pools read zeros outside
        p = F.max_pool2d(xp, 3, 1) if self.pool == "max" else F.lp_pool2d(xp, 2.0, 3, 1)
        return torch.cat([self.b3(self.b3_reduce(x)), self.b5(self.b5_reduce(x)), self.pool_proj(p),
                          self.proj(x)], 1)


class Reduction(nn.Module):
    """Hand-written 3c / 4e: two stride-2 3x3 branches (the second is *named* 5x5 in DL4J) and a max pool."""

    def __init__(self, cin: int, r_a: int, out_a: int, r_b: int, out_b: int):
        super().__init__()
        self.a_reduce = ConvBNReLU(cin, r_a)
        self.a = ConvBNReLU(r_a, out_a, 3, 2, pad=(0, 1, 0, 1))
        self.b_reduce = ConvBNReLU(cin, r_b)
        self.b = ConvBNReLU(r_b, out_b, 3, 2, pad=(0, 1, 0, 1))

    def forward(self, x):
        p = F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 3, 2)
        return torch.cat([self.a(self.a_reduce(x)), self.b(self.b_reduce(x)), p], 1)


class Inception5(nn.Module):
    """Hand-written 5a / 5b: merge order [1x1 (256), 3x3 (384), pool->1x1 (96)]."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.proj = ConvBNReLU(cin, 256)
        self.b3_reduce = ConvBNReLU(cin, 96)
        self.b3 = ConvBNReLU(96, 384, 3, padding=1)
        self.pool_proj = ConvBNReLU(cin, 96)

    def forward(self, x):
        xp = F.pad(x, (1, 1, 1, 1))
        p = F.max_pool2d(xp, 3, 1) if self.pool == "max" else F.lp_pool2d(xp, 2.0, 3, 1)
        return torch.cat([self.proj(x), self.b3(self.b3_reduce(x)), self.pool_proj(p)], 1)


class NN4Small2(nn.Module):
    def __init__(self, num_classes: int = 5749, embedding_size: int = 128):
        super().__init__()
        # stem: 7x7/2 conv (Same 96->48: pads (2, 3)), BN, ReLU, max 3x3/2 (48->24: (0, 1)), LRN
        self.conv1 = ConvBNReLU(3, 64, 7, 2, pad=(2, 3, 2, 3))
        self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=1.0)
        self.conv2 = ConvBNReLU(64, 64)
        self.conv3 = ConvBNReLU(64, 192, 3, padding=1)
        self.inc3a = FaceNetInception(192, 128, 32, 96, 16, 32, 64, "max")
        self.inc3b = FaceNetInception(256, 128, 64, 96, 32, 64, 64, "pnorm")
        self.inc3c = Reduction(320, 128, 256, 32, 64)
        self.inc4a = FaceNetInception(640, 192, 64, 96, 32, 128, 256, "pnorm")
        self.inc4e = Reduction(640, 160, 256, 64, 128)
        self.inc5a = Inception5(1024, "pnorm")
        self.inc5b = Inception5(736, "max")
        self.bottleneck = nn.Linear(736, embedding_size)
        self.classifier = nn.Linear(embedding_size, num_classes)
        self.register_buffer("centers", torch.zeros(num_classes, embedding_size))

    def features(self, x):
        """[N, 736] pooled features (before the bottleneck)."""
        x = self.conv1(x)
        x = self.lrn(F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 3, 2))
        x = self.conv3(self.conv2(x))
        x = F.max_pool2d(F.pad(self.lrn(x), (0, 1, 0, 1)), 3, 2)
        x = self.inc3c(self.inc3b(self.inc3a(x)))
        x = self.inc4e(self.inc4a(x))
        x = self.inc5b(self.inc5a(x))
        return torch.flatten(F.avg_pool2d(x, 3, 3), 1)

    def embed(self, x):
        """[N, 128] L2-normalised embeddings (DL4J L2NormalizeVertex, eps 1e-6)."""
        return F.normalize(self.bottleneck(self.features(x)), p=2.0, dim=1, eps=1e-6)

    def forward(self, x):
        return torch.softmax(self.classifier(self.embed(x)), dim=1)


# --- weights from a graphspec-built nn4small2 ---------------------------------------------------------------


def _facenet_pairs(hand: str, m: str) -> dict[str, tuple[str, str]]:
    return {f"{hand}.b3_reduce": (f"{m}-cnn1-0", f"{m}-batch1-0"), f"{hand}.b3": (f"{m}-reduce1-0", f"{m}-batch2-0"),
            f"{hand}.b5_reduce": (f"{m}-cnn1-1", f"{m}-batch1-1"), f"{hand}.b5": (f"{m}-reduce1-1", f"{m}-batch2-1"),
            f"{hand}.pool_proj": (f"{m}-cnn2", f"{m}-batch3"), f"{hand}.proj": (f"{m}-reduce2", f"{m}-batch4")}


def _reduction_pairs(hand: str, m: str) -> dict[str, tuple[str, str]]:
    return {f"{hand}.a_reduce": (f"{m}-1x1", f"{m}-1x1-norm"), f"{hand}.a": (f"{m}-3x3", f"{m}-3x3-norm"),
            f"{hand}.b_reduce": (f"{m}-2-1x1", f"{m}-2-1x1-norm"), f"{hand}.b": (f"{m}-2-5x5", f"{m}-2-5x5-norm")}


def _inception5_pairs(hand: str, m: str) -> dict[str, tuple[str, str]]:
    return {f"{hand}.proj": (f"{m}-1x1", f"{m}-1x1-norm"), f"{hand}.b3_reduce": (f"{m}-2-1x1", f"{m}-2-1x1-norm"),
            f"{hand}.b3": (f"{m}-2-3x3", f"{m}-2-3x3-norm"),
            f"{hand}.pool_proj": (f"{m}-3-1x1reduce", f"{m}-3-1x1reduce-norm")}


def conv_bn_pairs() -> dict[str, tuple[str, str]]:
    """Hand-written ConvBNReLU path -> (graphspec conv vertex, graphspec batchnorm vertex)."""
    pairs = {"conv1": ("stem-cnn1", "stem-batch1"), "conv2": ("inception-2-cnn1", "inception-2-batch1"),
             "conv3": ("inception-2-cnn2", "inception-2-batch2")}
    pairs.update(_facenet_pairs("inc3a", "inception-3a"))
    pairs.update(_facenet_pairs("inc3b", "inception-3b"))
    pairs.update(_reduction_pairs("inc3c", "3c"))
    pairs.update(_facenet_pairs("inc4a", "inception-4a"))
    pairs.update(_reduction_pairs("inc4e", "4e"))
    pairs.update(_inception5_pairs("inc5a", "5a"))
    pairs.update(_inception5_pairs("inc5b", "5b"))
    return pairs


def graphspec_key_map() -> dict[str, str]:
    """Hand-written state_dict key -> graphspec state_dict key (every key but BN ``num_batches_tracked``)."""
    keys = {}
    for hand, (conv, bn) in conv_bn_pairs().items():
        keys[f"{hand}.conv.weight"] = f"{conv}.weight"
        keys[f"{hand}.conv.bias"] = f"{conv}.bias"
        for t in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{hand}.bn.{t}"] = f"{bn}.{t}"
    keys.update({"bottleneck.weight": "bottleneck.weight", "bottleneck.bias": "bottleneck.bias",
                 "classifier.weight": "lossLayer.weight", "classifier.bias": "lossLayer.bias",
                 "centers": "lossLayer.centers"})
    return keys


@torch.no_grad()
def load_graphspec_state(hand: NN4Small2, graphspec_state: Mapping[str, torch.Tensor]) -> NN4Small2:
    """Copy the weights of a graphspec-built nn4small2 into ``hand`` (in place; returns ``hand``).

    BatchNorm: graphspec (DL4J) stores ``running_var = biased_var + eps`` and uses no eps at inference;
    ``nn.BatchNorm2d`` adds eps at inference, so ``running_var_hand = running_var_graphspec - eps``.
    Every key on both sides must be used exactly once with equal shapes, else ``KeyError``/``ValueError``.
    """
    mapping = graphspec_key_map()
    own = hand.state_dict()
    missing = [g for g in mapping.values() if g not in graphspec_state]
    unused = sorted(set(graphspec_state) - set(mapping.values()))
    uncovered = [k for k in own if k not in mapping and not k.endswith("num_batches_tracked")]
    if missing or unused or uncovered:
        raise KeyError(f"state mismatch: missing in graphspec {missing[:5]}, unused graphspec keys {unused[:5]}, "
                       f"hand-written keys without a source {uncovered[:5]}")
    for key, gkey in mapping.items():
        src = graphspec_state[gkey]
        if tuple(src.shape) != tuple(own[key].shape):
            raise ValueError(f"{key} {tuple(own[key].shape)} vs {gkey} {tuple(src.shape)}")
        if key.endswith("bn.running_var"):
            src = src - BN_EPS
        own[key].copy_(src)
    return hand


def dl4j_running_var(torch_running_var: torch.Tensor, eps: float = BN_EPS) -> torch.Tensor:
    """The DL4J-convention running variance equivalent to a torch one *for inference* (``var + eps``)."""
    return torch_running_var + eps


def build_from_graphspec_state(graphspec_state: Mapping[str, torch.Tensor]) -> NN4Small2:
    return load_graphspec_state(NN4Small2(), graphspec_state)
