"""``feed_forward``: activations of chosen vertices by name, like DL4J's ``ComputationGraph.feedForward``."""
from __future__ import annotations

import torch

from .errors import GraphspecError, did_you_mean


def feed_forward(model: torch.nn.Module, *inputs: torch.Tensor, vertices: list[str] | None = None,
                 train: bool = False) -> dict[str, torch.Tensor]:
    """Run ``inputs`` (in the spec's input order) and return activations by vertex name.

    With ``vertices=None`` it returns what DL4J's ``feedForward`` returns: the inputs, every layer and every output
    vertex. Only the ancestors of the requested vertices are computed. ``train`` selects training mode for this
    call (frozen vertices stay in inference mode); the model's previous mode is restored afterwards.
    """
    info = getattr(model, "graphspec", None)
    if info is None:
        raise GraphspecError("feed_forward needs a module built by graphspec")
    spec, analysis = info.spec, info.analysis
    if len(inputs) != len(spec.inputs):
        raise GraphspecError(f"feed_forward: the model has {len(spec.inputs)} input(s) "
                             f"({', '.join(spec.inputs)}); received {len(inputs)}")
    wanted = _wanted(spec, vertices)
    needed = analysis.needed_for(wanted)
    from .layers.modules import no_inplace
    acts = dict(zip(spec.inputs, inputs))
    was_training = model.training
    model.train(train)
    try:
        with no_inplace():  # every activation returned must stay what that vertex computed
            for name in analysis.order:
                if name in needed:
                    module = model.get_submodule(spec.vertices[name].module)  # a shared layer: each use by name
                    acts[name] = module(*(acts[i] for i in spec.vertices[name].inputs))
    finally:
        model.train(was_training)
    return {name: acts[name] for name in list(spec.inputs) + analysis.order if name in wanted}


def _wanted(spec, vertices) -> list[str]:
    if vertices is None:
        return list(spec.inputs) + [n for n, v in spec.vertices.items()
                                    if v.entry.kind == "layer" or n in spec.outputs]
    known = list(spec.inputs) + list(spec.vertices)
    for name in vertices:
        if name not in known:
            raise GraphspecError(f"feed_forward: no vertex named '{name}'{did_you_mean(name, known)}", vertex=name)
    return list(vertices)
