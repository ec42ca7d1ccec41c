"""A training recipe: everything about a run that is not the network (data selection, preprocessing,
augmentation, optimizer, schedule, evaluation split). YAML on disk; command-line flags override it."""
from __future__ import annotations

import math
import os
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ..data.preprocessing import MAX_IMAGE_SIDE
from ..errors import GraphspecError, Location, SpecError

#: Seeds go to torch.manual_seed and numpy's generators, which take 64-bit values (the held-out part uses seed + 1,
#: which still fits an unsigned one); below 2**63 a seed is also a signed 64-bit integer, DL4J's long.
SEED_LIMIT = 2**63
#: data.pairs / data.triplets are drawn one at a time (each from its own seeded generator, ~20 µs) when training
#: starts: a million is about 20 s of drawing and ~75x LFW's 13,233 images; a larger count only hangs the start.
MAX_DRAWN = 1_000_000

# An Adam/AdamW beta: the decay rate of a moving average, in [0, 1) (torch refuses anything else).
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Model(BaseModel):
    # allow_inf_nan: NaN and infinity are refused in every float field, with its key path and line
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataRecipe(_Model):
    people: Optional[str] = None  # an official people*.txt file restricting the identities
    min_images: int = Field(1, ge=1)  # per person
    limit: Optional[int] = Field(None, ge=1)  # at most this many images
    dl4j: bool = False  # DL4J LFWDataSetIterator selection: one random image per person, fixed order
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # held out for per-epoch evaluation
    # "image": a fraction of each person's images, evaluated as the heads' own metrics (accuracy, loss, ...);
    # "person": whole people set aside, evaluated as pair verification of the features each loss reads
    # (verification_accuracy, verification_auc, eer): what a face model is for, on identities it never saw
    eval_by: Literal["image", "person"] = "image"
    shuffle: Optional[bool] = None  # default: False in dl4j mode (DL4J's fixed order), True otherwise
    # Batches of batch_size/k classes with k examples each (FaceNet's P·K batches, for the triplet loss).
    per_class: Optional[int] = Field(None, ge=2)
    # Train on this many pairs of images (same person / different people, balanced) for two-input networks such as
    # specs/siamese-nn4small2.yaml; the held-out part (eval_fraction) gets a tenth as many.
    pairs: Optional[int] = Field(None, ge=1, le=MAX_DRAWN)
    # Train on this many (anchor, positive, negative) triplets of images for three-input networks.
    triplets: Optional[int] = Field(None, ge=1, le=MAX_DRAWN)


class AugmentationRecipe(_Model):
    """Training-time augmentation settings; :meth:`pipeline` turns them into the data layer's Augmentation."""

    # decode to this size, then random-crop to the input size; bounded as every preprocessed image is
    load_size: Optional[int] = Field(None, ge=1, le=MAX_IMAGE_SIDE)
    flip: bool = False  # random horizontal flip
    rotate: float = Field(0.0, ge=0.0, le=180.0)  # random rotation, uniform in ±rotate degrees
    zoom: tuple[float, float] = (1.0, 1.0)  # random zoom factor range (> 1 magnifies), e.g. [0.9, 1.1]
    brightness: float = Field(0.0, ge=0.0, lt=1.0)  # multiply by 1 + U(-b, b)
    contrast: float = Field(0.0, ge=0.0, lt=1.0)  # scale the distance from the image's mean by 1 + U(-c, c)

    @field_validator("zoom")
    @classmethod
    def _zoom(cls, zoom):
        lo, hi = zoom
        if not 0 < lo <= hi:
            raise ValueError(f"zoom must be [low, high] with 0 < low <= high; received [{lo:g}, {hi:g}]")
        return zoom

    def pipeline(self, size: tuple[int, int] | None, seed: int):
        """The :class:`graphspec.data.Augmentation` of these settings, cropping at random to ``size`` (the
        network's input; images decoded at ``load_size`` are larger)."""
        from ..data.augment import Augmentation, Jitter
        return Augmentation(size=size, flip=0.5 if self.flip else 0.0, seed=seed,
                            jitter=Jitter(self.rotate, tuple(self.zoom), self.brightness, self.contrast))


class OutputLoss(_Model):
    """What training does with one output: its loss's weight, and for an output that has no loss in the spec, a
    loss of the `loss` layer (e.g. ``{loss: triplet, margin: 0.2}`` on embeddings)."""

    weight: float = Field(1.0, ge=0.0)
    loss: Optional[str] = None  # checked against the `loss` layer's losses when training starts
    margin: Optional[float] = Field(None, gt=0.0)
    activation: Optional[str] = None
    mining: Optional[str] = None


class DistillRecipe(_Model):
    """Knowledge distillation: ``output`` is trained toward another model's rows for the same images (a teacher's
    embeddings), with the loss the recipe's ``losses`` give that output (e.g. ``{loss: l2}``)."""

    targets: str  # NAME.npy and NAME.paths.txt, as `graphspec embed TEACHER IMAGES -o NAME.npy` writes them
    output: str  # the output of the network trained toward them
    normalize: bool = True  # scale each target row to unit length (for an L2-normalised output)


class OptimizerRecipe(_Model):
    """`pytorch` semantics only; `dl4j` uses the spec's per-vertex updaters."""

    type: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = True
    weight_decay: Optional[float] = Field(None, ge=0)  # default: the spec's l2


class Schedule(_Model):
    type: Literal["constant", "cosine", "step"] = "constant"
    # "iterations": progress counts iterations (reproducible); "time": progress is the elapsed fraction of
    # `max_minutes` (a time-budgeted run anneals fully whatever the machine's speed; not bit-reproducible).
    clock: Literal["iterations", "time"] = "iterations"
    warmup_epochs: float = Field(0.0, ge=0)
    step_epochs: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0)  # the step schedule's factor
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class Recipe(_Model):
    semantics: Literal["dl4j", "pytorch"] = "dl4j"
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(48, ge=1)
    seed: int = Field(123, ge=0, lt=SEED_LIMIT)
    data: DataRecipe = DataRecipe()
    preprocessing: Optional[dict[str, Any]] = None  # graphspec.data.Preprocessing fields; default: DL4J's
    augmentation: AugmentationRecipe = AugmentationRecipe()
    optimizer: OptimizerRecipe = OptimizerRecipe()
    schedule: Schedule = Schedule()
    clip_grad_norm: Optional[float] = Field(None, gt=0)
    # Truncated backpropagation through time (DL4J's tBPTTLength): sequences are trained in parts of this many
    # steps, each one update, the recurrent state carried (detached) from part to part. None: whole sequences.
    tbptt_length: Optional[int] = Field(None, ge=1)
    # Replace parameters of the spec's output layers for this run, e.g. {head: cosine, scale: 24, margin: 0.2,
    # loss: mcxent, bias: false}: a spec stays the tutorial's network while a recipe trains it differently.
    head: Optional[dict[str, Any]] = None
    # Per output: a loss weight, or a loss for an output without one ({embeddings: {loss: triplet}}).
    losses: dict[str, OutputLoss] = {}
    # Targets of one output read from a file of rows by image (a teacher's embeddings): knowledge distillation.
    distill: Optional[DistillRecipe] = None
    # Output layers to give as many classes as the data has. None: the one output layer of a single-head network
    # (the tutorial's 5,749 -> the data's people); a network with several heads is never resized unasked.
    resize_heads: Optional[list[str]] = None
    # NHWC memory format: +20-25% for convolutions on CPUs, the same numbers within rounding. None (the default):
    # on when the network's input is an image (rank-3 input shape), off otherwise.
    channels_last: Optional[bool] = None
    # "bf16": the forward pass under bfloat16 autocast (weights, gradients, optimizer state, BN statistics and
    # centers stay float32). ~25% faster training on CPUs with AVX512-BF16; a slower emulation elsewhere.
    # "fp16": float16 autocast with a gradient scaler, on CUDA only (pytorch semantics).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    sync_batchnorm: bool = False  # distributed runs: batch statistics over all ranks (else per rank)
    max_minutes: Optional[float] = Field(None, gt=0)  # stop (with a checkpoint) when training time runs out
    # Experiment control (DL4J's EarlyStoppingConfiguration, Keras's ModelCheckpoint and EarlyStopping), after each
    # epoch's evaluation: keep_best names a metric (accuracy, loss, mse, ..., or score: the epoch's mean training
    # score) and writes best.safetensors whenever it improves; early_stop ends the run after that many evaluations
    # without improvement of early_stop_metric (default: keep_best's metric, else score), by more than min_delta.
    keep_best: Optional[str] = Field(None, min_length=1)
    early_stop: Optional[int] = Field(None, ge=1)
    early_stop_metric: Optional[str] = Field(None, min_length=1)
    min_delta: float = Field(0.0, ge=0)
    log: list[Literal["csv", "tensorboard"]] = []  # loggers beside metrics.jsonl in the run directory
    print_every: int = Field(1, ge=1)  # ScoreIterationListener frequency
    # Checkpoints kept in the run directory: a resume falls back to the previous one when the latest is unreadable
    # (keep_checkpoints: 1 keeps no fallback).
    keep_checkpoints: int = Field(3, ge=1)
    # The recipe file as parsed (key positions), so errors found after loading point at the recipe's line.
    _source: Any = PrivateAttr(None)

    @field_validator("preprocessing")
    @classmethod
    def _preprocessing(cls, block):
        """Read as graphspec.data.Preprocessing reads it, now: its errors at their key paths under the block."""
        if block is not None:
            from ..data.preprocessing import Preprocessing
            _refuse_non_finite(block)
            Preprocessing.model_validate(block)
        return block

    @field_validator("head")
    @classmethod
    def _head(cls, block):
        """The head's values become layer parameters: no NaN or infinity (the spec checks the rest)."""
        if block is not None:
            _refuse_non_finite(block)
        return block

    def where(self, key: str) -> Location:
        """Where the dotted ``key`` (``data.eval_fraction``) is set: its recipe line, or no location when it is a
        default, a command-line flag or a recipe built in Python."""
        return self._source.loc(tuple(key.split("."))) if self._source is not None else Location()

    def __eq__(self, other) -> bool:  # what a recipe says, not where it was read from
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = _Model.__hash__


def _refuse_non_finite(value: Any, path: tuple = ()) -> None:
    """A pydantic error at the key path of the first NaN or infinity in a free-form block (``head``,
    ``preprocessing``), as the typed fields give one."""
    if isinstance(value, float) and not math.isfinite(value):
        from pydantic_core import InitErrorDetails
        raise ValidationError.from_exception_data("Recipe", [InitErrorDetails(type="finite_number", loc=path,
                                                                              input=value)])
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) \
        else ()
    for key, item in items:
        _refuse_non_finite(item, (*path, key))


def load_recipe(path: "str | os.PathLike | None", overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a recipe file (or the defaults) and apply ``overrides`` (dotted keys allowed: ``data.limit``)."""
    from ..spec.validate import problems
    from ..spec.yaml_source import Source, load_yaml
    src = load_yaml(path, "recipe") if path else Source({}, "")  # no file: errors are about the flags
    if src.data is not None and not isinstance(src.data, dict):
        raise GraphspecError(f"expected a recipe: a mapping of settings (epochs, batch_size, optimizer, ...); "
                             f"received {type(src.data).__name__}", location=src.loc(()))
    data = src.data if src.data is not None else {}  # an empty recipe: every default
    for key, value in (overrides or {}).items():
        if value is not None:
            _override(data, key.split("."), value)
            src.positions[tuple(key.split("."))] = Location()  # a flag's value: not at a line of the recipe
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise SpecError(problems(e, src, (), Recipe)) from None
    recipe._source = src
    return recipe


def _override(data: dict, path: list[str], value: Any) -> None:
    """Set ``data[a][b]... = value``; a section that is not a mapping is left for validation to report."""
    *parents, leaf = path
    for key in parents:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            return
    data[leaf] = value
