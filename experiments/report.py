"""The interactive report of a results directory: one self-contained HTML page (``DIR/report.html``).

::

    from experiments.report import write_report
    write_report(Path("out/quickstart"))      # -> Path("out/quickstart/report.html")

The page embeds plotly.js once, inline, so it works offline. It shows the experiment, a summary
of the points, the failed points, and these figures (each skipped with a sentence when its input
table is absent or empty):

1. completion time against each swept parameter (one trace per transport, seeds as min-max spread);
2. link-load distribution per transport and link class, and the 20 busiest links of a point;
3. flow-completion-time CDFs per transport (quantile-downsampled);
4. a link x time utilization heatmap and a per-GPU timeline (Gantt of ops) of a point.

Per-point figures share one dropdown (plotly ``updatemenus`` switching trace visibility); choosing a
point in one switches the others too. Inputs are in base units (s, bytes, B/s); the page shows
MiB, Gbit/s, ms or µs.
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml
from plotly.subplots import make_subplots

from pages.files import write_atomic
from pages.html import (
    TEMPLATE,
    TRANSPORT_COLORS,
    format_value,
    page_html,
    plot_div,
    time_scale,
    unit_kind,
)

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

METRICS = (
    "completion_time_s",
    "max_link_utilization",
    "max_link_flows",
    "wall_time_s",
    "messages",
    "flows",
    "events",
    "solves",
    "error",
)
CHOICES = ("algorithm", "protocol", "channels")
"""What a collective point ran (:func:`experiments.runner.collective_choice`): outcomes, not parameters."""
NOT_PARAMETERS = frozenset({"point", "seed", "transport", *METRICS, *CHOICES})

TITLES = {
    "completion": "Completion time",
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
FRIENDLY = {"workload.size": "message size"}


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
        params: swept parameter columns other than ``transport`` and ``seed`` (YAML paths).
        transports: transports in order of first appearance.
        flows, links, ops, timeline: detail tables restricted to ``ok`` points, or ``None`` when absent.
    """

    out_dir: Path
    experiment: dict[str, Any]
    ok: pd.DataFrame
    failed: pd.DataFrame
    params: list[str]
    transports: list[str]
    flows: pd.DataFrame | None = None
    links: pd.DataFrame | None = None
    ops: pd.DataFrame | None = None
    timeline: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        """The experiment's name (the directory's name when unknown)."""
        return str(self.experiment.get("name") or self.out_dir.name)

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


def _read(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
    """A Parquet table, or ``None`` when the file does not exist."""
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path, columns=list(columns) if columns else None)
    except Exception as err:  # pyarrow raises several types for damaged or mismatched files
        raise ReportError(f"{path}: cannot read ({type(err).__name__}: {err})".splitlines()[0]) from err


def _restrict(table: pd.DataFrame | None, points: pd.Index) -> pd.DataFrame | None:
    """Rows of ``table`` whose ``point`` is in ``points``; ``None`` stays ``None``."""
    if table is None or "point" not in table.columns:
        return table
    return table[table["point"].isin(points)].reset_index(drop=True)


def load_results(out_dir: Path) -> Results:
    """Read a results directory (DESIGN.md §5). Raises :class:`ReportError` if it has no points."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ReportError(f"{out_dir}: no such results directory (run moesim run first)")
    results = _read(out_dir / "results.parquet")
    if results is None:
        raise ReportError(f"{out_dir}: no results.parquet (run moesim run first)")
    missing = [c for c in ("point", "completion_time_s") if c not in results.columns]
    if missing:
        raise ReportError(f"{out_dir / 'results.parquet'}: missing column {missing[0]!r}")
    if results.empty:
        raise ReportError(f"{out_dir / 'results.parquet'}: no points")
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
    params = [c for c in results.columns if c not in NOT_PARAMETERS]
    experiment: dict[str, Any] = {}
    if (out_dir / "experiment.yaml").exists():
        try:
            loaded = yaml.safe_load((out_dir / "experiment.yaml").read_text())
        except yaml.YAMLError:
            loaded = None
        experiment = loaded if isinstance(loaded, dict) else {}
    keep = pd.Index(ok["point"])
    return Results(
        out_dir=out_dir,
        experiment=experiment,
        ok=ok,
        failed=failed,
        params=params,
        transports=list(dict.fromkeys(results["transport"])),
        flows=_restrict(_read(out_dir / "flows.parquet", ["point", "start", "end"]), keep),
        links=_restrict(_read(out_dir / "links.parquet"), keep),
        ops=_restrict(_read(out_dir / "ops.parquet"), keep),
        timeline=_restrict(_read(out_dir / "timeline.parquet"), keep),
    )


# ------------------------------------------------------------------------------------ units and labels


def _friendly(param: str) -> str:
    """A parameter's name for people: ``topology.uplink_bandwidth`` -> ``uplink bandwidth``."""
    return FRIENDLY.get(param, param.rsplit(".", 1)[-1].replace("_", " "))


def _axis_label(param: str) -> str:
    """Axis title of a parameter with its display unit, e.g. ``message size (MiB)``."""
    name = _friendly(param)
    unit = {"bytes": "MiB", "bandwidth": "Gbit/s", "time": "µs"}.get(unit_kind(param))
    return f"{name} ({unit})" if unit else name


def _axis_values(param: str, values: pd.Series) -> np.ndarray:
    """Parameter values in their display unit (strings stay strings)."""
    kind = unit_kind(param)
    if pd.api.types.is_bool_dtype(values):
        return values.astype(str).to_numpy()
    if not pd.api.types.is_numeric_dtype(values) or not kind:
        return values.to_numpy()
    scale = {"bytes": 1 / MIB, "bandwidth": 8e-9, "time": 1e6}[kind]
    return values.to_numpy(dtype=np.float64) * scale


def _config_label(params: Sequence[str], key: Sequence[Any]) -> str:
    """``message size = 16 MiB, uplink bandwidth = 400 Gbit/s`` (``all points`` when nothing is swept)."""
    if not params:
        return "all points"
    return ", ".join(f"{_friendly(p)} = {format_value(p, v)}" for p, v in zip(params, key, strict=True))


def point_label(row: pd.Series, params: Sequence[str]) -> str:
    """Dropdown label of a point: ``#5 · spray · 16 MiB · seed 1``."""
    parts = [f"#{int(row['point'])}", str(row["transport"])]
    parts += [format_value(p, row[p]) for p in params]
    parts.append(f"seed {row['seed']}")
    return " · ".join(parts)


def _sorted_unique(values: pd.Series) -> list[Any]:
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


def _dropdown_note(res: Results, offered: int, what: str = "points") -> str:
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


def _base_layout(fig: go.Figure, height: int, top: int = 50) -> None:
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin={"l": 70, "r": 30, "t": top, "b": 60},
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )


# ------------------------------------------------------------------------------------ 1 completion time


def _reference_rows(res: Results, others: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Successful points with every parameter in ``others`` at its middle value, and a note saying so."""
    ok = res.ok
    if not others:
        return ok, ""
    mask = pd.Series(True, index=ok.index)
    held = []
    for param in others:
        values = _sorted_unique(ok[param])
        ref = values[(len(values) - 1) // 2]
        mask &= ok[param] == ref
        held.append(f"{_friendly(param)} = {format_value(param, ref)}")
    if not mask.any():
        return ok, "averaged over the other parameters"
    return ok[mask], "at " + ", ".join(held)


def _spread(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean, min, max and count of ``completion_time_s`` over seeds, per value of ``by``."""
    return frame.groupby(by, sort=True)["completion_time_s"].agg(["mean", "min", "max", "count"])


def _param_axis(param: str, values: pd.Series) -> dict[str, Any]:
    """x-axis settings for a swept parameter: log for sizes and wide ranges, ticks at the swept values."""
    values = values.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) or values.empty:
        return {"type": "category"}
    unique = np.unique(_axis_values(param, values))
    axis: dict[str, Any] = {}
    if (unique > 0).all() and unique.size > 1:
        ratio = float(unique.max() / unique.min())
        if unit_kind(param) == "bytes" or ratio >= 16:
            axis["type"] = "log"
    if unique.size <= 12:
        axis.update(tickmode="array", tickvals=unique, ticktext=[f"{v:.4g}" for v in unique])
    return axis


def completion_figure(res: Results) -> Section:
    """Completion time (ms/µs) against each swept parameter; seeds as mean with min-max error bars."""
    section = Section(
        "completion",
        intro="Time until the last GPU finished, per transport. Markers are the mean over seeds; error "
        "bars span the fastest and slowest seed.",
    )
    ok = res.ok.dropna(subset=["completion_time_s"])
    if ok.empty:
        section.skipped = "No successful point has a completion time."
        return section
    factor, unit = time_scale(float(ok["completion_time_s"].max()))
    ytitle = f"completion time ({unit})"
    if not res.params:
        fig = go.Figure()
        for transport in res.transports:
            stats = _spread(ok[ok["transport"] == transport], "transport")
            if stats.empty:
                continue
            mean, lo, hi = (stats[c].to_numpy() * factor for c in ("mean", "min", "max"))
            fig.add_trace(
                go.Bar(
                    x=[transport],
                    y=mean,
                    name=transport,
                    marker_color=res.color(transport),
                    error_y={"type": "data", "symmetric": False, "array": hi - mean, "arrayminus": mean - lo},
                    customdata=np.stack([lo, hi, stats["count"].to_numpy()], axis=1),
                    hovertemplate=f"%{{x}}: %{{y:.4g}} {unit}<br>min %{{customdata[0]:.4g}}, "
                    f"max %{{customdata[1]:.4g}} ({unit}), %{{customdata[2]}} seeds<extra></extra>",
                )
            )
        _base_layout(fig, 420)
        fig.update_layout(showlegend=False, bargap=0.4)
        fig.update_xaxes(title_text="transport")
        fig.update_yaxes(title_text=ytitle, rangemode="tozero")
        section.figure = fig
        return section

    cols = min(len(res.params), 2)
    rows = math.ceil(len(res.params) / cols)
    titles = []
    frames = []
    for param in res.params:
        frame, note = _reference_rows(res, [p for p in res.params if p != param])
        frames.append(frame.dropna(subset=["completion_time_s"]))
        titles.append(f"against {_axis_label(param)}" + (f" — {note}" if note else ""))
    if len(res.params) == 1:
        titles = [""]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.1)
    for i, (param, frame) in enumerate(zip(res.params, frames, strict=True)):
        row, col = i // cols + 1, i % cols + 1
        for transport in res.transports:
            stats = _spread(frame[frame["transport"] == transport], param)
            if stats.empty:
                continue
            x = _axis_values(param, stats.index.to_series())
            mean, lo, hi = (stats[c].to_numpy() * factor for c in ("mean", "min", "max"))
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=mean,
                    mode="lines+markers",
                    name=transport,
                    legendgroup=transport,
                    showlegend=i == 0,
                    line={"color": res.color(transport), "width": 2},
                    marker={"size": 7},
                    error_y={"type": "data", "symmetric": False, "array": hi - mean, "arrayminus": mean - lo},
                    customdata=np.stack([lo, hi, stats["count"].to_numpy()], axis=1),
                    hovertemplate=f"{transport}<br>%{{x}}: %{{y:.4g}} {unit}<br>min %{{customdata[0]:.4g}}, "
                    f"max %{{customdata[1]:.4g}} ({unit}), %{{customdata[2]}} seeds<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(_param_axis(param, frame[param]), title_text=_axis_label(param), row=row, col=col)
        fig.update_yaxes(title_text=ytitle, rangemode="tozero", row=row, col=col)
    height = 140 + 360 * rows
    _base_layout(fig, height, top=100)
    fig.update_layout(legend_y=1.0 + 40 / (height - 160))  # above the subplot titles
    fig.update_annotations(font_size=13)
    section.figure = fig
    return section


# ------------------------------------------------------------------------------------------ 2 link load


def _link_classes(links: pd.DataFrame) -> pd.Series:
    return links["kind"].astype(str).map(lambda k: LINK_CLASSES.get(k, k))


def _with_config(res: Results, configs: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """``point, transport, _cfg`` of the successful points: ``_cfg`` indexes ``configs`` (-1: not there)."""
    index = {key: i for i, key in enumerate(configs)}
    if res.params:
        keys = res.ok[res.params].itertuples(index=False, name=None)
        cfg = [index.get(tuple(key), -1) for key in keys]
    else:
        cfg = [0] * len(res.ok)
    frame = res.ok[["point", "transport"]].assign(_cfg=np.asarray(cfg, dtype=np.int64))
    return frame[frame["_cfg"] >= 0]


def _by_point(table: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Rows of a detail table per point (one pass over the table)."""
    return {int(point): rows for point, rows in table.groupby("point", sort=False)}


def _per_point_figure(
    res: Results,
    chosen: pd.DataFrame,
    section: Section,
    table: pd.DataFrame | None,
    skip: tuple[str, str],
    draw: Callable[[go.Figure, pd.DataFrame], dict[str, Any]],
) -> go.Figure | None:
    """One trace group per chosen point, switched by a dropdown; ``None`` (section skipped) if none.

    ``skip`` is the section's reason when the table is missing and when it has no rows for the
    chosen points; ``draw(fig, rows)`` adds one point's traces and returns that point's layout
    changes (applied when the dropdown picks it).
    """
    if table is None or table.empty:
        section.skipped = skip[0]
        return None
    per_point = _by_point(table[table["point"].isin(chosen["point"])])
    fig = go.Figure()
    labels, groups, layouts = [], [], []
    for _, row in chosen.iterrows():
        rows = per_point.get(int(row["point"]))
        if rows is None:
            continue
        first = len(fig.data)
        layouts.append(draw(fig, rows))
        groups.append(list(range(first, len(fig.data))))
        labels.append(point_label(row, res.params))
    if not fig.data:
        section.skipped = skip[1]
        return None
    add_dropdown(fig, labels, groups, layouts)
    section.notes.append(_dropdown_note(res, len(labels)))
    return fig


def link_load_figure(res: Results) -> Section:
    """Box plot of link utilization (%) per link class and transport, for a configuration (dropdown)."""
    section = Section(
        "link_load",
        intro="Utilization of every link (bytes carried ÷ (capacity × completion time)), pooled over seeds, "
        "per link class. Boxes span the quartiles, whiskers the least and most loaded link.",
        sync="config",
    )
    links = res.links
    if links is None or links.empty:
        section.skipped = (
            "No per-link table (links.parquet) in this directory, so there is no link-load distribution."
        )
        return section
    links = links.assign(_class=_link_classes(links), _pct=links["utilization"].astype(float) * 100.0)
    order = [c for c in ("NVLink", "NIC", "leaf–spine") if c in set(links["_class"])]
    order += sorted(set(links["_class"]) - set(order))
    configs = configurations(res)[:MAX_CONFIGS]
    links = links.merge(_with_config(res, configs), on="point")
    keys = ["_cfg", "transport", "_class"]
    stats = links.groupby(keys, sort=False)["_pct"].quantile([0.0, 0.25, 0.5, 0.75, 1.0]).unstack()
    stats["mean"] = links.groupby(keys, sort=False)["_pct"].mean()
    stats = stats.astype(np.float32)
    fig = go.Figure()
    labels, groups = [], []
    for cfg, key in enumerate(configs):
        members = []
        for transport in res.transports:
            if (cfg, transport) not in stats.index.droplevel(2):
                continue
            box = stats.loc[(cfg, transport)]
            box = box.reindex([c for c in order if c in box.index])
            members.append(len(fig.data))
            fig.add_trace(
                go.Box(
                    x=list(box.index),
                    q1=box[0.25].to_numpy(),
                    median=box[0.5].to_numpy(),
                    q3=box[0.75].to_numpy(),
                    lowerfence=box[0.0].to_numpy(),
                    upperfence=box[1.0].to_numpy(),
                    mean=box["mean"].to_numpy(),
                    name=transport,
                    legendgroup=transport,
                    marker_color=res.color(transport),
                    boxpoints=False,
                )
            )
        labels.append(_config_label(res.params, key))
        groups.append(members)
    if not fig.data:
        section.skipped = "The per-link table has no rows for the successful points."
        return section
    add_dropdown(fig, labels, groups)
    _base_layout(fig, 440, top=60)
    fig.update_layout(boxmode="group")
    fig.update_xaxes(title_text="link class", categoryorder="array", categoryarray=order)
    fig.update_yaxes(title_text="link utilization (%)", rangemode="tozero")
    section.notes.append(_dropdown_note(res, len(configs), "configurations"))
    section.figure = fig
    return section


def busiest_links_figure(res: Results, chosen: pd.DataFrame) -> Section:
    """The 20 most utilized links (%) of the point chosen in the dropdown, coloured by link class."""
    section = Section(
        "busiest",
        intro=f"The {BUSIEST} most utilized links of the chosen point, with their class; hover for bytes, "
        "capacity and the most flows they carried at once.",
        sync="point",
    )

    def draw(fig: go.Figure, top: pd.DataFrame) -> dict[str, Any]:
        top = top.nlargest(BUSIEST, "utilization", keep="first")
        top = top.assign(_class=_link_classes(top))
        for cls, sub in top.groupby("_class", sort=False):
            fig.add_trace(
                go.Bar(
                    x=(sub["utilization"].to_numpy() * 100.0).astype(np.float32),
                    y=sub["name"].astype(str).tolist(),
                    orientation="h",
                    name=str(cls),
                    legendgroup=str(cls),
                    showlegend=True,
                    marker_color=CLASS_COLORS.get(str(cls), "#999999"),
                    customdata=np.stack(
                        [
                            sub["kind"].astype(str).to_numpy(),
                            (sub["bytes"].to_numpy() / MIB).round(3),
                            (sub["capacity_Bps"].to_numpy() * 8e-9).round(3),
                            sub["peak_flows"].to_numpy(),
                        ],
                        axis=1,
                    ),
                    hovertemplate="%{y} (%{customdata[0]})<br>utilization %{x:.1f} %<br>"
                    "%{customdata[1]} MiB, capacity %{customdata[2]} Gbit/s<br>"
                    "at most %{customdata[3]} flows at once<extra></extra>",
                )
            )
        return {"yaxis.categoryarray": top["name"].astype(str).tolist()}

    skip = (
        "No per-link table (links.parquet) in this directory, so there are no busiest links.",
        "The per-link table has no rows for the successful points.",
    )
    fig = _per_point_figure(res, chosen, section, res.links, skip, draw)
    if fig is None:
        return section
    _base_layout(fig, 160 + 22 * BUSIEST, top=60)
    fig.update_layout(barmode="overlay", bargap=0.25)
    fig.update_xaxes(title_text="link utilization (%)", rangemode="tozero")
    fig.update_yaxes(title_text=None, categoryorder="array", autorange="reversed", automargin=True)
    section.figure = fig
    return section


# --------------------------------------------------------------------------------------- 3 FCT CDFs


def cdf_points(values: np.ndarray, n: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(x, F(x))`` of the empirical CDF of ``values``, at most ``n`` points (quantiles when larger).

    Example: ``cdf_points(np.array([3.0, 1.0, 2.0]))`` -> ``([1, 2, 3], [1/3, 2/3, 1])``.
    """
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        return np.empty(0), np.empty(0)
    if values.size <= n:
        return values, np.arange(1, values.size + 1) / values.size
    q = np.linspace(0.0, 1.0, n)
    return np.quantile(values, q, method="inverted_cdf"), q


def fct_figure(res: Results) -> Section:
    """CDF of flow completion time (end - start, µs/ms) per transport, for a configuration (dropdown)."""
    section = Section(
        "fct",
        intro=f"Distribution of flow completion times (end − start of each flow), seeds pooled, one curve "
        f"per transport. Curves with more than {CDF_POINTS:,} flows are drawn from {CDF_POINTS:,} quantiles.",
        sync="config",
    )
    flows = res.flows
    if flows is None:
        section.skipped = (
            "No per-flow table (flows.parquet) in this directory — per-flow recording was turned off — "
            "so there are no flow-completion-time CDFs."
        )
        return section
    if flows.empty:
        section.skipped = "The per-flow table (flows.parquet) has no flows for the successful points."
        return section
    point = flows["point"].to_numpy()
    fct = (flows["end"].to_numpy(np.float64) - flows["start"].to_numpy(np.float64)).astype(np.float64)
    order = np.argsort(point, kind="stable")
    point, fct = point[order], fct[order]
    uniq, starts = np.unique(point, return_index=True)
    per_point = dict(zip(uniq.tolist(), np.split(fct, starts[1:]), strict=True))
    finite = fct[np.isfinite(fct) & (fct > 0)]
    factor, unit = time_scale(float(np.quantile(finite, 0.99)) if finite.size else 1.0)
    configs = configurations(res)[:MAX_CONFIGS]
    keyed = _with_config(res, configs)
    fig = go.Figure()
    labels, groups = [], []
    for cfg, key in enumerate(configs):
        points = keyed[keyed["_cfg"] == cfg]
        members = []
        for transport in res.transports:
            ids = points.loc[points["transport"] == transport, "point"].tolist()
            parts = [per_point[p] for p in ids if p in per_point]
            if not parts:
                continue
            x, y = cdf_points(np.concatenate(parts))
            if x.size == 0:
                continue
            members.append(len(fig.data))
            fig.add_trace(
                go.Scatter(
                    x=(x * factor).astype(np.float32),
                    y=y.astype(np.float32),
                    mode="lines",
                    line={"color": res.color(transport), "width": 2, "shape": "hv"},
                    name=transport,
                    legendgroup=transport,
                    hovertemplate=f"{transport}<br>%{{x:.4g}} {unit}: %{{y:.3f}}<extra></extra>",
                )
            )
        labels.append(_config_label(res.params, key))
        groups.append(members)
    if not fig.data:
        section.skipped = "The per-flow table has no finished flows for the successful points."
        return section
    add_dropdown(fig, labels, groups)
    _base_layout(fig, 440, top=60)
    positive = finite * factor
    log = positive.size > 0 and float(positive.max()) / float(positive.min()) >= 50
    fig.update_xaxes(title_text=f"flow completion time ({unit})", type="log" if log else None)
    fig.update_yaxes(title_text="fraction of flows", range=[0, 1.02])
    section.notes.append(_dropdown_note(res, len(configs), "configurations"))
    section.figure = fig
    return section


# ------------------------------------------------------------------------------- 4 heatmap and Gantt


def _heatmap_matrix(tl: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(z %, bin centres s, link labels)`` of one point's timeline, busiest links first, capped."""
    label = (tl["name"].astype(str) + " (" + tl["kind"].astype(str) + ")").to_numpy()
    rows, names = pd.factorize(label)
    cols, mids = pd.factorize(((tl["t_start"] + tl["t_end"]) / 2.0).to_numpy(np.float64), sort=True)
    total = np.zeros((names.size, mids.size))
    count = np.zeros((names.size, mids.size))
    np.add.at(total, (rows, cols), tl["utilization"].to_numpy(np.float64))
    np.add.at(count, (rows, cols), 1.0)
    z = np.divide(total, count, out=np.zeros_like(total), where=count > 0) * 100.0
    keep = np.argsort(-z.mean(axis=1), kind="stable")[:MAX_HEATMAP_LINKS]
    z, names = z[keep], names[keep]
    mids = np.asarray(mids, dtype=np.float64)
    if z.shape[1] > MAX_HEATMAP_BINS:  # average adjacent bins
        k = math.ceil(z.shape[1] / MAX_HEATMAP_BINS)
        pad = (-z.shape[1]) % k
        z = np.pad(z, ((0, 0), (0, pad)), constant_values=np.nan)
        z = np.nanmean(z.reshape(z.shape[0], -1, k), axis=2)
        mids = np.nanmean(np.pad(mids, (0, pad), constant_values=np.nan).reshape(-1, k), axis=1)
    return z, mids, [str(name) for name in names]


def heatmap_figure(res: Results, chosen: pd.DataFrame) -> Section:
    """Link x time utilization (%) of the busiest links of the point chosen in the dropdown."""
    section = Section(
        "heatmap",
        intro="Average utilization of the busiest links in each time bin of the chosen point "
        f"(at most {MAX_HEATMAP_LINKS} links, busiest at the top).",
        sync="point",
    )

    def draw(fig: go.Figure, sub: pd.DataFrame) -> dict[str, Any]:
        z, mids, names = _heatmap_matrix(sub)
        factor, unit = time_scale(float(sub["t_end"].max()))
        fig.add_trace(
            go.Heatmap(
                z=z.astype(np.float32),
                x=(mids * factor).astype(np.float32),
                y=names,
                coloraxis="coloraxis",
                name=f"point {int(sub['point'].iloc[0])}",
                hovertemplate=f"%{{y}}<br>t = %{{x:.4g}} {unit}<br>utilization %{{z:.1f}} %<extra></extra>",
            )
        )
        return {"xaxis.title.text": f"time ({unit})", "yaxis.categoryarray": names}

    skip = (
        "No link timeline (timeline.parquet) in this directory, so there is no utilization heatmap.",
        "The link timeline has no rows for the successful points.",
    )
    fig = _per_point_figure(res, chosen, section, res.timeline, skip, draw)
    if fig is None:
        return section
    rows = max(len(trace.y) for trace in fig.data)
    _base_layout(fig, 170 + 16 * rows, top=60)
    fig.update_layout(
        coloraxis={
            "colorscale": "YlOrRd",
            "cmin": 0.0,
            "cmax": 100.0,
            "colorbar": {"title": {"text": "utilization (%)", "side": "right"}, "thickness": 14},
        }
    )
    fig.update_yaxes(categoryorder="array", autorange="reversed", automargin=True, tickfont_size=11)
    fig.update_xaxes(showgrid=False)
    section.figure = fig
    return section


def _gantt_ranks(ops: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Ranks to draw (evenly spaced when there are too many) and how many ranks there are."""
    ranks = np.unique(ops["rank"].to_numpy())
    per_rank = int(ops.groupby("rank").size().max())
    limit = max(1, min(MAX_RANKS, MAX_BARS // max(per_rank, 1)))
    if ranks.size <= limit:
        return ranks, ranks.size
    pick = np.unique(np.linspace(0, ranks.size - 1, limit).round().astype(int))
    return ranks[pick], ranks.size


def gantt_figure(res: Results, chosen: pd.DataFrame) -> Section:
    """Per-GPU timeline of the point chosen in the dropdown: one bar per op (compute, collectives)."""
    section = Section(
        "gantt",
        intro="What each GPU rank was doing over time in the chosen point: one bar per op of its program.",
        sync="point",
    )
    ops = res.ops
    op_labels: list[str] = []
    colors: dict[str, str] = {}
    if ops is not None and not ops.empty:
        ops = ops.assign(label=ops["label"].astype(str))
        op_labels = _sorted_unique(ops["label"])
        for i, label in enumerate([lbl for lbl in op_labels if lbl != "compute"]):
            colors[label] = OP_COLORS[i % len(OP_COLORS)]
        colors["compute"] = "#c7c7c7"
    shown = {"capped": 0, "ranks": 0}  # the most ranks any point has / draws

    def draw(fig: go.Figure, sub: pd.DataFrame) -> dict[str, Any]:
        ranks, total = _gantt_ranks(sub)
        if ranks.size < total:
            shown["capped"] = max(shown["capped"], total)
        shown["ranks"] = max(shown["ranks"], ranks.size)
        sub = sub[sub["rank"].isin(ranks)]
        factor, unit = time_scale(float(sub["end"].max()))
        for label in op_labels:
            part = sub[sub["label"] == label]
            if part.empty:
                continue
            start = part["start"].to_numpy(np.float64) * factor
            end = part["end"].to_numpy(np.float64) * factor
            fig.add_trace(
                go.Bar(
                    x=(end - start).astype(np.float32),
                    base=start.astype(np.float32),
                    y=part["rank"].to_numpy(np.int32),
                    orientation="h",
                    name=label,
                    legendgroup=label,
                    marker={"color": colors[label], "line": {"width": 0.5, "color": "#ffffff"}},
                    customdata=np.stack([start, end], axis=1).astype(np.float32),
                    hovertemplate=f"GPU %{{y}}: {label}<br>%{{customdata[0]:.4g}} – %{{customdata[1]:.4g}} "
                    f"{unit} (%{{x:.4g}} {unit})<extra></extra>",
                )
            )
        return {"xaxis.title.text": f"time ({unit})"}

    skip = (
        "No per-op table (ops.parquet) in this directory, so there is no per-GPU timeline.",
        "The per-op table has no rows for the successful points.",
    )
    fig = _per_point_figure(res, chosen, section, ops, skip, draw)
    if fig is None:
        return section
    max_ranks, capped = shown["ranks"], shown["capped"]
    _base_layout(fig, 170 + max(8, min(24, 640 // max(max_ranks, 1))) * max_ranks, top=60)
    fig.update_layout(barmode="overlay", bargap=0.2, showlegend=True)
    fig.update_yaxes(title_text="GPU rank", autorange="reversed", dtick=1 if max_ranks <= 32 else None)
    fig.update_xaxes(rangemode="tozero")
    if capped:  # before the dropdown's note, which the scaffold added
        section.notes.insert(
            len(section.notes) - 1,
            f"Points with more ranks show {max_ranks} of them (evenly spaced; up to {capped} exist).",
        )
    section.figure = fig
    return section


# -------------------------------------------------------------------------------------------- tables


def _table(frame: pd.DataFrame, css: str) -> str:
    """An HTML table of already formatted strings (escaped)."""
    return frame.to_html(index=False, escape=True, classes=css, border=0, na_rep="–")


def summary_table(res: Results) -> str:
    """One row per configuration and transport: seeds, completion time and link metrics."""
    ok = res.ok
    if ok.empty:
        return "<p>No point succeeded.</p>"
    factor, unit = time_scale(float(ok["completion_time_s"].max()))
    keys = [*res.params, "transport"]
    grouped = ok.groupby(keys, sort=False, dropna=False)
    agg: dict[str, Any] = {
        "points": ("point", "count"),
        "ct_mean": ("completion_time_s", "mean"),
        "ct_min": ("completion_time_s", "min"),
        "ct_max": ("completion_time_s", "max"),
    }
    for col, how in (("max_link_utilization", "mean"), ("max_link_flows", "max"), ("flows", "mean")):
        if col in ok.columns:
            agg[col] = (col, how)
    if "wall_time_s" in ok.columns:
        agg["wall_time_s"] = ("wall_time_s", "sum")
    stats = grouped.agg(**agg).reset_index()
    order = {t: i for i, t in enumerate(res.transports)}
    sort_keys = [*res.params, "_t"]
    stats = stats.assign(_t=stats["transport"].map(order))
    try:
        stats = stats.sort_values(sort_keys, kind="stable")
    except TypeError:  # parameter values of mixed types: keep the order of the results
        pass
    stats = stats.reset_index(drop=True)
    out = pd.DataFrame()
    for param in res.params:
        out[_axis_label(param).split(" (")[0]] = [format_value(param, v) for v in stats[param]]
    out["transport"] = stats["transport"].astype(str)
    out["seeds"] = stats["points"].astype(int).astype(str)
    out[f"completion ({unit}), mean [min – max]"] = [
        f"{m * factor:.4g} [{lo * factor:.4g} – {hi * factor:.4g}]"
        for m, lo, hi in zip(stats["ct_mean"], stats["ct_min"], stats["ct_max"], strict=True)
    ]
    if "max_link_utilization" in stats:
        out["max link utilization (%)"] = [f"{v * 100:.1f}" for v in stats["max_link_utilization"]]
    if "max_link_flows" in stats:
        out["max link flows"] = [f"{v:.0f}" if pd.notna(v) else "–" for v in stats["max_link_flows"]]
    if "flows" in stats:
        out["flows"] = [f"{v:,.0f}" if pd.notna(v) else "–" for v in stats["flows"]]
    if "wall_time_s" in stats:
        out["wall time (s)"] = [f"{v:.3g}" for v in stats["wall_time_s"]]
    note = ""
    if len(out) > MAX_SUMMARY_ROWS:
        note = f"<p class='note'>First {MAX_SUMMARY_ROWS} of {len(out)} configurations.</p>"
        out = out.head(MAX_SUMMARY_ROWS)
    return _table(out, "summary") + note


def failed_table(res: Results) -> str:
    """The failed points with their error ("" when none failed)."""
    if res.failed.empty:
        return ""
    out = pd.DataFrame({"point": res.failed["point"].astype(int).astype(str)})
    out["transport"] = res.failed["transport"].astype(str)
    for param in res.params:
        out[_axis_label(param).split(" (")[0]] = [format_value(param, v) for v in res.failed[param]]
    out["seed"] = res.failed["seed"].astype(str)
    out["error"] = res.failed["error"].astype(str)
    n = len(out)
    return (
        f"<h2 id='failed'>Failed points</h2><p>{n} point{'s' if n != 1 else ''} failed and "
        f"{'are' if n != 1 else 'is'} left out of every figure.</p>" + _table(out, "failed")
    )


# ---------------------------------------------------------------------------------------------- page


SYNC_JS = """
window.addEventListener("load", function () {
  var groups = %s;
  Object.keys(groups).forEach(function (group) {
    var ids = groups[group];
    ids.forEach(function (id) {
      var gd = document.getElementById(id);
      if (!gd || !gd.on) { return; }
      gd.on("plotly_buttonclicked", function (ev) {
        var label = ev && ev.button && ev.button.label;
        ids.forEach(function (other) {
          var od = document.getElementById(other);
          if (other === id || !od || !od.layout || !od.layout.updatemenus) { return; }
          var buttons = od.layout.updatemenus[0].buttons;
          for (var i = 0; i < buttons.length; i++) {
            if (buttons[i].label === label) {
              var layout = Object.assign({}, buttons[i].args[1] || {}, {"updatemenus[0].active": i});
              Plotly.update(od, buttons[i].args[0], layout);
              return;
            }
          }
        });
      });
    });
  });
});
"""


def _experiment_html(res: Results) -> str:
    """The experiment at a glance, and its full YAML folded away."""
    exp = res.experiment
    items: list[tuple[str, str]] = []
    topo = exp.get("topology")
    if isinstance(topo, dict):
        items.append(("topology", ", ".join(f"{k}={v}" for k, v in topo.items())))
    work = exp.get("workload")
    if isinstance(work, dict):
        items.append(("workload", ", ".join(f"{k}={v}" for k, v in work.items())))
    if "transport" in exp:
        items.append(("transport", str(exp["transport"])))
    sweep = exp.get("sweep")
    if isinstance(sweep, dict) and sweep:
        items.append(("sweep", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in sweep.items())))
    n_ok, n_failed = len(res.ok), len(res.failed)
    items.append(("points", f"{n_ok + n_failed} ({n_ok} succeeded, {n_failed} failed)"))
    meta = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items)
    text = yaml.safe_dump(exp, sort_keys=False) if exp else ""
    folded = (
        f"<details><summary>experiment.yaml</summary><pre>{html.escape(text)}</pre></details>" if text else ""
    )
    return f"<dl class='meta'>{meta}</dl>{folded}"


def _section_html(section: Section) -> str:
    """A figure's heading, explanation and plot (or the sentence saying why it is missing)."""
    div_id = DIV_IDS[section.key]
    parts = [f"<h2 id='{div_id}-section'>{html.escape(section.title)}</h2>"]
    if section.figure is None:
        parts.append(f"<p class='skipped'>{html.escape(section.skipped)}</p>")
        return "\n".join(parts)
    parts.append(f"<p>{html.escape(section.intro)}</p>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in section.notes if n]
    parts.append(plot_div(section.figure, div_id))
    return "\n".join(parts)


def build_sections(res: Results) -> list[Section]:
    """Every figure of the page, in order (skipped ones carry their reason)."""
    chosen = choose_points(res)
    sections = [
        completion_figure(res),
        link_load_figure(res),
        busiest_links_figure(res, chosen),
        fct_figure(res),
        heatmap_figure(res, chosen),
        gantt_figure(res, chosen),
    ]
    if res.ok.empty:
        for section in sections:
            section.figure = None
            section.skipped = "Every point failed, so there is nothing to plot."
    return sections


def _installed_version() -> str:
    """The installed moesim version, ``"dev"`` from a source tree (as ``experiments.store`` says)."""
    try:
        return version("moesim")
    except PackageNotFoundError:
        return "dev"


def render_html(res: Results) -> str:
    """The whole page as one string: plotly.js inline once, then the tables and figures."""
    sections = build_sections(res)
    groups: dict[str, list[str]] = {}
    for section in sections:
        if section.sync and section.figure is not None:
            groups.setdefault(section.sync, []).append(DIV_IDS[section.key])
    nav = "".join(f"<a href='#{DIV_IDS[s.key]}-section'>{html.escape(s.title)}</a>" for s in sections)
    if not res.failed.empty:
        nav += "<a href='#failed'>Failed points</a>"
    name = html.escape(res.name)
    where = html.escape(str(res.out_dir))
    version = html.escape(str(res.experiment.get("moesim_version") or _installed_version()))
    body = "\n".join(
        [
            f"<h1>moesim report: {name}</h1>",
            f"<p class='sub'>Experiment <b>{name}</b>, results in <code>{where}</code>, "
            f"simulated with moesim {version}.</p>",
            f"<nav>{nav}</nav>",
            _experiment_html(res),
            "<h2 id='summary'>Summary</h2>",
            "<p>Per configuration and transport, over seeds. Link utilization is the busiest link's bytes ÷ "
            "(capacity × completion time).</p>",
            summary_table(res),
            failed_table(res),
            *(_section_html(s) for s in sections),
        ]
    )
    sync = f"<script>{SYNC_JS % json.dumps(groups)}</script>" if groups else ""
    return page_html(f"moesim report: {name}", body, f"{sync}\n")


def write_report(out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` (atomically: temporary file, then ``os.replace``) and return its path.

    Raises:
        ReportError: ``out_dir`` has no (readable) ``results.parquet`` or no points in it.
    """
    out_dir = Path(out_dir)
    page = render_html(load_results(out_dir))
    target = out_dir / "report.html"
    write_atomic(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.report DIR``: write DIR/report.html; exit status 2 on a bad directory."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m experiments.report DIR", file=sys.stderr)
        return 2
    try:
        print(f"wrote {write_report(Path(args[0]))}")
    except ReportError as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
