"""The top of the report: the study's answer against its baseline, the summary and failed points.

The baseline is the one the results' schema names (``report: {baseline: ...}`` in the YAML, or
the first value of the first swept axis other than ``seed``). Every other swept parameter makes a
group (op × algorithm × size ...); within a group each metric of each other value of the baseline
axis is divided by the baseline's, seed by seed where the baseline ran that seed, and shown as the
mean over seeds with the min–max spread and the seed count. Groups are never averaged together.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from experiments.report_data import MAX_SUMMARY_ROWS, Results, Section, base_layout
from pages.html import TRANSPORT_COLORS, format_unit, time_scale

HEADLINE_METRICS = (
    "completion_time_s",
    "layer_time_s",
    "dispatch_time_s",
    "combine_time_s",
    "expert_time_s",
    "cross_host_bytes",
    "max_link_utilization",
)
"""Metrics the headline compares, in order, when a point has them (at most :data:`MAX_HEADLINE_METRICS`)."""
MAX_HEADLINE_METRICS = 4

SUMMARY_SKIP = frozenset({"messages", "events", "solves", "fit_tokens", "run_tokens"})
"""Metrics left out of the summary table (they are in the explorer)."""

MAX_HEADLINE_GROUPS = 60
COUNTS = frozenset({"flows", "messages", "events", "solves", "tokens", "channels"})
"""Units of whole counts, printed as integers."""


def _key(values: Any) -> tuple[Any, ...]:
    return values if isinstance(values, tuple) else (values,)


def baseline_columns(res: Results) -> list[str]:
    """The swept columns the baseline fixes (one, or a ``zip:`` group's several)."""
    return [c for c in res.schema.baseline if c in res.ok.columns]


def group_columns(res: Results) -> list[str]:
    """The parameters that make the headline's groups: every swept one but the baseline's and seed."""
    fixed = set(baseline_columns(res))
    return [
        c
        for c in res.schema.parameters
        if c not in fixed and c != "seed" and res.ok[c].nunique(dropna=False) > 1
    ]


def headline_metrics(res: Results) -> list[str]:
    """The headline's metrics present in the successful points."""
    present = set(res.metrics)
    return [m for m in HEADLINE_METRICS if m in present][:MAX_HEADLINE_METRICS]


def _sortable(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    try:
        return frame.sort_values(list(columns), kind="stable")
    except TypeError:  # values of mixed types: keep the results' order
        return frame


def _matches(column: pd.Series, value: Any) -> np.ndarray:
    """``column == value``, with a missing value (None, NaN: e.g. ``algorithm: null``) equal to a
    missing one, so a group whose parameter is null still finds its baseline."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return column.isna().to_numpy()
    return (column == value).to_numpy()


def compare(res: Results) -> pd.DataFrame:
    """One row per group and compared value: per metric the ratio to the baseline.

    Columns: the group columns, the baseline columns (the compared value), ``seeds``, and per
    metric ``M`` the baseline's mean ``M/base``, the compared mean ``M/mean`` and the ratio's
    ``M/ratio``, ``M/ratio_min``, ``M/ratio_max`` over seeds. The baseline's own rows are left out.
    """
    base_cols, groups, metrics = baseline_columns(res), group_columns(res), headline_metrics(res)
    ok = res.ok
    if not base_cols or not metrics:
        return pd.DataFrame()
    base_key = tuple(res.schema.baseline[c] for c in base_cols)
    is_base = np.ones(len(ok), dtype=bool)
    for column, value in zip(base_cols, base_key, strict=True):
        is_base &= _matches(ok[column], value)
    base = ok[is_base]
    rows = []
    by = groups or None
    for gkey, group in ok.groupby(by, sort=False, dropna=False) if by else [((), ok)]:
        gkey = _key(gkey)
        reference = base
        for column, value in zip(groups, gkey, strict=True):
            reference = reference[_matches(reference[column], value)]
        if reference.empty:
            continue
        for vkey, compared in group[~group.index.isin(reference.index)].groupby(
            base_cols, sort=False, dropna=False
        ):
            row: dict[str, Any] = dict(zip(groups, gkey, strict=True))
            row.update(dict(zip(base_cols, _key(vkey), strict=True)))
            row["seeds"] = compared["seed"].nunique()
            for metric in metrics:
                ref_by_seed = reference.groupby("seed")[metric].mean()
                ref_mean = float(reference[metric].mean())
                denominators = compared["seed"].map(ref_by_seed).fillna(ref_mean).to_numpy(dtype=float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = compared[metric].to_numpy(dtype=float) / denominators
                ratio = ratio[np.isfinite(ratio)]
                row[f"{metric}/base"] = ref_mean
                row[f"{metric}/mean"] = float(compared[metric].mean())
                row[f"{metric}/ratio"] = float(ratio.mean()) if ratio.size else np.nan
                row[f"{metric}/ratio_min"] = float(ratio.min()) if ratio.size else np.nan
                row[f"{metric}/ratio_max"] = float(ratio.max()) if ratio.size else np.nan
            rows.append(row)
    table = pd.DataFrame(rows)
    return _sortable(table, groups) if len(table) else table


def _value_label(res: Results, columns: Sequence[str], values: Sequence[Any]) -> str:
    return " / ".join(res.format(c, v) for c, v in zip(columns, values, strict=True))


def _group_label(res: Results, groups: Sequence[str], row: pd.Series) -> str:
    if not groups:
        return "all points"
    return " · ".join(res.format(c, row[c]) for c in groups)


def _settings_note(res: Results, groups: Sequence[str], row: pd.Series) -> str:
    """What NCCL's choice resolved to in a group (``ring/Simple, 16 ch``), "" when nothing was resolved."""
    settings = [c for c in ("algorithm", "protocol", "channels") if c in res.schema.columns]
    if not settings:
        return ""
    mask = np.ones(len(res.ok), dtype=bool)
    for column in groups:
        mask &= (res.ok[column] == row[column]).to_numpy()
    rows = res.ok[mask]
    parts = []
    for column in settings:
        values = [str(v) for v in dict.fromkeys(rows[column].dropna())]
        if values:
            parts.append(f"{' | '.join(values)}{' ch' if column == 'channels' else ''}")
    return "/".join(parts[:2]) + (f", {parts[2]}" if len(parts) > 2 else "")


def headline_answer(res: Results, table: pd.DataFrame) -> str:
    """One sentence per compared value: the range of its ratio over the groups (HTML)."""
    base_cols, groups = baseline_columns(res), group_columns(res)
    metric = headline_metrics(res)[0]
    base_text = _value_label(res, base_cols, [res.schema.baseline[c] for c in base_cols])
    sentences = []
    for vkey, rows in table.groupby(base_cols, sort=False, dropna=False):
        ratio = rows[f"{metric}/ratio"]
        worst = rows.loc[ratio.idxmax()]
        best = rows.loc[ratio.idxmin()]
        name = _value_label(res, base_cols, _key(vkey))
        where = (
            f" (worst: {html.escape(_group_label(res, groups, worst))}; "
            f"best: {html.escape(_group_label(res, groups, best))})"
            if groups and len(rows) > 1
            else ""
        )
        span = f"{ratio.min():.3f}×" if len(rows) == 1 else f"{ratio.min():.3f}–{ratio.max():.3f}×"
        sentences.append(
            f"<li><b>{html.escape(name)}</b>: {span} "
            f"{html.escape(base_text)}'s {html.escape(res.label(metric))}"
            f" over {len(rows)} group{'s' if len(rows) != 1 else ''}{where}.</li>"
        )
    return "<ul class='answer'>" + "".join(sentences) + "</ul>"


def headline_table(res: Results, table: pd.DataFrame) -> str:
    """Per group and compared value: the baseline's value and each metric's ratio [min–max] (HTML)."""
    base_cols, groups, metrics = baseline_columns(res), group_columns(res), headline_metrics(res)
    first = metrics[0]
    scale = time_scale(float(res.ok[first].max())) if res.unit(first) == "s" else (1.0, res.unit(first))
    out = pd.DataFrame()
    for column in groups:
        out[res.label(column)] = [res.format(column, v) for v in table[column]]
    notes = [_settings_note(res, groups, row) for _, row in table.iterrows()]
    if any(notes):
        out["NCCL's choice"] = notes
    out[" / ".join(res.label(c) for c in base_cols)] = [
        _value_label(res, base_cols, [row[c] for c in base_cols]) for _, row in table.iterrows()
    ]
    out["seeds"] = table["seeds"].astype(int).astype(str)
    base_text = _value_label(res, base_cols, [res.schema.baseline[c] for c in base_cols])
    out[f"{res.label(first)} of {base_text} ({scale[1]})"] = [
        f"{v * scale[0]:.4g}" for v in table[f"{first}/base"]
    ]
    for metric in metrics:
        out[f"{res.label(metric)} ÷ {base_text}"] = [
            f"{m:.3f} [{lo:.3f} – {hi:.3f}]" if np.isfinite(m) else "–"
            for m, lo, hi in zip(
                table[f"{metric}/ratio"],
                table[f"{metric}/ratio_min"],
                table[f"{metric}/ratio_max"],
                strict=True,
            )
        ]
    note = ""
    if len(out) > MAX_SUMMARY_ROWS:
        note = f"<p class='note'>First {MAX_SUMMARY_ROWS} of {len(out)} rows; the explorer has them all.</p>"
        out = out.head(MAX_SUMMARY_ROWS)
    table_html = out.to_html(index=False, escape=True, classes="headline", border=0, na_rep="–")
    return f"<div class='scroll'>{table_html}</div>{note}"


def headline_figure(res: Results, table: pd.DataFrame) -> go.Figure:
    """The first headline metric's ratio to the baseline per group, one marker per compared value,
    error bars min–max over seeds, a line at 1."""
    base_cols, groups = baseline_columns(res), group_columns(res)
    metric = headline_metrics(res)[0]
    shown = table.head(MAX_HEADLINE_GROUPS * max(1, table.groupby(base_cols, dropna=False).ngroups))
    labels = [_group_label(res, groups, row) for _, row in shown.iterrows()]
    shown = shown.assign(_label=labels)
    fig = go.Figure()
    for i, (vkey, rows) in enumerate(shown.groupby(base_cols, sort=False, dropna=False)):
        name = _value_label(res, base_cols, _key(vkey))
        mean = rows[f"{metric}/ratio"].to_numpy()
        fig.add_trace(
            go.Scatter(
                x=rows["_label"] if groups else [name] * len(rows),
                y=mean,
                mode="markers",
                name=name,
                marker={"size": 9, "color": TRANSPORT_COLORS[i % len(TRANSPORT_COLORS)]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": rows[f"{metric}/ratio_max"].to_numpy() - mean,
                    "arrayminus": mean - rows[f"{metric}/ratio_min"].to_numpy(),
                },
                customdata=np.stack(
                    [rows[f"{metric}/ratio_min"], rows[f"{metric}/ratio_max"], rows["seeds"]], axis=1
                ),
                hovertemplate=f"{name}<br>%{{x}}<br>%{{y:.4f}}× (min %{{customdata[0]:.4f}}, "
                "max %{customdata[1]:.4f}, %{customdata[2]} seeds)<extra></extra>",
            )
        )
    base_text = _value_label(res, base_cols, [res.schema.baseline[c] for c in base_cols])
    base_layout(fig, 460 if groups else 380, top=60)
    fig.add_hline(y=1.0, line={"color": "#888", "dash": "dash", "width": 1})
    x_title = " · ".join(res.label(c) for c in groups) or " / ".join(res.label(c) for c in base_cols)
    longest = max((len(label) for label in labels), default=0)
    # long group labels: slanted, and the margin grows to fit them (automargin) instead of cutting them
    fig.update_xaxes(
        title_text=x_title, type="category", automargin=True, tickangle=-30 if longest > 12 else 0
    )
    fig.update_yaxes(title_text=f"{res.label(metric)} ÷ {base_text}'s")
    return fig


def headline_section(res: Results) -> tuple[Section, str]:
    """The headline figure's section and the HTML (answer and table) that goes above it."""
    section = Section("headline")
    base_cols = baseline_columns(res)
    if not base_cols:
        section.skipped = "Nothing is swept, so there is no baseline to compare against (see the summary)."
        return section, ""
    metrics = headline_metrics(res)
    table = compare(res)
    if table.empty or not metrics:
        section.skipped = "No successful point to compare with the baseline in the same group."
        return section, ""
    base_text = _value_label(res, base_cols, [res.schema.baseline[c] for c in base_cols])
    groups = group_columns(res)
    seeds = sorted(set(res.ok["seed"]))
    section.intro = (
        f"Each metric divided by the baseline's ({' / '.join(res.label(c) for c in base_cols)} = "
        f"{base_text}) in the same group"
        + (f" ({' × '.join(res.label(c) for c in groups)})" if groups else "")
        + f", seed by seed: the mean over seeds, [min – max] and the seed count ({len(seeds)} seed"
        f"{'s' if len(seeds) != 1 else ''} in the run). Below 1 is faster (or less) than the baseline."
    )
    section.figure = headline_figure(res, table)
    return section, headline_answer(res, table) + headline_table(res, table)


def summary_table(res: Results) -> str:
    """One row per group of swept parameters (transport included): seeds and every metric's mean
    [min – max] over seeds, in the metric's unit."""
    ok = res.ok
    if ok.empty:
        return "<p>No point succeeded.</p>"
    keys = [c for c in res.schema.parameters if c != "seed"]
    metrics = [m for m in res.metrics if m not in SUMMARY_SKIP]
    grouped = ok.groupby(keys, sort=False, dropna=False) if keys else [((), ok)]
    rows = []
    for key, group in grouped:
        row = dict(zip(keys, _key(key), strict=True))
        row["seeds"] = group["seed"].nunique()
        for metric in metrics:
            values = group[metric].dropna()
            row[metric] = (values.mean(), values.min(), values.max()) if len(values) else None
        rows.append(row)
    stats = _sortable(pd.DataFrame(rows), keys).reset_index(drop=True)
    out = pd.DataFrame()
    for column in keys:
        out[res.label(column)] = [res.format(column, v) for v in stats[column]]
    out["seeds"] = stats["seeds"].astype(str)
    for metric in metrics:
        unit = res.unit(metric)
        factor, shown = (1.0, unit)
        if unit == "s":
            factor, shown = time_scale(float(ok[metric].max()))
        elif unit == "1" and metric.endswith("utilization"):
            factor, shown = 100.0, "%"
        title = res.label(metric) + (f" ({shown})" if shown and shown not in ("1",) else "")
        out[title] = [_cell(cell, factor, unit) for cell in stats[metric]]
    note = ""
    if len(out) > MAX_SUMMARY_ROWS:
        note = f"<p class='note'>First {MAX_SUMMARY_ROWS} of {len(out)} configurations.</p>"
        out = out.head(MAX_SUMMARY_ROWS)
    return (
        "<div class='scroll'>"
        + out.to_html(index=False, escape=True, classes="summary", border=0)
        + "</div>"
        + note
    )


def _cell(cell: Any, factor: float, unit: str) -> str:
    if cell is None:
        return "–"
    mean, lo, hi = cell
    if unit == "B":
        return (
            format_unit("B", mean)
            if lo == hi
            else f"{format_unit('B', mean)} [{format_unit('B', lo)} – {format_unit('B', hi)}]"
        )
    if unit in COUNTS:
        return f"{mean:,.0f}" if lo == hi else f"{mean:,.0f} [{lo:,.0f} – {hi:,.0f}]"
    if lo == hi:
        return f"{mean * factor:.4g}"
    return f"{mean * factor:.4g} [{lo * factor:.4g} – {hi * factor:.4g}]"


def failed_table(res: Results) -> str:
    """The failed points with their error ("" when none failed)."""
    if res.failed.empty:
        return ""
    out = pd.DataFrame({"point": res.failed["point"].astype(int).astype(str)})
    for column in res.schema.parameters:
        if column in res.failed.columns:
            out[res.label(column)] = [res.format(column, v) for v in res.failed[column]]
    out["seed"] = res.failed["seed"].astype(str)
    out["error"] = res.failed["error"].astype(str)
    n = len(out)
    return (
        f"<h2 id='failed'>Failed points</h2><p>{n} point{'s' if n != 1 else ''} failed and "
        f"{'are' if n != 1 else 'is'} left out of every figure.</p>"
        + out.to_html(index=False, escape=True, classes="failed", border=0)
    )
