"""Run one point of an experiment: build the fabric and programs, simulate, measure.

:func:`run_point` never raises for a failing point: the error is recorded in its row, so one bad
point does not stop a sweep.
"""

from __future__ import annotations

import functools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.config import CollectiveWorkload, ConfigError, Experiment, placement_method
from experiments.placing import make_placement, point_trace, point_traces, saved_placement
from placement.ilp import highs_available, placement_objective
from placement.layout import Placement, PlacementError, load_placement, round_robin
from placement.stats import evaluate, gpu_cost, placement_stats
from simulator.engine import SimResult, simulate
from simulator.ops import Schedule
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from topologies.leaf_spine import LeafSpine
from workloads.collectives import collective_programs, collective_schedule
from workloads.kernel_model import GPUS, KernelTableError, MeasuredGEMM, RooflineGEMM
from workloads.kineto import KinetoError, KinetoTrace, load_kineto
from workloads.moe import moe_metrics, moe_programs
from workloads.replay import replay_programs
from workloads.replay_comm import CommModel, ReplayError, check_comm
from workloads.routing_trace import RoutingTrace, TraceError

METRICS = (
    "completion_time_s",
    "max_link_utilization",
    "max_link_flows",
    "messages",
    "flows",
    "events",
    "solves",
)


@dataclass
class PointResult:
    """One point's results row and its detail tables (each with a ``point`` column)."""

    row: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.row.get("error") is not None


def point_placement(point: Experiment, fit: RoutingTrace) -> Placement:
    """The placement named by the point: the one solved ahead of the run (:func:`presolve`), a
    method run on the statistics of the ``fit`` trace, or a file."""
    saved = saved_placement(point, fit)
    if saved is not None:
        return saved
    if placement_method(point.placement) is None:
        return load_placement(point.placement, fit.num_experts, fit.layers, fit.gpus)
    spec = point.topology.spec()
    home = point.workload.token_home
    return make_placement(point.placement, fit, spec, seed=point.seed, ilp=point.ilp, token_home=home)[0]


@functools.lru_cache(maxsize=4)
def _load_kineto(path: str, mtime_ns: int) -> KinetoTrace:
    return load_kineto(path)


def _replay_setup(point: Experiment) -> tuple[KinetoTrace, int, CommModel]:
    work = point.workload
    trace = _load_kineto(str(work.trace), work.trace.stat().st_mtime_ns)
    comm = CommModel(
        hidden=work.hidden,
        tokens=work.tokens,
        top_k=work.top_k,
        experts=work.experts,
        hierarchical=work.dispatch == "hierarchical",
        notify_bytes=float(work.notify_size),
        nccl_size=None if work.nccl_size is None else float(work.nccl_size),
    )
    return trace, work.ranks or trace.world_size or 1, comm


def preflight(point: Experiment) -> None:
    """Check what validation alone cannot, without simulating: that a trace reads and fits the
    fabric, and that a placement is feasible. Raises :class:`ConfigError` naming the field."""
    work = point.workload
    if work.kind == "replay":
        try:
            trace, ranks, comm = _replay_setup(point)
        except KinetoError as err:
            raise ConfigError(f"workload.trace: {err}") from None
        spec = point.topology.spec()
        if ranks > spec.gpus:
            raise ConfigError(f"workload.ranks: {ranks} ranks but the fabric has {spec.gpus} GPUs")
        try:
            check_comm(comm, ranks, spec.gpus_per_host, labels={k.comm for k in trace.communication})
        except ReplayError as err:
            raise ConfigError(f"workload: {err}") from None
        return
    if work.kind != "moe":
        return
    spec = point.topology.spec()
    if work.trace is not None:
        try:
            trace = point_trace(point)
        except TraceError as err:
            raise ConfigError(f"workload.trace: {err}") from None
        experts, layers, gpus = trace.num_experts, trace.layers, trace.gpus
    else:
        experts, layers, gpus = work.synth.experts, work.synth.layers, spec.gpus
    if gpus > spec.gpus:
        raise ConfigError(
            f"workload.trace: tokens on {gpus} GPUs but the fabric has {spec.gpus} (use a bigger fabric)"
        )
    if work.dispatch == "hierarchical" and gpus % spec.gpus_per_host:
        raise ConfigError(
            f"workload.dispatch: hierarchical needs whole hosts, but {gpus} GPUs is not a multiple of "
            f"gpus_per_host={spec.gpus_per_host}"
        )
    if work.kernel_table is not None:
        try:
            table = MeasuredGEMM.from_csv(str(work.kernel_table), dtype=work.dtype)
            hidden = work.hidden or (trace.hidden if work.trace is not None else 0)
            table.expert_time(np.array([1.0]), hidden, work.ffn_hidden or hidden)
        except KernelTableError as err:
            raise ConfigError(f"workload.kernel_table: {err}") from None
    if point.placement_fit is not None:
        try:
            point_traces(point)
        except ValueError as err:
            raise ConfigError(f"placement_fit: {err}") from None
    method = placement_method(point.placement)
    try:
        if method is None:
            placement = load_placement(point.placement, experts, layers, gpus)
        elif method[0] == "eplb":
            return  # replicas fill every GPU's slots equally: always feasible
        elif method[0] == "ilp" and point.ilp.solver == "highs" and not highs_available():
            raise PlacementError("ilp.solver: highs is not installed (pip install highspy), use cbc or auto")
        else:
            placement = round_robin(experts, gpus, layers)  # the same equal-split constraint
    except PlacementError as err:
        raise ConfigError(f"placement: {err}") from None
    if placement.layers < min(work.layers or layers, layers):
        raise ConfigError(
            f"placement: covers {placement.layers} layers, the workload runs {work.layers or layers}"
        )


def workload_schedule(spec: LeafSpine, work: CollectiveWorkload, seed: int) -> Schedule:
    """The schedule of a collective workload on ``spec`` (every field of ``work`` that shapes it)."""
    return collective_schedule(
        spec,
        work.op,
        float(work.size),
        algorithm=work.algorithm,
        ranks=work.ranks,
        k=work.k,
        seed=seed,
        protocol=work.protocol,
        channels=work.channels,
        qps=work.qps_per_connection,
    )


def point_programs(point: Experiment, placement: Placement | None = None) -> dict:
    """Per-rank (or per GPU stream) programs of a point's workload (a MoE point uses ``placement``
    when given, else :func:`point_placement`)."""
    spec = point.topology.spec()
    work = point.workload
    if work.kind == "replay":
        trace, ranks, comm = _replay_setup(point)
        return replay_programs(trace, spec, ranks=ranks, comm=comm, respect_launch=work.respect_launch)
    if work.kind == "collective":
        return collective_programs(workload_schedule(spec, work, point.seed))
    fit, trace = point_traces(point)
    hidden = work.hidden or trace.hidden
    if work.kernel_table is not None:
        kernel = MeasuredGEMM.from_csv(str(work.kernel_table), dtype=work.dtype)
    else:
        kernel = RooflineGEMM(GPUS[work.gpu], work.dtype, int(round(work.bytes_per_element)), work.efficiency)
    return moe_programs(
        trace,
        placement or point_placement(point, fit),
        spec,
        kernel,
        hidden=hidden,
        ffn_hidden=work.ffn_hidden or hidden,
        bytes_per_element=work.bytes_per_element,
        combine_bytes_per_element=work.combine_bytes_per_element,
        hierarchical=work.dispatch == "hierarchical",
        layers=work.layers,
        token_home=work.token_home,
        channels=work.channels,
        qps=work.qps_per_connection,
    )


def moe_point_metrics(
    point: Experiment, placement: Placement, ops: pd.DataFrame, links: pd.DataFrame
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A MoE point's metrics and its per-GPU token load.

    Metrics: the layer, all-to-all and expert times (:func:`workloads.moe.moe_metrics`);
    ``placement``'s token-load balance on the simulated tokens (``load_ratio``: mean over layers
    of the busiest GPU's tokens over the mean) and ``fit_tokens``/``run_tokens``; the ILP's
    objective of the placement on the fit trace (``placement_objective``, tokens per GPU: what
    every method is judged by), and for an ILP placement the solver's ``ilp_bound`` (a lower
    bound on that objective) and ``ilp_gap``. The table has one row per simulated layer and GPU:
    ``layer``, ``gpu``, ``tokens`` (token copies its experts process).
    """
    fit, trace = point_traces(point)
    layers = trace.layers if point.workload.layers is None else min(point.workload.layers, trace.layers)
    spec = point.topology.spec()
    scored = evaluate(placement, placement_stats(trace), spec)
    ratios = np.asarray(scored["load_ratio"][:layers], dtype=np.float64)
    home = "home" if point.workload.token_home == "top_expert" else "slot"
    objective = placement_objective(
        placement, placement_stats(fit, home), gpu_cost(spec, fit.gpus), point.ilp.lam
    )
    metrics: dict[str, Any] = {
        **moe_metrics(ops, links),
        "load_ratio": float(np.nanmean(ratios)) if np.isfinite(ratios).any() else float("nan"),
        "fit_tokens": fit.tokens,
        "run_tokens": trace.tokens,
        "placement_objective": objective,
        "ilp_bound": float("nan"),
        "ilp_gap": float("nan"),
    }
    if point._placement_file is not None:
        report = json.loads(Path(point._placement_file).read_text()).get("ilp", {})
        metrics["ilp_bound"] = float(report.get("best_bound", float("nan")))
        metrics["ilp_gap"] = float(report.get("gap", float("nan")))
    load = np.asarray(scored["gpu_load"][:layers], dtype=np.float64)
    table = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(load.shape[0], dtype=np.int64), load.shape[1]),
            "gpu": np.tile(np.arange(load.shape[1], dtype=np.int64), load.shape[0]),
            "tokens": load.ravel(),
        }
    )
    return metrics, table


def collective_choice(programs: dict) -> dict[str, Any]:
    """What a collective point ran: ``algorithm``, ``protocol`` and ``channels`` of its schedule
    (``algorithm`` is the schedule's name after the op for moesim's own, ``protocol`` None there)."""
    schedule = next(op for ops in programs.values() for op in ops).schedule
    return {
        "algorithm": schedule.algorithm or schedule.name.split("/", 1)[-1],
        "protocol": schedule.protocol,
        "channels": schedule.channels,
    }


def simulate_point(
    point: Experiment, placement: Placement | None = None, programs: dict | None = None
) -> SimResult:
    """Simulate one point of an experiment (a MoE point under ``placement`` when given; the
    point's :func:`point_programs` unless ``programs`` are given)."""
    return simulate(
        compile_fabric(point.topology.spec()),
        point_programs(point, placement) if programs is None else programs,
        parse_transport(point.transport),
        seed=point.seed,
        record_timeline=point.record.timeline,
    )


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted YAML path of a resolved (base-unit) experiment."""
    for part in dotted.split("."):
        data = data[part]
    return data


def point_row(index: int, swept: dict[str, Any], point: Experiment) -> dict[str, Any]:
    """The identifying columns of a point's row: ``point``, ``seed``, swept paths, ``transport``."""
    resolved = point.model_dump()
    row: dict[str, Any] = {"point": index, "seed": point.seed}
    for path in swept:
        if path != "seed":
            row[path] = _lookup(resolved, path)
    row.setdefault("transport", point.transport)
    return row


def run_point(index: int, swept: dict[str, Any], point: Experiment) -> PointResult:
    """Simulate point ``index``; return its results row (DESIGN.md §5 columns) and detail tables."""
    wall = time.perf_counter()
    row = point_row(index, swept, point)
    try:
        placement = point_placement(point, point_traces(point)[0]) if point.workload.kind == "moe" else None
        programs = point_programs(point, placement)
        result = simulate_point(point, placement, programs)
    except Exception as err:  # recorded, not raised: the sweep goes on
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        row.update({name: np.nan for name in METRICS})
        row["wall_time_s"] = time.perf_counter() - wall
        row["error"] = last
        return PointResult(row)
    row.update(result.summary())
    if point.workload.kind == "collective":
        row.update(collective_choice(programs))
    links = result.links()
    tables = {"links": links, "ops": result.ops}
    if point.workload.kind == "moe":
        metrics, tables["gpu_load"] = moe_point_metrics(point, placement, result.ops, links)
        row.update(metrics)
    if point.record.flows:
        tables["flows"] = result.flows()
    if point.record.timeline:
        busiest = links.nlargest(point.record.timeline_links, "bytes", keep="first")["link"].to_numpy()
        tables["timeline"] = result.timeline(np.sort(busiest), point.record.timeline_bins)
    row["wall_time_s"] = time.perf_counter() - wall
    row["error"] = None
    return PointResult(row, {name: table.assign(point=index) for name, table in tables.items()})
