"""Fit a fabric's tier parameters to measured collective times, through the simulator itself.

Two tiers carry a GPU's messages: NVLink inside a host, the NIC tier between hosts. Each has a
per-message latency α, a bandwidth B and a small-message efficiency curve η(m) (see
:class:`topologies.leaf_spine.LeafSpine`). A measured row (an nccl-tests line: op, ranks, size,
time) is *of* the NIC tier when its ranks span hosts, else of the NVLink tier; NVLink rows are
fitted first, then NIC rows with NVLink fixed (a tier without rows keeps the topology's values).

Every number below comes from running the simulator's own collective schedules
(:func:`collective_for`: ring all-gather/reduce-scatter, direct all-to-all, pipelined all-reduce
across hosts and ring inside one, send/recv) on the fabric being fitted, never from a side
formula; the fit only decides which parameter to move:

1. α: on the smallest sizes the simulated time is affine in α (the same messages stay on the
   critical path); two runs give the slope, and α is the least-squares solution (>= 0). Skipped
   when even the smallest measured row is bandwidth-bound (α would not be identifiable).
2. B: on the largest sizes (η = 1 there, by definition of the peak), B is the root of the mean log
   ratio of simulated to measured time (a bracketed secant in log B).
3. η: for each remaining size, the efficiency of that size's tier messages that makes the
   simulated time equal the measurement (secant in 1/η − 1), clamped to (0, 1]; then a
   non-decreasing fit in message size (pool-adjacent-violators) becomes the curve's knots.

The calibrated fabric is then run on every row, fitted and held out, and the table of measured
vs simulated times is what :mod:`calibration.report` shows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.engine import simulate
from simulator.ops import Schedule
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine, TopologyError, validate
from workloads import nccl
from workloads.collectives import collective_programs, send_recv

FIT_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "reduce", "send_recv")
"""Ops whose measurements can be fitted (the simulator has a schedule for them)."""
EDGE_ROWS = 3
"""Rows at each end of a tier's sizes used for α (smallest) and B (largest)."""
MIN_EFFICIENCY = 0.005
"""Lowest efficiency the fit will assign to a size."""
LATENCY_BOUND = 0.1
"""α is fitted only when the tier's bandwidth term of the smallest row is below this share of its
measured time (the row is latency-bound); otherwise the topology's α is kept."""
NEAR = 0.01
"""A bandwidth whose largest size is within this (log) share of the measurement is kept when no
bandwidth matches it exactly (the tier is not the bottleneck there)."""
SENSITIVE = 0.01
"""A row informs the efficiency curve when halving η slows it by more than this (relative)."""

_TIER_FIELDS = {
    "nic": ("message_latency", "nic_bandwidth", "nic_efficiency"),
    "nvlink": ("nvlink_message_latency", "nvlink_bandwidth", "nvlink_efficiency"),
}
_PROTOCOL_ALPHAS = {
    "nic": ("message_latency", "ll_message_latency", "ll128_message_latency"),
    "nvlink": ("nvlink_message_latency", "ll_nvlink_message_latency", "ll128_nvlink_message_latency"),
}
"""Per tier, the α of each protocol (Simple, LL, LL128): the fit scales them together."""
_CALL_FIELDS = {"collective": "collective_latency", "p2p": "p2p_latency"}
"""Per launch kind of a schedule, the fabric's per-call latency field."""


class CalibrationError(ValueError):
    """Measurements that cannot be fitted on the given fabric (one line naming what and why)."""


@dataclass(frozen=True)
class TierFit:
    """The fitted parameters of one tier.

    Attributes:
        tier: ``nic`` or ``nvlink``.
        alpha: per-message latency, seconds (``None`` fields below were kept, not fitted).
        bandwidth: bytes/s per GPU and direction.
        efficiency: ``((message bytes, η), ...)`` knots.
        rows: measured rows fitted.
        alpha_fitted: False when α was kept (no latency-bound row, or not identifiable apart
            from the call latencies).
        calls: launch kinds whose per-call latency this tier's rows fitted.
    """

    tier: str
    alpha: float
    bandwidth: float
    efficiency: tuple[tuple[float, float], ...]
    rows: int
    alpha_fitted: bool = True
    calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """A calibrated fabric and how far it is from the measurements.

    ``table`` has one row per measurement: ``source, op, nranks, size, tier, role`` (``fit`` or
    ``holdout``), ``measured_us``, ``simulated_us``, ``rel_error`` (simulated/measured − 1),
    ``measured_busbw_gbps``, ``simulated_busbw_gbps`` (nccl-tests' bus bandwidth, 10^9 B/s).
    ``flags`` are one-line warnings about fitted parameters past the hardware they describe.
    """

    spec: LeafSpine
    tiers: tuple[TierFit, ...]
    table: pd.DataFrame
    flags: tuple[str, ...] = ()

    def mape(self, role: str | None = None, min_size: float = 0.0) -> float:
        """Mean absolute relative error in percent over rows of ``role`` (all when None) with
        ``size >= min_size`` bytes; NaN without rows."""
        rows = self.table[self.table["size"] >= min_size]
        if role is not None:
            rows = rows[rows["role"] == role]
        return float(rows["rel_error"].abs().mean() * 100) if len(rows) else math.nan


def tier_of(nranks: int, spec: LeafSpine) -> str:
    """``nvlink`` when ``nranks`` GPUs fit in one host of ``spec``, else ``nic``."""
    return "nvlink" if nranks <= spec.gpus_per_host else "nic"


def collective_for(op: str, size: float, nranks: int, spec: LeafSpine) -> Schedule:
    """The simulator's schedule for an nccl-tests row: ``op`` on the first ``nranks`` GPUs as NCCL
    runs it (:func:`workloads.nccl.resolve` with ``auto``: NCCL's algorithm, protocol and
    channels for that size); send/recv one message to the next rank."""
    if op not in FIT_OPS:
        raise CalibrationError(
            f"op {op}: the simulator has no schedule for it (fit one of {', '.join(FIT_OPS)})"
        )
    if nranks > spec.gpus:
        raise CalibrationError(f"nranks: the log has {nranks} ranks but the topology has {spec.gpus} GPUs")
    g = spec.gpus_per_host
    if nranks > g and nranks % g:
        raise CalibrationError(
            f"nranks: {nranks} ranks do not fill whole hosts of gpus_per_host={g} (the fit needs whole hosts)"
        )
    ranks = np.arange(nranks, dtype=np.int64)
    if op == "send_recv":
        return send_recv(ranks, size)
    fabric = spec.describe()
    algorithm, protocol, channels = nccl.resolve(fabric, op, ranks, size, "auto", None, None)
    return nccl.nccl_schedule(fabric, op, ranks, size, algorithm, protocol, channels)


def simulated_times(spec: LeafSpine, rows: pd.DataFrame) -> np.ndarray:
    """Simulated seconds of each row (``op``, ``size``, ``nranks``) on ``spec`` (spraying)."""
    fabric = compile_fabric(spec)
    transport = parse_transport("spray")
    out = np.empty(len(rows))
    for i, (op, size, nranks) in enumerate(zip(rows["op"], rows["size"], rows["nranks"], strict=True)):
        schedule = collective_for(op, float(size), int(nranks), spec)
        out[i] = simulate(fabric, collective_programs(schedule), transport).completion_time
    return out


def tier_message_bytes(op: str, size: float, nranks: int, spec: LeafSpine) -> float:
    """Median bytes a GPU sends per step on the row's own tier (between hosts for a NIC row), all
    channels and peers of the step together: the amount its efficiency curve is a function of."""
    schedule = collective_for(op, size, nranks, spec)
    src, dst = np.asarray(schedule.src), np.asarray(schedule.dst)
    host = src // spec.gpus_per_host != dst // spec.gpus_per_host
    mine = host if tier_of(nranks, spec) == "nic" else ~host
    if not mine.any():
        return 0.0
    unit = src[mine] * max(schedule.n_steps, 1) + np.asarray(schedule.step)[mine]
    _, inverse = np.unique(unit, return_inverse=True)
    per_step = np.bincount(inverse, weights=np.asarray(schedule.nbytes)[mine])
    return float(np.median(per_step))


def _with(spec: LeafSpine, tier: str, **values: object) -> LeafSpine:
    alpha, bandwidth, efficiency = _TIER_FIELDS[tier]
    names = {"alpha": alpha, "bandwidth": bandwidth, "efficiency": efficiency}
    return dataclasses.replace(spec, **{names[key]: value for key, value in values.items()})


def _scaled_alphas(spec: LeafSpine, tier: str, scale: float) -> LeafSpine:
    """``spec`` with every protocol's α of ``tier`` multiplied by ``scale``."""
    return dataclasses.replace(spec, **{f: getattr(spec, f) * scale for f in _PROTOCOL_ALPHAS[tier]})


def _launches(spec: LeafSpine, rows: pd.DataFrame) -> np.ndarray:
    """The launch kind (``collective``, ``p2p`` or ``""``) of each row's schedule."""
    kinds = [
        collective_for(op, float(s), int(n), spec).launch or ""
        for op, s, n in zip(rows["op"], rows["size"], rows["nranks"], strict=True)
    ]
    return np.asarray(kinds)


def _nonnegative_lstsq(columns: list[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: columns that come out negative are dropped
    (coefficient 0) and the rest solved again."""
    active = list(range(len(columns)))
    coef = np.zeros(len(columns))
    while active:
        matrix = np.column_stack([columns[i] for i in active])
        solution = np.linalg.lstsq(matrix, target, rcond=None)[0]
        if np.all(solution >= 0):
            coef[active] = solution
            break
        active.pop(int(np.argmin(solution)))
    return coef


def _fit_latencies(
    spec: LeafSpine, tier: str, rows: pd.DataFrame, measured: np.ndarray, fixed: set[str]
) -> tuple[LeafSpine, bool, list[str]]:
    """Fit the per-call latency of each launch kind among ``rows`` (not in ``fixed``) and a scale
    of the tier's protocol α on the smallest, latency-bound ``rows``: the simulated time is affine
    in both (two runs give the α slope). α is kept when it is not identifiable: when its slope is
    (nearly) a combination of the call-latency columns, as on one op whose every size has the same
    number of steps. Returns the fabric, whether α was fitted, and the kinds whose latency was."""
    bandwidth = getattr(spec, _TIER_FIELDS[tier][1])
    fast = simulated_times(_with(spec, tier, bandwidth=bandwidth * 1e3), rows)
    base = simulated_times(spec, rows)
    bound = (base - fast) <= LATENCY_BOUND * measured  # the bandwidth term is a small share
    if not bound.any():
        return spec, False, []
    rows, measured, base = rows[bound], measured[bound], base[bound]
    kinds = _launches(spec, rows)
    todo = [k for k in _CALL_FIELDS if k not in fixed and np.any(kinds == k)]
    zeroed = dataclasses.replace(spec, **{_CALL_FIELDS[k]: 0.0 for k in todo})
    base = simulated_times(zeroed, rows)
    slope = simulated_times(_scaled_alphas(zeroed, tier, 2.0), rows) - base  # per unit of scale
    calls = [(kinds == k).astype(float) for k in todo]
    alpha_free = bool(np.any(slope > 0))
    if alpha_free and calls:  # identifiable only if the slope is not in the span of the calls
        span = np.column_stack(calls)
        residual = slope - span @ np.linalg.lstsq(span, slope, rcond=None)[0]
        alpha_free = float(np.linalg.norm(residual)) > 0.05 * float(np.linalg.norm(slope))
    columns = ([slope] if alpha_free else []) + calls
    target = measured - base + (slope if alpha_free else 0.0)  # unknown: the scale itself
    coef = _nonnegative_lstsq(columns, target) if columns else np.zeros(0)
    if alpha_free:
        zeroed = _scaled_alphas(zeroed, tier, float(coef[0]))
        coef = coef[1:]
    fitted = dataclasses.replace(
        zeroed, **{_CALL_FIELDS[k]: float(c) for k, c in zip(todo, coef, strict=True)}
    )
    return fitted, alpha_free, todo


def _fit_bandwidth(spec: LeafSpine, tier: str, rows: pd.DataFrame, measured: np.ndarray) -> float:
    field = _TIER_FIELDS[tier][1]

    def mismatch(log_b: float) -> float:
        simulated = simulated_times(_with(spec, tier, bandwidth=math.exp(log_b)), rows)
        return float(np.mean(np.log(simulated / measured)))

    start = math.log(getattr(spec, field))
    low, high = start - math.log(4.0), start + math.log(4.0)
    f_low, f_high = mismatch(low), mismatch(high)
    seen = [(abs(f_low), low), (abs(f_high), high)]
    for _ in range(12):  # widen until the root is bracketed (f decreases with B)
        if f_low > 0 > f_high:
            break
        if f_low <= 0:
            low, f_low = low - math.log(8.0), mismatch(low - math.log(8.0))
            seen.append((abs(f_low), low))
        if f_high >= 0:
            high, f_high = high + math.log(8.0), mismatch(high + math.log(8.0))
            seen.append((abs(f_high), high))
    else:
        best, log_b = min(seen)
        if best < NEAR:  # another tier bounds the largest size: the nearest B is as good as any
            return math.exp(log_b)
        raise CalibrationError(f"{field}: no bandwidth reproduces the largest sizes (latency-bound rows?)")
    for _ in range(60):  # Illinois false position on a bracket
        mid = high - f_high * (high - low) / (f_high - f_low)
        f_mid = mismatch(mid)
        if abs(f_mid) < 1e-7 or high - low < 1e-9:
            return math.exp(mid)
        if f_mid > 0:
            low, f_low = mid, f_mid
            f_high /= 2
        else:
            high, f_high = mid, f_mid
            f_low /= 2
    return math.exp(mid)


_PROTOCOL_SHARES = {
    "nic": {"LL": "ll_share", "LL128": "ll128_share"},
    "nvlink": {"LL": "ll_nvlink_share", "LL128": "ll128_nvlink_share"},
}
"""Per tier and protocol, the field of the share of the bandwidth that carries data."""


def _fit_share(spec: LeafSpine, field: str, rows: pd.DataFrame, measured: np.ndarray) -> float:
    """The value in [:data:`MIN_EFFICIENCY`, 1] of the bandwidth share ``field`` whose simulated
    ``rows`` match ``measured`` on average in log (bisection in log share; time falls as it grows)."""

    def mismatch(log_share: float) -> float:
        simulated = simulated_times(dataclasses.replace(spec, **{field: math.exp(log_share)}), rows)
        return float(np.mean(np.log(simulated / measured)))

    low, high = math.log(MIN_EFFICIENCY), 0.0
    if mismatch(high) >= 0:
        return 1.0  # slow enough with every byte useful
    if mismatch(low) <= 0:
        return MIN_EFFICIENCY
    for _ in range(40):
        mid = 0.5 * (low + high)
        if mismatch(mid) > 0:
            low = mid
        else:
            high = mid
    return math.exp(0.5 * (low + high))


def _fit_protocol_shares(spec: LeafSpine, tier: str, rows: pd.DataFrame, measured: np.ndarray) -> LeafSpine:
    """Fit the LL and LL128 bandwidth shares of ``tier`` on the largest row of each source that
    NCCL runs with that protocol (rows sorted by size): the protocol's peak, as B is Simple's."""
    protocols = np.asarray(
        [
            collective_for(op, float(s), int(n), spec).protocol or ""
            for op, s, n in zip(rows["op"], rows["size"], rows["nranks"], strict=True)
        ]
    )
    for protocol, field in _PROTOCOL_SHARES[tier].items():
        picked: list[int] = []
        for _, group in rows[protocols == protocol].groupby("source", sort=False):
            picked += group.index[-1:].tolist()
        if picked:
            picked = sorted(picked)
            share = _fit_share(spec, field, rows.loc[picked], measured[picked])
            spec = dataclasses.replace(spec, **{field: share})
    return spec


_CURVES = {
    "nic": {"Simple": "nic_efficiency", "LL": "ll_nic_efficiency", "LL128": "ll128_nic_efficiency"},
    "nvlink": {
        "Simple": "nvlink_efficiency",
        "LL": "ll_nvlink_efficiency",
        "LL128": "ll128_nvlink_efficiency",
    },
}
"""Per tier and protocol, the field of its small-message efficiency curve."""


def _size_efficiency(
    spec: LeafSpine, field: str, row: pd.DataFrame, measured: float, message: float
) -> float:
    """The η of this row's tier messages (efficiency curve ``field``) that makes its simulated time
    equal ``measured``; NaN when no η in [:data:`MIN_EFFICIENCY`, 1] does and the row is
    latency-bound (it says nothing of η)."""

    def excess(x: float) -> float:  # x = 1/η − 1 >= 0
        curve = ((message, 1.0 / (1.0 + x)),)
        simulated = simulated_times(dataclasses.replace(spec, **{field: curve}), row)[0]
        return float(simulated) / measured - 1.0

    if message <= 0:
        return math.nan
    f0 = excess(0.0)
    if f0 >= 0:  # already slow enough: η = 1, if this size says anything about bandwidth at all
        return 1.0 if excess(1.0) - f0 > SENSITIVE else math.nan
    x_max = 1.0 / MIN_EFFICIENCY - 1.0
    if excess(x_max) < 0:
        return math.nan  # no efficiency explains the time: latency noise, not bandwidth
    x1 = 1.0
    f1 = excess(x1)
    low, f_low, high, f_high = 0.0, f0, None, None
    if f1 < 0:
        low, f_low = x1, f1
    else:
        high, f_high = x1, f1
    x = x1
    for _ in range(30):
        if high is None:  # still too fast: grow x
            x = min(x_max, x * 4.0)
            fx = excess(x)
            if fx < 0:
                low, f_low = x, fx
                continue
            high, f_high = x, fx
        x = high - f_high * (high - low) / (f_high - f_low)
        fx = excess(x)
        if abs(fx) < 1e-6:
            break
        if fx < 0:
            low, f_low = x, fx
        else:
            high, f_high = x, fx
    return 1.0 / (1.0 + x)


def monotone_curve(sizes: np.ndarray, values: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Knots of the non-decreasing least-squares fit of ``values`` over increasing ``sizes``
    (pool-adjacent-violators), with runs of equal value reduced to their ends."""
    order = np.argsort(sizes, kind="stable")
    sizes, values = np.asarray(sizes, float)[order], np.asarray(values, float)[order]
    blocks: list[list[float]] = []  # [sum, count]
    for value in values:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted = np.concatenate([np.full(int(count), total / count) for total, count in blocks])
    knots: list[tuple[float, float]] = []
    for i, (size, value) in enumerate(zip(sizes, fitted, strict=True)):
        if knots and size <= knots[-1][0]:
            continue
        interior = 0 < i < len(sizes) - 1 and fitted[i - 1] == value == fitted[i + 1]
        if not interior:
            knots.append((float(size), float(min(value, 1.0))))
    return tuple(knots)


def _smallest(rows: pd.DataFrame) -> np.ndarray:
    """Positions of the :data:`EDGE_ROWS` smallest sizes of each source (a third of its rows at
    most), in ``rows`` sorted by size."""
    picked: list[int] = []
    for _, group in rows.groupby("source", sort=False):
        edge = min(EDGE_ROWS, max(1, len(group) // 3))
        picked += group.index[:edge].tolist()
    return np.asarray(sorted(picked), dtype=np.int64)


def fit_tier(
    spec: LeafSpine, tier: str, rows: pd.DataFrame, fixed: frozenset[str] = frozenset()
) -> tuple[LeafSpine, TierFit]:
    """Fit the call latencies (of launch kinds not in ``fixed``), α, B and η of ``tier`` on
    ``rows`` (``source, op, size, nranks, time_s``, all of that tier).

    Returns the fabric with the tier's fitted parameters and the :class:`TierFit`.
    """
    rows = rows.sort_values("size", kind="stable").reset_index(drop=True)
    if len(rows) < 2:
        raise CalibrationError(f"{tier} tier: at least 2 measured sizes are needed, got {len(rows)}")
    measured = rows["time_s"].to_numpy(dtype=np.float64)
    spec = dataclasses.replace(spec, **dict.fromkeys(_CURVES[tier].values(), ()))
    smallest = _smallest(rows)
    spec, alpha_fitted, calls = _fit_latencies(
        spec, tier, rows.iloc[smallest], measured[smallest], set(fixed)
    )
    alpha = getattr(spec, _TIER_FIELDS[tier][0])
    bandwidth = _fit_bandwidth(spec, tier, rows.iloc[-1:], measured[-1:])  # the peak: the largest size
    spec = _with(spec, tier, bandwidth=bandwidth)
    spec = _fit_protocol_shares(spec, tier, rows, measured)
    messages = np.array(
        [
            tier_message_bytes(op, float(s), int(n), spec)
            for op, s, n in zip(rows["op"], rows["size"], rows["nranks"], strict=True)
        ]
    )
    protocols = np.asarray(
        [
            collective_for(op, float(s), int(n), spec).protocol or "Simple"
            for op, s, n in zip(rows["op"], rows["size"], rows["nranks"], strict=True)
        ]
    )
    eta = np.ones(len(rows))
    for i in range(len(rows) - 1):
        field = _CURVES[tier][str(protocols[i])]
        eta[i] = _size_efficiency(spec, field, rows.iloc[[i]], measured[i], messages[i])
    curves: dict[str, tuple[tuple[float, float], ...]] = {}
    for protocol, field in _CURVES[tier].items():  # one monotone curve per protocol
        usable = (messages > 0) & np.isfinite(eta) & (protocols == protocol)
        if not usable.any():
            continue
        curve = monotone_curve(messages[usable], eta[usable])
        if all(value >= 1.0 for _, value in curve):  # Simple: no curve; LL, LL128: 1, not Simple's
            curve = () if protocol == "Simple" else ((float(messages[usable].max()), 1.0),)
        curves[field] = curve
    spec = dataclasses.replace(spec, **curves)
    curve = curves.get(_CURVES[tier]["Simple"], ())
    validate(spec)
    return spec, TierFit(tier, alpha, bandwidth, curve, len(rows), alpha_fitted, tuple(calls))


def calibrate(
    spec: LeafSpine, measurements: pd.DataFrame, holdout: Sequence[bool] | None = None
) -> Calibration:
    """Fit ``spec``'s tiers to ``measurements`` and score the result on every row.

    Args:
        spec: the starting fabric (its topology; tiers without measurements keep its values).
        measurements: rows ``source, op, nranks, size, time_s`` (one collective each).
        holdout: per row, True to keep it out of the fit (it is only scored).

    Raises:
        CalibrationError: an op without a schedule, ranks that do not fit the fabric, a tier with
            fewer than two fitted sizes.
    """
    rows = measurements.reset_index(drop=True).copy()
    if rows.empty:
        raise CalibrationError("no measurements to fit")
    start = spec
    spec = dataclasses.replace(spec, nic_line_rate=spec.nic_line_rate or spec.nic_bandwidth)
    rows["tier"] = [tier_of(int(n), spec) for n in rows["nranks"]]
    rows["role"] = np.where(
        np.asarray(holdout if holdout is not None else [False] * len(rows)), "holdout", "fit"
    )
    for op, size, nranks in zip(rows["op"], rows["size"], rows["nranks"], strict=True):
        collective_for(op, float(size), int(nranks), spec)  # fail early on rows that cannot run
    fits: list[TierFit] = []
    fixed: frozenset[str] = frozenset()
    for tier in ("nvlink", "nic"):
        mine = rows[(rows["tier"] == tier) & (rows["role"] == "fit")]
        if len(mine):
            spec, tier_fit = fit_tier(spec, tier, mine, fixed)
            fits.append(tier_fit)
            fixed = fixed | set(tier_fit.calls)
    for kind, field in _CALL_FIELDS.items():  # a kind no row fitted takes the other kind's latency
        other = [f for k, f in _CALL_FIELDS.items() if k != kind and k in fixed]
        if kind not in fixed and other:
            spec = dataclasses.replace(spec, **{field: getattr(spec, other[0])})
    spec = written_spec(spec)
    try:
        validate(spec)
    except TopologyError as err:
        raise CalibrationError(f"topology.{err}") from None
    simulated = simulated_times(spec, rows)
    factor = np.array([_bus_factor(op, int(n)) for op, n in zip(rows["op"], rows["nranks"], strict=True)])
    size = rows["size"].to_numpy(dtype=np.float64)
    measured = rows["time_s"].to_numpy(dtype=np.float64)
    table = pd.DataFrame(
        {
            "source": rows["source"],
            "op": rows["op"],
            "nranks": rows["nranks"].astype(int),
            "size": rows["size"].astype(np.int64),
            "tier": rows["tier"],
            "role": rows["role"],
            "measured_us": measured * 1e6,
            "simulated_us": simulated * 1e6,
            "rel_error": simulated / measured - 1.0,
            "measured_busbw_gbps": size / measured * factor / 1e9,
            "simulated_busbw_gbps": size / simulated * factor / 1e9,
        }
    )
    return Calibration(spec, tuple(fits), table, hardware_flags(start, spec))


def hardware_flags(start: LeafSpine, fitted: LeafSpine) -> tuple[str, ...]:
    """Fitted parameters past the hardware they describe: a per-GPU NIC rate above the NIC's line
    rate, an NVLink rate above the starting (datasheet) one. One line each, naming the field."""
    flags = []
    line = start.nic_line_rate or start.nic_bandwidth
    if fitted.nic_bandwidth > line * 1.001:
        flags.append(
            f"nic_bandwidth: fitted {fitted.nic_bandwidth / 1e9:.2f} GB/s per GPU is above the NIC's line "
            f"rate {line / 1e9:.2f} GB/s: the model is missing something the fit made up for (more NICs "
            "per GPU than the fabric has, or traffic that does not cross the NIC)"
        )
    if fitted.nvlink_bandwidth > start.nvlink_bandwidth * 1.001:
        flags.append(
            f"nvlink_bandwidth: fitted {fitted.nvlink_bandwidth / 1e9:.2f} GB/s is above the starting "
            f"topology's {start.nvlink_bandwidth / 1e9:.2f} GB/s: check the datasheet value"
        )
    return tuple(flags)


def _curve_fields() -> list[str]:
    """Every small-message efficiency curve field (each protocol of both tiers)."""
    return [f for fields in _CURVES.values() for f in fields.values()]


def _share_fields() -> list[str]:
    """Every fitted bandwidth-share field (LL and LL128 of both tiers)."""
    return [f for fields in _PROTOCOL_SHARES.values() for f in fields.values()]


def _time_fields() -> list[str]:
    """Every fitted time field: the protocols' α of both tiers and the per-call latencies."""
    return [f for fields in _PROTOCOL_ALPHAS.values() for f in fields] + list(_CALL_FIELDS.values())


def tier_values(spec: LeafSpine) -> dict[str, object]:
    """The fitted topology fields as an experiment file writes them (units in the strings; an
    efficiency curve as ``{bytes: efficiency}``)."""
    values: dict[str, object] = {field: f"{getattr(spec, field) * 1e6:.4f}us" for field in _time_fields()}
    if spec.nic_line_rate is not None:
        values["nic_line_rate"] = f"{spec.nic_line_rate / 1e9:.4f}GB/s"
    values.update({field: round(float(getattr(spec, field)), 4) for field in _share_fields()})
    for _, bandwidth, _ in _TIER_FIELDS.values():
        values[bandwidth] = f"{getattr(spec, bandwidth) / 1e9:.4f}GB/s"
    for efficiency in _curve_fields():
        values[efficiency] = {
            max(1, round(size)): round(float(eta), 4) for size, eta in getattr(spec, efficiency)
        }
    return values


def written_spec(spec: LeafSpine) -> LeafSpine:
    """``spec`` with its tier parameters rounded exactly as :func:`tier_values` writes them, so a
    run of the written experiment file reproduces the calibration's numbers."""
    from experiments.units import parse_bandwidth, parse_time

    written = tier_values(spec)
    changes: dict[str, object] = {field: parse_time(written[field]) for field in _time_fields()}
    if "nic_line_rate" in written:
        changes["nic_line_rate"] = parse_bandwidth(written["nic_line_rate"])
    changes.update({field: float(written[field]) for field in _share_fields()})
    for _, bandwidth, _ in _TIER_FIELDS.values():
        changes[bandwidth] = parse_bandwidth(written[bandwidth])
    for efficiency in _curve_fields():
        changes[efficiency] = tuple((float(size), eta) for size, eta in sorted(written[efficiency].items()))
    return dataclasses.replace(spec, **changes)


def _bus_factor(op: str, nranks: int) -> float:
    from calibration.nccl_log import bus_factor

    return bus_factor(op, nranks)
