"""``graphspec train``: data + spec + recipe -> a run directory.

RUN/spec.yaml and RUN/recipe.yaml record what was trained (so ``--resume`` rebuilds the same run),
RUN/metrics.jsonl the score and evaluation lines, RUN/checkpoints/ the last k checkpoints and RUN/model.safetensors
the final model (with its preprocessing) that ``snip``, ``embed``, ``verify`` and ``summary`` accept.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GraphspecError, Location
from .recipe import Recipe, load_recipe
from .trainer import Trainer

SYNTHETIC = "synthetic"


def resolve_data(data: str | None, recipe: Recipe, cache_dir=None) -> Path:
    """A data folder: the argument, ``synthetic`` (the built-in face set) or the located LFW folder."""
    from ..data._paths import locate_lfw
    from ..data.synthetic import synthetic_faces
    if data == SYNTHETIC or (data is None and locate_lfw() is None):
        return synthetic_faces(identities=20, images=24, seed=0, cache_dir=cache_dir)
    if data is None:
        root = locate_lfw()
        deep = root / "lfw-deepfunneled"
        return deep if deep.is_dir() else root
    return Path(data)


def load_preprocessing(recipe: Recipe, input_shape) -> tuple[Any, Any]:
    """(preprocessing of the cache, preprocessing recorded for inference).

    With ``augmentation.load_size`` the cache holds larger images that training crops at random; inference
    uses the same framing through a proportionally tighter centre crop.
    """
    from ..data.preprocessing import Preprocessing
    base = Preprocessing(**(recipe.preprocessing or {}))
    _, h, w = input_shape
    infer = base.model_copy(update={"size": (h, w)})
    load = recipe.augmentation.load_size
    if not load:
        return infer, infer
    if load < max(h, w):
        raise GraphspecError(f"augmentation.load_size {load} is smaller than the network input {h}x{w}")
    cache = base.model_copy(update={"size": (load, load)})
    return cache, infer.model_copy(update={"crop": base.crop * h / load})


def people_file(people: str | None, root: Path) -> str | None:
    """A people file as given, or found next to the image folder (``peopleDevTrain.txt`` sits beside
    ``lfw-deepfunneled/``), so recipes need not know where LFW lives on each machine."""
    if not people or Path(people).is_file() or Path(people).is_absolute():
        return people
    for base in (root, root.parent):
        if (base / people).is_file():
            return str(base / people)
    return people


def datasets(root: Path, recipe: Recipe, preprocessing, cache_dir=None, progress=None):
    from ..data import lfw_dataset
    d = recipe.data
    common = dict(people=people_file(d.people, root), min_images=d.min_images, limit=d.limit, seed=recipe.seed, dl4j=d.dl4j,
                  batch_size=recipe.batch_size, preprocessing=preprocessing, cache_dir=cache_dir, progress=progress)
    if d.eval_fraction <= 0:
        return lfw_dataset(root, **common), None
    train = lfw_dataset(root, split="train", train_fraction=1 - d.eval_fraction, **common)
    test = lfw_dataset(root, split="test", train_fraction=1 - d.eval_fraction, warn=False, **common)
    return train, test


def replace_head(model, head: dict | None, console) -> Any:
    """Apply the recipe's ``head`` settings to every output layer (graph surgery: re-initialised)."""
    if not head:
        return model
    from ..surgery import GraphBuilder
    from .steps import heads_of
    builder = GraphBuilder(model)
    for h in heads_of(model):
        body = {k: v for k, v in h.vertex.to_dict().items() if k not in ("inputs", "group")}
        body.update(head)
        builder.remove_vertex_keep_connections(h.name).add_layer(h.name, body, *h.vertex.inputs)
        if console is not None:
            console.print(f"{h.name}: " + ", ".join(f"{k} {v}" for k, v in head.items()) + " (from the recipe)")
    return builder.build()


def adapt_head(model, n_classes: int, console) -> Any:
    """Give the output layers as many classes as the data has (the tutorial's 5,749 is LFW's people count)."""
    from ..surgery import GraphBuilder
    from .steps import heads_of
    heads = [h for h in heads_of(model) if h.module.weight.shape[0] != n_classes]
    if not heads:
        return model
    builder = GraphBuilder(model)
    for h in heads:
        if console is not None:
            console.print(f"{h.name}: out {h.module.weight.shape[0]} -> {n_classes} (the number of people in the "
                          "training data)")
        builder.n_out_replace(h.name, n_classes)
    return builder.build()


def train(spec_or_model: str, *, data: str | None = None, recipe_path: str | None = None, out: str | None = None,
          resume: bool = False, overrides: dict | None = None, cache_dir=None, console=None,
          listeners=(), ctx=None) -> Trainer:
    """Run (or resume) a training run; returns the finished Trainer (``trainer.model`` is the trained model)."""
    from ..model_io import save
    run = Path(out) if out else None
    if resume:
        if run is None or not (run / "spec.yaml").is_file():
            raise GraphspecError("--resume needs --out RUN_DIR of an earlier run (with spec.yaml and checkpoints)",
                                 location=Location(str(run or "<no run dir>")))
        spec_or_model = str(run / "spec.yaml")
        recipe_path = str(run / "recipe.yaml")
    recipe = load_recipe(recipe_path, overrides)
    model = _initial_model(spec_or_model, recipe)
    input_shape = next(iter(model.graphspec.spec.inputs.values())).shape
    cache_prep, infer_prep = load_preprocessing(recipe, input_shape)
    root = resolve_data(data, recipe, cache_dir)
    if console is not None:
        console.print(f"data: {root} ({cache_prep.describe()})")
    train_set, eval_set = datasets(root, recipe, cache_prep, cache_dir)
    if not resume:
        model = adapt_head(replace_head(model, recipe.head, console), len(train_set.classes), console)
    model.graphspec.preprocessing = infer_prep
    from .distributed import Context
    ctx = ctx or Context()
    trainer = Trainer(model, recipe, train_set, eval_set, run_dir=run, preprocessing=cache_prep, console=console,
                      listeners=listeners, ctx=ctx)
    if run is not None:
        if ctx.is_main:
            _record(run, model, recipe, resume)
        ctx.barrier()
        if resume and not trainer.resume():
            raise GraphspecError(f"no checkpoint to resume from in {run / 'checkpoints'}", location=Location(str(run)))
    if console is not None:
        console.print(f"training {len(train_set):,} images of {len(train_set.classes):,} people, "
                      f"{trainer.batches_per_epoch} iterations per epoch, semantics {recipe.semantics}")
    if console is not None and ctx.active:
        console.print(f"distributed: {ctx.world} processes, {recipe.batch_size} examples per global batch")
    trainer.fit()
    if run is not None and ctx.is_main:
        path = save(model, run / "model.safetensors", preprocessing=infer_prep)
        if console is not None:
            console.print(f"wrote {path}")
    return trainer


def _initial_model(spec_or_model: str, recipe: Recipe):
    from ..cli import load_model_or_spec
    return load_model_or_spec(spec_or_model, seed=recipe.seed)


def _record(run: Path, model, recipe: Recipe, resume: bool) -> None:
    import yaml
    run.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run / "spec.yaml").write_text(model.graphspec.spec.to_yaml())
        (run / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
