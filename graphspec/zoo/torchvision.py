"""Bring torchvision's weights into a zoo network: ``graphspec.build("resnet50").load_state_dict(convert(...))``.

The zoo's specs name every vertex after torchvision's module path with '.' written '-', so most keys map by that
rule alone. What differs is stated here, once:

* batch normalisation: graphspec's (DL4J's) inference divides by ``sqrt(running_var)`` with no eps, because its
  running variance already holds ``var + eps``; torchvision's holds ``var`` and adds eps at inference, so the
  converted ``running_var`` is torchvision's plus eps. ``num_batches_tracked`` has no counterpart.
* a parameter graphspec keeps flat where torch nests a module (attention's ``out_proj.weight`` is
  ``out_proj_weight``), and sequences as ``[size, T]`` where torch keeps ``[1, T, size]`` (ViT's position
  embedding) or a ``[1, 1, size]`` class token.

No torchvision import here: the caller passes a state_dict (from torchvision, or a file it saved).
"""
from __future__ import annotations

import torch

BATCHNORM_EPS = 1e-5  # torchvision's BatchNorm2d default, used by every zoo network that has batch norm
_NESTED = {"out_proj_weight": "out_proj.weight", "out_proj_bias": "out_proj.bias"}


def source_key(key: str) -> str:
    """The torchvision key of a graphspec state_dict key (``layer1-0-conv1.weight`` -> ``layer1.0.conv1.weight``)."""
    vertex, _, param = key.rpartition(".")
    if vertex == "class_token":
        return "class_token"
    if param == "weight" and vertex.endswith("pos_embedding"):
        return vertex.replace("-", ".")
    return vertex.replace("-", ".") + "." + _NESTED.get(param, param)


def convert(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``target``'s keys (a zoo network's state_dict) filled from torchvision's ``source``; raises KeyError naming
    every key on either side that has no counterpart, and ValueError for a shape that does not fit."""
    converted = {}
    missing = [k for k in target if source_key(k) not in source]
    unused = sorted(set(source) - {source_key(k) for k in target} - {k for k in source if
                                                                     k.endswith("num_batches_tracked")})
    if missing or unused:
        raise KeyError(f"no torchvision weight for {missing[:5]} ({len(missing)} in all); torchvision weights "
                       f"without a place: {unused[:5]} ({len(unused)} in all)")
    for key, mine in target.items():
        value = _fit(source[source_key(key)], mine.shape, key)
        if key.endswith("running_var"):
            value = value + BATCHNORM_EPS
        converted[key] = value.to(mine.dtype)
    return converted


def _fit(value: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    if value.shape == shape:
        return value
    if value.dim() == 3 and value.shape[0] == 1 and value.shape[1:] == shape[::-1]:  # [1, T, size] -> [size, T]
        return value[0].t().contiguous()
    if value.numel() == shape.numel() and value.squeeze().shape == shape:  # [1, 1, size] -> [size]
        return value.reshape(shape)
    raise ValueError(f"'{key}': torchvision's {list(value.shape)} does not fit {list(shape)}")
