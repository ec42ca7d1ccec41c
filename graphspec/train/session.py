"""A training session: a model, a recipe and datasets -> a run directory.

RUN/spec.yaml and RUN/recipe.yaml record what was trained (so a resumed run rebuilds the same network),
RUN/metrics.jsonl the score and evaluation lines, RUN/checkpoints/ the last k checkpoints and RUN/model.safetensors
the final model (with the preprocessing its inputs need). Where the datasets come from is the caller's business:
:mod:`graphspec.faces.training` builds them from face folders. The folder is held by one run at a time
(:mod:`graphspec.train.run_folder`: a lock, and no other run started in it unless ``overwrite``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GraphspecError, Location, did_you_mean
from .recipe import Recipe
from .run_folder import claim, identity
from .trainer import RunWriteError, Trainer


def replace_head(model, head: dict | None, console) -> Any:
    """Apply the recipe's ``head`` settings to every output layer (graph surgery: re-initialised)."""
    if not head:
        return model
    from ..surgery import GraphBuilder
    from .steps import spec_heads
    builder = GraphBuilder(model)
    for h in spec_heads(model):
        body = {k: v for k, v in h.vertex.to_dict().items() if k not in ("inputs", "group")}
        body.update(head)
        builder.remove_vertex_keep_connections(h.name).add_layer(h.name, body, *h.vertex.inputs)
        if console is not None:
            console.print(f"{h.name}: " + ", ".join(f"{k} {v}" for k, v in head.items()) + " (from the recipe)")
    return builder.build()


def adapt_head(model, n_classes: int, console, resize: list[str] | None = None) -> Any:
    """Give classifier output layers as many classes as the data has (the tutorial's 5,749 is LFW's people count):
    the one loss head of a single-head network, or the heads named in ``resize`` — a network with several heads is
    never resized unasked, and a `loss` layer (no weights) never."""
    from ..surgery import GraphBuilder
    from .steps import spec_heads
    if not n_classes:
        return model  # the data has no classes (values, or several targets by name)
    all_heads = spec_heads(model)
    classifiers = {h.name: h for h in all_heads if hasattr(h.module, "weight")}  # output layers, with an `out`
    if resize is not None:
        unknown = [n for n in resize if n not in classifiers]
        if unknown:
            raise GraphspecError(f"recipe 'resize_heads': '{unknown[0]}' is not a classifier output layer of the "
                                 f"network{did_you_mean(unknown[0], list(classifiers))}")
        wanted = [classifiers[n] for n in resize]
    else:
        wanted = list(classifiers.values()) if len(all_heads) == 1 else []
        unasked = [h for h in classifiers.values() if h not in wanted and h.module.weight.shape[0] != n_classes]
        if unasked:
            raise GraphspecError(f"the data has {n_classes:,} classes but the output layer '{unasked[0].name}' has "
                                 f"{unasked[0].module.weight.shape[0]:,} outputs, and the network has several heads; "
                                 f"set the recipe's resize_heads: [{unasked[0].name}] to resize it, or give data "
                                 "that fits")
    heads = [h for h in wanted if h.module.weight.shape[0] != n_classes]
    if not heads:
        return model
    builder = GraphBuilder(model)
    for h in heads:
        if console is not None:
            console.print(f"{h.name}: out {h.module.weight.shape[0]} -> {n_classes} (the number of classes in the "
                          "training data)")
        builder.n_out_replace(h.name, n_classes)
    return builder.build()


def check_listeners(recipe: Recipe, run: Path | None, held_out: bool) -> None:
    """Refuse, before any data is read, what the recipe's ``log``, ``keep_best`` and ``early_stop`` cannot do."""
    from .listeners import LOGGERS
    if recipe.log and run is None:
        raise GraphspecError(f"--log {','.join(recipe.log)} writes into the run directory: give --out RUN_DIR")
    if "tensorboard" in recipe.log:
        LOGGERS["tensorboard"].check()
    if recipe.keep_best and run is None:
        raise GraphspecError("keep_best writes best.safetensors into the run directory: give --out RUN_DIR")
    if recipe.keep_best or recipe.early_stop:
        for name in {recipe.keep_best, _early_stop_metric(recipe)} - {None, "score"}:
            if not held_out:
                raise GraphspecError(f"'{name}' is measured on held-out data: set data.eval_fraction "
                                     "(--eval-fraction), or monitor 'score' (the epoch's mean training score)")


def _early_stop_metric(recipe: Recipe) -> str:
    return recipe.early_stop_metric or recipe.keep_best or "score"


def recipe_listeners(recipe: Recipe, run: Path | None, eval_set) -> list:
    """The loggers (``log``) and the best-model saver / early stopping (``keep_best``, ``early_stop``) the recipe
    asks for."""
    from .listeners import LOGGERS, Monitor
    check_listeners(recipe, run, eval_set is not None)
    made = [LOGGERS[name](run) for name in recipe.log]
    metric, delta = _early_stop_metric(recipe), recipe.min_delta
    if recipe.keep_best and recipe.early_stop and metric != recipe.keep_best:
        made += [Monitor(recipe.keep_best, keep_best=True, min_delta=delta),
                 Monitor(metric, patience=recipe.early_stop, min_delta=delta)]
    elif recipe.keep_best or recipe.early_stop:
        made.append(Monitor(metric, keep_best=bool(recipe.keep_best), patience=recipe.early_stop, min_delta=delta))
    return made


def run_session(model, recipe: Recipe, train_set, eval_set=None, *, out: str | Path | None = None,
                resume: bool = False, overwrite: bool = False, preprocessing=None, infer_preprocessing=None,
                console=None, listeners=(), ctx=None, device: str | None = None) -> Trainer:
    """Train ``model`` on ``train_set`` (and evaluate on ``eval_set``) under ``recipe``; with ``out``, record the run
    and write checkpoints and the final model there (``resume``: continue from its last checkpoint; a folder that
    holds another run is refused unless ``overwrite``). Returns the finished Trainer. ``preprocessing`` turns
    ``train_set``'s images into tensors; ``infer_preprocessing`` is what the saved model records for inference
    (default: the same)."""
    run = Path(out) if out else None
    with claim(run, identity(model.graphspec.spec.to_yaml(), recipe), resume=resume, overwrite=overwrite,
               is_main=ctx is None or ctx.is_main):
        return _session(model, recipe, train_set, eval_set, run, resume, preprocessing, infer_preprocessing, console,
                        listeners, ctx, device)


def _session(model, recipe, train_set, eval_set, run, resume, preprocessing, infer_preprocessing, console, listeners,
             ctx, device) -> Trainer:
    from ..model_io import save
    from .distributed import Context
    if not resume:
        model = replace_head(model, recipe.head, console)
        model = adapt_head(model, len(getattr(train_set, "classes", ())), console, recipe.resize_heads)
    infer_preprocessing = infer_preprocessing or preprocessing
    model.graphspec.preprocessing = infer_preprocessing
    if ctx is None:
        from ..devices import resolve
        ctx = Context(device=resolve(device or "cpu"))
    listeners = [*listeners, *recipe_listeners(recipe, run, eval_set)]
    trainer = Trainer(model, recipe, train_set, eval_set, run_dir=run, preprocessing=preprocessing, console=console,
                      listeners=listeners, ctx=ctx)
    if run is not None:
        if ctx.is_main:
            _record(run, model, recipe, resume)
        ctx.barrier()
        if resume and not trainer.resume():
            raise GraphspecError(f"no checkpoint to resume from in {run / 'checkpoints'}", location=Location(str(run)))
    if console is not None:
        classes = len(getattr(train_set, "classes", ()))
        console.print(f"training {len(train_set):,} examples" + (f" of {classes:,} classes" if classes else "") + ", "
                      f"{trainer.batches_per_epoch} iterations per epoch, semantics {recipe.semantics}")
    if console is not None and ctx.active:
        console.print(f"distributed: {ctx.world} processes, {recipe.batch_size} examples per global batch")
    trainer.fit()
    if run is not None and ctx.is_main:
        with trainer.writing("the final model"):
            path = save(model, run / "model.safetensors", preprocessing=infer_preprocessing)
        if console is not None:
            console.print(f"wrote {path}")
    return trainer


def _record(run: Path, model, recipe: Recipe, resume: bool) -> None:
    import yaml
    if resume:
        return
    try:
        run.mkdir(parents=True, exist_ok=True)
        (run / "spec.yaml").write_text(model.graphspec.spec.to_yaml())
        (run / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    except OSError as e:
        raise RunWriteError(f"cannot write the run's record into the run folder: {e.strerror or e}; nothing was "
                            "trained", location=Location(str(run))) from e
