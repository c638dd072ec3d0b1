"""An offline "explorer" of a results table: pick x, y, colour, facet, filters and log axes in the
page, and the figure redraws at once with ``Plotly.react`` (no server, no network).

::

    from pages.explorer import ColumnSpec, explorer_html
    specs = {"point": ColumnSpec("id"), "seed": ColumnSpec("id"),
             "workload.size": ColumnSpec("parameter", "B", "message size"),
             "transport": ColumnSpec("parameter"), "completion_time_s": ColumnSpec("metric", "s"),
             "error": ColumnSpec("status")}
    body = explorer_html(results, specs)   # inside a page whose <head> loads plotly.js

What is drawn, and why it is honest:

* Rows whose ``status`` column (e.g. ``error``) is set are left out; the caption says how many.
* Rows that differ only in ``seed`` are one point: the mean as the marker, min–max as error bars,
  the seed count in the hover and the caption. Nothing else is ever averaged: every parameter is
  part of a point's identity (a setting, what moesim resolved, follows from the parameters).
* When another parameter (one not on x, colour or facet) still varies inside one
  x/colour/facet cell after the filters, the widget shows a warning naming those columns and draws
  each of their value combinations as its own trace (names like ``ecmp · op=all_reduce``), so no
  line joins or averages unlike configurations. Facet, colour or filter on them to tidy up.
* With a metric on x, every marker is one configuration (seed mean of x and y, bars both ways);
  markers are joined by lines only along a numeric parameter on x (not across categories).

Values are shown in units for people: bytes as KiB/MiB/GiB, times as ns/µs/ms/s, bandwidths as
Gbit/s. A numeric column is scaled by one factor chosen from its largest value (so an axis reads
the same in every facet and after any filter); string columns are categories in data order,
numeric ones are numeric axes in ascending order.

The table travels as compact columnar JSON: parameter, setting and ``seed`` columns as
``values`` (distinct, ordered) + ``codes`` (per row), metrics as arrays with ``null`` for missing;
other ``id`` columns (``point``) and the status columns are not embedded. ``<``, ``>``, ``&``,
U+2028 and U+2029 are ``\\u`` escaped, so no string can close the ``<script>``.

Element ids start with ``div_id``: ``{div_id}-x``, ``-y``, ``-colour``, ``-facet`` (selects),
``-logx``, ``-logy`` (checkboxes), filter checkboxes carry ``data-column``/``data-code``/``data-value``,
``-caption``, ``-warning``, ``-plot`` (the Plotly div; after every draw its ``data-state`` is the
current selection as JSON, with ``draws`` counting redraws).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pages.html import PLOT_CONFIG, TEMPLATE, TRANSPORT_COLORS, time_scale

ROLES = ("id", "parameter", "setting", "metric", "status")
SEED = "seed"
"""The column whose values are aggregated over (mean, min–max) unless it is on x, colour or facet."""
CHOICE_KEYS = ("x", "y", "colour", "facet", "logx", "logy")


@dataclass(frozen=True)
class ColumnSpec:
    """What a results column is.

    ``role``: ``id`` (``point``, ``seed``), ``parameter`` (a swept YAML path, ``transport``),
    ``setting`` (a resolved choice: ``algorithm``, ``protocol``, ``channels``), ``metric`` (a number
    to plot on y) or ``status`` (``error``: a row with it set is left out). ``unit``: the base unit
    of the values (``s``, ``B``, ``B/s``, ``1``, ``flows``, ``tokens``, ``""``). ``label``: a name for
    people (the column name when empty).
    """

    role: str
    unit: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"ColumnSpec role {self.role!r} is not one of {', '.join(ROLES)}")


# ------------------------------------------------------------------------------------------ units


def display_scale(unit: str, magnitude: float) -> tuple[float, str]:
    """``(factor, display unit)`` for values in base ``unit`` whose largest magnitude is ``magnitude``:
    ``("s", 0.004)`` -> ``(1e3, "ms")``, ``("B", 3 << 20)`` -> ``(2**-20, "MiB")``, ``B/s`` -> Gbit/s;
    ``1`` and ``""`` have no display unit, other units stay as they are."""
    magnitude = abs(float(magnitude)) if magnitude is not None and np.isfinite(magnitude) else 0.0
    if unit == "s":
        return time_scale(magnitude if magnitude > 0 else 1.0)
    if unit == "B":
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if magnitude >= size:
                return 1.0 / size, name
        return 1.0, "B"
    if unit == "B/s":
        return 8e-9, "Gbit/s"
    return 1.0, "" if unit in ("1", "") else unit


def format_human(unit: str, value: Any) -> str:
    """One value for people, in its own best unit: ``16 MiB``, ``500 ns``, ``400 Gbit/s``, ``ecmp``."""
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    factor, name = display_scale(unit, float(value))
    text = f"{float(value) * factor:.4g}"
    return f"{text} {name}" if name else text


# ------------------------------------------------------------------------------------------ JSON


def _jsonable(value: Any) -> Any:
    """A scalar as JSON: numpy numbers to Python ones, NaN/NaT/None to ``None``, the rest to str."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return value
    return str(value)


_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(obj: Any) -> str:
    """Compact JSON safe inside ``<script>`` (and valid JavaScript): no ``</script>``, ``<!--`` or
    line separators can appear in it. NaN is refused (convert to ``None`` first)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _ESCAPES[m.group()], text)


def _is_numeric(series: pd.Series) -> bool:
    """Whether every non-missing value is a number (not a bool); an all-missing column is not."""
    return pd.api.types.infer_dtype(series, skipna=True) in ("integer", "floating", "mixed-integer-float")


def _check_specs(data: pd.DataFrame, columns: Mapping[str, Any]) -> dict[str, ColumnSpec]:
    """Every column's spec as a :class:`ColumnSpec` (any object with ``role``, ``unit`` and ``label``
    attributes is taken); ValueError naming the columns without one."""
    missing = [str(c) for c in data.columns if c not in columns]
    if missing:
        raise ValueError(f"explorer: no ColumnSpec for column(s) {', '.join(missing)}")
    return {
        str(c): spec if isinstance(spec, ColumnSpec) else ColumnSpec(spec.role, spec.unit, spec.label)
        for c, spec in columns.items()
    }


def _failed(data: pd.DataFrame, columns: Mapping[str, ColumnSpec]) -> pd.Series:
    """Rows whose status column is set (not null, not an empty string)."""
    bad = pd.Series(False, index=data.index)
    for name in data.columns:
        if columns[name].role == "status":
            col = data[name]
            bad |= col.notna() & (col.astype(str) != "")
    return bad


def _ordered_values(series: pd.Series) -> list[Any]:
    """Distinct values: numbers ascending, others in data order; a missing value last."""
    present = series[series.notna()]
    if _is_numeric(present):
        values = sorted(dict.fromkeys(present.tolist()))
    else:
        values = list(dict.fromkeys(present.tolist()))
    if len(present) < len(series):
        values.append(None)
    return values


def _magnitude(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def explorer_payload(data: pd.DataFrame, columns: Mapping[str, ColumnSpec]) -> dict[str, Any]:
    """The columnar, JSON-able table the widget embeds (rows with a status set are left out).

    ``{"rows": n, "errors": left out, "seed": "seed" or None, "columns": [...]}``; each column has
    ``name, role, label, unit, numeric`` and, when numeric, ``factor`` and ``dunit`` (display
    scale); metrics have ``data`` (``null`` for missing), others ``values``, ``labels``, ``codes``.
    Raises ValueError when a column has no spec or a metric is not numeric.
    """
    columns = _check_specs(data, columns)
    failed = _failed(data, columns)
    ok = data[~failed]
    out: list[dict[str, Any]] = []
    for name in data.columns:
        spec = columns[name]
        if spec.role == "status" or (spec.role == "id" and name != SEED):
            continue
        series = ok[name]
        entry: dict[str, Any] = {"name": str(name), "role": spec.role, "label": spec.label or str(name)}
        entry["unit"] = spec.unit
        numeric = _is_numeric(series)
        if spec.role == "metric":
            if not numeric and series.notna().any():
                raise ValueError(f"explorer: metric column {name} is not numeric")
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            factor, dunit = display_scale(spec.unit, _magnitude(values))
            raw = series.tolist() if pd.api.types.is_integer_dtype(series) else values  # ints stay ints
            entry.update(numeric=True, factor=factor, dunit=dunit, data=[_jsonable(v) for v in raw])
        else:
            distinct = _ordered_values(series)
            index = {v: i for i, v in enumerate(distinct) if v is not None}
            missing = len(distinct) - 1 if distinct and distinct[-1] is None else -1
            codes = [index.get(v, missing) if pd.notna(v) else missing for v in series.tolist()]
            entry.update(
                numeric=numeric,
                values=[_jsonable(v) for v in distinct],
                labels=[format_human(spec.unit, v) for v in distinct],
                codes=codes,
            )
            if numeric:
                entry["factor"], entry["dunit"] = display_scale(
                    spec.unit, _magnitude(np.array([v for v in distinct if v is not None], dtype=np.float64))
                )
        out.append(entry)
    has_seed = SEED in data.columns and columns[SEED].role != "metric"
    return {"rows": len(ok), "errors": int(failed.sum()), "seed": SEED if has_seed else None, "columns": out}


# --------------------------------------------------------------------------------------- choices


def _distinct(data: pd.Series) -> int:
    return int(data.nunique(dropna=True))


def default_choice(columns: Mapping[str, ColumnSpec], data: pd.DataFrame) -> dict[str, str]:
    """The first view: ``x`` the first parameter with >1 value that is numeric, else the first with >1
    value (else the first parameter or setting); ``y`` ``completion_time_s`` if it is a metric, else
    the first metric; ``colour`` the first other parameter with >1 value (``""`` for none); no
    facet; ``logx`` ``"log"`` for a positive numeric x spanning 16x or more, else ``"linear"``.
    ``seed`` is never a default. Raises ValueError when a column has no spec or there is no metric.
    """
    columns = _check_specs(data, columns)
    ok = data[~_failed(data, columns)]
    names = [str(c) for c in data.columns]
    params = [c for c in names if columns[c].role == "parameter" and c != SEED]
    varied = [c for c in params if _distinct(ok[c]) > 1]
    metrics = [c for c in names if columns[c].role == "metric"]
    if not metrics:
        raise ValueError("explorer: the table has no metric column to plot")
    numeric = [c for c in varied if _is_numeric(ok[c])]
    fallback = [c for c in names if columns[c].role == "setting" and _distinct(ok[c]) > 1]
    candidates = numeric or varied or fallback or params or [c for c in names if columns[c].role == "setting"]
    x = candidates[0] if candidates else metrics[0]
    y = "completion_time_s" if "completion_time_s" in metrics else metrics[0]
    colour = next((c for c in varied if c != x), "")
    logx = _log_default(ok[x]) if x in ok else "linear"
    return {"x": x, "y": y, "colour": colour, "facet": "", "logx": logx, "logy": "linear"}


def _initial_choice(
    columns: Mapping[str, ColumnSpec], data: pd.DataFrame, initial: Mapping[str, str]
) -> dict[str, str]:
    """:func:`default_choice` overridden by ``initial``; a colour or log x that came with the default x
    is chosen afresh for an ``initial`` x."""
    choice = default_choice(columns, data)
    if "x" in initial and initial["x"] != choice["x"]:
        ok = data[~_failed(data, columns)]
        x = initial["x"]
        if "colour" not in initial:
            varied = [
                c for c in ok.columns if columns[c].role == "parameter" and c != SEED and _distinct(ok[c]) > 1
            ]
            choice["colour"] = next((c for c in varied if c != x), "")
        if "logx" not in initial:
            choice["logx"] = _log_default(ok[x]) if x in ok else "linear"
    return {**choice, **initial}


def _log_default(values: pd.Series) -> str:
    """``log`` for positive numbers spanning 16x or more, else ``linear``."""
    if not _is_numeric(values):
        return "linear"
    finite = values.dropna().to_numpy(dtype=np.float64)
    return "log" if finite.size and (finite > 0).all() and finite.max() >= 16 * finite.min() else "linear"


def _validate_choice(choice: Mapping[str, str], payload: dict[str, Any]) -> None:
    roles = {c["name"]: c["role"] for c in payload["columns"]}
    groupable = {n for n, r in roles.items() if r in ("parameter", "setting") or n == SEED}
    allowed = {
        "x": groupable | {n for n, r in roles.items() if r == "metric"},
        "y": {n for n, r in roles.items() if r == "metric"},
        "colour": groupable | {""},
        "facet": groupable | {""},
        "logx": {"log", "linear"},
        "logy": {"log", "linear"},
    }
    for key, value in choice.items():
        if key not in allowed:
            raise ValueError(f"explorer: unknown choice {key!r} (one of {', '.join(CHOICE_KEYS)})")
        if value not in allowed[key]:
            raise ValueError(f"explorer: {key}={value!r} is not a column that can go there")


# ------------------------------------------------------------------------------------------ HTML


def _options(payload: dict[str, Any], roles: tuple[str, ...], chosen: str, none: bool) -> str:
    opts = ["<option value=''>none</option>"] if none else []
    for col in payload["columns"]:
        if col["role"] in roles or (col["name"] == SEED and "parameter" in roles):
            name = html.escape(col["name"], quote=True)
            label = html.escape(col["label"])
            selected = " selected" if col["name"] == chosen else ""
            opts.append(f"<option value='{name}'{selected}>{label}</option>")
    return "".join(opts)


def _filters(payload: dict[str, Any], div_id: str) -> str:
    """One fieldset of checkboxes (all on) per parameter/setting/seed column with more than one value."""
    sets = []
    for ci, col in enumerate(payload["columns"]):
        if "codes" not in col or len(col["values"]) < 2:
            continue
        name = html.escape(col["name"], quote=True)
        boxes = []
        for vi, label in enumerate(col["labels"]):
            value = html.escape(label, quote=True)
            boxes.append(
                f"<label><input type='checkbox' id='{div_id}-f{ci}-{vi}' data-column='{name}' "
                f"data-code='{vi}' data-value='{value}' checked> {html.escape(label)}</label>"
            )
        legend = f"<legend>{html.escape(col['label'])}</legend>"
        sets.append(f"<fieldset data-column='{name}'>{legend}{''.join(boxes)}</fieldset>")
    if not sets:
        return ""
    head = f"<details class='explorer-filters' id='{div_id}-filters' open><summary>filters</summary>"
    return f"{head}{''.join(sets)}</details>"


CSS = """
#ID { margin: 12px 0 28px; }
#ID .explorer-controls { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center;
  font-size: 14px; }
#ID .explorer-controls select { margin-left: 4px; font-size: 13px; }
#ID .explorer-filters { font-size: 13px; margin: 6px 0; }
#ID .explorer-filters fieldset { display: inline-block; border: 1px solid #ddd; margin: 4px 8px 4px 0;
  padding: 2px 8px; vertical-align: top; }
#ID .explorer-filters label { margin-right: 10px; white-space: nowrap; }
"""

JS = r"""
(function (D, id, CFG) {
  "use strict";
  const root = document.getElementById(id), el = (s) => document.getElementById(id + "-" + s);
  const plot = el("plot"), cols = {};
  D.columns.forEach((c) => { cols[c.name] = c; });
  const groupable = D.columns.filter((c) => c.codes).map((c) => c.name);
  const SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down"];
  const DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];
  const unitOf = (c) => (c.dunit ? " (" + c.dunit + ")" : "");
  const fmt = (c, v) => "%{" + v + ":.4g}" + (c.dunit ? " " + c.dunit : "");
  const paper = {xref: "paper", yref: "paper", showarrow: false};
  let draws = 0;

  function state() {
    const s = {x: el("x").value, y: el("y").value, colour: el("colour").value, facet: el("facet").value,
               logx: el("logx").checked, logy: el("logy").checked, filters: {}};
    root.querySelectorAll("input[data-column]").forEach((b) => {
      const f = s.filters, k = b.dataset.column;
      if (!b.checked) (f[k] = f[k] || []).push(b.dataset.value);
    });
    return s;
  }

  function stats(v) {  // [mean, min, max]
    let sum = 0, lo = Infinity, hi = -Infinity;
    for (const a of v) { sum += a; lo = Math.min(lo, a); hi = Math.max(hi, a); }
    return [sum / v.length, lo, hi];
  }

  function cmp(a, b) {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
    return 0;
  }

  function draw() {
    const s = state(), X = cols[s.x], Y = cols[s.y];
    const C = s.colour ? cols[s.colour] : null, F = s.facet ? cols[s.facet] : null;
    const xMetric = X.role === "metric", xNum = X.numeric;
    el("logx").disabled = !xNum;
    const off = [];
    root.querySelectorAll("input[data-column]").forEach((b) => {
      if (!b.checked) off.push([cols[b.dataset.column].codes, +b.dataset.code]);
    });
    const rows = [];
    let missing = 0;
    for (let i = 0; i < D.rows; i++) {
      if (off.some(([codes, code]) => codes[i] === code)) continue;
      const noX = xMetric ? X.data[i] === null : xNum && X.values[X.codes[i]] === null;
      if (Y.data[i] === null || noX) { missing++; continue; }
      rows.push(i);
    }
    // A point is one value of every parameter; seed too when it is on x, colour or facet. Settings
    // (what moesim resolved, e.g. NCCL's algorithm for a size) follow from the parameters: they can
    // be chosen, but never split a trace of their own.
    const chosen = [s.x, s.colour, s.facet];
    const others = groupable.filter(
      (k) => !chosen.includes(k) && k !== D.seed && cols[k].role === "parameter");
    const code = (c, i) => (c ? c.codes[i] : -1);
    // Mixed: other columns with more than one value inside one (facet, colour, x) cell.
    let mixed = [];
    if (!xMetric) {
      mixed = others.filter((k) => {
        const seen = new Map(), codes = cols[k].codes;
        for (const i of rows) {
          const cell = code(F, i) + "," + code(C, i) + "," + X.codes[i];
          if (!seen.has(cell)) seen.set(cell, codes[i]);
          else if (seen.get(cell) !== codes[i]) return true;
        }
        return false;
      });
    }
    // Traces: (facet, colour, mixed combination); points: the x value (metric x: the configuration).
    const traces = new Map();
    for (const i of rows) {
      const tkey = [code(F, i), code(C, i), ...mixed.map((k) => cols[k].codes[i])];
      const pkey = xMetric ? others.map((k) => cols[k].codes[i]) : [X.codes[i]];
      const t = traces.get(tkey.join()) || {key: tkey, points: new Map()};
      traces.set(tkey.join(), t);
      const p = t.points.get(pkey.join()) || {key: pkey, row: i, xs: [], ys: []};
      t.points.set(pkey.join(), p);
      p.ys.push(Y.data[i]);
      if (xMetric) p.xs.push(X.data[i]);
    }
    const list = [...traces.values()].sort((a, b) => cmp(a.key, b.key));
    const combos = [...new Set(list.map((t) => t.key.slice(2).join()))];
    const facets = F ? [...new Set(list.map((t) => t.key[0]))].sort((a, b) => a - b) : [0];
    const ncol = Math.min(facets.length, 3), nrow = Math.ceil(facets.length / ncol);
    const label = (k, i) => cols[k].labels[cols[k].codes[i]];
    const held = others.filter((k) => !mixed.includes(k));
    const seeds = [], data = [], shown = new Set();
    for (const t of list) {
      const panel = F ? facets.indexOf(t.key[0]) : 0, suffix = panel ? String(panel + 1) : "";
      const combo = combos.indexOf(t.key.slice(2).join());
      const first = t.points.values().next().value.row;
      const parts = mixed.map((k) => cols[k].label + "=" + label(k, first));
      if (C) parts.unshift(label(C.name, first));
      const name = parts.join(" · ") || Y.label;
      const pts = [...t.points.values()];
      const xs = [], ys = [], lo = [], hi = [], xlo = [], xhi = [], custom = [];
      if (xMetric) pts.forEach((p) => { p.x = stats(p.xs).map((v) => v * X.factor); });
      pts.sort((a, b) => (xMetric ? a.x[0] - b.x[0] : a.key[0] - b.key[0]));
      for (const p of pts) {
        const [m, l, h] = stats(p.ys).map((v) => v * Y.factor);
        seeds.push(p.ys.length);
        if (xMetric) {
          xs.push(p.x[0]); xlo.push(p.x[0] - p.x[1]); xhi.push(p.x[2] - p.x[0]);
        } else {
          xs.push(xNum ? X.values[X.codes[p.row]] * X.factor : X.labels[X.codes[p.row]]);
        }
        ys.push(m); lo.push(m - l); hi.push(h - m);
        custom.push([l, h, p.ys.length, held.map((k) => cols[k].label + "=" + label(k, p.row)).join(", ")]);
      }
      const colour = CFG.colors[(C ? t.key[1] : mixed.length ? combo : 0) % CFG.colors.length];
      const style = C && mixed.length ? combo : 0, bars = custom.some((c) => c[2] > 1);
      const tr = {
        type: "scatter", mode: xNum && !xMetric ? "lines+markers" : "markers", name: name, legendgroup: name,
        showlegend: !shown.has(name) && (list.length > 1 || !!C), x: xs, y: ys,
        xaxis: "x" + suffix, yaxis: "y" + suffix,
        line: {color: colour, width: 2, dash: DASHES[style % DASHES.length]},
        marker: {color: colour, size: 7, symbol: SYMBOLS[style % SYMBOLS.length]},
        error_y: {type: "data", symmetric: false, array: hi, arrayminus: lo, visible: bars},
        customdata: custom,
        hovertemplate: name + "<br>" + X.label + ": " + (xNum ? fmt(X, "x") : "%{x}") + "<br>" +
          Y.label + ": " + fmt(Y, "y") + "<br>min %{customdata[0]:.4g}, max %{customdata[1]:.4g}, " +
          "%{customdata[2]} seed(s)<br>%{customdata[3]}<extra></extra>"};
      if (xMetric) tr.error_x = {type: "data", symmetric: false, array: xhi, arrayminus: xlo, visible: bars};
      shown.add(name);
      data.push(tr);
    }
    const layout = {template: CFG.template, height: 120 + 330 * nrow, hovermode: "closest", annotations: [],
                    margin: {t: F ? 60 : 30, r: 20, b: 60, l: 70}, legend: {title: {text: C ? C.label : ""}}};
    const gap = 0.07, w = (1 - gap * (ncol - 1)) / ncol;
    const vgap = nrow > 1 ? 0.22 / nrow : 0, h = (1 - vgap * (nrow - 1)) / nrow;
    facets.forEach((f, p) => {
      const suffix = p ? String(p + 1) : "", r = Math.floor(p / ncol), c = p % ncol;
      const x0 = c * (w + gap), y1 = 1 - r * (h + vgap), bottom = p + ncol >= facets.length;
      // A numeric parameter: ticks at its values (every k-th of many), labelled in human units
      const ticks = xNum && !xMetric;
      const xa = {domain: [x0, x0 + w], anchor: "y" + suffix,
                  title: {text: bottom ? X.label + (ticks ? "" : unitOf(X)) : ""}};
      if (xNum) {
        xa.type = s.logx ? "log" : "linear";
        if (ticks) {
          const all = X.values.map((v, j) => j).filter((j) => X.values[j] !== null);
          const every = Math.ceil(all.length / 12);
          const known = all.filter((j, n) => n % every === 0);
          xa.tickmode = "array";
          xa.tickvals = known.map((j) => X.values[j] * X.factor);
          xa.ticktext = known.map((j) => X.labels[j]);
        }
      } else {
        Object.assign(xa, {type: "category", categoryorder: "array", categoryarray: X.labels});
      }
      const ya = {domain: [y1 - h, y1], anchor: "x" + suffix, type: s.logy ? "log" : "linear",
                  rangemode: s.logy ? "normal" : "tozero", title: {text: c === 0 ? Y.label + unitOf(Y) : ""}};
      if (p) { xa.matches = "x"; ya.matches = "y"; }
      layout["xaxis" + suffix] = xa;
      layout["yaxis" + suffix] = ya;
      if (F) {
        const title = {text: F.label + " = " + F.labels[f], x: x0 + w / 2, y: y1, xanchor: "center",
                       yanchor: "bottom", font: {size: 13}};
        layout.annotations.push(Object.assign(title, paper));
      }
    });
    if (!rows.length) {
      layout.annotations.push(Object.assign({text: "no rows match the filters", x: 0.5, y: 0.5}, paper));
    }
    const notes = [];
    if (D.errors) notes.push(D.errors + " row(s) with an error left out");
    if (missing) notes.push(missing + " row(s) without a value left out");
    if (seeds.length) {
      const a = Math.min(...seeds), b = Math.max(...seeds);
      const n = a === b ? a : a + "–" + b;
      notes.push(b > 1 ? "mean of " + n + " seeds, bars min–max" : "one seed per point");
    }
    if (xMetric && others.length) notes.push("each marker is one configuration (see its hover)");
    el("caption").textContent = rows.length + " rows shown; " + notes.join("; ") + ".";
    const warn = el("warning"), cell = [X.label, C && C.label, F && F.label].filter(Boolean).join(" × ");
    warn.hidden = !mixed.length;
    warn.textContent = mixed.length ? "⚠ " + mixed.map((k) => cols[k].label).join(", ") +
      (mixed.length > 1 ? " also vary" : " also varies") + " within one " + cell + " cell: each " +
      "combination is drawn as its own trace, never averaged. Facet, colour or filter on them to compare " +
      "like with like." : "";
    const drawn = Object.assign({}, s, {mixed: mixed, traces: data.length, rows: rows.length});
    drawn.errors = D.errors;
    Plotly.react(plot, data, layout, CFG.config).then(() => {
      drawn.draws = ++draws;
      plot.dataset.state = JSON.stringify(drawn);
    });
  }

  root.addEventListener("change", draw);
  if (window.Plotly) draw(); else window.addEventListener("load", draw);
})
"""


def explorer_html(
    data: pd.DataFrame,
    columns: Mapping[str, ColumnSpec],
    div_id: str = "explorer",
    initial: Mapping[str, str] | None = None,
) -> str:
    """The widget for ``data`` as an HTML fragment (style, controls, plot div, one ``<script>``) for a
    page whose ``<head>`` already loads plotly.js. ``columns`` must name every column of ``data``
    (ValueError naming the missing ones). ``initial`` overrides :func:`default_choice` (keys ``x``,
    ``y``, ``colour``, ``facet`` as column names or ``""``, ``logx``/``logy`` as ``log``/``linear``).
    """
    if not re.fullmatch(r"[A-Za-z][\w-]*", div_id):
        raise ValueError(f"explorer: div_id {div_id!r} must be a letter then letters, digits, _ or -")
    payload = explorer_payload(data, columns)
    choice = _initial_choice(columns, data, initial or {})
    _validate_choice(choice, payload)
    config = {"template": TEMPLATE.to_plotly_json(), "config": PLOT_CONFIG, "colors": list(TRANSPORT_COLORS)}

    def check(name: str, on: bool) -> str:
        return f"<label><input type='checkbox' id='{div_id}-{name}'{' checked' if on else ''}> log</label>"

    def select(key: str, roles: tuple[str, ...], none: bool) -> str:
        options = _options(payload, roles, choice[key], none)
        return f"<label>{key} <select id='{div_id}-{key}'>{options}</select></label>"

    groups = ("parameter", "setting")
    controls = (
        select("x", (*groups, "metric"), False)
        + check("logx", choice["logx"] == "log")
        + select("y", ("metric",), False)
        + check("logy", choice["logy"] == "log")
        + select("colour", groups, True)
        + select("facet", groups, True)
    )
    return (
        f"<div class='explorer' id='{div_id}'>\n<style>{CSS.replace('#ID', '#' + div_id)}</style>\n"
        f"<div class='explorer-controls'>{controls}</div>\n{_filters(payload, div_id)}\n"
        f"<p class='note' id='{div_id}-caption'></p>\n<p class='skipped' id='{div_id}-warning' hidden></p>\n"
        f"<div id='{div_id}-plot' class='explorer-plot' data-state='{{}}'></div>\n"
        f"<script type='text/javascript'>{JS.strip()}({embed_json(payload)}, {embed_json(div_id)}, "
        f"{embed_json(config)});</script>\n</div>"
    )
