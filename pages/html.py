"""Self-contained HTML pages of Plotly figures, shared by the reports of every layer
(:mod:`experiments.report`, :mod:`calibration.report`): the look (template, colours, CSS), how a
value with a unit reads, one figure as a ``<div>``, a whole page loading plotly.js (its vendored
cartesian bundle) from a file beside it or inline.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pages.files import write_atomic

TRANSPORT_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "Inter, Segoe UI, Helvetica, Arial, sans-serif", "size": 13, "color": "#222"},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "colorway": list(TRANSPORT_COLORS),
        "xaxis": {"gridcolor": "#e5e5e5", "linecolor": "#888", "ticks": "outside", "zeroline": False},
        "yaxis": {"gridcolor": "#e5e5e5", "linecolor": "#888", "ticks": "outside", "zeroline": False},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
        "hoverlabel": {"font": {"size": 12}},
    }
)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def time_scale(seconds: float) -> tuple[float, str]:
    """``(factor, unit)`` that shows ``seconds`` (a typical or largest value) as 1..1000 of the unit."""
    if not np.isfinite(seconds) or seconds >= 1.0:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e3, "ms"
    if seconds >= 1e-6:
        return 1e6, "µs"
    return 1e9, "ns"


def format_unit(unit: str, value: Any) -> str:
    """A value in base unit ``unit`` for people: ``16 MiB`` (``B``), ``400 Gbit/s`` (``B/s``),
    ``500 ns`` (``s``); other units and strings as they are."""
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return "–"
    if unit in ("B", "B/s", "s") and isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        if unit == "B":
            for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
                if abs(value) >= size:
                    return f"{value / size:.4g} {name}"
            return f"{value:.4g} B"
        if unit == "B/s":
            return f"{value * 8e-9:.4g} Gbit/s"
        factor, name = time_scale(abs(value) if value else 1.0)
        return f"{value * factor:.4g} {name}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


CSS = """
body { font-family: Inter, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 36px 0 6px; padding-bottom: 4px; border-bottom: 1px solid #e3e3e3; }
p { line-height: 1.45; margin: 6px 0; }
.sub { color: #555; margin-bottom: 14px; }
.note { color: #666; font-size: 13px; }
.skipped { color: #8a6d3b; background: #fcf8e3; border: 1px solid #faebcc; padding: 8px 12px;
           border-radius: 4px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 10px 0;
          font-size: 14px; }
dl.meta dt { color: #666; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td { font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; border-bottom: 1px solid #ccc; white-space: normal; vertical-align: bottom; }
.scroll { overflow-x: auto; max-width: 100%; }
ul.answer { margin: 6px 0 10px; padding-left: 22px; line-height: 1.5; }
table.failed td:last-child { text-align: left; white-space: normal; color: #a94442; }
details pre { background: #f6f8fa; padding: 10px; font-size: 12px; overflow-x: auto; }
nav a { margin-right: 14px; font-size: 14px; }
.figure { margin: 8px 0 4px; }
"""


def plot_div(fig: go.Figure, div_id: str) -> str:
    """A figure as a ``<div class='figure'>`` (plotly.js is inlined once in the page's head by
    :func:`page_html`)."""
    plot = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        default_width="100%",
        default_height=f"{fig.layout.height or 450}px",
    )
    return f"<div class='figure'>{plot}</div>"


PLOTLY_FILE = "plotly.min.js"
"""The name of the plotly.js file a run's pages share (written beside them by :func:`write_plotly`)."""
PLOTLY_BUNDLE = Path(__file__).parent / "vendor" / "plotly-cartesian.min.js"
"""plotly.js's cartesian bundle (every trace type the reports draw), 1.5 MB against the full 4.8 MB."""
PLOTLY_BUNDLE_VERSION = "4.1.1"


@functools.cache
def plotly_js() -> str:
    """The plotly.js the pages load: the vendored cartesian bundle."""
    return PLOTLY_BUNDLE.read_text(encoding="utf-8")


def write_plotly(folder: Path) -> Path:
    """Write plotly.js as ``folder/plotly.min.js`` unless the same file is already there."""
    target = Path(folder) / PLOTLY_FILE
    text = plotly_js()
    if not (target.is_file() and target.stat().st_size == len(text.encode()) and target.read_text() == text):
        write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return target


def page_html(title_html: str, body: str, scripts: str = "", plotly_src: str | None = None) -> str:
    """A whole page: the report CSS, plotly.js, ``body`` in ``<main>``, then ``scripts``.

    ``plotly_src`` None inlines plotly.js (one self-contained file, +1.5 MB); a relative path (e.g.
    :data:`PLOTLY_FILE`) loads it from beside the page, still offline. ``title_html`` is escaped.
    """
    if plotly_src is None:
        plotly = f"<script type='text/javascript'>{plotly_js()}</script>"
    else:
        plotly = f"<script type='text/javascript' src='{html.escape(plotly_src, quote=True)}'></script>"
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{title_html}</title>\n<style>{CSS}</style>\n"
        f"{plotly}\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n{scripts}</body>\n</html>\n"
    )
