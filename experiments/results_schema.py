"""What each column of ``results.parquet`` is, stored in the file itself.

Every results table carries, in its Parquet schema metadata under the key ``moesim``, a JSON
document::

    {"format": 1,
     "experiment": "spray-vs-ecmp",
     "columns": {"completion_time_s": {"role": "metric", "unit": "s", "label": "completion time"},
                 "workload.size": {"role": "parameter", "unit": "B", "label": "message size"}, ...},
     "axes": [["transport"], ["workload.op", "workload.algorithm"], ["seed"]],
     "baseline": {"transport": "spray"}}

Roles (the column convention of DESIGN.md §5):

- ``id``: ``point`` (the point's index in the sweep) and ``seed`` (also a parameter when swept:
  then it is listed in ``axes``, but a report treats it as repetitions, never as a group).
- ``parameter``: a swept YAML path (its values as resolved, in base units), and ``transport``.
- ``setting``: what moesim resolved for the point and did not come from the sweep: the
  ``algorithm``, ``protocol`` and ``channels`` that ``algorithm: auto`` chose.
- ``metric``: a measured output, with its unit (``s``, ``B``, ``1`` for a ratio, ``flows``...).
- ``status``: ``error`` (None when the point ran).

``axes`` are the sweep's axes in file order (a ``zip:`` group is one axis of several paths);
``baseline`` is what a report compares against (``report: {baseline: ...}`` in the YAML, or the
first value of the first swept axis other than ``seed``). Read both with :func:`read_results`;
nothing has to guess a column's meaning from its name or dtype.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"moesim"
FORMAT = 1
ROLES = ("id", "parameter", "setting", "metric", "status")


class SchemaError(ValueError):
    """A results table whose columns are not all described (the message names the column)."""


@dataclass(frozen=True)
class Column:
    """One column's role, unit (``s``, ``B``, ``B/s``, ``1``, ``flows``, ... or ``""``) and label."""

    role: str
    unit: str = ""
    label: str = ""


METRICS: dict[str, Column] = {
    "completion_time_s": Column("metric", "s", "completion time"),
    "max_link_utilization": Column("metric", "1", "max link utilization"),
    "max_link_flows": Column("metric", "flows", "max flows on a link"),
    "messages": Column("metric", "messages", "messages"),
    "flows": Column("metric", "flows", "flows"),
    "events": Column("metric", "events", "engine events"),
    "solves": Column("metric", "solves", "rate solves"),
    "wall_time_s": Column("metric", "s", "wall time of the point"),
    "layer_time_s": Column("metric", "s", "MoE layer time"),
    "dispatch_time_s": Column("metric", "s", "dispatch time"),
    "combine_time_s": Column("metric", "s", "combine time"),
    "a2a_tail_s": Column("metric", "s", "all-to-all tail"),
    "expert_time_s": Column("metric", "s", "expert time (busiest GPU)"),
    "expert_time_ratio": Column("metric", "1", "busiest / mean expert time"),
    "cross_host_bytes": Column("metric", "B", "cross-host bytes"),
    "load_ratio": Column("metric", "1", "busiest / mean GPU tokens"),
    "fit_tokens": Column("metric", "tokens", "tokens fitted on"),
    "run_tokens": Column("metric", "tokens", "tokens simulated"),
    "placement_objective": Column("metric", "tokens", "placement objective"),
    "ilp_bound": Column("metric", "tokens", "ILP lower bound"),
    "ilp_gap": Column("metric", "1", "ILP gap"),
}
"""Every metric a point's row may hold, with its unit."""

SETTINGS: dict[str, Column] = {
    "algorithm": Column("setting", "", "algorithm"),
    "protocol": Column("setting", "", "protocol"),
    "channels": Column("setting", "channels", "channels"),
}
"""What moesim resolved for a collective point (``algorithm: auto``)."""

FIXED: dict[str, Column] = {
    "point": Column("id", "", "point"),
    "seed": Column("id", "", "seed"),
    "error": Column("status", "", "error"),
}

LABELS = {
    "workload.size": "message size",
    "workload.op": "op",
    "workload.algorithm": "algorithm (asked)",
    "workload.qps_per_connection": "QPs per connection",
    "workload.channels": "channels (asked)",
    "transport": "transport",
}


@dataclass(frozen=True)
class ResultsSchema:
    """The columns of a results table, the sweep's axes and the report's baseline."""

    columns: dict[str, Column]
    axes: list[list[str]] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""

    def names(self, *roles: str) -> list[str]:
        """The columns with one of ``roles``, in table order."""
        return [name for name, column in self.columns.items() if column.role in roles]

    @property
    def parameters(self) -> list[str]:
        """Swept parameters (``seed`` excluded: it is repetitions)."""
        return self.names("parameter")

    @property
    def metrics(self) -> list[str]:
        return self.names("metric")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "experiment": self.experiment,
                "columns": {name: asdict(column) for name, column in self.columns.items()},
                "axes": self.axes,
                "baseline": self.baseline,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ResultsSchema:
        data = json.loads(text)
        columns = {name: Column(**spec) for name, spec in data["columns"].items()}
        return cls(columns, data.get("axes", []), data.get("baseline", {}), data.get("experiment", ""))


def describe_columns(
    names: Iterable[str], swept: Sequence[str], units: Mapping[str, str] | None = None
) -> dict[str, Column]:
    """The :class:`Column` of every name of a results table.

    Args:
        names: the table's columns.
        swept: the swept YAML paths (``seed`` included when swept).
        units: the unit of each swept path (from the experiment's field types).

    Raises:
        SchemaError: a column that is neither swept, nor a known metric, setting or id.
    """
    units = units or {}
    columns: dict[str, Column] = {}
    for name in names:
        if name in FIXED:
            columns[name] = FIXED[name]
        elif name in swept or name == "transport":
            label = LABELS.get(name, name.rsplit(".", 1)[-1].replace("_", " "))
            columns[name] = Column("parameter", units.get(name, ""), label)
        elif name in METRICS:
            columns[name] = METRICS[name]
        elif name in SETTINGS:
            columns[name] = SETTINGS[name]
        else:
            raise SchemaError(f"results column {name!r} has no role (add it to experiments.results_schema)")
    return columns


def write_results(table: pd.DataFrame, path: Path, schema: ResultsSchema) -> None:
    """Write ``table`` to Parquet at ``path`` with ``schema`` in its metadata."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[META_KEY] = schema.to_json().encode()
    pq.write_table(arrow.replace_schema_metadata(meta), path)


def read_schema(path: Path) -> ResultsSchema | None:
    """The schema stored in a results file, or None for a file written before it was stored."""
    meta = pq.read_schema(path).metadata or {}
    text = meta.get(META_KEY)
    return None if text is None else ResultsSchema.from_json(text)


def read_results(path: Path) -> tuple[pd.DataFrame, ResultsSchema]:
    """A results table and its schema.

    A file without stored schema (written by moesim before format 1) gets one inferred from the
    column convention: known metrics, settings and ids by name, every other column a parameter.
    """
    table = pd.read_parquet(path)
    schema = read_schema(path)
    if schema is None:
        known = {**FIXED, **METRICS, **SETTINGS}
        swept = [name for name in table.columns if name not in known]
        first = next((name for name in [*swept, "transport"] if name in table.columns), None)
        baseline = {}
        if first is not None and len(table):
            value = table[first].iloc[0]
            baseline = {first: value.item() if hasattr(value, "item") else value}
        schema = ResultsSchema(describe_columns(table.columns, swept), [[name] for name in swept], baseline)
    missing = [name for name in table.columns if name not in schema.columns]
    if missing:
        raise SchemaError(f"{path}: columns {missing} are not described in its schema")
    return table, schema
