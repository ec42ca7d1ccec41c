"""How a network runs for inference: memory layout, precision, compilation, and the inputs' preprocessing."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .errors import GraphspecError


def preprocessing_of(model):
    from .data.preprocessing import Preprocessing
    prep = model.graphspec.preprocessing
    if prep is None:
        warnings.warn("the model records no preprocessing; using DL4J's (96x96, BGR, 0..255)", stacklevel=2)
        return Preprocessing.dl4j()
    return prep if isinstance(prep, Preprocessing) else Preprocessing.model_validate(prep)


@dataclass(frozen=True)
class Execution:
    """How ``embed`` runs the network (and reads its photos: ``aligned``). ``channels_last`` (NHWC) is float32 and
    equal to the default layout within rounding; ``precision="bf16"`` (bfloat16 autocast) is faster on CPUs with
    AVX512-BF16 and changes the rows by about 1e-2 (``fp16``: CUDA only); ``compile`` runs the network through
    ``torch.compile`` (a one-time compilation of a minute or more, worth it for large folders); ``device`` is
    where it runs. ``rewrite`` applies the inference rewrites of :mod:`graphspec.inference` to the network (each
    batch norm folded into the convolution before it, a ReLU before a max pool moved after it): the same rows
    within rounding (1e-5), less work per image."""

    channels_last: bool = True
    precision: str = "fp32"
    compile: bool = False
    device: str = "cpu"  # a torch device (graphspec.devices.resolve gives one for --device)
    # the photos are already the aligner's chips (`graphspec dataset --align`): skip the model's aligner
    aligned: bool = False
    rewrite: bool = True

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise GraphspecError(f"unknown precision '{self.precision}' (expected fp32, bf16 or fp16)")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise GraphspecError(f"precision fp16 needs a CUDA device (this run is on {self.device}); use bf16")

    def prepare(self, model, net):
        """The network to call; note that the model moves to the device and ``channels_last`` converts its own
        weights to NHWC (in place, as ``module.to`` does), which leaves its results unchanged within rounding."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.rewrite:
            from .inference import rewrite_for_inference
            net = rewrite_for_inference(net)
        return torch.compile(net) if self.compile else net

    def input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def preprocessing(self, model):
        """What turns a file into this model's input: its recorded preprocessing, without the aligner when the
        photos are already aligned."""
        prep = preprocessing_of(model)
        return prep.model_copy(update={"align": None}) if self.aligned else prep

    def context(self):
        from .train.steps import autocast
        return autocast(self.precision, self.device)
