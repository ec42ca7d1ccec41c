"""Recurrent state carried from one forward to the next: truncated backpropagation through time and stateful
inference (DL4J's ``tBPTTLength`` and ``rnnTimeStep``, SEMANTICS-SEQUENCES.md §11).

    >>> with carried_state(net):              # doctest: +SKIP
    ...     for part in torch.split(x, 50, dim=2):
    ...         y = net(part)                  # each part continues from the state the previous one ended in

Inside the block every recurrent layer starts from the state its previous forward ended with (zeros the first
time) and keeps its own final state, detached: no gradient crosses from one part to the next. Leaving the block
(or :func:`reset_state`) drops the state.
"""
from __future__ import annotations

import contextlib

import torch


def recurrent_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules of ``model`` that can carry a state, by vertex name."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "set_carry")}


@contextlib.contextmanager
def carried_state(model: torch.nn.Module):
    layers = recurrent_layers(model)
    try:
        for name, m in layers.items():
            try:
                m.set_carry(True)
            except ValueError as e:
                raise ValueError(f"vertex '{name}': {e}") from None
        yield model
    finally:
        for m in layers.values():
            m.set_carry(False)


def reset_state(model: torch.nn.Module) -> None:
    """Forget the carried state (the next forward starts from zeros), e.g. between independent sequences."""
    for m in recurrent_layers(model).values():
        m.reset_state()
