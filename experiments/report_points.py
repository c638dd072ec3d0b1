"""The report's per-point figures: link-load distribution, busiest links, flow-completion-time
CDFs, link x time heatmap and per-GPU timeline, each switched between points (or configurations)
by a dropdown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from experiments.report_data import (
    BUSIEST,
    CDF_POINTS,
    CLASS_COLORS,
    LINK_CLASSES,
    MAX_BARS,
    MAX_CONFIGS,
    MAX_HEATMAP_BINS,
    MAX_HEATMAP_LINKS,
    MAX_RANKS,
    MIB,
    OP_COLORS,
    Results,
    Section,
    add_dropdown,
    base_layout,
    config_label,
    configurations,
    dropdown_note,
    point_label,
    sorted_unique,
)
from pages.html import time_scale

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
        labels.append(point_label(res, row))
    if not fig.data:
        section.skipped = skip[1]
        return None
    add_dropdown(fig, labels, groups, layouts)
    section.notes.append(dropdown_note(res, len(labels)))
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
        labels.append(config_label(res, res.params, key))
        groups.append(members)
    if not fig.data:
        section.skipped = "The per-link table has no rows for the successful points."
        return section
    add_dropdown(fig, labels, groups)
    base_layout(fig, 440, top=60)
    fig.update_layout(boxmode="group")
    fig.update_xaxes(title_text="link class", categoryorder="array", categoryarray=order)
    fig.update_yaxes(title_text="link utilization (%)", rangemode="tozero")
    section.notes.append(dropdown_note(res, len(configs), "configurations"))
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
    base_layout(fig, 160 + 22 * BUSIEST, top=60)
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
        labels.append(config_label(res, res.params, key))
        groups.append(members)
    if not fig.data:
        section.skipped = "The per-flow table has no finished flows for the successful points."
        return section
    add_dropdown(fig, labels, groups)
    base_layout(fig, 440, top=60)
    positive = finite * factor
    log = positive.size > 0 and float(positive.max()) / float(positive.min()) >= 50
    fig.update_xaxes(title_text=f"flow completion time ({unit})", type="log" if log else None)
    fig.update_yaxes(title_text="fraction of flows", range=[0, 1.02])
    section.notes.append(dropdown_note(res, len(configs), "configurations"))
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
    base_layout(fig, 170 + 16 * rows, top=60)
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
        op_labels = sorted_unique(ops["label"])
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
    base_layout(fig, 170 + max(8, min(24, 640 // max(max_ranks, 1))) * max_ranks, top=60)
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
