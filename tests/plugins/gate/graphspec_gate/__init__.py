"""A vertex-type plugin, as a user would write one: ``type: my_gate`` scales each channel (or feature) of its input
by a learned gate, ``y = x · sigmoid(g)``. Installed through the entry point in ``graphspec_gate-0.1.dist-info``
(tests put this folder on ``sys.path``, which is what installing the package does)."""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from graphspec.registry import Inferred, ParamShape, Params, ShapeError, VertexType


class GateParams(Params):
    init: float = Field(0.0, description="initial gate logit (0: every gate starts half open)")


class GateModule(nn.Module):
    def __init__(self, channels: int, rank: int, init: float):
        super().__init__()
        self.gate = nn.Parameter(torch.full((channels,), float(init)))
        self.view = (channels,) + (1,) * (rank - 1)  # broadcast over the spatial dimensions

    def forward(self, x):
        return x * torch.sigmoid(self.gate).view(self.view)


class Gate(VertexType):
    name, dl4j = "my_gate", "MyGate"
    Params = GateParams
    width_follows_input = True
    doc = "y = x · sigmoid(gate), one learned gate per channel or feature (a test plugin)."
    # no macs(): the summary shows '?' for it

    def infer(self, p, in_shapes):
        if len(in_shapes[0]) not in (1, 3):
            raise ShapeError(f"expected [features] or [channels, height, width]; received {list(in_shapes[0])}")
        c = in_shapes[0][0]
        return Inferred(in_shapes[0], c, c)

    def param_shapes(self, p, inf):
        return [ParamShape("gate", (inf.n_in,), True)]

    def build(self, p, inf):
        return GateModule(inf.n_in, len(inf.out_shape), p.init)

    def init(self, module, p, inf, generator):
        module.gate.data.fill_(p.init)
