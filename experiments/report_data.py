"""What the report of a results directory is built from: its tables, what each column is (read
from the results' schema, :mod:`experiments.results_schema`), labels and units for people, the
points offered in per-point dropdowns, and the dropdown itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pyarrow.parquet as pq
import yaml

from experiments.results_schema import ResultsSchema, SchemaError, read_results
from experiments.store import MANIFEST, MARKER, read_manifest
from pages.html import TEMPLATE, TRANSPORT_COLORS, format_unit

MIB = float(1 << 20)
MAX_POINTS = 50  # points offered in the per-point dropdown
MAX_CONFIGS = 50  # configurations offered in the per-configuration dropdown
CDF_POINTS = 2000  # quantiles kept per CDF curve
BUSIEST = 20  # links in the busiest-links chart
MAX_HEATMAP_LINKS = 40  # rows of the utilization heatmap
MAX_HEATMAP_BINS = 120  # columns of the utilization heatmap (adjacent bins are averaged)
MAX_RANKS = 64  # GPU rows of the timeline
MAX_BARS = 4000  # ops drawn per point in the timeline
MAX_SUMMARY_ROWS = 100

TITLES = {
    "headline": "Headline",
    "explorer": "Explorer",
    "moe_phases": "MoE layer phases per GPU",
    "moe_tokens": "Per-GPU token load",
    "moe_cross_host": "Cross-host bytes per placement",
    "link_load": "Link-load distribution",
    "busiest": "Busiest links",
    "fct": "Flow-completion-time CDF",
    "heatmap": "Link utilization over time",
    "gantt": "Per-GPU timeline",
}
DIV_IDS = {key: f"fig-{key.replace('_', '-')}" for key in TITLES}

OP_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#9d755d")
LINK_CLASSES = {
    "nvlink_up": "NVLink",
    "nvlink_down": "NVLink",
    "nic_up": "NIC",
    "nic_down": "NIC",
    "uplink": "leaf–spine",
    "downlink": "leaf–spine",
    "trunk_up": "leaf–spine",
    "trunk_down": "leaf–spine",
}
CLASS_COLORS = {"NVLink": "#9ecae1", "NIC": "#3182bd", "leaf–spine": "#e6550d"}


class ReportError(ValueError):
    """A results directory that cannot be reported on (the message is one line)."""


@dataclass
class Results:
    """The tables of one results directory, failed points split off.

    Attributes:
        out_dir: the results directory.
        experiment: ``experiment.yaml`` (empty when absent).
        ok: points that succeeded (``error`` null), in point order.
        failed: points with an error.
        schema: what each column of ``results.parquet`` is (its stored schema).
        params: swept parameter columns other than ``transport`` and ``seed`` (YAML paths).
        transports: transports in order of first appearance.
        flows, links, ops, timeline, gpu_load: detail tables restricted to ``ok`` points, or
            ``None`` when absent.
    """

    out_dir: Path
    experiment: dict[str, Any]
    ok: pd.DataFrame
    failed: pd.DataFrame
    schema: ResultsSchema
    params: list[str]
    transports: list[str]
    flows: pd.DataFrame | None = None
    links: pd.DataFrame | None = None
    ops: pd.DataFrame | None = None
    timeline: pd.DataFrame | None = None
    gpu_load: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        """The experiment's name (the directory's name when unknown)."""
        return str(self.experiment.get("name") or self.schema.experiment or self.out_dir.name)

    @property
    def settings(self) -> list[str]:
        """Resolved settings (``algorithm``, ``protocol``, ``channels``) that vary among the points."""
        return [c for c in self.schema.names("setting") if self.ok[c].nunique(dropna=False) > 1]

    @property
    def metrics(self) -> list[str]:
        """Metric columns with at least one value."""
        return [c for c in self.schema.metrics if self.ok[c].notna().any()]

    def label(self, column: str) -> str:
        """A column's name for people (``message size``)."""
        spec = self.schema.columns.get(column)
        return spec.label if spec and spec.label else column.rsplit(".", 1)[-1].replace("_", " ")

    def unit(self, column: str) -> str:
        """A column's base unit from the schema (``B``, ``s``, ``1``, ...; ``""`` when none)."""
        spec = self.schema.columns.get(column)
        return spec.unit if spec else ""

    def format(self, column: str, value: Any) -> str:
        """A value of ``column`` for people: ``16 MiB``, ``1.2 ms``, ``ecmp``."""
        return format_unit(self.unit(column), value)

    def axis_label(self, column: str) -> str:
        """Axis title of a parameter with its display unit, e.g. ``message size (MiB)``."""
        unit = {"B": "MiB", "B/s": "Gbit/s", "s": "µs"}.get(self.unit(column))
        return f"{self.label(column)} ({unit})" if unit else self.label(column)

    def color(self, transport: str) -> str:
        """The colour of ``transport``, the same in every figure."""
        return TRANSPORT_COLORS[self.transports.index(transport) % len(TRANSPORT_COLORS)]


@dataclass
class Section:
    """One figure of the page: a heading, a sentence of explanation, the figure or why it is missing."""

    key: str
    intro: str = ""
    figure: go.Figure | None = None
    skipped: str = ""
    notes: list[str] = field(default_factory=list)
    sync: str = ""  # figures with the same non-empty sync group switch their dropdowns together

    @property
    def title(self) -> str:
        return TITLES[self.key]


# --------------------------------------------------------------------------------------------- loading


def _read(
    path: Path, columns: Sequence[str] | None = None, points: Sequence[int] | None = None
) -> pd.DataFrame | None:
    """A Parquet table (only the rows of ``points`` when given), or ``None`` when the file does not
    exist."""
    if not path.exists():
        return None
    try:
        wanted = list(columns) if columns else None
        if points is not None and "point" in pq.read_schema(path).names:
            rows = pd.read_parquet(path, columns=wanted, filters=[("point", "in", list(points))])
            return rows.reset_index(drop=True)
        return pd.read_parquet(path, columns=wanted)
    except Exception as err:  # pyarrow raises several types for damaged or mismatched files
        raise ReportError(f"{path}: cannot read ({type(err).__name__}: {err})".splitlines()[0]) from err


def _restrict(table: pd.DataFrame | None, points: pd.Index) -> pd.DataFrame | None:
    """Rows of ``table`` whose ``point`` is in ``points``; ``None`` stays ``None``."""
    if table is None or "point" not in table.columns:
        return table
    return table[table["point"].isin(points)].reset_index(drop=True)


def load_results(out_dir: Path) -> Results:
    """Read a results directory (DESIGN.md §5). Raises :class:`ReportError` if it has no points,
    or when a run wrote it (its marker and chunks are there) but did not finish (no valid
    manifest); a folder of an older moesim (one folder per point, no manifest) reads as before."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ReportError(f"{out_dir}: no such results directory (run moesim run first)")
    path = out_dir / "results.parquet"
    if not path.exists():
        raise ReportError(f"{out_dir}: no results.parquet (run moesim run first)")
    chunked = (out_dir / "points").is_dir() and any((out_dir / "points").glob("chunk-*.json"))
    if (out_dir / MARKER).exists() and chunked and read_manifest(out_dir) is None:
        raise ReportError(
            f"{out_dir}: its run did not finish (no {MANIFEST}, or its tables changed since); "
            "rerun the same 'moesim run' with --resume"
        )
    try:
        results, schema = read_results(path)
    except SchemaError as err:
        raise ReportError(str(err)) from None
    except Exception as err:  # pyarrow raises several types for damaged or mismatched files
        raise ReportError(f"{path}: cannot read ({type(err).__name__}: {err})".splitlines()[0]) from err
    missing = [c for c in ("point", "completion_time_s") if c not in results.columns]
    if missing:
        raise ReportError(f"{path}: missing column {missing[0]!r}")
    if results.empty:
        raise ReportError(f"{path}: no points")
    results = results.sort_values("point", kind="stable").reset_index(drop=True)
    if "transport" not in results.columns:
        results["transport"] = "default"
    if "seed" not in results.columns:
        results["seed"] = 0
    results["transport"] = results["transport"].astype(str)
    error = results["error"] if "error" in results.columns else pd.Series(None, index=results.index)
    failed_mask = error.notna() & (error.astype(str) != "")
    ok = results[~failed_mask].reset_index(drop=True)
    failed = results[failed_mask].reset_index(drop=True)
    params = [c for c in schema.parameters if c not in ("transport", "seed")]
    experiment: dict[str, Any] = {}
    if (out_dir / "experiment.yaml").exists():
        try:
            loaded = yaml.safe_load((out_dir / "experiment.yaml").read_text())
        except yaml.YAMLError:
            loaded = None
        experiment = loaded if isinstance(loaded, dict) else {}
    keep = pd.Index(ok["point"])
    res = Results(
        out_dir=out_dir,
        experiment=experiment,
        ok=ok,
        failed=failed,
        schema=schema,
        params=params,
        transports=list(dict.fromkeys(results["transport"])),
        flows=_restrict(_read(out_dir / "flows.parquet", ["point", "start", "end"]), keep),
        links=_restrict(_read(out_dir / "links.parquet"), keep),
        ops=None,
        timeline=None,
        gpu_load=None,
    )
    # the per-point tables only for the points the per-point figures offer (choose_points): a
    # sweep of 10,000 points reads 50 points' timelines, not 10,000
    chosen = [int(p) for p in choose_points(res)["point"]]
    per_point = {
        name: _read(out_dir / f"{name}.parquet", points=chosen) for name in ("ops", "timeline", "gpu_load")
    }
    return dataclasses.replace(res, **per_point)


# ------------------------------------------------------------------------------------ units and labels


def config_label(res: Results, params: Sequence[str], key: Sequence[Any]) -> str:
    """``message size = 16 MiB, uplink bandwidth = 400 Gbit/s`` (``all points`` when nothing is swept)."""
    if not params:
        return "all points"
    return ", ".join(f"{res.label(p)} = {res.format(p, v)}" for p, v in zip(params, key, strict=True))


def point_label(res: Results, row: pd.Series) -> str:
    """Dropdown label of a point: ``#5 · spray · 16 MiB · seed 1``."""
    parts = [f"#{int(row['point'])}", str(row["transport"])]
    parts += [res.format(p, row[p]) for p in res.params]
    parts.append(f"seed {row['seed']}")
    return " · ".join(parts)


def sorted_unique(values: pd.Series) -> list[Any]:
    """Distinct values, numeric ones in numeric order, others as first seen."""
    unique = list(dict.fromkeys(values.dropna()))
    try:
        return sorted(unique)
    except TypeError:
        return unique


# ------------------------------------------------------------------------------- configurations/points


def configurations(res: Results) -> list[tuple[Any, ...]]:
    """Distinct values of the swept parameters (transport and seed aside) among successful points."""
    if not res.params:
        return [()]
    frame = res.ok[res.params].drop_duplicates()
    keys = [tuple(r) for r in frame.itertuples(index=False, name=None)]
    try:
        return sorted(keys)
    except TypeError:
        return keys


def choose_points(res: Results, limit: int = MAX_POINTS) -> pd.DataFrame:
    """Successful points offered in per-point dropdowns, at most ``limit``.

    All of them when they fit; otherwise one representative seed per configuration and transport
    (the one with the median completion time), and of those the ``limit`` with the busiest link
    (highest ``max_link_utilization``). Returned in point order.
    """
    ok = res.ok
    if len(ok) <= limit:
        return ok
    groups = ok.groupby([*res.params, "transport"], sort=False, dropna=False)
    chosen = []
    for _, group in groups:
        ordered = group.sort_values("completion_time_s", kind="stable")
        chosen.append(ordered.iloc[(len(ordered) - 1) // 2])
    frame = pd.DataFrame(chosen)
    if len(frame) > limit:
        busy = frame.get("max_link_utilization", frame["completion_time_s"])
        frame = frame.assign(_busy=busy.fillna(-1.0)).sort_values("_busy", ascending=False, kind="stable")
        frame = frame.head(limit).drop(columns="_busy")
    return frame.sort_values("point", kind="stable").reset_index(drop=True)


def dropdown_note(res: Results, offered: int, what: str = "points") -> str:
    """The sentence saying which points the dropdown offers."""
    total = len(res.ok) if what == "points" else len(configurations(res))
    if offered >= total:
        return ""
    if what == "points":
        groups = res.ok.groupby([*res.params, "transport"], dropna=False).ngroups
        busiest = f", and of those the {offered} with the busiest link" if offered < groups else ""
        return (
            f"The dropdown offers {offered} of {total} successful points: one representative seed "
            f"(median completion time) per configuration and transport{busiest}."
        )
    return f"The dropdown offers the first {offered} of {total} configurations."


def add_dropdown(
    fig: go.Figure,
    labels: Sequence[str],
    traces: Sequence[Sequence[int]],
    layouts: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Show one option's traces at a time, switched by a dropdown (``updatemenus``) above the plot.

    Args:
        fig: the figure, holding every option's traces.
        labels: the options' labels.
        traces: per option, the indices of its traces in ``fig.data``.
        layouts: per option, layout properties to set when it is chosen (e.g. axis titles).
    """
    n = len(fig.data)
    masks = []
    for members in traces:
        mask = [False] * n
        for i in members:
            mask[i] = True
        masks.append(mask)
    for i, visible in enumerate(masks[0] if masks else []):
        fig.data[i].visible = visible
    layouts = list(layouts) if layouts is not None else [{} for _ in labels]
    if layouts and layouts[0]:
        fig.update_layout(layouts[0])
    if len(labels) <= 1:
        return
    buttons = [
        {"label": label, "method": "update", "args": [{"visible": mask}, layout]}
        for label, mask, layout in zip(labels, masks, layouts, strict=True)
    ]
    fig.update_layout(
        updatemenus=[
            {
                "type": "dropdown",
                "direction": "down",
                "active": 0,
                "showactive": True,
                "buttons": buttons,
                "x": 0.0,
                "xanchor": "left",
                "y": 1.02,
                "yanchor": "bottom",
                "pad": {"r": 4, "t": 0, "b": 4},
                "bgcolor": "#f7f7f7",
                "bordercolor": "#bbb",
                "font": {"size": 12},
            }
        ]
    )


def base_layout(fig: go.Figure, height: int, top: int = 50) -> None:
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin={"l": 70, "r": 30, "t": top, "b": 60},
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
