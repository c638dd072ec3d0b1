"""Run one point of an experiment: build the fabric and programs, simulate, measure.

:func:`run_point` never raises for a failing point: the error is recorded in its row, so one bad
point does not stop a sweep.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from experiments.config import Experiment
from simulator.engine import SimResult, simulate
from simulator.transport import parse_transport
from topologies.compiled import compile_fabric
from workloads.collectives import collective_programs, collective_schedule

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


def simulate_point(point: Experiment) -> SimResult:
    """Simulate one point of an experiment."""
    spec = point.topology.spec()
    fabric = compile_fabric(spec)
    work = point.workload
    schedule = collective_schedule(
        spec, work.op, float(work.size), algorithm=work.algorithm, ranks=work.ranks, k=work.k, seed=point.seed
    )
    return simulate(
        fabric,
        collective_programs(schedule),
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
        result = simulate_point(point)
    except Exception as err:  # recorded, not raised: the sweep goes on
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        row.update({name: np.nan for name in METRICS})
        row["wall_time_s"] = time.perf_counter() - wall
        row["error"] = last
        return PointResult(row)
    row.update(result.summary())
    links = result.links()
    tables = {"links": links, "ops": result.ops}
    if point.record.flows:
        tables["flows"] = result.flows()
    if point.record.timeline:
        busiest = links.nlargest(point.record.timeline_links, "bytes", keep="first")["link"].to_numpy()
        tables["timeline"] = result.timeline(np.sort(busiest), point.record.timeline_bins)
    row["wall_time_s"] = time.perf_counter() - wall
    row["error"] = None
    return PointResult(row, {name: table.assign(point=index) for name, table in tables.items()})
