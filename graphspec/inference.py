"""Rewrites of a compiled network for inference only: the same results within rounding, less work per image.
:func:`rewrite_for_inference` applies them all (``Execution(rewrite=True)``, the default of ``embed`` and ``verify``).

``fold_batch_norms`` folds each inference batch norm into the convolution before it. In inference a batch norm
is a per-channel affine map, ``y = scale · x + shift`` (DL4J's: ``(x - mean) / sqrt(var) · gamma + beta``, no
eps), so ``scale · conv(x; W, b) + shift = conv(x; scale · W, scale · b + shift)``: one pass over the
activation instead of two (the batch norm was ~5% of NN4.Small2's inference time). The folded weights are new
tensors; the model keeps its own, so it can still be trained, saved or cut afterwards.

``activations_after_max_pools`` moves an activation such as ReLU that only a max pool reads to after the pool:
``max(relu(x)) = relu(max(x))``, to the bit, so the activation runs on the pooled tensor (NN4.Small2's first ReLU
on a quarter of its 9.4 million values a batch of 64; every conv → ReLU → max pool of VGG or AlexNet the same).
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
    return _rewritten(net, _fold_all)


def activations_after_max_pools(net: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``net`` in which every activation read only by a max pool with which it commutes (see
    :meth:`Subsampling.commutes_with <graphspec.layers.modules.Subsampling.commutes_with>`) runs after that pool, on
    its output; the pool's readers (and a network output named after the pool) read the activation's result, which
    is the pool's original result bit for bit. Hooked modules stay where they are; ``net`` is unchanged, and the copy
    shares every module but the moved activations."""
    return _rewritten(net, _move_all)


def rewrite_for_inference(net: fx.GraphModule) -> fx.GraphModule:
    """Every rewrite of this module, in turn: batch norms folded into their convolutions, then activations moved
    after max pools (a convolution → batch norm → ReLU → max pool becomes convolution → max pool → ReLU)."""
    return _rewritten(net, _fold_all, _move_all)


def _rewritten(net: fx.GraphModule, *passes) -> fx.GraphModule:
    """A GraphModule of a copy of ``net``'s graph after ``passes`` (each edits the graph in place and returns the new
    modules by target), sharing ``net``'s modules but the new ones: one copy and one code generation for them all."""
    graph = copy.deepcopy(net.graph)
    modules = _modules_called_once(net)
    replaced: dict[str, object] = {}
    for rewrite in passes:
        replaced.update(rewrite(graph, modules))
    rewritten = fx.GraphModule(net, graph, class_name=type(net).__name__)
    for target, module in replaced.items():
        rewritten.add_submodule(target, module)
    rewritten.delete_all_unused_submodules()
    return rewritten


def _fold_all(graph: fx.Graph, modules: dict) -> dict:
    """Fold every batch norm that folds into its convolution (:func:`fold_batch_norms`); the new convolutions."""
    replaced = {}
    for norm_node in list(graph.nodes):
        folded = _fold(norm_node, modules)
        if folded is None:
            continue
        conv_node = norm_node.args[0]
        replaced[conv_node.target] = folded
        norm_node.replace_all_uses_with(conv_node)
        graph.erase_node(norm_node)
    return replaced


def _move_all(graph: fx.Graph, modules: dict) -> dict:
    """Move every activation that commutes with the max pool reading it after that pool
    (:func:`activations_after_max_pools`); the moved activations' copies."""
    moved = {}
    for pool_node in list(graph.nodes):
        act_node = _commuting_activation(pool_node, modules)
        if act_node is None:
            continue
        pool_node.replace_input_with(act_node, act_node.args[0])
        with graph.inserting_after(pool_node):
            after = graph.call_module(act_node.target, (pool_node,))
        pool_node.replace_all_uses_with(after, delete_user_cb=lambda user: user is not after)
        graph.erase_node(act_node)
        moved[act_node.target] = modules[act_node.target].reading(modules[pool_node.target])
    return moved


def _commuting_activation(pool_node: fx.Node, modules: dict):
    """The activation node that ``pool_node``'s max pool reads, alone, and can run after, or None."""
    if pool_node.op != "call_module" or len(pool_node.args) != 1 or pool_node.kwargs:
        return None
    act_node = pool_node.args[0]
    if not isinstance(act_node, fx.Node) or act_node.op != "call_module" or len(act_node.users) != 1:
        return None
    pool, act = modules.get(pool_node.target), modules.get(act_node.target)
    if (not hasattr(pool, "commutes_with") or not hasattr(act, "reading") or len(act_node.args) != 1
            or act_node.kwargs or _hooked(pool) or _hooked(act)):
        return None
    return act_node if pool.commutes_with(act.activation) else None


def _modules_called_once(net: fx.GraphModule) -> dict:
    """``net``'s modules by name, but those the graph calls at several places (a vertex that ``shares`` another's
    module): rewriting such a module for one place would change what the others compute."""
    calls: dict[str, int] = {}
    for node in net.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return {name: m for name, m in net.named_modules() if calls.get(name, 0) <= 1}


def _fold(norm_node: fx.Node, modules: dict):
    """The convolution with ``norm_node``'s batch norm folded in, or None when it does not fold."""
    if norm_node.op != "call_module" or len(norm_node.args) != 1 or norm_node.kwargs:
        return None
    norm = modules.get(norm_node.target)
    conv_node = norm_node.args[0]
    if (not hasattr(norm, "inference_affine") or not isinstance(conv_node, fx.Node) or conv_node.op != "call_module"
            or len(conv_node.users) != 1):
        return None
    conv = modules.get(conv_node.target)
    if not hasattr(conv, "folded") or _hooked(norm) or _hooked(conv):
        return None
    affine = norm.inference_affine()
    return None if affine is None else conv.folded(*affine)


def _hooked(module) -> bool:
    return any(hook_tables(module).values())
