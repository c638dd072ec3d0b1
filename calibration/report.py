"""How well a calibrated fabric reproduces its measurements: a printed table and an HTML page.

::

    from calibration.fit import calibrate
    from calibration.report import format_table, write_calibration_report

    cal = calibrate(spec, measurements, holdout)
    print(format_table(cal))
    write_calibration_report(cal, Path("out/calibration.html"), title="A3 Mega, 2 x 8 H100")

Both show every row of :attr:`calibration.fit.Calibration.table` (measured against simulated
time and bus bandwidth, the signed relative error), the mean absolute percentage error (MAPE)
over all rows and over the bandwidth-relevant sizes (``size >= min_size`` bytes; all, fitted and
held-out rows) and the fitted parameters of each tier. Like :mod:`experiments.report`'s pages it
loads plotly.js from ``plotly.min.js`` beside it (written there; ``self_contained=True`` inlines it
instead), so it works offline; it has an explorer of every row (x, y, colour, facet and filters
chosen in the page, see :mod:`pages.explorer`) and four figures: time and bus bandwidth against
message size (measured markers, simulated lines), the relative error per size, and the fitted
efficiency curves η(m).

Units: sizes in bytes shown as ``8 B``, ``1 KiB``, ``16 MiB``; times in µs; bandwidths in GB/s
(10^9 B/s) and Gb/s (10^9 bit/s); α in µs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from calibration.fit import Calibration
from pages.explorer import ColumnSpec, explorer_html
from pages.files import write_atomic
from pages.html import PLOTLY_FILE, TEMPLATE, TRANSPORT_COLORS, format_unit, page_html, plot_div, write_plotly
from topologies.leaf_spine import Efficiency, efficiency_at

TABLE_COLUMNS = (
    "source",
    "op",
    "nranks",
    "size",
    "tier",
    "role",
    "measured_us",
    "simulated_us",
    "rel_error",
    "measured_busbw_gbps",
    "simulated_busbw_gbps",
)
"""Columns a :class:`Calibration`'s table must have."""

GUIDE_PERCENT = 10.0
"""The ± relative-error guide lines of the error figure, percent."""

TITLES = {
    "time": "Time against message size",
    "busbw": "Bus bandwidth against message size",
    "error": "Relative error per size",
    "efficiency": "Fitted efficiency curves",
}
DIV_IDS = {key: f"fig-cal-{key}" for key in TITLES}

ROLE_COLORS = {"fit": "#1f77b4", "holdout": "#d62728"}
ROLE_NAMES = {"fit": "fitted", "holdout": "held out"}
TIER_COLORS = {"nvlink": "#2ca02c", "nic": "#1f77b4"}
TIER_NAMES = {"nvlink": "NVLink", "nic": "NIC"}
TIER_ORDER = ("nvlink", "nic")
_FIELDS = {  # tier -> LeafSpine fields of α, bandwidth, efficiency
    "nic": ("message_latency", "nic_bandwidth", "nic_efficiency"),
    "nvlink": ("nvlink_message_latency", "nvlink_bandwidth", "nvlink_efficiency"),
}


@dataclass(frozen=True)
class TierSummary:
    """One tier's parameters as the report shows them.

    Attributes:
        tier: ``nvlink`` or ``nic``.
        alpha: per-message latency, seconds.
        bandwidth: bytes/s per GPU and direction.
        efficiency: ``((message bytes, η), ...)`` knots (empty: η = 1 at every size).
        rows: measured rows fitted (0 when the tier kept the topology's values).
        fitted: whether the tier was fitted at all.
        alpha_fitted: whether α was fitted (False: kept from the starting topology).
    """

    tier: str
    alpha: float
    bandwidth: float
    efficiency: Efficiency
    rows: int
    fitted: bool
    alpha_fitted: bool

    @property
    def alpha_status(self) -> str:
        """``fitted`` or ``kept`` (the starting topology's α)."""
        return "fitted" if self.alpha_fitted else "kept"


# ------------------------------------------------------------------------------------------ numbers


def format_size(nbytes: float) -> str:
    """A message size for people: ``8 B``, ``1 KiB``, ``16 MiB``, ``8 GiB`` (``–`` when not finite)."""
    return format_unit("B", float(nbytes))


def format_efficiency(curve: Efficiency) -> str:
    """Efficiency knots as ``64 KiB: 0.42, 1 MiB: 1.00``; ``none (η = 1)`` for an empty curve."""
    if not curve:
        return "none (η = 1)"
    return ", ".join(f"{format_size(size)}: {value:.2f}" for size, value in curve)


def _num(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``, ``–`` when missing or not finite."""
    return format(float(value), spec) if value is not None and np.isfinite(value) else "–"


def _percent(value: float) -> str:
    """A percentage with one decimal, e.g. ``3.2 %`` (``–`` when NaN)."""
    return "–" if not np.isfinite(value) else f"{value:.1f} %"


def _check(calibration: Calibration) -> pd.DataFrame:
    """The calibration's table; ValueError naming the first missing column."""
    table = calibration.table
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"calibration table: missing column {missing[0]!r}")
    return table


def tier_summaries(calibration: Calibration) -> list[TierSummary]:
    """The fitted tiers, then tiers that have rows in the table but were not fitted (their values
    are the topology's), in NVLink, NIC order."""
    fits = {fit.tier: fit for fit in calibration.tiers}
    present = set(calibration.table["tier"]) if "tier" in calibration.table.columns else set()
    out: list[TierSummary] = []
    for tier in TIER_ORDER:
        fit = fits.get(tier)
        if fit is not None:
            out.append(
                TierSummary(
                    tier, fit.alpha, fit.bandwidth, tuple(fit.efficiency), fit.rows, True, fit.alpha_fitted
                )
            )
        elif tier in present:
            alpha, bandwidth, efficiency = (getattr(calibration.spec, f) for f in _FIELDS[tier])
            out.append(TierSummary(tier, alpha, bandwidth, tuple(efficiency), 0, False, False))
    return out


def _row_label(row: pd.Series) -> str:
    """``source op N ranks SIZE`` of a table row."""
    return f"{row['source']} {row['op']} {int(row['nranks'])} ranks {format_size(row['size'])}"


def accuracy(calibration: Calibration, min_size: float = 2**20) -> list[tuple[str, str]]:
    """``(what, value)`` lines: MAPE over all rows, over rows of ``size >= min_size`` bytes (all,
    fit, holdout; with their row counts) and the worst held-out row."""
    table = _check(calibration)
    large = table[table["size"] >= min_size]
    threshold = format_size(min_size)

    def count(frame: pd.DataFrame) -> str:
        return f"{len(frame)} row" + ("" if len(frame) == 1 else "s")

    lines = [("MAPE, all rows", f"{_percent(calibration.mape())} ({count(table)})")]
    for role, name in ((None, "all"), ("fit", "fit"), ("holdout", "holdout")):
        rows = large if role is None else large[large["role"] == role]
        value = calibration.mape(role, min_size)
        lines.append((f"MAPE, size >= {threshold}, {name}", f"{_percent(value)} ({count(rows)})"))
    held = table[(table["role"] == "holdout") & table["rel_error"].notna()]
    if held.empty:
        lines.append(("Worst held-out row", "none (no held-out rows)"))
    else:
        worst = held.loc[held["rel_error"].abs().idxmax()]
        lines.append(("Worst held-out row", f"{_row_label(worst)}: {worst['rel_error'] * 100:+.1f} %"))
    return lines


def parameter_cells(calibration: Calibration) -> pd.DataFrame:
    """One row of formatted parameters per tier (:func:`tier_summaries`): α in µs and whether it was
    fitted, bandwidth per GPU and per host (× ``gpus_per_host``) in GB/s and Gb/s, the η knots."""
    per_host = calibration.spec.gpus_per_host
    rows = []
    for s in tier_summaries(calibration):
        rows.append(
            {
                "tier": s.tier,
                "fitted rows": str(s.rows) if s.fitted else "0 (topology values)",
                "α (µs)": f"{s.alpha * 1e6:.3f}",
                "α": s.alpha_status,
                "GB/s per GPU": f"{s.bandwidth / 1e9:.2f}",
                "Gb/s per GPU": f"{s.bandwidth * 8 / 1e9:.1f}",
                f"GB/s per host (× {per_host})": f"{s.bandwidth * per_host / 1e9:.2f}",
                f"Gb/s per host (× {per_host})": f"{s.bandwidth * per_host * 8 / 1e9:.1f}",
                "efficiency η": format_efficiency(s.efficiency),
            }
        )
    return pd.DataFrame(rows)


def row_cells(calibration: Calibration) -> pd.DataFrame:
    """Every row of the calibration's table, formatted: sizes in human units, times in µs, the
    signed error in percent (one decimal), bus bandwidths in GB/s."""
    table = _check(calibration)
    return pd.DataFrame(
        {
            "source": table["source"].astype(str),
            "op": table["op"].astype(str),
            "ranks": [str(int(n)) for n in table["nranks"]],
            "size": [format_size(s) for s in table["size"]],
            "role": table["role"].astype(str),
            "measured µs": [_num(v, ".2f") for v in table["measured_us"]],
            "simulated µs": [_num(v, ".2f") for v in table["simulated_us"]],
            "error %": [_num(v * 100, "+.1f") for v in table["rel_error"]],
            "measured busbw GB/s": [_num(v, ".2f") for v in table["measured_busbw_gbps"]],
            "simulated busbw GB/s": [_num(v, ".2f") for v in table["simulated_busbw_gbps"]],
        }
    )


# ---------------------------------------------------------------------------------------- plain text

_LEFT = frozenset({"source", "op", "role", "tier", "α", "efficiency η", "fitted rows"})


def _fixed_width(frame: pd.DataFrame, indent: str = "") -> list[str]:
    """Lines of a fixed-width table of strings: text columns left-aligned, numbers right-aligned."""
    columns = list(frame.columns)
    cells = [[str(v) for v in frame[c]] for c in columns]
    widths = [max([len(c), *map(len, col)]) for c, col in zip(columns, cells, strict=True)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if c in _LEFT else v.rjust(w) for c, v, w in zip(columns, values, widths, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    lines = [line(columns), line(["-" * w for w in widths])]
    lines += [line(values) for values in zip(*cells, strict=True)] if len(frame) else []
    return lines


def format_table(calibration: Calibration, min_size: float = 2**20) -> str:
    """The calibration as printed text: one fixed-width line per measured row, the MAPE summary
    (``min_size`` in bytes) and each tier's parameters.

    Row columns: source, op, ranks, size, role (fit/holdout), measured and simulated time (µs),
    error (simulated/measured − 1, percent, signed), measured and simulated bus bandwidth (GB/s).
    """
    lines = _fixed_width(row_cells(calibration))
    lines.append("")
    summary = accuracy(calibration, min_size)
    width = max(len(what) for what, _ in summary)
    lines += [f"{what.ljust(width)}  {value}" for what, value in summary]
    lines.append("")
    g = calibration.spec.gpus_per_host
    lines.append(f"Parameters per tier (bandwidth per GPU and direction; per host = × {g} GPUs):")
    for s in tier_summaries(calibration):
        fitted = f"{s.rows} fitted rows" if s.fitted else "not fitted: the topology's values"
        lines += [
            f"  {s.tier} ({fitted})",
            f"    α           {s.alpha * 1e6:.3f} µs ({s.alpha_status})",
            f"    bandwidth   {s.bandwidth / 1e9:.2f} GB/s = {s.bandwidth * 8 / 1e9:.1f} Gb/s per GPU; "
            f"{s.bandwidth * g / 1e9:.2f} GB/s = {s.bandwidth * g * 8 / 1e9:.1f} Gb/s per host",
            f"    efficiency  {format_efficiency(s.efficiency)}",
        ]
    if not tier_summaries(calibration):
        lines.append("  (no tier)")
    spec = calibration.spec
    lines += [
        "Per call (launch and setup before the first message):",
        f"  collective  {spec.collective_latency * 1e6:.3f} µs",
        f"  send/recv   {spec.p2p_latency * 1e6:.3f} µs",
        "Share of the bandwidth that carries data (LL, LL128; Simple 1):",
        f"  nvlink      {spec.ll_nvlink_share:.4f}, {spec.ll128_nvlink_share:.4f}",
        f"  nic         {spec.ll_share:.4f}, {spec.ll128_share:.4f}",
    ]
    lines += [f"FLAG {flag}" for flag in calibration.flags]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class _Curve:
    """The rows of one measured curve (same source, op and ranks), sorted by size."""

    label: str
    color: str
    rows: pd.DataFrame


def _curves(table: pd.DataFrame) -> list[_Curve]:
    """One curve per (source, op, nranks), in order of first appearance, each with its own colour.

    Sources are shown by file name unless two differ only in their directory."""
    sources = [str(s) for s in pd.unique(table["source"].astype(str))]
    short = {s: Path(s).name or s for s in sources}
    if len(set(short.values())) < len(short):
        short = {s: s for s in sources}
    keys = list(dict.fromkeys(zip(table["source"].astype(str), table["op"], table["nranks"], strict=True)))
    curves = []
    for i, (source, op, nranks) in enumerate(keys):
        mine = table[
            (table["source"].astype(str) == source) & (table["op"] == op) & (table["nranks"] == nranks)
        ].sort_values("size", kind="stable")
        label = f"{short[source]} · {op} · {int(nranks)} ranks"
        curves.append(_Curve(label, TRANSPORT_COLORS[i % len(TRANSPORT_COLORS)], mine))
    return curves


def _hover(rows: pd.DataFrame, labels: Sequence[str]) -> list[str]:
    """Hover text of each row (``labels``: its curve's name): both times, the error and its role."""
    return [
        f"{html.escape(label)}<br>size {format_size(r.size)}<br>measured {r.measured_us:.2f} µs, "
        f"{r.measured_busbw_gbps:.2f} GB/s<br>simulated {r.simulated_us:.2f} µs, "
        f"{r.simulated_busbw_gbps:.2f} GB/s<br>error {r.rel_error * 100:+.1f} % "
        f"({ROLE_NAMES.get(r.role, r.role)})"
        for r, label in zip(rows.itertuples(), labels, strict=True)
    ]


def size_axis(sizes: Sequence[float] | np.ndarray, title: str = "message size (bytes)") -> dict:
    """A log x axis over ``sizes`` (bytes) with ticks at powers of two labelled ``1 KiB``, ``1 MiB``…"""
    values = np.asarray(sizes, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    axis: dict = {"type": "log", "title": {"text": title}}
    if values.size:
        low, high = math.floor(math.log2(values.min())), math.ceil(math.log2(values.max()))
        step = max(1, math.ceil((high - low) / 10))
        step += step % 2 if step > 1 else 0  # powers of 4 read better than of 8
        ticks = [2.0**k for k in range(low - low % step, high + step, step)]
        axis.update(tickvals=ticks, ticktext=[format_size(t) for t in ticks])
    return axis


def _layout(fig: go.Figure, height: int = 480) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        height=height,
        margin={"l": 70, "r": 30, "t": 30, "b": 60},
        legend={"font": {"size": 11}},
        hovermode="closest",
    )
    return fig


def _measured_vs_simulated(calibration: Calibration, measured: str, simulated: str) -> go.Figure:
    """Per curve: fitted rows as filled markers, held-out rows as open markers, the simulation as a line."""
    fig = go.Figure()
    for curve in _curves(_check(calibration)):
        rows = curve.rows
        text = _hover(rows, [curve.label] * len(rows))
        fig.add_trace(
            go.Scatter(
                x=rows["size"],
                y=rows[simulated],
                mode="lines",
                name=f"{curve.label}: simulated",
                legendgroup=curve.label,
                line={"color": curve.color, "width": 2},
                text=text,
                hovertemplate="%{text}<extra>simulated</extra>",
            )
        )
        for role, symbol in (("fit", "circle"), ("holdout", "circle-open")):
            mine = rows["role"].to_numpy() == role
            if not mine.any():
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows["size"][mine],
                    y=rows[measured][mine],
                    mode="markers",
                    name=f"{curve.label}: measured ({ROLE_NAMES[role]})",
                    legendgroup=curve.label,
                    marker={"color": curve.color, "symbol": symbol, "size": 9, "line": {"width": 2}},
                    text=[t for t, m in zip(text, mine, strict=True) if m],
                    hovertemplate="%{text}<extra>measured</extra>",
                )
            )
    return fig


def time_figure(calibration: Calibration) -> go.Figure:
    """Collective time (µs) against message size, log-log: measured markers (open: held out),
    simulated lines, one colour per source, op and rank count."""
    fig = _measured_vs_simulated(calibration, "measured_us", "simulated_us")
    _layout(fig)
    fig.update_layout(xaxis=size_axis(calibration.table["size"]))
    fig.update_yaxes(type="log", title_text="time (µs)")
    return fig


def busbw_figure(calibration: Calibration) -> go.Figure:
    """nccl-tests' bus bandwidth (GB/s) against message size (log x): measured markers, simulated lines."""
    fig = _measured_vs_simulated(calibration, "measured_busbw_gbps", "simulated_busbw_gbps")
    _layout(fig)
    fig.update_layout(xaxis=size_axis(calibration.table["size"]))
    fig.update_yaxes(title_text="bus bandwidth (GB/s)", rangemode="tozero")
    return fig


def error_figure(calibration: Calibration) -> go.Figure:
    """Relative error (simulated/measured − 1, %) of every row against its size, coloured by role,
    with guide lines at ±:data:`GUIDE_PERCENT`."""
    table = _check(calibration)
    fig = go.Figure()
    labels = {}
    for curve in _curves(table):
        labels.update(dict.fromkeys(curve.rows.index, curve.label))
    for role, symbol in (("fit", "circle"), ("holdout", "circle-open")):
        rows = table[table["role"] == role]
        if rows.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=rows["size"],
                y=rows["rel_error"] * 100,
                mode="markers",
                name=ROLE_NAMES[role],
                marker={"color": ROLE_COLORS[role], "symbol": symbol, "size": 9, "line": {"width": 2}},
                text=_hover(rows, [labels.get(i, "") for i in rows.index]),
                hovertemplate="%{text}<extra></extra>",
            )
        )
    for y, dash in ((GUIDE_PERCENT, "dash"), (0.0, "solid"), (-GUIDE_PERCENT, "dash")):
        fig.add_hline(y=y, line={"color": "#888", "width": 1, "dash": dash})
    _layout(fig, 420)
    fig.update_layout(xaxis=size_axis(table["size"]))
    errors = (table["rel_error"] * 100).to_numpy(dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    reach = max(GUIDE_PERCENT * 1.5, float(np.abs(errors).max()) * 1.1 if errors.size else 0.0)
    fig.update_yaxes(title_text="relative error, simulated vs measured (%)", range=[-reach, reach])
    return fig


def efficiency_figure(calibration: Calibration) -> go.Figure:
    """Each tier's efficiency η against its tier message size (log x), knots as markers; a tier
    without a curve shows η = 1 as a dotted line."""
    tiers = tier_summaries(calibration)
    knots = [size for s in tiers for size, _ in s.efficiency]
    sizes = np.asarray(knots or list(calibration.table["size"]) or [1.0, 2.0**30], dtype=np.float64)
    sizes = sizes[sizes > 0]
    low, high = (float(sizes.min()) / 4, float(sizes.max()) * 4) if sizes.size else (1.0, 2.0**30)
    grid = np.geomspace(max(low, 1.0), max(high, 2.0), 200)
    fig = go.Figure()
    for s in tiers:
        name = f"{TIER_NAMES[s.tier]}" + ("" if s.fitted else " (topology)")
        color = TIER_COLORS[s.tier]
        if not s.efficiency:
            fig.add_trace(
                go.Scatter(
                    x=[grid[0], grid[-1]],
                    y=[1.0, 1.0],
                    mode="lines",
                    name=f"{name}: no curve (η = 1)",
                    line={"color": color, "width": 2, "dash": "dot"},
                    hovertemplate=f"{name}: η = 1 at every size<extra></extra>",
                )
            )
            continue
        fig.add_trace(
            go.Scatter(
                x=grid,
                y=efficiency_at(s.efficiency, grid),
                mode="lines",
                name=f"{name}: η(m)",
                legendgroup=s.tier,
                line={"color": color, "width": 2},
                text=[format_size(round(x)) for x in grid],
                hovertemplate=f"{name}<br>%{{text}}: η = %{{y:.3f}}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[size for size, _ in s.efficiency],
                y=[value for _, value in s.efficiency],
                mode="markers",
                name=f"{name}: knots",
                legendgroup=s.tier,
                marker={"color": color, "size": 9},
                text=[format_size(round(size)) for size, _ in s.efficiency],
                hovertemplate=f"{name} knot<br>%{{text}}: η = %{{y:.3f}}<extra></extra>",
            )
        )
    _layout(fig, 420)
    fig.update_layout(xaxis=size_axis(grid, "message size on the tier (bytes)"))
    fig.update_yaxes(title_text="efficiency η (fraction of peak bandwidth)", range=[0.0, 1.05])
    return fig


# ---------------------------------------------------------------------------------------------- page

INTROS = {
    "time": "Collective time per message size, log-log. Markers are the measurements (filled: fitted, "
    "open: held out), lines the calibrated simulation of the same collective; one colour per source, "
    "op and rank count.",
    "busbw": "nccl-tests' bus bandwidth (size ÷ time × the op's bus factor) per message size. Markers "
    "measured (open: held out), lines simulated.",
    "error": "Simulated ÷ measured − 1 for every row, by role; dashed lines at ±{guide:g} %. The MAPE above "
    "counts rows from {threshold} up separately: below that, times are latency-bound and noisy.",
    "efficiency": "The fitted small-message efficiency η of each tier against the size of one message on "
    "that tier (not the collective's size), linear in log2(size) between the knots (markers). A message "
    "of m bytes moves at η(m) × the tier's bandwidth.",
}


def _figure_html(key: str, fig: go.Figure, intro: str) -> str:
    """A figure's heading, explanation and plot div (plotly.js is in the page's head)."""
    div_id = DIV_IDS[key]
    return (
        f"<h2 id='{div_id}-section'>{html.escape(TITLES[key])}</h2>\n<p>{html.escape(intro)}</p>\n"
        f"{plot_div(fig, div_id)}"
    )


EXPLORER_COLUMNS = {
    "op": ColumnSpec("parameter", "", "op"),
    "size": ColumnSpec("parameter", "B", "message size"),
    "nranks": ColumnSpec("parameter", "GPUs", "ranks"),
    "tier": ColumnSpec("parameter", "", "tier"),
    "role": ColumnSpec("parameter", "", "fitted or held out"),
    "source": ColumnSpec("parameter", "", "log"),
    "error_pct": ColumnSpec("metric", "%", "simulated ÷ measured − 1"),
    "abs_error_pct": ColumnSpec("metric", "%", "|simulated ÷ measured − 1|"),
    "measured_s": ColumnSpec("metric", "s", "measured time"),
    "simulated_s": ColumnSpec("metric", "s", "simulated time"),
    "measured_busbw": ColumnSpec("metric", "B/s", "measured bus bandwidth"),
    "simulated_busbw": ColumnSpec("metric", "B/s", "simulated bus bandwidth"),
}
"""The explorer's columns (see :func:`explorer_rows`): what each row is, then its numbers."""
EXPLORER_ID = "cal-explorer"


def explorer_rows(calibration: Calibration) -> pd.DataFrame:
    """Every measured row for the explorer, in base units: times in s, bus bandwidths in B/s, the
    signed and absolute relative error in percent; fitted/held-out as ``fitted``/``held out``."""
    table = _check(calibration)
    rows = pd.DataFrame(
        {
            "op": table["op"].astype(str),
            "size": table["size"].astype(float),
            "nranks": table["nranks"].astype(int),
            "tier": table["tier"].astype(str).map(lambda t: TIER_NAMES.get(t, t)),
            "role": table["role"].astype(str).map(lambda r: ROLE_NAMES.get(r, r)),
            "source": table["source"].astype(str),
            "error_pct": 100.0 * table["rel_error"].astype(float),
            "abs_error_pct": 100.0 * table["rel_error"].astype(float).abs(),
            "measured_s": table["measured_us"].astype(float) * 1e-6,
            "simulated_s": table["simulated_us"].astype(float) * 1e-6,
            "measured_busbw": table["measured_busbw_gbps"].astype(float) * 1e9,
            "simulated_busbw": table["simulated_busbw_gbps"].astype(float) * 1e9,
        }
    )
    return rows.sort_values(["op", "source", "size"], kind="stable").reset_index(drop=True)


def explorer_section(calibration: Calibration) -> str:
    """The explorer's heading, how to read it and the widget: the relative error against size,
    one colour per op, at first."""
    rows = explorer_rows(calibration)
    both_roles = rows["role"].nunique() > 1
    facet = "role" if both_roles else ""
    initial = {"x": "size", "y": "error_pct", "logx": "log", "colour": "op", "facet": facet}
    return (
        f"<h2 id='{EXPLORER_ID}-section'>Explorer</h2>\n<p>Every measured row: choose what goes on x, y, "
        "colour and facet, untick values to leave rows out, and the plot redraws. It starts with the "
        "signed error against message size, one colour per op, fitted and held-out rows side by side; "
        "put <i>measured time</i> on x and <i>simulated time</i> on y, both log, to see the fit as a "
        "diagonal.</p>\n" + explorer_html(rows, EXPLORER_COLUMNS, div_id=EXPLORER_ID, initial=initial)
    )


def _html_table(frame: pd.DataFrame, css: str) -> str:
    return frame.to_html(index=False, escape=True, classes=css, border=0, na_rep="–")


def render_calibration_html(
    calibration: Calibration,
    *,
    title: str,
    min_size: float = 2**20,
    notes: list[str] | None = None,
    plotly_src: str | None = PLOTLY_FILE,
) -> str:
    """The whole page as one string: the summary, the explorer, the figures, every row. plotly.js
    is loaded from ``plotly_src`` beside the page (None: inlined once)."""
    table = _check(calibration)
    spec = calibration.spec
    n_held = int((table["role"] == "holdout").sum())
    sources = table["source"].astype(str).nunique()
    fabric = (
        f"{spec.hosts} hosts × {spec.gpus_per_host} GPUs ({spec.leaves} leaves, {spec.spines} spines"
        f"{', rail-optimized' if spec.rail_optimized else ''})"
    )
    sub = (
        f"{len(table)} measured rows from {sources} source{'s' if sources != 1 else ''}, {n_held} held out "
        f"of the fit; fabric {fabric}."
    )
    summary = pd.DataFrame(accuracy(calibration, min_size), columns=["accuracy", "value"])
    figures = {
        "time": time_figure(calibration),
        "busbw": busbw_figure(calibration),
        "error": error_figure(calibration),
        "efficiency": efficiency_figure(calibration),
    }
    intro = {k: v.format(guide=GUIDE_PERCENT, threshold=format_size(min_size)) for k, v in INTROS.items()}
    nav = "".join(f"<a href='#{DIV_IDS[k]}-section'>{html.escape(TITLES[k])}</a>" for k in TITLES)
    g = spec.gpus_per_host
    body = "\n".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            f"<p class='sub'>{html.escape(sub)}</p>",
            *(f"<p class='note'>{html.escape(n)}</p>" for n in notes or [] if n),
            f"<nav><a href='#summary'>Summary</a><a href='#{EXPLORER_ID}-section'>Explorer</a>{nav}"
            "<a href='#rows'>Rows</a></nav>",
            "<h2 id='summary'>Summary</h2>",
            "<p>MAPE is the mean of |simulated ÷ measured − 1| over the rows named.</p>",
            _html_table(summary, "summary accuracy"),
            f"<p>Fitted parameters per tier: bandwidth per GPU and direction, and per host (× {g} GPUs); "
            "α is the per-message latency, kept from the starting topology when no row was "
            "latency-bound.</p>",
            _html_table(parameter_cells(calibration), "summary parameters"),
            explorer_section(calibration),
            *(_figure_html(key, fig, intro[key]) for key, fig in figures.items()),
            "<h2 id='rows'>Rows</h2>",
            "<details><summary>Every measured row, measured against simulated</summary>"
            + _html_table(row_cells(calibration), "rows")
            + "</details>",
        ]
    )
    return page_html(html.escape(title), body, plotly_src=plotly_src)


def write_calibration_report(
    calibration: Calibration,
    path: Path,
    *,
    title: str,
    min_size: float = 2**20,
    notes: list[str] | None = None,
    self_contained: bool = False,
) -> Path:
    """Write the calibration's HTML page to ``path`` (atomically: a temporary file beside it, then
    a rename) and ``plotly.min.js`` beside it, and return ``path``.

    Args:
        calibration: what :func:`calibration.fit.calibrate` returned.
        path: the page to write (its directory is created when missing).
        title: the page's heading.
        min_size: bytes; rows from this size up get their own MAPE lines.
        notes: sentences shown under the title (e.g. where the measurements come from).
        self_contained: inline plotly.js (one file to send, +1.5 MB) instead of writing it beside.
    """
    path = Path(path)
    plotly_src = None if self_contained else PLOTLY_FILE
    page = render_calibration_html(
        calibration, title=title, min_size=min_size, notes=notes, plotly_src=plotly_src
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not self_contained:
        write_plotly(path.parent)
    write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
