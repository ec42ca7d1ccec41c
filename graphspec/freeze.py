"""Frozen vertices: always in inference mode (BN statistics do not move, dropout is off) and no gradients.

A frozen module keeps its class's behaviour and its name (so ``state_dict`` keys do not change); only ``train()``
is overridden, through a subclass made once per layer class, and its parameters stop requiring gradients.
"""
from __future__ import annotations

from torch import nn

_FROZEN: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    if getattr(cls, "graphspec_frozen", False):
        return cls
    if cls not in _FROZEN:
        def train(self, mode: bool = True):
            return super(frozen, self).train(False)

        frozen = type(f"Frozen{cls.__name__}", (cls,), {"train": train, "graphspec_frozen": True,
                                                         "__module__": cls.__module__})
        _FROZEN[cls] = frozen
    return _FROZEN[cls]


def freeze_module(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
    module.__class__ = _frozen_class(type(module))
    module.train(False)


def is_frozen(module: nn.Module) -> bool:
    return bool(getattr(type(module), "graphspec_frozen", False))
