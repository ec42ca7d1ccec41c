"""``feed_forward``: activations of chosen vertices by name, like DL4J's ``ComputationGraph.feedForward``."""
from __future__ import annotations

import torch

from .errors import GraphspecError, did_you_mean
from .compiler import subgraph


def feed_forward(model: torch.nn.Module, *inputs: torch.Tensor, vertices: list[str] | None = None,
                 train: bool = False, masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Run ``inputs`` (in the spec's input order) and return activations by vertex name.

    With ``vertices=None`` it returns what DL4J's ``feedForward`` returns: the inputs, every layer and every output
    vertex. Only the ancestors of the requested vertices are computed. ``train`` selects training mode for this
    call (frozen vertices stay in inference mode); the model's previous mode is restored afterwards. ``masks``
    gives sequence inputs their masks [N, T] by input name (1 = a real step, 0 = padding), which travel through the
    graph exactly as in the model's forward (``net(x, x_mask=mask)``); the activations are those of that forward.
    """
    info = getattr(model, "graphspec", None)
    if info is None:
        raise GraphspecError("feed_forward needs a module built by graphspec")
    spec = info.spec
    if len(inputs) != len(spec.inputs):
        raise GraphspecError(f"feed_forward: the model has {len(spec.inputs)} input(s) "
                             f"({', '.join(spec.inputs)}); received {len(inputs)}")
    sequences = [name for name in spec.inputs if len(spec.input_shape(name)) == 2]
    for name in masks or {}:
        if name not in sequences:
            accepted = f"sequence inputs: {', '.join(sequences)}" if sequences else "the model has no sequence input"
            raise GraphspecError(f"feed_forward: no sequence input named '{name}' to mask ({accepted})")
    wanted = _wanted(spec, vertices)
    from .layers.modules import no_inplace
    # the model's own forward graph up to the wanted vertices: inputs, then the sequence inputs' masks (positional)
    trunk = subgraph(model, wanted)
    was_training = model.training
    model.train(train)
    try:
        with no_inplace():  # every activation returned must stay what that vertex computed
            acts = trunk(*inputs, *((masks or {}).get(name) for name in sequences))
    finally:
        model.train(was_training)
    return {name: acts[name] for name in list(spec.inputs) + info.analysis.order if name in wanted}


def _wanted(spec, vertices) -> list[str]:
    if vertices is None:
        return list(spec.inputs) + [n for n, v in spec.vertices.items()
                                    if v.entry.kind == "layer" or n in spec.outputs]
    known = list(spec.inputs) + list(spec.vertices)
    for name in vertices:
        if name not in known:
            raise GraphspecError(f"feed_forward: no vertex named '{name}'{did_you_mean(name, known)}", vertex=name)
    return list(vertices)
