"""Truncated backpropagation through time (DL4J's ``tBPTTLength``, SEMANTICS-SEQUENCES.md §11.1-11.2).

A batch of sequences T steps long is cut along time into ⌈T/k⌉ consecutive parts of k steps (the last one
shorter): sequence inputs, their masks, per-step targets and label masks are cut; everything else (per-sequence
inputs and targets) goes whole to every part. Each part is one forward, backward and parameter update, starting
from the recurrent state the previous part ended in, detached (textbook TBPTT, which is DL4J 0.9.x's; DL4J
1.0.0-beta's regression, gradients from a zero state, is not reproduced).
"""
from __future__ import annotations

from ..errors import GraphspecError
from ..graph import MASK
from ..state import carried_state, recurrent_layers


def check(model, length: int) -> None:
    """Refuse, before any work, a network TBPTT cannot train: no sequence input, or a bidirectional layer."""
    spec = model.graphspec.spec
    if not any(len(spec.input_shape(n)) == 2 for n in spec.inputs):
        raise GraphspecError(f"recipe 'tbptt_length' {length}: '{spec.name}' has no sequence input to cut "
                             f"(inputs: {', '.join(spec.inputs)})")
    for name, module in recurrent_layers(model).items():
        if module.bidirectional:
            raise GraphspecError(f"recipe 'tbptt_length': vertex '{name}' is bidirectional; its backward direction "
                                 "reads each sequence's end first, so it cannot be trained part by part (DL4J "
                                 "refuses it too)")


def parts(model, x, y, length: int) -> list[tuple[dict, dict]]:
    """The (inputs, targets) of each part of the batch (x, y), as dicts by name."""
    spec, analysis = model.graphspec.spec, model.graphspec.analysis
    x = x if isinstance(x, dict) else dict(zip(spec.inputs, x if isinstance(x, tuple) else (x,)))
    if not isinstance(y, dict):
        raise GraphspecError("truncated BPTT needs the targets by output name (an .npz file's arrays)")
    timed = {n for n in spec.inputs if len(spec.input_shape(n)) == 2}
    timed |= {n for n in spec.outputs if len(analysis.shapes[n]) == 2}
    timed |= {n + MASK for n in timed}
    steps = {t.shape[-1] for k, t in {**x, **y}.items() if k in timed}
    if len(steps) != 1:
        raise GraphspecError(f"truncated BPTT cuts every sequence of a batch at the same steps; this batch's "
                             f"sequences have {sorted(steps)} steps")
    total = steps.pop()
    cut = lambda d, a, b: {k: (t[..., a:b] if k in timed else t) for k, t in d.items()}  # noqa: E731
    return [(cut(x, a, a + length), cut(y, a, a + length)) for a in range(0, total, length)]


def step(trainer_step, model, x, y, n: int, length: int) -> float:
    """Every part of the batch, each one update from the state the previous part left (zeros for the first);
    the score is the parts' mean."""
    with carried_state(model):
        scores = [trainer_step(xs, ys, n) for xs, ys in parts(model, x, y, length)]
    return sum(scores) / len(scores)
