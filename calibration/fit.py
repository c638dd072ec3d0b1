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
from workloads.collectives import (
    all_gather,
    all_reduce,
    all_to_all,
    collective_programs,
    reduce_scatter,
    send_recv,
)

FIT_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")
"""Ops whose measurements can be fitted (the simulator has a schedule for them)."""
EDGE_ROWS = 3
"""Rows at each end of a tier's sizes used for α (smallest) and B (largest)."""
MIN_EFFICIENCY = 0.005
"""Lowest efficiency the fit will assign to a size."""
LATENCY_BOUND = 0.1
"""α is fitted only when the tier's bandwidth term of the smallest row is below this share of its
measured time (the row is latency-bound); otherwise the topology's α is kept."""
SENSITIVE = 0.01
"""A row informs the efficiency curve when halving η slows it by more than this (relative)."""

_TIER_FIELDS = {
    "nic": ("message_latency", "nic_bandwidth", "nic_efficiency"),
    "nvlink": ("nvlink_message_latency", "nvlink_bandwidth", "nvlink_efficiency"),
}


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
        alpha_fitted: False when α was kept (no latency-bound row).
    """

    tier: str
    alpha: float
    bandwidth: float
    efficiency: tuple[tuple[float, float], ...]
    rows: int
    alpha_fitted: bool = True


@dataclass(frozen=True)
class Calibration:
    """A calibrated fabric and how far it is from the measurements.

    ``table`` has one row per measurement: ``source, op, nranks, size, tier, role`` (``fit`` or
    ``holdout``), ``measured_us``, ``simulated_us``, ``rel_error`` (simulated/measured − 1),
    ``measured_busbw_gbps``, ``simulated_busbw_gbps`` (nccl-tests' bus bandwidth, 10^9 B/s).
    """

    spec: LeafSpine
    tiers: tuple[TierFit, ...]
    table: pd.DataFrame

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
    """The simulator's schedule for an nccl-tests row: ``op`` on the first ``nranks`` GPUs."""
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
    if op == "all_reduce":
        return all_reduce(ranks, size, "pipelined" if nranks > g else "ring", g, spec)
    if op == "all_gather":
        return all_gather(ranks, size)
    if op == "reduce_scatter":
        return reduce_scatter(ranks, size)
    if op == "all_to_all":
        return all_to_all(ranks, size)
    return send_recv(ranks, size)


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
    """Median bytes of the row's messages on its own tier (between hosts for a NIC row)."""
    schedule = collective_for(op, size, nranks, spec)
    host = np.asarray(schedule.src) // spec.gpus_per_host != np.asarray(schedule.dst) // spec.gpus_per_host
    mine = host if tier_of(nranks, spec) == "nic" else ~host
    nbytes = np.asarray(schedule.nbytes)[mine]
    return float(np.median(nbytes)) if nbytes.size else 0.0


def _with(spec: LeafSpine, tier: str, **values: object) -> LeafSpine:
    alpha, bandwidth, efficiency = _TIER_FIELDS[tier]
    names = {"alpha": alpha, "bandwidth": bandwidth, "efficiency": efficiency}
    return dataclasses.replace(spec, **{names[key]: value for key, value in values.items()})


def _fit_alpha(spec: LeafSpine, tier: str, rows: pd.DataFrame, measured: np.ndarray) -> tuple[float, bool]:
    field = _TIER_FIELDS[tier][0]
    kept = getattr(spec, field)
    low, high = 1e-7, 1e-5  # two small α (not 0: a pipelined schedule chunks finer as α -> 0)
    base = simulated_times(_with(spec, tier, alpha=low), rows)
    bandwidth = getattr(spec, _TIER_FIELDS[tier][1])
    fast = simulated_times(_with(spec, tier, alpha=low, bandwidth=bandwidth * 1e3), rows.iloc[:1])
    if base[0] - fast[0] > LATENCY_BOUND * measured[0]:  # bandwidth-bound: α is not identifiable
        return kept, False
    slope = (simulated_times(_with(spec, tier, alpha=high), rows) - base) / (high - low)
    if not np.any(slope > 0):
        return kept, False
    alpha = low + float(np.sum(slope * (measured - base)) / np.sum(slope * slope))
    return max(alpha, 0.0), True


def _fit_bandwidth(spec: LeafSpine, tier: str, rows: pd.DataFrame, measured: np.ndarray) -> float:
    field = _TIER_FIELDS[tier][1]

    def mismatch(log_b: float) -> float:
        simulated = simulated_times(_with(spec, tier, bandwidth=math.exp(log_b)), rows)
        return float(np.mean(np.log(simulated / measured)))

    start = math.log(getattr(spec, field))
    low, high = start - math.log(4.0), start + math.log(4.0)
    f_low, f_high = mismatch(low), mismatch(high)
    for _ in range(12):  # widen until the root is bracketed (f decreases with B)
        if f_low > 0 > f_high:
            break
        if f_low <= 0:
            low, f_low = low - math.log(8.0), mismatch(low - math.log(8.0))
        if f_high >= 0:
            high, f_high = high + math.log(8.0), mismatch(high + math.log(8.0))
    else:
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


def _size_efficiency(spec: LeafSpine, tier: str, row: pd.DataFrame, measured: float, message: float) -> float:
    """The η of this row's tier messages that makes its simulated time equal ``measured``; NaN when
    no η in [:data:`MIN_EFFICIENCY`, 1] does and the row is latency-bound (it says nothing of η)."""

    def excess(x: float) -> float:  # x = 1/η − 1 >= 0
        curve = ((message, 1.0 / (1.0 + x)),)
        return float(simulated_times(_with(spec, tier, efficiency=curve), row)[0]) / measured - 1.0

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


def fit_tier(spec: LeafSpine, tier: str, rows: pd.DataFrame) -> tuple[LeafSpine, TierFit]:
    """Fit α, B and η of ``tier`` on ``rows`` (``op, size, nranks, time_s``, all of that tier).

    Returns the fabric with the tier's fitted parameters and the :class:`TierFit`.
    """
    rows = rows.sort_values("size", kind="stable").reset_index(drop=True)
    if len(rows) < 2:
        raise CalibrationError(f"{tier} tier: at least 2 measured sizes are needed, got {len(rows)}")
    measured = rows["time_s"].to_numpy(dtype=np.float64)
    spec = _with(spec, tier, efficiency=())
    edge = min(EDGE_ROWS, max(1, len(rows) // 3))
    alpha, alpha_fitted = _fit_alpha(spec, tier, rows.iloc[:edge], measured[:edge])
    spec = _with(spec, tier, alpha=alpha)
    bandwidth = _fit_bandwidth(spec, tier, rows.iloc[-1:], measured[-1:])  # the peak: the largest size
    spec = _with(spec, tier, bandwidth=bandwidth)
    messages = np.array(
        [
            tier_message_bytes(op, float(s), int(n), spec)
            for op, s, n in zip(rows["op"], rows["size"], rows["nranks"], strict=True)
        ]
    )
    eta = np.ones(len(rows))
    for i in range(len(rows) - 1):
        eta[i] = _size_efficiency(spec, tier, rows.iloc[[i]], measured[i], messages[i])
    usable = (messages > 0) & np.isfinite(eta)
    curve = monotone_curve(messages[usable], eta[usable]) if usable.any() else ()
    if curve and all(value >= 1.0 for _, value in curve):
        curve = ()
    spec = _with(spec, tier, efficiency=curve)
    validate(spec)
    return spec, TierFit(tier, alpha, bandwidth, curve, len(rows), alpha_fitted)


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
    rows["tier"] = [tier_of(int(n), spec) for n in rows["nranks"]]
    rows["role"] = np.where(
        np.asarray(holdout if holdout is not None else [False] * len(rows)), "holdout", "fit"
    )
    for op, size, nranks in zip(rows["op"], rows["size"], rows["nranks"], strict=True):
        collective_for(op, float(size), int(nranks), spec)  # fail early on rows that cannot run
    fits: list[TierFit] = []
    for tier in ("nvlink", "nic"):
        mine = rows[(rows["tier"] == tier) & (rows["role"] == "fit")]
        if len(mine):
            spec, tier_fit = fit_tier(spec, tier, mine)
            fits.append(tier_fit)
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
    return Calibration(spec, tuple(fits), table)


def tier_values(spec: LeafSpine) -> dict[str, object]:
    """The fitted topology fields as an experiment file writes them (units in the strings; an
    efficiency curve as ``{bytes: efficiency}``)."""
    values: dict[str, object] = {}
    for alpha, bandwidth, efficiency in _TIER_FIELDS.values():
        values[alpha] = f"{getattr(spec, alpha) * 1e6:.4f}us"
        values[bandwidth] = f"{getattr(spec, bandwidth) / 1e9:.4f}GB/s"
        values[efficiency] = {
            max(1, round(size)): round(float(eta), 4) for size, eta in getattr(spec, efficiency)
        }
    return values


def written_spec(spec: LeafSpine) -> LeafSpine:
    """``spec`` with its tier parameters rounded exactly as :func:`tier_values` writes them, so a
    run of the written experiment file reproduces the calibration's numbers."""
    from experiments.units import parse_bandwidth, parse_time

    written = tier_values(spec)
    changes: dict[str, object] = {}
    for alpha, bandwidth, efficiency in _TIER_FIELDS.values():
        changes[alpha] = parse_time(written[alpha])
        changes[bandwidth] = parse_bandwidth(written[bandwidth])
        changes[efficiency] = tuple((float(size), eta) for size, eta in sorted(written[efficiency].items()))
    return dataclasses.replace(spec, **changes)


def _bus_factor(op: str, nranks: int) -> float:
    from calibration.nccl_log import bus_factor

    return bus_factor(op, nranks)
