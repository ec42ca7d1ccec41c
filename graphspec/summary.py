"""``summary``: a plain data object describing a spec; tables, markdown and JSON are renderings of it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .registry import ParamShape
from .spec.loader import load_spec
from .spec.model import EXAMPLE_LENGTH
from .text import printable

BYTES_PER_VALUE = 4  # float32


@dataclass
class Row:
    name: str
    type: str
    dl4j: str
    kind: str
    inputs: list[str]
    n_in: int | None
    n_out: int | None
    in_inferred: bool  # n_in was derived from the input shapes, not written in the spec
    out_shape: tuple[int, ...]
    params: int  # everything stored, as DL4J counts it (incl. running statistics and centers)
    trainable: int  # trained by gradient
    state: int  # stored but not trained by gradient
    param_shapes: list[ParamShape]
    macs: int | None  # multiply-accumulates per example (None: the type does not say; shown as '?')
    group: str = ""
    frozen: bool = False
    shares: str | None = None  # the vertex whose layer (and parameters, counted there once) this one uses
    batch: float = 1.0  # its batch as a multiple of the network's (stack/unstack vertices change it)
    # variable-length sequences: which dims of out_shape follow T (out_shape is at T = EXAMPLE_LENGTH), and the
    # MACs per time step of a vertex whose work follows T (its ``macs`` are then at EXAMPLE_LENGTH)
    varies: tuple[bool, ...] = ()
    macs_per_step: float | None = None

    @property
    def n_in_out(self) -> str:
        if self.n_in is None and self.n_out is None:
            return "-"
        mark = "*" if self.in_inferred else ""
        return f"{self.n_in}{mark}→{self.n_out}"


@dataclass
class Summary:
    name: str
    batch_size: int
    inputs: dict[str, tuple[int, ...]]
    rows: list[Row]
    outputs: list[str]
    warnings: list[str] = field(default_factory=list)
    input_varies: dict[str, tuple[bool, ...]] = field(default_factory=dict)  # dims that follow T, per input

    @property
    def variable(self) -> bool:
        """Whether the network takes sequences of any length T (shapes and MACs are then given in T)."""
        return any(any(v) for v in self.input_varies.values())

    @property
    def macs_per_step(self) -> float:
        """MACs per example and time step of the vertices whose work follows T (0 for fixed shapes)."""
        return sum(r.macs_per_step for r in self.rows if r.macs_per_step is not None)

    @property
    def macs_fixed(self) -> int:
        """MACs per example of the vertices whose work does not follow T."""
        return sum(r.macs for r in self.rows if r.macs is not None and r.macs_per_step is None)

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows if not r.frozen)

    @property
    def frozen(self) -> int:
        return sum(r.trainable for r in self.rows if r.frozen)

    @property
    def state(self) -> int:
        return sum(r.state for r in self.rows)

    @property
    def total(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int | None:
        """MACs per example, or None when a vertex's type does not know its own (see :attr:`macs_unknown`)."""
        return None if self.macs_unknown else self.macs_known

    @property
    def macs_known(self) -> int:
        return sum(r.macs for r in self.rows if r.macs is not None)

    @property
    def macs_unknown(self) -> list[str]:
        return [r.name for r in self.rows if r.macs is None]

    @property
    def param_bytes(self) -> int:
        return self.total * BYTES_PER_VALUE

    @property
    def activation_bytes(self) -> int:
        """Memory of every vertex output for one forward pass at ``batch_size`` (float32)."""
        per_example = sum(_numel(r.out_shape) * r.batch for r in self.rows)
        return round(per_example * self.batch_size) * BYTES_PER_VALUE

    def totals(self) -> dict:
        return {"total": self.total, "trainable": self.trainable, "frozen": self.frozen, "state": self.state,
                "param_bytes": self.param_bytes, "activation_bytes": self.activation_bytes,
                "macs_per_example": self.macs, "macs": None if self.macs is None else self.macs * self.batch_size,
                "macs_known_per_example": self.macs_known, "macs_unknown": self.macs_unknown,
                "batch_size": self.batch_size, "variable_length": self.variable,
                "example_length": EXAMPLE_LENGTH if self.variable else None,
                "macs_per_step": self.macs_per_step if self.variable else None,
                "macs_fixed": self.macs_fixed if self.variable else None}

    def to_dict(self) -> dict:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["param_shapes"] = {p.name: list(p.shape) for p in r.param_shapes}
            d["out_shape"] = list(r.out_shape)
            d["varies"] = list(r.varies)
            rows.append(d)
        return {"name": self.name, "inputs": {k: list(v) for k, v in self.inputs.items()}, "rows": rows,
                "input_varies": {k: list(v) for k, v in self.input_varies.items()},
                "outputs": self.outputs, "totals": self.totals(), "warnings": self.warnings}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def summarize(spec_or_path, batch_size: int = 1, frozen: set[str] | None = None) -> Summary:
    """Summarise a spec (path, text, dict or Spec) without building it."""
    spec = load_spec(spec_or_path)
    a = spec.analysis
    frozen = frozen or set()
    rows = []
    for name in a.order:
        v = spec.vertices[name]
        entry, inf = v.entry, a.inference[name]
        has_params = bool(entry.param_shapes(v.cfg, inf))
        shapes = [] if v.shares else entry.param_shapes(v.cfg, inf)  # a shared layer's are counted at its owner
        trainable = sum(p.numel for p in shapes if p.trainable)
        total = sum(p.numel for p in shapes)
        given_in = v.params.get("in") is not None or entry.n_in_is_parameter
        macs = entry.macs(v.cfg, inf)
        follows = bool(macs) and any(any(a.varies.get(n, ())) for n in (name, *v.inputs))
        rows.append(Row(name, entry.name, entry.dl4j, entry.kind, list(v.inputs),
                        inf.n_in if has_params else None, inf.n_out if has_params else None,
                        has_params and inf.n_in is not None and not given_in, tuple(inf.out_shape), total,
                        trainable, total - trainable, shapes, macs, "/".join(v.group),
                        name in frozen, v.shares, float(a.batch[name]), a.varies.get(name, ()),
                        macs / EXAMPLE_LENGTH if follows else None))
    return Summary(spec.name, batch_size, {k: tuple(spec.input_shape(k)) for k in spec.inputs}, rows,
                   list(spec.outputs), [str(w) for w in a.warnings], {k: a.varies.get(k, ()) for k in spec.inputs})


# --- renderings ---------------------------------------------------------------------------------------------


def _shape(shape, varies=()) -> str:
    """``[12, 64]``; a dimension that follows a variable length T as ``T``, ``T/2``, ``2T`` (the ratio at the
    example length, rounded: strided layers' exact length is ⌊…⌋ of it)."""
    return "[" + ", ".join(time_dim(d) if i < len(varies) and varies[i] else str(d) for i, d in enumerate(shape)) + "]"


def time_dim(d: int) -> str:
    from fractions import Fraction
    r = Fraction(d, EXAMPLE_LENGTH).limit_denominator(16)
    if r == 1:
        return "T"
    return (f"{r.numerator}" if r.numerator != 1 else "") + "T" + (f"/{r.denominator}" if r.denominator != 1 else "")


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def _trainable_cell(r: Row) -> str:
    if r.shares:
        return f"shares {r.shares}"
    if not r.params:
        return "-"
    if r.frozen:
        return "frozen"
    return "yes" if r.trainable == r.params else f"{r.trainable:,}"


HEADERS = ["vertex (type)", "inputs", "nIn→nOut", "output shape", "params", "trainable", "MACs"]
INPUT_CELLS = ["", "-", None, "0", "-", "0"]  # an input row after its name: inputs, nIn→nOut, shape, ...


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _per_step(m: float) -> str:
    return f"{round(m):,}·T" if abs(m - round(m)) < 1e-9 else f"{m:,.1f}·T"


def _cells(r: Row) -> list[str]:
    return [f"{r.name} ({r.type})", ", ".join(r.inputs), r.n_in_out, _shape(r.out_shape, r.varies),
            f"{r.params:,}" if r.params else "0", _trainable_cell(r),
            _per_step(r.macs_per_step) if r.macs_per_step is not None else _count(r.macs)]


def _input_cells(name: str, shape, varies=()) -> list[str]:
    return [f"{name} (input)"] + [_shape(shape, varies) if c is None else c for c in INPUT_CELLS]


def _macs_total(s: Summary, per: int) -> str:
    if s.variable:
        known = _per_step(s.macs_per_step * per) + (f" + {s.macs_fixed * per:,}" if s.macs_fixed else "")
    else:
        known = f"{s.macs_known * per:,}"
    if not s.macs_unknown:
        return known
    names = ", ".join(s.macs_unknown[:3]) + (f", ... ({len(s.macs_unknown)} in all)" if len(s.macs_unknown) > 3 else "")
    return f"? (at least {known}; unknown for {names})"


def total_lines(s: Summary) -> list[tuple[str, str]]:
    t = s.totals()
    return [
        ("Trained by gradient", f"{t['trainable']:,}"),
        ("Frozen", f"{t['frozen']:,}"),
        ("Other state (BN running statistics, centers)", f"{t['state']:,}"),
        ("Total parameters (as DL4J counts them)", f"{t['total']:,}"),
        ("Parameter memory (float32)", _bytes(t["param_bytes"])),
        (f"Activation memory, batch {s.batch_size} (float32, forward)", _bytes(t["activation_bytes"])),
        ("MACs per example", _macs_total(s, 1)),
        (f"MACs, batch {s.batch_size}", _macs_total(s, s.batch_size)),
    ]


def _markdown_cell(text: str) -> str:
    return printable(text).replace("|", "\\|")


def render_markdown(s: Summary) -> str:
    lines = [f"# {printable(s.name)}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    cells = [_input_cells(k, shape, s.input_varies.get(k, ())) for k, shape in s.inputs.items()]
    for row in cells + [_cells(r) for r in s.rows]:
        lines.append("| " + " | ".join(map(_markdown_cell, row)) + " |")
    lines += ["", "| total | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in total_lines(s)]
    lines += ["", "`*` nIn inferred from the input shapes."] + ([f"T: the sequence length (any); activation memory at "
                                                               f"T = {EXAMPLE_LENGTH}."] if s.variable else [])
    return "\n".join(lines) + "\n"


def render_json(s: Summary) -> str:
    return json.dumps(s.to_dict(), indent=2)


def _plain(cell: str):
    """A table cell as rich plain text: not read as markup (a name like 'net [v2]' or '[red]' prints as written),
    and no control character from a file reaches the terminal."""
    from rich.text import Text
    return Text(printable(cell))


def render_table(s: Summary, console) -> None:
    from rich.table import Table

    table = Table(title=_plain(s.name), show_lines=False, header_style="bold")
    for h in HEADERS:
        table.add_column(h, overflow="fold", no_wrap=h != "inputs",
                         justify="right" if h in ("params", "MACs") else "left")
    for k, shape in s.inputs.items():
        table.add_row(*map(_plain, _input_cells(k, shape, s.input_varies.get(k, ()))))
    for r in s.rows:
        table.add_row(*map(_plain, _cells(r)), style="dim" if r.frozen else None)
    console.print(table)
    totals = Table(show_header=False, box=None)
    totals.add_column(justify="left")
    totals.add_column(justify="right")
    for k, v in total_lines(s):
        totals.add_row(_plain(k), _plain(v))
    console.print(totals)
    console.print("[dim]* nIn inferred from the input shapes[/dim]")
    if s.variable:
        console.print(f"[dim]T: the sequence length (any); activation memory at T = {EXAMPLE_LENGTH}[/dim]")
