"""The interactive report of a results directory: ``DIR/report.html``, offline, no server.

::

    from experiments.report import write_report
    write_report(Path("out/quickstart"))      # -> Path("out/quickstart/report.html")

The page loads plotly.js from ``plotly.min.js`` beside it (written once per directory, so a page
is small and quick to open; ``self_contained=True`` inlines it for a single file to send). From the
top it shows:

1. the headline: each metric against the baseline the results' schema names, per group of the
   other parameters, seeds as spreads (:mod:`experiments.report_headline`);
2. an explorer: x, y, colour, facet, filters and log axes chosen on the page (:mod:`pages.explorer`);
3. the summary per configuration and the failed points;
4. for MoE runs, per-GPU layer phases, token load and the placements' cross-host bytes and
   objective against the ILP's bound (:mod:`experiments.report_moe`);
5. link-load distribution, busiest links, FCT CDFs, link × time heatmap and per-GPU timeline of a
   chosen point (:mod:`experiments.report_points`).

What a column is comes from ``results.parquet``'s schema (:mod:`experiments.results_schema`),
never from its name. :func:`write_combined_report` puts several runs on one page.
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import yaml

from experiments.report_data import DIV_IDS, ReportError, Results, Section, choose_points, load_results
from experiments.report_headline import failed_table, headline_section, summary_table
from experiments.report_moe import moe_sections
from experiments.report_points import (
    busiest_links_figure,
    fct_figure,
    gantt_figure,
    heatmap_figure,
    link_load_figure,
)
from pages.explorer import ColumnSpec, default_choice, explorer_html
from pages.files import write_atomic
from pages.html import PLOTLY_FILE, page_html, plot_div, write_plotly

__all__ = ["DIV_IDS", "ReportError", "load_results", "render_html", "write_combined_report", "write_report"]

EXPLORER_ROLES = ("id", "parameter", "setting", "metric", "status")


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


def _section_html(section: Section, div_id: str | None = None, above: str = "") -> str:
    """A figure's heading, explanation and plot (or the sentence saying why it is missing)."""
    div_id = div_id or DIV_IDS[section.key]
    parts = [f"<h2 id='{div_id}-section'>{html.escape(section.title)}</h2>"]
    if section.figure is None:
        parts.append(f"<p class='skipped'>{html.escape(section.skipped)}</p>")
        return "\n".join(parts)
    if section.intro:
        parts.append(f"<p>{html.escape(section.intro)}</p>")
    parts.append(above)
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in section.notes if n]
    parts.append(plot_div(section.figure, div_id))
    return "\n".join(parts)


def explorer_columns(res: Results) -> dict[str, ColumnSpec]:
    """The explorer's column specs: every column of the results table, from its schema."""
    return {
        name: ColumnSpec(role=column.role, unit=column.unit, label=column.label or name)
        for name, column in res.schema.columns.items()
        if name in res.ok.columns or name in res.failed.columns
    }


def explorer_start(res: Results) -> dict[str, str]:
    """The explorer's first view: colour by the baseline's column (what the study compares), a
    facet per value of the first categorical group parameter, x the explorer's default."""
    columns = explorer_columns(res)
    frame = _all_rows(res)
    choice = default_choice(columns, frame)
    base = [c for c in res.schema.baseline if c in frame.columns]
    if len(base) == 1 and base[0] != choice["x"]:
        choice["colour"] = base[0]
    groups = [
        c
        for c in res.schema.parameters
        if c not in base and c not in (choice["x"], "seed") and res.ok[c].nunique() > 1
    ]
    categorical = [c for c in groups if not pd.api.types.is_numeric_dtype(res.ok[c])]
    if categorical and categorical[0] != choice.get("colour"):
        choice["facet"] = categorical[0]
    return choice


def explorer_block(
    frame: pd.DataFrame,
    columns: dict[str, ColumnSpec],
    div_id: str = "explorer",
    initial: dict[str, str] | None = None,
) -> str:
    """The explorer's heading, a sentence and the widget."""
    intro = (
        "Choose what to plot: x, y, colour, facet and filters, log or linear axes. Points that "
        "differ only in their seed are one marker (the mean) with a min–max bar."
    )
    widget = explorer_html(frame, columns, div_id=div_id, initial=initial or default_choice(columns, frame))
    return f"<h2 id='{div_id}-section'>Explorer</h2>\n<p>{html.escape(intro)}</p>\n{widget}"


def point_sections(res: Results) -> list[Section]:
    """The MoE and per-point figures, in page order (skipped ones carry their reason)."""
    chosen = choose_points(res)
    sections = [
        *moe_sections(res, chosen),
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


def _sync_script(sections: Sequence[Section]) -> str:
    groups: dict[str, list[str]] = {}
    for section in sections:
        if section.sync and section.figure is not None:
            groups.setdefault(section.sync, []).append(DIV_IDS[section.key])
    return f"<script>{SYNC_JS % json.dumps(groups)}</script>" if groups else ""


def _all_rows(res: Results) -> pd.DataFrame:
    return pd.concat([res.ok, res.failed], ignore_index=True).sort_values("point", kind="stable")


def render_html(res: Results, plotly_src: str | None = PLOTLY_FILE) -> str:
    """The whole page as one string (plotly.js from ``plotly_src`` beside it, or inline for None)."""
    headline, above = headline_section(res)
    sections = point_sections(res)
    nav = "<a href='#fig-headline-section'>Headline</a><a href='#explorer-section'>Explorer</a>"
    nav += "<a href='#summary'>Summary</a>"
    nav += "".join(f"<a href='#{DIV_IDS[s.key]}-section'>{html.escape(s.title)}</a>" for s in sections)
    if not res.failed.empty:
        nav += "<a href='#failed'>Failed points</a>"
    name = html.escape(res.name)
    where = html.escape(str(res.out_dir))
    version_text = html.escape(str(res.experiment.get("moesim_version") or _installed_version()))
    body = "\n".join(
        [
            f"<h1>moesim report: {name}</h1>",
            f"<p class='sub'>Experiment <b>{name}</b>, results in <code>{where}</code>, "
            f"simulated with moesim {version_text}.</p>",
            f"<nav>{nav}</nav>",
            _section_html(headline, above=above),
            explorer_block(_all_rows(res), explorer_columns(res), initial=explorer_start(res)),
            "<h2 id='summary'>Summary</h2>",
            "<p>Per configuration, over seeds: mean [min – max]. Link utilization is the busiest "
            "link's bytes ÷ (capacity × completion time).</p>",
            _experiment_html(res),
            summary_table(res),
            failed_table(res),
            *(_section_html(s) for s in sections),
        ]
    )
    return page_html(f"moesim report: {name}", body, f"{_sync_script(sections)}\n", plotly_src=plotly_src)


def _write_page(target: Path, page: str, self_contained: bool) -> Path:
    if not self_contained:
        write_plotly(target.parent)
    write_atomic(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return target


def write_report(out_dir: Path, self_contained: bool = False) -> Path:
    """Write ``out_dir/report.html`` (and ``out_dir/plotly.min.js`` unless ``self_contained``),
    each atomically, and return the page's path.

    Raises:
        ReportError: ``out_dir`` has no (readable) ``results.parquet`` or no points in it.
    """
    out_dir = Path(out_dir)
    page = render_html(load_results(out_dir), None if self_contained else PLOTLY_FILE)
    return _write_page(out_dir / "report.html", page, self_contained)


def write_combined_report(out_dirs: Sequence[Path], target: Path, self_contained: bool = False) -> Path:
    """Several runs on one page: each run's headline, then one explorer over all their points
    (a ``run`` column tells them apart). Returns ``target``.

    Raises:
        ReportError: a directory cannot be reported on, or ``target`` is not an ``.html`` file path.
    """
    target = Path(target)
    if target.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {target}: give an .html file for a page of several runs")
    runs = [load_results(Path(d)) for d in out_dirs]
    names = [res.name for res in runs]
    if len(set(names)) != len(names):
        names = [f"{res.name} ({res.out_dir})" for res in runs]
    frames, columns = [], {"run": ColumnSpec(role="parameter", unit="", label="run")}
    parts = []
    for name, res in zip(names, runs, strict=True):
        frames.append(_all_rows(res).assign(run=name))
        for column, spec in explorer_columns(res).items():
            if column in columns and columns[column].role != spec.role:
                spec = ColumnSpec(
                    role="parameter" if "parameter" in (spec.role, columns[column].role) else spec.role,
                    unit=spec.unit,
                    label=spec.label,
                )
            columns[column] = spec
        headline, above = headline_section(res)
        headline_id = f"fig-headline-{len(parts)}"
        parts.append(
            f"<h2>{html.escape(name)}</h2><p class='sub'><code>{html.escape(str(res.out_dir))}</code></p>"
        )
        parts.append(_section_html(headline, div_id=headline_id, above=above))
    data = pd.concat(frames, ignore_index=True)
    data = data[[c for c in data.columns if c in columns]]
    title = "moesim: " + ", ".join(names)
    body = "\n".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            f"<p class='sub'>{len(runs)} runs, {len(data)} points.</p>",
            explorer_block(data, {c: columns[c] for c in data.columns}),
            *parts,
        ]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    page = page_html(html.escape(title), body, plotly_src=None if self_contained else PLOTLY_FILE)
    return _write_page(target, page, self_contained)


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
