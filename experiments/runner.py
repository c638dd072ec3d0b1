"""Run the points of an experiment: build the fabric and programs, simulate, measure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from experiments.config import Experiment
from simulator.engine import SimResult, simulate
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from workloads.collectives import collective_programs, collective_schedule


@dataclass
class PointResult:
    """One point's contract row and its detail tables (each with the point id)."""

    row: dict[str, Any]
    flows: pd.DataFrame
    links: pd.DataFrame
    ops: pd.DataFrame


def simulate_point(point: Experiment) -> SimResult:
    """Simulate one point of an experiment."""
    spec = point.topology.spec()
    fabric = compile_fabric(spec)
    work = point.workload
    schedule = collective_schedule(
        spec, work.op, float(work.size), algorithm=work.algorithm, ranks=work.ranks, k=work.k, seed=point.seed
    )
    return simulate(fabric, collective_programs(schedule), parse_transport(point.transport), seed=point.seed)


def run_point(index: int, swept: dict[str, Any], point: Experiment) -> PointResult:
    """Simulate point ``index`` and return its results row (DESIGN.md §5 columns) and detail."""
    wall = time.perf_counter()
    result = simulate_point(point)
    summary = result.summary()
    resolved = point.model_dump()
    row: dict[str, Any] = {"point": index, "seed": point.seed}
    for path in swept:
        if path != "seed":
            row[path] = _lookup(resolved, path)
    row.setdefault("transport", point.transport)
    row.update(summary)
    row["wall_time_s"] = time.perf_counter() - wall
    return PointResult(
        row=row,
        flows=result.flows().assign(point=index),
        links=result.links().assign(point=index),
        ops=result.ops.assign(point=index),
    )


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted YAML path of a resolved (base-unit) experiment."""
    for part in dotted.split("."):
        data = data[part]
    return data
