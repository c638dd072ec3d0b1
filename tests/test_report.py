"""The HTML report: self-contained, every figure present, graceful without optional tables."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.report import DIV_IDS, ReportError, load_results, main, write_combined_report, write_report
from experiments.report_data import MAX_POINTS, TITLES, choose_points
from experiments.report_headline import compare, headline_section
from experiments.report_points import CDF_POINTS, cdf_points
from pages.html import PLOTLY_BUNDLE_VERSION, PLOTLY_FILE, format_unit, plotly_js

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import FAILED_ERROR, MIB, make_results_dir  # noqa: E402

PLOTLY_MARKER = "* plotly.js (cartesian - minified) v"  # the bundle's licence header
MOE_KEYS = {"moe_phases", "moe_tokens", "moe_cross_host"}
PAGE_KEYS = [k for k in TITLES if k not in MOE_KEYS]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The report of the default fixture (8 points, one failed), and its text."""
    out = make_results_dir(tmp_path_factory.mktemp("results"))
    path = write_report(out)
    return path, path.read_text(encoding="utf-8")


def test_writes_report_html_atomically(report: tuple[Path, str]) -> None:
    path, text = report
    assert path == path.parent / "report.html"
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".report-")]
    again = write_report(path.parent)  # replacing an existing report works too
    assert again == path and again.read_text(encoding="utf-8") == text  # and is deterministic


def test_plotly_js_beside_the_page(report: tuple[Path, str]) -> None:
    path, text = report
    assert text.count(f"src='{PLOTLY_FILE}'") == 1 and PLOTLY_MARKER not in text
    beside = (path.parent / PLOTLY_FILE).read_text(encoding="utf-8")
    assert beside == plotly_js() and f"{PLOTLY_MARKER}{PLOTLY_BUNDLE_VERSION}" in beside
    assert len(text.encode()) < 400_000


def test_vendored_plotly_matches_plotly_py() -> None:
    from plotly.offline import get_plotlyjs_version

    assert PLOTLY_BUNDLE_VERSION == get_plotlyjs_version()


def test_self_contained_inlines_plotly_once(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path / "r")
    text = write_report(out, self_contained=True).read_text(encoding="utf-8")
    assert text.count(PLOTLY_MARKER) == 1 and text.count(plotly_js()[:2000]) == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)
    assert not (out / PLOTLY_FILE).exists()


def test_offline_no_external_scripts(report: tuple[Path, str]) -> None:
    _, text = report
    assert '<script src="http' not in text and "<script src='http" not in text
    assert re.findall(r"<script[^>]*\bsrc\s*=\s*'([^']*)'", text) == [PLOTLY_FILE]
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']https?:", text)


def test_every_figure_title_and_div(report: tuple[Path, str]) -> None:
    _, text = report
    assert "fixture-spray-vs-ecmp" in text
    for key in PAGE_KEYS:
        if key == "explorer":
            assert "id='explorer-section'" in text and "id='explorer-plot'" in text
            continue
        assert f">{TITLES[key]}</h2>" in text, key
        assert f'id="{DIV_IDS[key]}"' in text, key
    for key in MOE_KEYS:  # not a MoE run
        assert f'id="{DIV_IDS[key]}"' not in text
    assert text.count("Plotly.newPlot") == len(PAGE_KEYS) - 1  # the explorer draws with Plotly.react


def test_units_on_axes(report: tuple[Path, str]) -> None:
    _, text = report
    for label in (
        "completion time ÷ ecmp",
        "message size",
        "link utilization (%)",
        "flow completion time (",
        "time (µs)",
        "GPU rank",
    ):
        # plotly may write non-ASCII characters as JSON escapes (µ as \u00b5), depending on its encoder
        assert label in text or json.dumps(label)[1:-1] in text, label


def test_failed_point_listed_and_left_out(report: tuple[Path, str]) -> None:
    path, text = report
    assert "Failed points" in text and FAILED_ERROR in text
    res = load_results(path.parent)
    assert list(res.failed["point"]) == [7]
    assert 7 not in set(res.ok["point"])
    assert "#7 " not in text  # not offered in any dropdown


def test_summary_rows_match_configurations(report: tuple[Path, str]) -> None:
    _, text = report
    summary = text.split("id='summary'")[1]
    rows = re.findall(r"<tr>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", summary)
    assert ("1 MiB", "ecmp", "2") in rows
    assert ("16 MiB", "spray", "1") in rows  # the failed seed is not counted


def test_headline_ratio_per_size_and_seed(report: tuple[Path, str]) -> None:
    path, text = report
    res = load_results(path.parent)
    table = compare(res)
    assert list(table["workload.size"]) == [MIB, 16 * MIB] and set(table["transport"]) == {"spray"}
    ok = res.ok.set_index(["workload.size", "seed", "transport"])["completion_time_s"]
    at_1 = [ok[(MIB, seed, "spray")] / ok[(MIB, seed, "ecmp")] for seed in (0, 1)]
    row = table.iloc[0]
    assert row["completion_time_s/ratio"] == pytest.approx(np.mean(at_1), rel=1e-12)
    assert row["completion_time_s/ratio_min"] == pytest.approx(min(at_1), rel=1e-12)
    assert row["seeds"] == 2 and table.iloc[1]["seeds"] == 1  # the failed point is left out
    section, above = headline_section(res)
    fig = section.figure
    assert [t.name for t in fig.data] == ["spray"]
    np.testing.assert_allclose(fig.data[0].y, table["completion_time_s/ratio"])
    assert list(fig.data[0].x) == ["1 MiB", "16 MiB"]
    assert "spray</b>:" in above and "× ecmp" in above


def test_only_transport_swept(tmp_path: Path) -> None:
    points = [{"transport": t, "seed": s} for t in ("ecmp", "spray", "split:4") for s in (0, 1)]
    out = make_results_dir(tmp_path, points, failed=None)
    res = load_results(out)
    assert res.params == []
    fig = headline_section(res)[0].figure
    assert [t.name for t in fig.data] == ["spray", "split:4"] and list(fig.data[0].x) == ["spray"]
    assert fig.layout.xaxis.tickangle == 0  # short labels stay level
    text = write_report(out).read_text(encoding="utf-8")
    assert "Failed points" not in text
    assert "updatemenus" in text  # per-point figures still offer the 6 points


def test_missing_flows_and_timeline(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, flows=False, timeline=False)
    text = write_report(out).read_text(encoding="utf-8")
    assert "per-flow recording was turned off" in text
    assert "No link timeline (timeline.parquet)" in text
    assert f'id="{DIV_IDS["fct"]}"' not in text and f'id="{DIV_IDS["heatmap"]}"' not in text
    for key in ("headline", "link_load", "busiest", "gantt"):
        assert f'id="{DIV_IDS[key]}"' in text, key
    for key in PAGE_KEYS:
        assert f">{TITLES[key]}</h2>" in text


def test_empty_detail_tables_and_no_error_column(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, failed=None)
    results = pd.read_parquet(out / "results.parquet").drop(columns="error")
    results.to_parquet(out / "results.parquet", index=False)  # as a runner without an error column
    for name in ("links", "ops", "flows", "timeline"):
        table = pd.read_parquet(out / f"{name}.parquet")
        table.iloc[:0].to_parquet(out / f"{name}.parquet", index=False)
    text = write_report(out).read_text(encoding="utf-8")
    assert f'id="{DIV_IDS["headline"]}"' in text
    assert text.count("<p class='skipped'>") == 5


def test_all_points_failed(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, [{"transport": "ecmp"}], failed=0)
    text = write_report(out).read_text(encoding="utf-8")
    assert FAILED_ERROR in text and "No point succeeded." in text
    assert "Plotly.newPlot" not in text and "error rows excluded" not in text


def test_empty_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no results.parquet") as err:
        write_report(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    assert not (tmp_path / "report.html").exists()
    with pytest.raises(ReportError, match="no such results directory"):
        write_report(tmp_path / "missing")
    assert main([str(tmp_path)]) == 2


def test_no_points_raises(tmp_path: Path) -> None:
    pd.DataFrame({"point": [], "seed": [], "transport": [], "completion_time_s": []}).to_parquet(
        tmp_path / "results.parquet"
    )
    with pytest.raises(ReportError, match="no points"):
        write_report(tmp_path)


def test_dropdown_capped(tmp_path: Path) -> None:
    sizes = [(i + 1) * MIB for i in range(40)]
    points = [{"transport": t, "workload.size": s} for t in ("ecmp", "spray") for s in sizes]
    out = make_results_dir(tmp_path, points, flows_per_point=20, failed=None)
    res = load_results(out)
    chosen = choose_points(res)
    assert len(chosen) == MAX_POINTS
    top = res.ok.nlargest(MAX_POINTS, "max_link_utilization")["point"]
    assert set(chosen["point"]) == set(top)
    text = write_report(out).read_text(encoding="utf-8")
    assert f"The dropdown offers {MAX_POINTS} of 80 successful points" in text
    assert f"the {MAX_POINTS} with the busiest link." in text


def test_two_swept_parameters(tmp_path: Path) -> None:
    points = [
        {"transport": t, "workload.size": s, "topology.uplink_bandwidth": b, "seed": seed}
        for t in ("ecmp", "ethereal")
        for s in (MIB, 8 * MIB, 64 * MIB)
        for b in (25e9, 50e9)
        for seed in (0, 1)
    ]
    out = make_results_dir(tmp_path, points, flows_per_point=40, failed=None)
    res = load_results(out)
    assert res.params == ["workload.size", "topology.uplink_bandwidth"]
    table = compare(res)
    assert len(table) == 6  # every size x bandwidth group, never averaged together
    fig = headline_section(res)[0].figure
    assert "1 MiB · 200 Gbit/s" in list(fig.data[0].x)
    assert fig.layout.xaxis.automargin and fig.layout.xaxis.tickangle == -30  # long labels: slanted, whole
    text = write_report(out).read_text(encoding="utf-8")
    assert "message size = 64 MiB, uplink bandwidth = 200 Gbit" in text  # a configuration option


def test_size_with_200k_flows(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, flows_per_point=200_000 // 7 + 1)
    assert len(pd.read_parquet(out / "flows.parquet", columns=["point"])) >= 200_000
    size = write_report(out).stat().st_size
    assert size < 1_000_000, f"{size} bytes"


def test_several_runs_on_one_page(tmp_path: Path) -> None:
    a = make_results_dir(tmp_path / "a")
    b = make_results_dir(tmp_path / "b", [{"transport": t} for t in ("ecmp", "spray")], failed=None)
    page = write_combined_report([a, b], tmp_path / "both" / "page.html")
    text = page.read_text(encoding="utf-8")
    assert (tmp_path / "both" / PLOTLY_FILE).is_file()
    assert text.count("id='explorer-section'") == 1 and text.count("Headline</h2>") == 2
    assert str(a) in text and str(b) in text
    with pytest.raises(ReportError, match="give an .html file"):
        write_combined_report([a, b], tmp_path / "both")


def test_cdf_points_downsamples() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=100_000)
    x, y = cdf_points(values)
    assert x.size == y.size == CDF_POINTS
    assert x[0] == values.min() and x[-1] == values.max() and y[-1] == 1.0
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) > 0)
    x, y = cdf_points(np.array([3.0, 1.0, np.nan, 2.0]))
    np.testing.assert_allclose(x, [1, 2, 3])
    np.testing.assert_allclose(y, [1 / 3, 2 / 3, 1])


@pytest.mark.parametrize(
    ("unit", "value", "text"),
    [
        ("B", 16 * MIB, "16 MiB"),
        ("B", 4096, "4 KiB"),
        ("B/s", 50e9, "400 Gbit/s"),
        ("s", 5e-7, "500 ns"),
        ("", "split:4", "split:4"),
        ("", 4096, "4096"),
    ],
)
def test_format_unit(unit: str, value: object, text: str) -> None:
    assert format_unit(unit, value) == text


def test_string_and_bool_parameters_are_groups(tmp_path: Path) -> None:
    points = [
        {"transport": t, "workload.op": op, "topology.rail_optimized": rail}
        for t in ("ecmp", "spray")
        for op in ("all_to_all", "all_gather")
        for rail in (False, True)
    ]
    out = make_results_dir(tmp_path, points, flows_per_point=30, failed=None)
    fig = headline_section(load_results(out))[0].figure
    assert fig.layout.xaxis.type == "category"
    assert list(fig.data[0].x) == [
        "all_gather · False",
        "all_gather · True",
        "all_to_all · False",
        "all_to_all · True",
    ]
    write_report(out)


def test_headline_keeps_groups_whose_parameter_is_null(tmp_path: Path) -> None:
    """``algorithm: null`` (moesim's own schedule) in a zip: its groups still find their baseline
    (NaN never equals NaN, so a plain == dropped them from the headline)."""
    points = [
        {"transport": t, "workload.op": op, "workload.algorithm": algo, "seed": 0}
        for op, algo in (("all_reduce", None), ("all_reduce", "hierarchical"), ("all_to_all", None))
        for t in ("spray", "ecmp")
    ]
    out = make_results_dir(tmp_path, points, flows_per_point=10, failed=None)
    res = load_results(out)
    table = compare(res)
    assert len(table) == 3  # one ecmp-vs-spray row per op × algorithm group
    assert table["workload.algorithm"].isna().sum() == 2
    fig = headline_section(res)[0].figure
    assert len(fig.data[0].x) == 3
