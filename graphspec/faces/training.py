"""``graphspec train``: a face folder in LFW layout (or the synthetic faces) -> a training session; the images
themselves, or pairs / triplets drawn from their identities for two- and three-input networks.

The datasets, their preprocessing and cache come from here; the training itself is the framework's
(:func:`graphspec.train.session.run_session`). The command also takes an ``.npz`` of arrays named after any
spec's inputs and outputs, which goes straight to the framework's :class:`graphspec.data.named.NamedArrays`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import GraphspecError, Location
from ..text import markup_safe
from ..train.recipe import Recipe, load_recipe
from ..train.run_folder import claim, identity
from ..train.session import check_listeners, run_session
from ..train.trainer import Trainer, check_training_data

SYNTHETIC = "synthetic"


def resolve_data(data: str | None, recipe: Recipe, cache_dir=None) -> Path:
    """A data folder: the argument, ``synthetic`` (the built-in face set) or the located LFW folder."""
    from .data.locate import locate_lfw
    from .data.synthetic import synthetic_faces
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
    from .data import lfw_dataset
    d = recipe.data
    common = dict(people=checked_people_file(recipe, root), min_images=d.min_images, limit=d.limit, seed=recipe.seed,
                  dl4j=d.dl4j, batch_size=recipe.batch_size, preprocessing=preprocessing, cache_dir=cache_dir, progress=progress)
    if d.eval_fraction <= 0:
        return _drawn(lfw_dataset(root, **common), recipe, recipe.seed), None
    split = dict(train_fraction=1 - d.eval_fraction, split_by=d.eval_by)
    # counted first (the folder's listing and the split, no image decoded): a split that leaves nothing to train on
    check_training_data(lfw_dataset(root, split="train", cache=False, warn=False, **split, **common), recipe)
    train = lfw_dataset(root, split="train", **split, **common)
    test = lfw_dataset(root, split="test", warn=False, **split, **common)
    return _drawn(train, recipe, recipe.seed), _drawn(test, recipe, recipe.seed + 1, held_out=True)


def checked_people_file(recipe: Recipe, root: Path) -> str | None:
    """The recipe's people file (:func:`people_file`), read now. A recipe may name any file, so an error about one
    it names gives the line and column but never quotes the file (a flag's file is the user's own: quoted)."""
    from ..data.errors import DataError
    from .data import read_people
    path = people_file(recipe.data.people, root)
    if path is None:
        return None
    where = recipe.where("data.people")
    try:
        read_people(path)
    except DataError as e:
        at = e.problem.location
        if not where.file or at.line <= 0:  # a flag's file, or not found / unreadable: nothing quoted
            raise
        raise GraphspecError(f"'data.people': {path} is not a people file (line {at.line}, column {at.col} does not "
                             "fit: a count, then 'NAME N' lines; `graphspec dataset DIR --people FILE` says more)",
                             location=where, path=("data", "people")) from None  # never its text, even chained
    return path


def _drawn(faces, recipe: Recipe, seed: int, held_out: bool = False):
    """The images themselves (with a teacher's rows as targets: ``distill``), or pairs / triplets drawn from them
    (``data.pairs``, ``data.triplets``; the held-out part gets a tenth as many)."""
    from .data.pairs import PairData, TripletData
    d = recipe.data
    if recipe.distill is not None:
        return _distilled(faces, recipe.distill, held_out)
    for key, kind in (("pairs", PairData), ("triplets", TripletData)):
        n = getattr(d, key)
        if n:
            try:
                return kind(faces, max(1, n // 10) if held_out else n, seed)
            except ValueError as e:
                raise GraphspecError(f"data.{key}: {e}") from e
    return faces


def _distilled(faces, distill, held_out: bool):
    """``faces`` with the rows of ``distill.targets`` as the targets of ``distill.output``; the images without a row
    (the teacher found no face in them) are reported and left out."""
    import warnings

    from ..data.errors import DataWarning
    from ..data.targets import RowTargets
    data = RowTargets.read(faces, distill.targets, distill.output, normalize=distill.normalize)
    if data.missing:
        part = "held-out" if held_out else "training"
        shown = "; ".join(str(p) for p in data.missing[:5]) + (" ..." if len(data.missing) > 5 else "")
        warnings.warn(DataWarning(f"{len(data.missing)} {part} image(s) have no row in {distill.targets} and are left "
                                  f"out: {shown}"), stacklevel=2)
    return data


RUN_RECORD = "data.yaml"  # beside spec.yaml and recipe.yaml: where the run's images came from


def train(spec_or_model: str | None, *, data: str | None = None, recipe_path: str | None = None,
          out: str | None = None, resume: bool = False, overrides: dict | None = None, cache_dir=None, console=None,
          listeners=(), ctx=None, device: str | None = None, overwrite: bool = False) -> Trainer:
    """Run (or resume) a training run on face data; returns the finished Trainer (``trainer.model`` is the
    trained model).

    A run directory records everything a resumed run needs (the spec, the recipe with every override applied, and
    the data source), so ``resume=True`` needs only ``out``; a spec, recipe, data source or override that
    contradicts the record is refused before any work. The run folder is held (locked) from before any data is read;
    one that holds another run is refused unless ``overwrite`` (:mod:`graphspec.train.run_folder`)."""
    from ..opening import open
    run = Path(out) if out else None
    if resume:
        spec_or_model, recipe, data = _recorded_run(run, spec_or_model, data, recipe_path, overrides)
    else:
        if spec_or_model is None:
            raise GraphspecError("train needs a SPEC (a spec, model file or catalogued model), or --resume with --out "
                                 "RUN_DIR to continue a run")
        recipe = load_recipe(recipe_path, overrides)
    _check_memory(spec_or_model, recipe)
    model = open(spec_or_model, seed=recipe.seed)
    _check_before_work(model, recipe)
    check_listeners(recipe, run, held_out=recipe.data.eval_fraction > 0)
    source = data if data in (None, SYNTHETIC) else str(Path(data).resolve())
    with claim(run, identity(model.graphspec.spec.to_yaml(), recipe, source), resume=resume, overwrite=overwrite,
               is_main=ctx is None or ctx.is_main):
        return _train_on(model, recipe, run, data, resume, cache_dir, console, listeners, ctx, device)


def _train_on(model, recipe: Recipe, run, data, resume: bool, cache_dir, console, listeners, ctx, device) -> Trainer:
    """:func:`train` once its run folder is held: the data, then the session."""
    if data is not None and str(data).endswith(NPZ):
        train_set, eval_set = arrays(data, model, recipe)
        _record(run, resume, ctx, str(Path(data).resolve()))
        if console is not None:
            names = [*train_set.inputs, *train_set.targets, *train_set.masks]
            console.print(f"data: {markup_safe(data)} (arrays by name: {markup_safe(', '.join(names))})")
        return run_session(model, recipe, train_set, eval_set, out=run, resume=resume, console=console,
                           listeners=listeners, ctx=ctx, device=device)
    input_shape = next(iter(model.graphspec.spec.inputs.values())).shape
    cache_prep, infer_prep = load_preprocessing(recipe, input_shape)
    root = resolve_data(data, recipe, cache_dir)
    if console is not None:
        console.print(f"data: {root} ({cache_prep.describe()})")
    train_set, eval_set = datasets(root, recipe, cache_prep, cache_dir)
    _record(run, resume, ctx, SYNTHETIC if data == SYNTHETIC else str(Path(root).resolve()))
    return run_session(model, recipe, train_set, eval_set, out=run, resume=resume, preprocessing=cache_prep,
                       infer_preprocessing=infer_prep, console=console, listeners=listeners, ctx=ctx,
                       device=device)


NPZ = ".npz"  # arrays named after the network's inputs and outputs, for any spec (graphspec.data.named)


def _check_memory(spec_or_model, recipe: Recipe) -> None:
    """What training at the recipe's batch keeps (graphspec.budget), against the budget, before anything exists."""
    from ..budget import check
    from ..opening import open_spec
    spec, frozen = open_spec(spec_or_model)
    check(spec, batch_size=recipe.batch_size, training=True, frozen=frozen)


def _check_before_work(model, recipe: Recipe) -> None:
    """What the recipe asks of the network, checked before any data is read (LFW's cache takes minutes)."""
    from ..train.steps import heads_of
    if recipe.distill is not None:
        _check_distill(model, recipe)
    heads_of(model, recipe.losses)  # every loss names an output, fits it, and something is trained
    if recipe.data.eval_by == "person" and (recipe.data.pairs or recipe.data.triplets):
        raise GraphspecError("data.eval_by 'person' evaluates single images of the people set aside; drop "
                             "data.pairs / data.triplets or evaluate by image")
    inputs = list(model.graphspec.spec.inputs)
    for key, count in (("pairs", 2), ("triplets", 3)):
        if getattr(recipe.data, key) and len(inputs) != count:
            raise GraphspecError(f"data.{key} feeds a network with {count} image inputs; "
                                 f"'{model.graphspec.spec.name}' has {len(inputs)} ({', '.join(inputs)})")


def _check_distill(model, recipe: Recipe) -> None:
    """The distilled output exists and has a loss, the data are single images, and the targets file reads."""
    from ..data.targets import read_rows
    from ..errors import did_you_mean
    spec, distill = model.graphspec.spec, recipe.distill
    if distill.output not in spec.outputs:
        raise GraphspecError(f"distill.output '{distill.output}' is not an output of '{spec.name}'"
                             f"{did_you_mean(distill.output, spec.outputs)}; outputs: {', '.join(spec.outputs)}")
    given = recipe.losses.get(distill.output)
    if not spec.vertices[distill.output].entry.loss_head and (given is None or not given.loss):
        raise GraphspecError(f"distill.output '{distill.output}' needs a loss toward the targets: add losses: "
                             f"{{{distill.output}: {{loss: l2}}}} (or mse, l1) to the recipe")
    if recipe.data.pairs or recipe.data.triplets:
        raise GraphspecError("distill trains on single images with a target each; drop data.pairs / data.triplets")
    rows, _ = read_rows(distill.targets)
    width = model.graphspec.analysis.shapes[distill.output]
    if tuple(width) != (rows.shape[1],):
        raise GraphspecError(f"distill.targets rows have {rows.shape[1]} values; '{distill.output}' gives "
                             f"{list(width)}", location=Location(distill.targets))


def arrays(path, model, recipe: Recipe):
    """The training and held-out parts (``data.eval_fraction``) of an ``.npz`` file for ``model``."""
    from ..data.named import NamedArrays
    if recipe.data.eval_by == "person":
        raise GraphspecError("data.eval_by 'person' sets whole people aside in a face folder; an .npz file is split "
                             "by example", location=Location(str(path)))
    spec = model.graphspec.spec
    analysis = model.graphspec.analysis
    data = NamedArrays.from_npz(path, {k: analysis.pattern(k) for k in spec.inputs},
                                {k: analysis.pattern(k) for k in spec.outputs})
    return data.split(recipe.data.eval_fraction, recipe.seed)


def _record(run: Path | None, resume: bool, ctx, source: str) -> None:
    if run is not None and not resume and (ctx is None or ctx.is_main):
        run.mkdir(parents=True, exist_ok=True)
        (run / RUN_RECORD).write_text(yaml.safe_dump({"data": source}))


def _recorded_run(run: Path | None, spec, data, recipe_path, overrides) -> tuple[str, Recipe, str | None]:
    """(spec, recipe, data) of the run recorded in ``run``; refuses anything given that contradicts the record."""
    where = Location(str(run or "<no run directory>"))
    if run is None or not (run / "spec.yaml").is_file() or not (run / "recipe.yaml").is_file():
        raise GraphspecError("--resume needs --out RUN_DIR of an earlier run (with spec.yaml, recipe.yaml and "
                             "checkpoints)", location=where)
    if spec is not None and Path(spec).resolve() != (run / "spec.yaml").resolve():
        raise GraphspecError(f"--resume continues the run's own spec ({run / 'spec.yaml'}); drop '{spec}' or start "
                             "a new run with another --out", location=where)
    if recipe_path is not None and Path(recipe_path).resolve() != (run / "recipe.yaml").resolve():
        raise GraphspecError(f"--resume continues the run's own recipe ({run / 'recipe.yaml'}); drop --recipe "
                             "or start a new run", location=where)
    recorded = load_recipe(str(run / "recipe.yaml"))
    changed = load_recipe(str(run / "recipe.yaml"), overrides)
    if changed != recorded:
        before, after = recorded.model_dump(), changed.model_dump()
        keys = [k for k, v in (overrides or {}).items() if v is not None and _get(after, k) != _get(before, k)]
        shown = ", ".join(f"{k} {_get(after, k)!r} (the run has {_get(before, k)!r})" for k in keys)
        raise GraphspecError(f"--resume: {shown} contradicts the recorded run; drop the flag or start a new run",
                             location=where)
    record = run / RUN_RECORD
    saved = (yaml.safe_load(record.read_text()) or {}).get("data") if record.is_file() else None
    if data is not None and saved is not None and not _same_data(data, saved):
        raise GraphspecError(f"--resume: --data {data} contradicts the recorded run (trained on {saved}); drop "
                             "--data or start a new run", location=where)
    return str(run / "spec.yaml"), recorded, data if data is not None else saved


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _same_data(given: str, saved: str) -> bool:
    if SYNTHETIC in (given, saved):
        return given == saved
    return Path(given).resolve() == Path(saved).resolve()
