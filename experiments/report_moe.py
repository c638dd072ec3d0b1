"""The report's MoE figures: per-GPU layer phases, per-GPU token load, and cross-host bytes and
placement objective per placement (with the ILP's bound and gap where an ILP placement ran).

Inputs: ``ops.parquet`` (labels ``moeN/dispatch|experts|combine`` per rank), ``gpu_load.parquet``
(per point, layer and GPU: the token copies its experts process) and the MoE metrics of
``results.parquet``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from experiments.report_data import Results, Section, add_dropdown, base_layout, dropdown_note, point_label
from pages.html import TRANSPORT_COLORS, time_scale

PHASES = ("dispatch", "experts", "combine")
PHASE_COLORS = {"dispatch": "#4c78a8", "experts": "#54a24b", "combine": "#f58518"}


def is_moe(res: Results) -> bool:
    """Whether the run's points are MoE layers (they have a layer time)."""
    return "layer_time_s" in res.ok.columns and res.ok["layer_time_s"].notna().any()


def phases_figure(res: Results, chosen: pd.DataFrame) -> Section:
    """Per GPU, the mean over layers of its dispatch, expert and combine time (stacked), per point."""
    section = Section(
        "moe_phases",
        intro="How long each GPU spends in each phase of a MoE layer, averaged over the simulated "
        "layers: the busiest GPU's expert time and the slowest all-to-all set the layer time.",
        sync="point",
    )
    ops = res.ops
    if ops is None or ops.empty:
        section.skipped = "No per-op table (ops.parquet), so there are no per-GPU phases."
        return section
    parts = ops["label"].astype(str).str.extract(r"^moe(?P<layer>\d+)/(?P<phase>dispatch|experts|combine)$")
    moe = ops.assign(phase=parts["phase"], duration=ops["end"] - ops["start"]).dropna(subset=["phase"])
    if moe.empty:
        section.skipped = "The ops hold no MoE layer phases."
        return section
    per = (
        moe.groupby(["point", "rank", "phase"])["duration"].sum()
        / moe.groupby(["point", "rank", "phase"])["duration"].count()
    )
    per = per.unstack("phase")
    factor, unit = time_scale(float(np.nanmax(per.to_numpy())))
    fig = go.Figure()
    labels, groups = [], []
    for _, row in chosen.iterrows():
        point = int(row["point"])
        if point not in per.index.get_level_values(0):
            continue
        rows = per.loc[point]
        first = len(fig.data)
        for phase in PHASES:
            if phase in rows.columns:
                fig.add_trace(
                    go.Bar(
                        x=rows.index.to_numpy(),
                        y=rows[phase].to_numpy() * factor,
                        name=phase,
                        legendgroup=phase,
                        showlegend=first == 0,
                        marker_color=PHASE_COLORS[phase],
                        hovertemplate=f"GPU %{{x}} {phase}: %{{y:.4g}} {unit}<extra></extra>",
                    )
                )
        groups.append(list(range(first, len(fig.data))))
        labels.append(point_label(res, row))
    if not fig.data:
        section.skipped = "No MoE phases for the points offered."
        return section
    add_dropdown(fig, labels, groups)
    base_layout(fig, 420, top=60)
    fig.update_layout(barmode="stack", bargap=0.1)
    fig.update_xaxes(title_text="GPU")
    fig.update_yaxes(title_text=f"time per layer ({unit})")
    section.notes.append(dropdown_note(res, len(labels)))
    section.figure = fig
    return section


def tokens_figure(res: Results, chosen: pd.DataFrame) -> Section:
    """Per GPU, the token copies its experts process (mean over layers), per point, with the mean."""
    section = Section(
        "moe_tokens",
        intro="Token copies each GPU's experts process per layer (mean over the simulated layers), "
        "under the point's placement; the dashed line is the mean over GPUs. A flat profile is a "
        "balanced placement.",
        sync="point",
    )
    load = res.gpu_load
    if load is None or load.empty:
        section.skipped = "No per-GPU token table (gpu_load.parquet) in this directory."
        return section
    mean = load.groupby(["point", "gpu"])["tokens"].mean()
    fig = go.Figure()
    labels, groups, layouts = [], [], []
    for _, row in chosen.iterrows():
        point = int(row["point"])
        if point not in mean.index.get_level_values(0):
            continue
        rows = mean.loc[point]
        first = len(fig.data)
        fig.add_trace(
            go.Bar(
                x=rows.index.to_numpy(),
                y=rows.to_numpy(),
                name="tokens",
                marker_color="#54a24b",
                showlegend=False,
                hovertemplate="GPU %{x}: %{y:.1f} tokens per layer<extra></extra>",
            )
        )
        groups.append([first])
        layouts.append(
            {
                "shapes": [
                    {
                        "type": "line",
                        "xref": "paper",
                        "x0": 0,
                        "x1": 1,
                        "y0": float(rows.mean()),
                        "y1": float(rows.mean()),
                        "line": {"dash": "dash", "color": "#888"},
                    }
                ]
            }
        )
        labels.append(point_label(res, row))
    if not fig.data:
        section.skipped = "No token loads for the points offered."
        return section
    add_dropdown(fig, labels, groups, layouts)
    base_layout(fig, 400, top=60)
    fig.update_xaxes(title_text="GPU")
    fig.update_yaxes(title_text="token copies per layer", rangemode="tozero")
    section.notes.append(dropdown_note(res, len(labels)))
    section.figure = fig
    return section


def placement_figure(res: Results) -> Section:
    """Cross-host bytes and the placement objective per placement (mean over seeds, min–max bars);
    the ILP's lower bound as a line and its gap in the hover where an ILP placement ran."""
    section = Section(
        "moe_cross_host",
        intro="Bytes that cross a host's NICs, and the placement objective (busiest GPU's tokens plus "
        "the priced inter-layer traffic, tokens per GPU, on the fit trace), per placement. Markers are "
        "the mean over seeds, bars the min–max; ◆ marks the ILP's proven lower bound on the objective.",
    )
    ok = res.ok
    if "cross_host_bytes" not in ok.columns or ok["cross_host_bytes"].isna().all():
        section.skipped = "No MoE point has cross-host bytes."
        return section
    x_col = "placement" if "placement" in res.schema.parameters else None
    others = [
        c for c in res.schema.parameters if c not in (x_col, "seed") and ok[c].nunique(dropna=False) > 1
    ]
    from plotly.subplots import make_subplots

    panels = ["cross-host bytes (MiB)"]
    has_objective = "placement_objective" in ok.columns and ok["placement_objective"].notna().any()
    if has_objective:
        panels.append("placement objective (tokens per GPU)")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.12)
    keys = others or None
    grouped = ok.groupby(keys, sort=False, dropna=False) if keys else [((), ok)]
    for i, (key, group) in enumerate(grouped):
        key = key if isinstance(key, tuple) else (key,)
        name = " · ".join(res.format(c, v) for c, v in zip(others, key, strict=True)) or "all points"
        color = TRANSPORT_COLORS[i % len(TRANSPORT_COLORS)]
        x = group[x_col].astype(str) if x_col else pd.Series(["all"] * len(group), index=group.index)
        for col, (metric, scale) in enumerate(
            [("cross_host_bytes", 1 / float(1 << 20)), ("placement_objective", 1.0)][: len(panels)], start=1
        ):
            stats = group.assign(_x=x).groupby("_x", sort=False)[metric].agg(["mean", "min", "max", "count"])
            fig.add_trace(
                go.Scatter(
                    x=stats.index.to_numpy(),
                    y=stats["mean"].to_numpy() * scale,
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (stats["max"] - stats["mean"]).to_numpy() * scale,
                        "arrayminus": (stats["mean"] - stats["min"]).to_numpy() * scale,
                    },
                    mode="markers",
                    marker={"size": 9, "color": color},
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    customdata=stats["count"].to_numpy(),
                    hovertemplate=f"{name}<br>%{{x}}: %{{y:.4g}} (%{{customdata}} seeds)<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if has_objective and "ilp_bound" in group.columns and group["ilp_bound"].notna().any():
            ilp = group[group["ilp_bound"].notna()].assign(_x=x)
            bound = ilp.groupby("_x", sort=False)[["ilp_bound", "ilp_gap"]].mean()
            fig.add_trace(
                go.Scatter(
                    x=bound.index.to_numpy(),
                    y=bound["ilp_bound"].to_numpy(),
                    mode="markers",
                    marker={
                        "symbol": "diamond",
                        "size": 11,
                        "color": color,
                        "line": {"color": "#222", "width": 1},
                    },
                    name=f"{name}: ILP bound",
                    legendgroup=name,
                    showlegend=False,
                    customdata=bound["ilp_gap"].to_numpy() * 100,
                    hovertemplate="ILP lower bound %{y:.4g}, gap %{customdata:.2f}%<extra></extra>",
                ),
                row=1,
                col=2,
            )
    base_layout(fig, 460, top=60)
    fig.update_layout(legend={"orientation": "h", "x": 0.0, "xanchor": "left", "y": -0.25, "yanchor": "top"})
    fig.update_yaxes(tickformat=".4~s")
    fig.update_xaxes(title_text=res.label(x_col) if x_col else "", type="category")
    section.figure = fig
    return section


def moe_sections(res: Results, chosen: pd.DataFrame) -> list[Section]:
    """The MoE figures (empty for a run without MoE points)."""
    if not is_moe(res):
        return []
    return [phases_figure(res, chosen), tokens_figure(res, chosen), placement_figure(res)]
