"""Rewrites of a compiled network for inference only: the same results within rounding, less work per image.

``fold_batch_norms`` folds each inference batch norm into the convolution before it. In inference a batch norm
is a per-channel affine map, ``y = scale · x + shift`` (DL4J's: ``(x - mean) / sqrt(var) · gamma + beta``, no
eps), so ``scale · conv(x; W, b) + shift = conv(x; scale · W, scale · b + shift)``: one pass over the
activation instead of two (the batch norm was ~5% of NN4.Small2's inference time). The folded weights are new
tensors; the model keeps its own, so it can still be trained, saved or cut afterwards.
"""
from __future__ import annotations

import copy

import torch.fx as fx

from .layers.modules import hook_tables


def fold_batch_norms(net: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``net`` in which every batch norm whose input is a convolution's output, read by it alone, is folded
    into that convolution; modules that do not fold (a convolution with its own activation, a batch norm in training
    or with a zero running variance, a module with hooks) run as before. ``net`` is unchanged; the copy shares every
    module but the folded convolutions, and carries the batch norm's name on the folded node's values (a network
    output named after a batch norm is still there)."""
    graph = copy.deepcopy(net.graph)
    modules = dict(net.named_modules())
    replaced: dict[str, object] = {}
    for norm_node in list(graph.nodes):
        folded = _fold(norm_node, modules)
        if folded is None:
            continue
        conv_node = norm_node.args[0]
        replaced[conv_node.target] = folded
        norm_node.replace_all_uses_with(conv_node)
        graph.erase_node(norm_node)
    folded_net = fx.GraphModule(net, graph, class_name=type(net).__name__)
    for target, module in replaced.items():
        folded_net.add_submodule(target, module)
    folded_net.delete_all_unused_submodules()
    return folded_net


def _fold(norm_node: fx.Node, modules: dict):
    """The convolution with ``norm_node``'s batch norm folded in, or None when it does not fold."""
    if norm_node.op != "call_module" or len(norm_node.args) != 1 or norm_node.kwargs:
        return None
    norm = modules[norm_node.target]
    conv_node = norm_node.args[0]
    if (not hasattr(norm, "inference_affine") or not isinstance(conv_node, fx.Node) or conv_node.op != "call_module"
            or len(conv_node.users) != 1):
        return None
    conv = modules[conv_node.target]
    if not hasattr(conv, "folded") or _hooked(norm) or _hooked(conv):
        return None
    affine = norm.inference_affine()
    return None if affine is None else conv.folded(*affine)


def _hooked(module) -> bool:
    return any(hook_tables(module).values())
