"""The spec language's document model (version 1) and the in-memory :class:`Spec`.

The top level is validated with pydantic; each vertex is validated by its registry entry's parameter model
after block expansion, so that errors can name the vertex and its exact key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import Location
from ..registry import ActivationName, ConvolutionMode, WeightInitName, lookup
from .yaml_source import Source

from .versions import CURRENT as SPEC_VERSION  # noqa: E402  (one source of truth: spec/versions.py)


class _Strict(BaseModel):
    """Unknown keys are errors, and so are NaN and infinity in every float (a learning rate of .inf or an l2 of
    .nan would only show as a broken run)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, allow_inf_nan=False)


class Updater(_Strict):
    """An optimizer (DL4J 'updater'). Which fields apply depends on `type`; training validates the combination."""

    type: Literal["sgd", "adam", "adamw", "nesterovs", "rmsprop", "adagrad", "adadelta", "noop"] = "sgd"
    lr: float = Field(0.1, ge=0.0)
    beta1: Optional[float] = None
    beta2: Optional[float] = None
    eps: Optional[float] = None
    momentum: Optional[float] = None
    rho: Optional[float] = None
    weight_decay: Optional[float] = None


GradientNormalization = Literal["none", "renormalize_l2_per_layer", "renormalize_l2_per_param_type",
                                "clip_l2_per_layer", "clip_l2_per_param_type", "clip_element_wise_absolute_value"]

TRAIN_KEYS = ("l1", "l2", "l1_bias", "l2_bias", "updater", "gradient_normalization",
              "gradient_normalization_threshold")


class TrainConfig(_Strict):
    """Per-layer training settings: in `defaults` for every vertex, overridable on each vertex."""

    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)
    l1_bias: float = Field(0.0, ge=0.0)
    l2_bias: float = Field(0.0, ge=0.0)
    updater: Updater = Updater()
    gradient_normalization: GradientNormalization = "none"
    gradient_normalization_threshold: float = Field(1.0, gt=0.0)


class Defaults(TrainConfig):
    """Like DL4J's ``NeuralNetConfiguration.Builder``; its values are DL4J 0.9.x's builder defaults."""

    activation: ActivationName = "sigmoid"
    weight_init: WeightInitName = "xavier"
    bias_init: float = 0.0
    convolution_mode: ConvolutionMode = "truncate"


class ConvolutionalInput(_Strict):
    type: Literal["convolutional"]
    channels: int = Field(ge=1, le=1_000_000)
    height: int = Field(ge=1, le=1_000_000)
    width: int = Field(ge=1, le=1_000_000)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)


class FeedForwardInput(_Strict):
    type: Literal["feed_forward"]
    size: int = Field(ge=1, le=100_000_000)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,)


# The length T at which the shapes of a variable-length sequence input are checked (and examples are drawn, e.g.
# for ``forward`` and ONNX export); the analysis checks them again at T + 1 to find what depends on T.
EXAMPLE_LENGTH = 64


class RecurrentInput(_Strict):
    """A sequence: ``size`` features at each of ``length`` time steps, per example ``[size, length]`` (DL4J's
    layout, time last). Without ``length`` the network takes sequences of any length T (``[size, T]``)."""

    type: Literal["recurrent"]
    size: int = Field(ge=1, le=100_000_000)
    length: Optional[int] = Field(None, ge=1, le=100_000_000)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size, self.length or EXAMPLE_LENGTH)


InputDef = Annotated[Union[ConvolutionalInput, FeedForwardInput, RecurrentInput], Field(discriminator="type")]


class BlockDef(_Strict):
    """A reusable parametric sub-graph; see docs/spec.md 'Blocks'."""

    doc: Optional[str] = None
    params: dict[str, Any] = {}
    require: list[dict[str, str]] = []
    vertices: dict[str, Any] = Field(min_length=1)
    output: str = "$name"


class Document(_Strict):
    version: int  # checked by the loader; older versions are upgraded before validation (spec/versions.py)
    name: str = Field(min_length=1, max_length=200)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
    description: Optional[str] = None
    defaults: Defaults = Defaults()
    inputs: dict[str, InputDef] = Field(min_length=1)
    blocks: dict[str, BlockDef] = {}
    vertices: dict[str, Any] = Field(min_length=1)  # each vertex is checked by the loader, which names it
    outputs: list[str] = Field(min_length=1)


def _plain(value: Any) -> Any:
    """YAML-native values: tuples (from templates) become lists, so that a round trip compares equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class Vertex:
    """One expanded vertex: what the user wrote (``params``/``train``, for round trips) and its validated config."""

    name: str
    type: str
    inputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    group: tuple[str, ...] = ()
    path: tuple = ()  # key path of its definition in the source, for error positions
    origin: str = ""  # e.g. "from block 'inception' used at line 12"
    cfg: Any = None  # the type's validated Params, defaults filled in
    training: TrainConfig | None = None
    # The vertex whose layer (type, parameters and weights) this one applies to its own inputs: one set of
    # weights used at several places (Keras's "call the same layer twice"). None: the vertex owns its layer.
    shares: str | None = None

    @property
    def entry(self):
        return lookup(self.type)

    @property
    def module(self) -> str:
        """The name of the module that computes this vertex: its own, or the one it shares."""
        return self.shares or self.name

    def to_dict(self) -> dict[str, Any]:
        if self.shares:
            d: dict[str, Any] = {"shares": self.shares, "inputs": list(self.inputs)}
        else:
            d = {"type": self.type, "inputs": list(self.inputs)}
            d.update({k: _plain(v) for k, v in self.params.items() if v is not None})  # None: "the default"
            d.update({k: _plain(v) for k, v in self.train.items()})
        if self.group:
            d["group"] = "/".join(self.group)
        return d


@dataclass
class Spec:
    """A validated, block-expanded spec. Build it with :func:`graphspec.load_spec`."""

    version: int
    name: str
    seed: int | None
    defaults: Defaults
    inputs: dict[str, Any]
    vertices: dict[str, Vertex]
    outputs: list[str]
    description: str | None = None
    source: Source | None = field(default=None, repr=False, compare=False)
    # The graph analysis (order, shapes, graph queries: graphspec.graph.Analysis), set when the loader checks the
    # graph (load_spec's default); None for a spec loaded with check_graph=False.
    analysis: Any = field(default=None, repr=False, compare=False)

    @property
    def file(self) -> str:
        return self.source.file if self.source else "<spec>"

    def loc(self, path: tuple = ()) -> Location:
        return self.source.loc(path) if self.source else Location(self.file)

    def input_shape(self, name: str, length: int | None = None) -> tuple[int, ...]:
        """Input ``name``'s shape per example; a variable-length sequence's at ``length`` steps (default
        EXAMPLE_LENGTH)."""
        shape = self.inputs[name].shape
        return shape[:-1] + (length,) if length is not None and self.is_variable(name) else shape

    def is_variable(self, name: str) -> bool:
        """Whether input ``name`` is a sequence of any length (a recurrent input without ``length``)."""
        i = self.inputs[name]
        return isinstance(i, RecurrentInput) and i.length is None

    def uses(self, name: str) -> list[str]:
        """Every vertex that computes with ``name``'s module: its owner first, then the vertices sharing it."""
        owner = self.vertices[name].module
        return [owner] + [n for n, v in self.vertices.items() if v.shares == owner]

    def to_dict(self) -> dict[str, Any]:
        """The flat (block-expanded) document; loading it gives an equal spec."""
        d: dict[str, Any] = {"version": self.version, "name": self.name}
        if self.seed is not None:
            d["seed"] = self.seed
        if self.description:
            d["description"] = self.description
        d["defaults"] = self.defaults.model_dump(mode="json", exclude_defaults=True)
        d["inputs"] = {k: v.model_dump(mode="json") for k, v in self.inputs.items()}
        d["vertices"] = {name: v.to_dict() for name, v in self.vertices.items()}
        d["outputs"] = list(self.outputs)
        return d

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    def __eq__(self, other) -> bool:
        return isinstance(other, Spec) and self.to_dict() == other.to_dict()
