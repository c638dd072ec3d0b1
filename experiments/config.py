"""The experiment file as validated data (pydantic models), and its expansion into points.

Every quantity is written with a unit (see :mod:`experiments.units`) and stored in base units:
seconds, bytes, bytes per second. Unknown keys are errors. :func:`load_experiment` reads a YAML
file and returns an :class:`Experiment` or raises :class:`ConfigError`, whose message is one
line that names the field, e.g. ``topology.nic_bandwidth: "400Gbs" is not a bandwidth (try
400Gbps or 50GB/s)``.

A point is the experiment with one value of every swept parameter applied; the sweep is the
grid (cartesian product) of the ``sweep:`` lists, in file order, the last key varying fastest.
"""

from __future__ import annotations

import copy
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from experiments.units import UnitError, parse_bandwidth, parse_size, parse_time
from simulator.transport import parse_transport
from topologies.leaf_spine import (
    DEFAULT_LINK_LATENCY,
    DEFAULT_LL128_MESSAGE_LATENCY,
    DEFAULT_LL128_NVLINK_MESSAGE_LATENCY,
    DEFAULT_LL128_SHARE,
    DEFAULT_LL_MESSAGE_LATENCY,
    DEFAULT_LL_NVLINK_MESSAGE_LATENCY,
    DEFAULT_LL_SHARE,
    DEFAULT_MESSAGE_LATENCY,
    DEFAULT_NVLINK_BANDWIDTH,
    DEFAULT_NVLINK_MESSAGE_LATENCY,
    GPU_KINDS,
    LeafSpine,
    TopologyError,
    validate,
)
from workloads.collectives import OPS, communicator
from workloads.nccl import ALGORITHMS as NCCL_ALGORITHMS
from workloads.nccl import AlgorithmError, check_algorithm

OWN_ALGORITHMS = {"all_reduce": ("hierarchical", "pipelined")}
"""moesim's own all-reduces besides NCCL's algorithms."""
WORKLOAD_ALGORITHMS = (
    "auto",
    "direct",
    "pxn",
    "ring",
    "tree",
    "nvls",
    "nvls_tree",
    "pat",
    "hierarchical",
    "pipelined",
)

PLACEMENT_METHODS = ("round_robin", "random", "greedy", "eplb", "ilp")
"""Placement methods by name (``eplb:N`` asks for N redundant expert slots; plain ``eplb`` for one
per GPU; ``ilp`` takes its settings from ``ilp:``); anything else in ``placement:`` must be a
placement file."""


def placement_method(value: str) -> tuple[str, int | None] | None:
    """``(method, replicas)`` when ``value`` names a placement method, else None."""
    name, _, count = value.partition(":")
    if name not in PLACEMENT_METHODS:
        return None
    if not count:
        return name, None
    if name == "eplb" and count.isascii() and count.isdigit():
        return name, int(count)
    return None


class ConfigError(ValueError):
    """A bad experiment file: the message is one line naming the field and the fix."""


def _unit(parser: Any) -> BeforeValidator:
    def check(value: Any) -> Any:
        try:
            return parser(value)
        except UnitError as err:
            raise ValueError(str(err)) from None

    return BeforeValidator(check)


@dataclass(frozen=True)
class Unit:
    """The base unit a field is stored in (``B``, ``B/s``, ``s``): what the results schema says."""

    symbol: str


Bandwidth = Annotated[float, _unit(parse_bandwidth), Unit("B/s")]
"""A bandwidth written with a unit (``400Gbps``, ``50GB/s``), stored in bytes per second."""
Time = Annotated[float, _unit(parse_time), Unit("s")]
"""A time written with a unit (``500ns``, ``2us``), stored in seconds."""
Size = Annotated[int, _unit(parse_size), Unit("B")]
"""A size written with a unit (``16MiB``), stored in bytes."""


def _curve(value: Any) -> Any:
    """``{message size: efficiency}`` (sizes with units) -> sorted ``((bytes, efficiency), ...)``."""
    if isinstance(value, dict):
        try:
            knots = sorted((float(parse_size(size)), efficiency) for size, efficiency in value.items())
        except UnitError as err:
            raise ValueError(f"a message size: {err}") from None
        except TypeError:
            raise ValueError("efficiencies must be numbers in (0, 1]") from None
        return tuple(knots)
    if isinstance(value, list | tuple):  # the resolved form ((bytes, efficiency), ...)
        return tuple(tuple(knot) for knot in value)
    raise ValueError(
        f"expected a mapping of message size to efficiency (e.g. {{64KiB: 0.4, 4MiB: 1}}), got {value!r}"
    )


EfficiencyCurve = Annotated[tuple[tuple[float, float], ...], BeforeValidator(_curve)]
"""A small-message efficiency curve written ``{64KiB: 0.4, 4MiB: 1.0}``, stored as sorted
``((bytes, efficiency), ...)`` knots (see :class:`topologies.leaf_spine.LeafSpine`)."""

Strict = ConfigDict(extra="forbid", frozen=True)


class TopologyConfig(BaseModel):
    """``topology:`` — a two-tier leaf-spine fabric (see :class:`topologies.leaf_spine.LeafSpine`)."""

    model_config = Strict
    kind: Literal["leaf_spine"] = "leaf_spine"
    leaves: int = Field(ge=1)
    spines: int = Field(ge=1)
    hosts_per_leaf: int = Field(ge=1)
    gpus_per_host: int = Field(ge=1)
    nic_bandwidth: Bandwidth
    uplink_bandwidth: Bandwidth
    nvlink_bandwidth: Bandwidth = DEFAULT_NVLINK_BANDWIDTH
    link_latency: Time = DEFAULT_LINK_LATENCY
    message_latency: Time = DEFAULT_MESSAGE_LATENCY
    nvlink_message_latency: Time = DEFAULT_NVLINK_MESSAGE_LATENCY
    rail_optimized: bool = False
    nic_efficiency: EfficiencyCurve = ()
    nvlink_efficiency: EfficiencyCurve = ()
    gpu: Literal[GPU_KINDS] = "H100"  # type: ignore[valid-type]
    ll_message_latency: Time = DEFAULT_LL_MESSAGE_LATENCY
    ll128_message_latency: Time = DEFAULT_LL128_MESSAGE_LATENCY
    ll_nvlink_message_latency: Time = DEFAULT_LL_NVLINK_MESSAGE_LATENCY
    ll128_nvlink_message_latency: Time = DEFAULT_LL128_NVLINK_MESSAGE_LATENCY
    collective_latency: Time = 0.0
    p2p_latency: Time = 0.0
    nic_line_rate: Bandwidth | None = None
    ll_nic_efficiency: EfficiencyCurve = ()
    ll128_nic_efficiency: EfficiencyCurve = ()
    ll_nvlink_efficiency: EfficiencyCurve = ()
    ll128_nvlink_efficiency: EfficiencyCurve = ()
    ll_share: float = Field(default=DEFAULT_LL_SHARE, gt=0, le=1)
    ll128_share: float = Field(default=DEFAULT_LL128_SHARE, gt=0, le=1)
    ll_nvlink_share: float = Field(default=DEFAULT_LL_SHARE, gt=0, le=1)
    ll128_nvlink_share: float = Field(default=DEFAULT_LL128_SHARE, gt=0, le=1)

    def spec(self) -> LeafSpine:
        """The simulator's fabric parameters."""
        return LeafSpine(**self.model_dump(exclude={"kind"}))


class CollectiveWorkload(BaseModel):
    """``workload: {kind: collective, ...}`` — one collective or traffic pattern on a communicator.

    ``algorithm`` is ``auto`` by default: what NCCL's cost model picks (:mod:`workloads.nccl`), on
    ``channels`` channels (default: NCCL's for the fabric and size) with ``qps_per_connection``
    queue pairs, under ``protocol`` (default ``auto`` with ``algorithm: auto``, else ``Simple``);
    an NCCL algorithm name pins it, as NCCL_ALGO / NCCL_PROTO do. ``null`` is moesim's own
    schedule of the op (:mod:`workloads.collectives`), as are ``hierarchical`` and ``pipelined``.
    Patterns without NCCL algorithms (send_recv, permutation, shift) have one schedule each.
    """

    model_config = Strict
    kind: Literal["collective"]
    op: Literal[OPS]  # type: ignore[valid-type]
    size: Size
    algorithm: Literal[WORKLOAD_ALGORITHMS] | None = "auto"  # type: ignore[valid-type]
    protocol: Literal["auto", "LL", "LL128", "Simple"] | None = None
    channels: int | None = Field(default=None, ge=1)
    qps_per_connection: int = Field(default=1, ge=1)
    ranks: str = "all"
    k: int | None = Field(default=None, ge=1)

    @field_validator("ranks")
    @classmethod
    def _ranks(cls, value: str) -> str:
        if value in ("all", "one_per_host") or (
            value.startswith("rail:") and value[5:].isascii() and value[5:].isdigit()
        ):
            return value
        raise ValueError(f'"{value}" is not a communicator (try all, one_per_host or rail:0)')

    @model_validator(mode="after")
    def _algorithm_fits_op(self) -> CollectiveWorkload:
        nccl_ones = NCCL_ALGORITHMS.get(self.op, ())
        allowed = ("auto", *nccl_ones, *OWN_ALGORITHMS.get(self.op, ()))
        if self.algorithm is not None and self.algorithm not in allowed:
            hint = f"try {' or '.join(allowed)}" if allowed else "leave it out"
            raise ValueError(f"algorithm: {self.algorithm} does not apply to op {self.op} ({hint})")
        nccl = bool(nccl_ones) and (
            self.algorithm in ("auto", *nccl_ones)
            or (self.algorithm is None and self.op in ("broadcast", "reduce"))
        )
        for name in ("protocol", "channels"):
            if getattr(self, name) is not None and not nccl:
                raise ValueError(f"{name}: needs an NCCL algorithm for {self.op} (try algorithm: auto)")
        if self.qps_per_connection != 1 and not nccl:
            raise ValueError(
                f"qps_per_connection: needs an NCCL algorithm for {self.op} (try algorithm: auto)"
            )
        if self.k is not None and self.op != "shift":
            raise ValueError(f"k: only the shift pattern takes k, not op {self.op}")
        return self


class SynthConfig(BaseModel):
    """``workload.synth:`` — a synthetic routing trace (see :mod:`workloads.synthetic_trace`).

    ``imbalance`` is the target (max - mean)/mean of per-expert load; ``affinity`` in [0, 1] the
    target uncertainty coefficient between consecutive layers (0 = independent, 1 = the next
    expert is determined by this one); ``drift`` how much popularity moves between batches.
    ``seed`` defaults to the experiment's seed. Tokens are spread over every GPU of the fabric.
    """

    model_config = Strict
    experts: int = Field(ge=1)
    top_k: int = Field(ge=1)
    layers: int = Field(ge=1)
    tokens_per_gpu: int = Field(ge=1)
    imbalance: float | None = Field(default=None, ge=0)
    zipf: float | None = Field(default=None, ge=0)
    affinity: float = Field(default=0.0, ge=0, le=1)
    drift: float = Field(default=0.0, ge=0, le=1)
    batches: int = Field(default=1, ge=1)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_skew(self) -> SynthConfig:
        if self.imbalance is not None and self.zipf is not None:
            raise ValueError("imbalance: give imbalance or zipf, not both")
        if self.top_k > self.experts:
            raise ValueError(f"top_k: {self.top_k} is more than experts={self.experts}")
        return self


class MoeWorkload(BaseModel):
    """``workload: {kind: moe, ...}`` — MoE layers from a routing trace (a file, or ``synth:``).

    Token bytes are ``hidden * bytes_per_element`` (dispatch) and ``hidden *
    combine_bytes_per_element`` (combine, default the same). Expert compute is a roofline GEMM
    model of ``gpu`` at ``efficiency`` with expert width ``ffn_hidden`` (default: ``hidden``), or
    interpolated from a measured ``kernel_table``.
    """

    model_config = Strict
    kind: Literal["moe"]
    trace: Path | None = None
    synth: SynthConfig | None = None
    hidden: int | None = Field(default=None, ge=1)
    ffn_hidden: int | None = Field(default=None, ge=1)
    bytes_per_element: float = Field(default=2, gt=0)
    combine_bytes_per_element: float | None = Field(default=None, gt=0)
    dispatch: Literal["direct", "hierarchical"] = "direct"
    token_home: Literal["source", "top_expert"] = "source"
    """Where a token goes between layers: back to its ``source`` GPU, or on to the GPU of its first
    expert (``top_expert``, ExFlow-style: inter-layer affinity saves traffic; needs direct dispatch)."""
    layers: int | None = Field(default=None, ge=1)
    channels: int = Field(default=1, ge=1)
    """Channels dispatch and combine run over (connections per GPU pair)."""
    qps_per_connection: int = Field(default=1, ge=1)
    """Queue pairs (flows between hosts) per connection."""
    gpu: Literal["h100", "h800", "h200", "a100", "b200"] = "h100"
    dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    efficiency: float = Field(default=0.7, gt=0, le=1)
    kernel_table: Path | None = None
    """A measured GEMM timing CSV (``op,m,n,k,dtype,time_us``) used instead of the roofline."""

    @field_validator("kernel_table")
    @classmethod
    def _table_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return cls._trace_exists(value, info)

    @field_validator("trace")
    @classmethod
    def _trace_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = (info.context or {}).get("base_dir")
        path = value if value.is_absolute() or base is None else Path(base) / value
        if not path.is_file():
            raise ValueError(f"{value} does not exist (paths are relative to the experiment file)")
        return path

    @model_validator(mode="after")
    def _one_source(self) -> MoeWorkload:
        if (self.trace is None) == (self.synth is None):
            raise ValueError("trace: give either trace: PATH or synth: {...}")
        if self.synth is not None and self.hidden is None:
            raise ValueError("hidden: a synthetic trace needs the hidden size (e.g. hidden: 4096)")
        if self.token_home == "top_expert" and self.dispatch != "direct":
            raise ValueError("token_home: top_expert combines directly; use it with dispatch: direct")
        return self


class ReplayWorkload(BaseModel):
    """``workload: {kind: replay, trace: PATH, ...}`` — a PyTorch profiler (Kineto) trace replayed on
    the fabric (see :mod:`workloads.replay`): compute kernels keep their measured times, DeepEP and
    NCCL kernels become collectives over ``ranks`` GPUs (default: the trace's world size). The MoE
    traffic of DeepEP kernels follows ``hidden``, ``tokens`` (per rank), ``top_k`` and ``experts``
    (defaults: DeepSeek-V3 as profiled); ``dispatch: hierarchical`` sends one copy per host.
    """

    model_config = Strict
    kind: Literal["replay"]
    trace: Path
    ranks: int | None = Field(default=None, ge=1)
    hidden: int = Field(default=7168, ge=1)
    tokens: int = Field(default=4096, ge=0)
    top_k: int = Field(default=8, ge=1)
    experts: int = Field(default=256, ge=1)
    dispatch: Literal["direct", "hierarchical"] = "hierarchical"
    notify_size: Size = 1024
    nccl_size: Size | None = None
    respect_launch: bool = False

    _trace_exists = field_validator("trace")(MoeWorkload._trace_exists.__func__)


class RecordConfig(BaseModel):
    """``record:`` — how much detail each point keeps beyond its results row."""

    model_config = Strict
    flows: bool = True
    """Write every flow to ``flows.parquet`` (turn off for large sweeps)."""
    timeline: bool = True
    """Record link load over time for ``timeline.parquet`` and the report's heatmap."""
    timeline_bins: int = Field(default=60, ge=1, le=10_000)
    timeline_links: int = Field(default=48, ge=1)
    """How many of the busiest links the timeline keeps."""


class IlpConfig(BaseModel):
    """``ilp:`` — settings of the ``ilp`` placement method (see :func:`placement.ilp.ilp_placement`).

    ``lam`` weighs the topology-priced affinity traffic against the busiest GPU's tokens;
    ``time_limit`` bounds the solver's wall time per placement.
    """

    model_config = Strict
    lam: float = Field(default=1.0, ge=0)
    time_limit: Time = 60.0
    solver: Literal["auto", "cbc", "highs"] = "auto"
    decompose: Literal["auto", "none", "layers", "hosts"] = "auto"

    @field_validator("time_limit")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be a time > 0 (e.g. 30s), got {value} s")
        return value


class ReportConfig(BaseModel):
    """``report:`` — what the report compares against.

    ``baseline`` maps swept paths to one of their values (``{transport: spray}``; for a ``zip:``
    group, every path of the group). Default: the first value of the first swept axis other than
    ``seed``.
    """

    model_config = Strict
    baseline: dict[str, Any] | None = None


class Experiment(BaseModel):
    """A whole experiment file.

    ``placement_fit`` (MoE workloads): fit the placement on this share of the trace's batches (the
    first ones) and simulate the held-out rest; without it the placement is fitted on, and judged
    on, the whole trace.
    """

    model_config = Strict
    name: str
    seed: int = 0
    topology: TopologyConfig
    workload: Annotated[CollectiveWorkload | MoeWorkload | ReplayWorkload, Field(discriminator="kind")]
    transport: str = "ecmp"
    placement: str = "round_robin"
    placement_fit: float | None = Field(default=None, gt=0, lt=1)
    ilp: IlpConfig = IlpConfig()
    record: RecordConfig = RecordConfig()
    report: ReportConfig = ReportConfig()
    sweep: dict[str, Any] | None = None
    _placement_file: str | None = PrivateAttr(default=None)
    """A placement solved ahead of the run for this point (see :mod:`experiments.placing`)."""

    @field_validator("transport")
    @classmethod
    def _transport(cls, value: str) -> str:
        return str(parse_transport(value))

    @field_validator("placement")
    @classmethod
    def _placement(cls, value: str, info: ValidationInfo) -> str:
        if placement_method(value) is not None:
            return value
        base = (info.context or {}).get("base_dir")
        path = Path(value) if Path(value).is_absolute() or base is None else Path(base) / value
        if path.is_file():
            return str(path)
        methods = ", ".join(PLACEMENT_METHODS)
        raise ValueError(f'"{value}" is neither a placement method ({methods}, eplb:N) nor a placement file')

    @model_validator(mode="after")
    def _rail_exists(self) -> Experiment:
        if self.workload.kind != "collective":
            return self
        ranks = self.workload.ranks
        if ranks.startswith("rail:") and int(ranks[5:]) >= self.topology.gpus_per_host:
            raise ValueError(
                f"workload.ranks: {ranks} needs rail < gpus_per_host={self.topology.gpus_per_host}"
                f" (try rail:0 .. rail:{self.topology.gpus_per_host - 1})"
            )
        work = self.workload
        if work.algorithm is not None and work.algorithm in NCCL_ALGORITHMS.get(work.op, ()):
            fabric = self.topology.spec().describe()
            try:
                check_algorithm(fabric, work.op, communicator(fabric, ranks), work.algorithm)
            except AlgorithmError as err:
                raise ValueError(f"workload.{err}") from None
        return self


# --------------------------------------------------------------------------- errors


WORKLOADS: dict[str, type[BaseModel]] = {
    "collective": CollectiveWorkload,
    "moe": MoeWorkload,
    "replay": ReplayWorkload,
}


def _describe(err: dict[str, Any], root: type[BaseModel]) -> str:
    loc = [str(part) for part in err["loc"] if not str(part).startswith("function-")]
    tag = loc[1] if len(loc) > 1 and loc[0] == "workload" and loc[1] in WORKLOADS else None
    if tag is not None:  # the discriminated union puts its tag in the path: take it out
        loc = loc[:1] + loc[2:]
    message = str(err["msg"]).removeprefix("Value error, ")
    # A model-level check names its own field first ("algorithm: ..."): fold it into the path.
    head = message.split(": ", 1)[0]
    if err["type"] == "value_error" and ": " in message and all(p.isidentifier() for p in head.split(".")):
        field, message = message.split(": ", 1)
        loc.append(field)
    path = ".".join(loc) or "(file)"
    if err["type"] == "union_tag_invalid":
        return f"{path}: kind {err['input'].get('kind')!r} is not a workload (try {' or '.join(WORKLOADS)})"
    if err["type"] == "union_tag_not_found":
        return f"{path}: needs kind: {' or '.join(WORKLOADS)}"
    if err["type"] == "extra_forbidden":
        model = _model_at(WORKLOADS[tag], loc[1:-1]) if tag is not None else _model_at(root, loc[:-1])
        known = ", ".join(model.model_fields) if model else ""
        return f"{path}: unknown key (expected one of: {known})"
    if err["type"] in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = message.replace("Input should be ", "must be ").replace("greater than or equal to", ">=")
        bound = (
            bound.replace("less than or equal to", "<=")
            .replace("greater than", ">")
            .replace("less than", "<")
        )
        return f"{path}: {bound}, got {err['input']!r}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    if err["type"] == "literal_error":
        return f"{path}: {err['input']!r} is not allowed ({message.replace('Input should be', 'expected')})"
    if err["type"] in (
        "int_parsing",
        "int_type",
        "bool_parsing",
        "bool_type",
        "string_type",
        "float_type",
        "dict_type",
        "model_type",
        "list_type",
        "int_from_float",
    ):
        return f"{path}: {message.lower().replace('input should be', 'expected')}, got {err['input']!r}"
    return f"{path}: {message}"


def _model_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        options = [field.annotation, *typing.get_args(field.annotation)]  # unwrap X | None
        model = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def parse_experiment(raw: Any, base_dir: Path | None = None) -> Experiment:
    """Validate an experiment given as plain data; raise :class:`ConfigError` on the first problem.

    Relative file paths in it (``workload.trace``, ``placement``) are relative to ``base_dir``.
    """
    if not isinstance(raw, dict):
        raise ConfigError("(file): an experiment is a mapping of keys (name, topology, workload, ...)")
    try:
        experiment = Experiment.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(_describe(err.errors()[0], Experiment)) from None
    try:
        validate(experiment.topology.spec())
    except TopologyError as err:
        raise ConfigError(f"topology.{err}") from None
    return experiment


@dataclass(frozen=True)
class Plan:
    """A validated experiment file: the experiment, its raw data and its expanded points."""

    experiment: Experiment
    raw: dict[str, Any]
    points: list[tuple[dict[str, Any], Experiment]]
    axes: list[list[str]] = field(default_factory=list)
    """The sweep's axes in file order, each the paths that vary together (one for a plain key)."""
    baseline: dict[str, Any] = field(default_factory=dict)
    """The report's baseline: swept path -> resolved value (empty without a sweep)."""
    units: dict[str, str] = field(default_factory=dict)
    """The base unit of each swept path that has one (``B``, ``B/s``, ``s``)."""


def load_experiment(path: str | Path) -> Plan:
    """Read and validate an experiment YAML file, every sweep point included."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path.name}: YAML syntax error at {where}{problem}") from None
    experiment = parse_experiment(raw, path.parent)
    expanded = points(experiment, raw, path.parent)
    axes = [list(axis) for axis in _axes(experiment.sweep or {})]
    units = {}
    for axis in axes:
        for dotted in axis:
            unit = field_unit(experiment, dotted)
            if unit:
                units[dotted] = unit
    baseline = report_baseline(experiment, axes, expanded)
    return Plan(experiment, raw, expanded, axes, baseline, units)


def field_unit(experiment: Experiment, dotted: str) -> str:
    """The base unit of the field at a dotted YAML path (``B``, ``B/s``, ``s``), or ``""``."""
    node: Any = experiment
    info = None
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            return ""
        info = type(node).model_fields[part]
        node = getattr(node, part)
    if info is None:
        return ""
    metadata = list(info.metadata)
    for arg in typing.get_args(info.annotation):  # Bandwidth | None and the like
        metadata.extend(getattr(arg, "__metadata__", ()))
    return next((item.symbol for item in metadata if isinstance(item, Unit)), "")


def resolved_value(point: Experiment, dotted: str) -> Any:
    """The value at a dotted YAML path of a point, as resolved (base units)."""
    data: Any = point.model_dump()
    for part in dotted.split("."):
        data = data[part]
    return data


def report_baseline(
    experiment: Experiment, axes: list[list[str]], expanded: list[tuple[dict[str, Any], Experiment]]
) -> dict[str, Any]:
    """The report's baseline as resolved values: ``report.baseline``, checked against the sweep,
    or the first point's values of the first axis other than ``seed``."""
    given = experiment.report.baseline
    if given is None:
        axis = next((axis for axis in axes if axis != ["seed"]), None)
        if axis is None or not expanded:
            return {}
        first = expanded[0][1]
        return {dotted: resolved_value(first, dotted) for dotted in axis}
    swept = {dotted for axis in axes for dotted in axis}
    for dotted in given:
        if dotted not in swept or dotted == "seed":
            choices = ", ".join(sorted(swept - {"seed"})) or "none: the experiment has no sweep"
            raise ConfigError(f"report.baseline.{dotted}: not a swept parameter (swept: {choices})")
    for axis in axes:
        named = [dotted for dotted in axis if dotted in given]
        if named and len(named) != len(axis):
            raise ConfigError(
                f"report.baseline: {', '.join(named)} is in a zip: group with "
                f"{', '.join(d for d in axis if d not in named)}; name every path of the group"
            )
    for swept_values, point in expanded:
        if all(swept_values[dotted] == value for dotted, value in given.items()):
            return {dotted: resolved_value(point, dotted) for dotted in given}
    for dotted, value in given.items():
        values = sorted({str(s[dotted]) for s, _ in expanded})
        if value not in {s[dotted] for s, _ in expanded}:
            raise ConfigError(
                f"report.baseline.{dotted}: {value!r} is not one of its swept values ({', '.join(values)})"
            )
    raise ConfigError("report.baseline: no point of the sweep has all of these values together")


# --------------------------------------------------------------------------- sweep


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"sweep.{dotted}: {part} is not a section of the experiment (check the path)")
        node = child
    node[parts[-1]] = value


def _axes(sweep: dict[str, Any]) -> list[dict[str, list[Any]]]:
    """The sweep's axes in file order: each a mapping of paths to equally long value lists.

    A plain key is an axis of its own; ``zip:`` (a mapping, or a list of mappings) makes one axis
    whose paths vary together.
    """
    axes: list[dict[str, list[Any]]] = []
    for key, values in sweep.items():
        if key != "zip":
            axes.append({key: values})
            continue
        groups = values if isinstance(values, list) else [values]
        for group in groups:
            if not isinstance(group, dict) or not group:
                raise ConfigError(
                    "sweep.zip: a mapping of paths to equally long lists (e.g. {a: [1, 2], b: [x, y]})"
                )
            axes.append(group)
    for axis in axes:
        for path, values in axis.items():
            where = f"sweep.zip.{path}" if len(axis) > 1 or path not in sweep else f"sweep.{path}"
            if not isinstance(values, list):
                raise ConfigError(f"{where}: expected a list of values, got {values!r}")
            if not values:
                raise ConfigError(f"{where}: empty list (give at least one value)")
            if path.split(".")[0] == "sweep":
                raise ConfigError(f"{where}: cannot sweep the sweep")
        lengths = {path: len(values) for path, values in axis.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"sweep.zip: lists must have equal lengths, got {lengths}")
    return axes


def points(
    experiment: Experiment, raw: dict[str, Any], base_dir: Path | None = None
) -> list[tuple[dict[str, Any], Experiment]]:
    """Expand the sweep: a list of ``(swept values by YAML path, validated point experiment)``.

    The grid is the cartesian product of the axes in file order, the last varying fastest; a
    ``zip:`` group is one axis. Without ``sweep:`` there is one point with no swept values.
    Raises :class:`ConfigError` for an empty list, unequal zip lists, a path that is not a key
    of the experiment, or a value that fails validation (named as ``sweep.PATH``).
    """
    axes = _axes(experiment.sweep or {})
    base = {key: value for key, value in raw.items() if key != "sweep"}
    result = []
    for combo in itertools.product(*(range(len(next(iter(axis.values())))) for axis in axes)):
        swept = {
            path: values[i] for axis, i in zip(axes, combo, strict=True) for path, values in axis.items()
        }
        point_raw = copy.deepcopy(base)
        for dotted, value in swept.items():
            _set_path(point_raw, dotted, value)
        try:
            point = parse_experiment(point_raw, base_dir)
        except ConfigError as err:
            message = str(err)
            for dotted in swept:
                if message.startswith(dotted + ":"):
                    if "unknown key" in message:
                        known = message.split("expected one of: ", 1)[1].rstrip(")")
                        message = f"{dotted}: not a key of the experiment (expected one of: {known})"
                    raise ConfigError(f"sweep.{message}") from None
            raise
        result.append((swept, point))
    return result
