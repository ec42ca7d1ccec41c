"""What a vertex type is: its parameter model and its static rules, the base class of every registry entry.

Built-in types (:mod:`graphspec.layers.types`) and plugins subclass :class:`VertexType`; the registry
(:mod:`graphspec.registry`) holds the entries and answers every question about a type by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict, WithJsonSchema

from ..errors import shown
from .activations import ACTIVATIONS
from .weight_init import WEIGHT_INITS

KINDS = ("input", "layer", "vertex")
Shape = tuple[int, ...]  # per example, without the batch dimension: (C, H, W) or (F,)

ActivationName = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]
WeightInitName = Literal[WEIGHT_INITS]  # type: ignore[valid-type]
ConvolutionMode = Literal["same", "truncate", "strict"]


def _pair_of(minimum: int, what: str):
    """Validator of kernel/stride/padding-like values: an int or [height, width], each >= minimum."""
    def check(value: Any) -> tuple[int, int]:
        items = value if isinstance(value, (list, tuple)) else [value, value]
        ok = len(items) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= 1_000_000
                                     for v in items)
        if not ok:
            raise ValueError(f"expected a {what} integer or a list of 2 {what} integers; received {shown(value)}")
        return (items[0], items[1])
    return check


_StrictInt = Annotated[int, Strict()]
Positive = Annotated[int, Strict(), Field(ge=1, le=1_000_000)]
NonNegative = Annotated[int, Strict(), Field(ge=0, le=1_000_000)]
PositivePair = Annotated[tuple[int, int], PlainValidator(_pair_of(1, "positive")),
                         WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1},
                                                   {"type": "array", "items": {"type": "integer", "minimum": 1},
                                                    "minItems": 2, "maxItems": 2}]})]
NonNegativePair = Annotated[tuple[int, int], PlainValidator(_pair_of(0, "non-negative")),
                            WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0},
                                                      {"type": "array", "items": {"type": "integer", "minimum": 0},
                                                       "minItems": 2, "maxItems": 2}]})]
Size = Annotated[int, Strict(), Field(ge=1, le=100_000_000)]


class Params(BaseModel):
    """Base of every type's parameter model: unknown keys are errors, and so are NaN and infinity in every float
    (no parameter means anything by them; an LRN with n: .inf would fail only when run)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, allow_inf_nan=False)


class ShapeError(Exception):
    """Raised by a type's static rules; ``key`` names the offending parameter (for the error location)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass
class Inferred:
    """What a type's static rules derive from its parameters and its input shapes."""

    out_shape: Shape
    n_in: int | None = None
    n_out: int | None = None
    info: dict = field(default_factory=dict)  # e.g. paddings, for the module factory and the summary


@dataclass(frozen=True)
class ParamShape:
    name: str  # the state_dict suffix: 'weight', 'bias', 'running_mean', 'centers', ...
    shape: tuple[int, ...]
    trainable: bool  # trained by gradient (False: running statistics, centers, locked gamma/beta)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class VertexType:
    """Base class of registry entries. Subclasses set the class attributes and override the rules."""

    name: ClassVar[str]
    dl4j: ClassVar[str]  # the DL4J class it reproduces, shown in summaries and accepted as an alias
    kind: ClassVar[str] = "layer"
    Params: ClassVar[type[Params]] = Params
    uses: ClassVar[tuple[str, ...]] = ()  # keys inherited from the spec's `defaults`
    arity: ClassVar[tuple[int, int | None]] = (1, 1)
    doc: ClassVar[str] = ""
    # Which parameters l1/l2 apply to (DL4J: the weights of conv/dense/output layers, never BN or centers),
    # and which l1_bias/l2_bias apply to.
    weight_params: ClassVar[tuple[str, ...]] = ()
    bias_params: ClassVar[tuple[str, ...]] = ()
    # An output layer trained with a loss: training attaches its loss to it, and its rows are predictions (class
    # scores), not features, which `embed` and `verify` warn about.
    loss_head: ClassVar[bool] = False
    # A loss head that also keeps per-class centers of its input (DL4J's center loss): training adds the center
    # term and moves ``module.centers`` by the center rule (the module has ``centers``, ``alpha``, ``lambda_``).
    center_loss: ClassVar[bool] = False
    # A loss head whose class-index targets have one class per position of its output ([N, H, W] for an image
    # output [C, H, W]: a per-pixel loss), not one per example ([N]).
    per_position: ClassVar[bool] = False
    # Its nIn is one of its parameters (an embedding's number of classes), not inferred from its input's shape
    # (the summary marks inferred nIns with `*`).
    n_in_is_parameter: ClassVar[bool] = False
    # Its training-mode output uses the batch's statistics (``module.sync = True`` makes a distributed run
    # compute them over every rank's share: ``sync_batchnorm``).
    batch_statistics: ClassVar[bool] = False
    # Its output's channels/features follow from its inputs' (re-inferred, not a parameter): a width changed by
    # graph surgery (`n_out_replace`) flows through it to the next layer with parameters.
    width_follows_input: ClassVar[bool] = False
    # Its module can compute in place over its only input (``module.set_inplace(producer)``); the compiler lets it
    # when the producer's output may be overwritten (:meth:`output_overwritable`) and nothing else reads it.
    computes_in_place: ClassVar[bool] = False
    # Keys of ``Inferred.info`` that only count work for :meth:`macs` (e.g. time steps), free to follow a
    # variable sequence length; every other key configures the module, which must then not depend on T.
    counts: ClassVar[tuple[str, ...]] = ()
    # It joins its inputs position by position (merge, element-wise): with several sequence inputs its mask is
    # DL4J's OR of their masks, and none if one of them has none (SEMANTICS-SEQUENCES.md §2.1); any other vertex
    # passes on the mask of its first input that carries one.
    merges_masks: ClassVar[bool] = False

    def infer(self, p: Any, in_shapes: list[Shape]) -> Inferred:
        return Inferred(in_shapes[0])

    def param_shapes(self, p: Any, inf: Inferred) -> list[ParamShape]:
        return []

    def macs(self, p: Any, inf: Inferred) -> int | None:
        """Multiply-accumulates per example, or None when unknown (shown as ``?``). Window and element-wise
        operations count one per value they combine (an addition or comparison counts like a multiply-add);
        data movement (concatenation, reshapes, slices) counts 0. See docs/spec.md, 'MACs'."""
        return None

    def batch(self, p: Any, in_batches: list) -> Any:
        """The output's batch as a multiple of the network's (a ``fractions.Fraction``), from the inputs'. Default:
        the inputs' common batch; inputs whose batches differ cannot be combined."""
        if len(set(in_batches)) > 1:
            raise ShapeError("inputs have different batch sizes (" + ", ".join(f"{b}×" for b in in_batches) +
                             " the network's batch, after stack/unstack vertices); they cannot be combined",
                             key="inputs")
        return in_batches[0]

    def output_overwritable(self, p: Any) -> bool:
        """Whether a reader may overwrite this vertex's output in place: true when the backward pass does not
        need the output (a linear layer without activation, batch normalisation)."""
        return False

    def build(self, p: Any, inf: Inferred):
        raise NotImplementedError

    def training_loss(self, p: Any, module, x, target):
        """A loss head's per-example training loss ([N]) of its input ``x`` against ``target``."""
        raise NotImplementedError(f"'{self.name}' is not a loss head")

    def init(self, module, p: Any, inf: Inferred, generator) -> None:
        """Initialise parameters (in place) with the spec's schemes; default: nothing to do."""


#: The built-in types, in definition order; the registry registers them when it is first used.
BUILTINS: list[type[VertexType]] = []


def builtin(cls: type[VertexType]) -> type[VertexType]:
    """Class decorator of the built-in types (:mod:`graphspec.layers.types`)."""
    BUILTINS.append(cls)
    return cls
