"""The HTML report: self-contained, every figure present, graceful without optional tables."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from experiments.report import (
    CDF_POINTS,
    DIV_IDS,
    MAX_POINTS,
    TITLES,
    ReportError,
    cdf_points,
    choose_points,
    completion_figure,
    format_value,
    load_results,
    main,
    write_report,
)

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import FAILED_ERROR, MIB, make_results_dir  # noqa: E402

PLOTLY_MARKER = "* plotly.js v"  # the bundle's licence header


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


def test_plotly_js_inline_exactly_once(report: tuple[Path, str]) -> None:
    _, text = report
    assert PLOTLY_MARKER in get_plotlyjs()
    assert text.count(PLOTLY_MARKER) == 1
    assert text.count(get_plotlyjs()[:2000]) == 1


def test_offline_no_external_scripts(report: tuple[Path, str]) -> None:
    _, text = report
    assert '<script src="http' not in text and "<script src='http" not in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']https?:", text)


def test_every_figure_title_and_div(report: tuple[Path, str]) -> None:
    _, text = report
    assert "fixture-spray-vs-ecmp" in text
    for key, title in TITLES.items():
        assert f">{title}</h2>" in text, title
        assert f'id="{DIV_IDS[key]}"' in text, key
    assert text.count("Plotly.newPlot") == len(TITLES)


def test_units_on_axes(report: tuple[Path, str]) -> None:
    _, text = report
    for label in (
        "completion time (ms)",
        "message size (MiB)",
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
    rows = re.findall(r"<tr>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>", text)
    assert ("1 MiB", "ecmp", "2") in rows
    assert ("16 MiB", "spray", "1") in rows  # the failed seed is not counted


def test_completion_figure_mean_and_spread(report: tuple[Path, str]) -> None:
    path, _ = report
    res = load_results(path.parent)
    fig = completion_figure(res).figure
    ecmp = next(t for t in fig.data if t.name == "ecmp")
    ok = res.ok[res.ok["transport"] == "ecmp"].groupby("workload.size")["completion_time_s"]
    np.testing.assert_allclose(ecmp.y, ok.mean().to_numpy() * 1e3)
    np.testing.assert_allclose(np.asarray(ecmp.error_y.array), (ok.max() - ok.mean()).to_numpy() * 1e3)
    np.testing.assert_allclose(ecmp.x, [1.0, 16.0])
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis.title.text == "message size (MiB)"
    assert fig.layout.yaxis.title.text == "completion time (ms)"


def test_only_transport_swept_gives_bars(tmp_path: Path) -> None:
    points = [{"transport": t, "seed": s} for t in ("ecmp", "spray", "split:4") for s in (0, 1)]
    out = make_results_dir(tmp_path, points, failed=None)
    res = load_results(out)
    assert res.params == []
    fig = completion_figure(res).figure
    assert [t.type for t in fig.data] == ["bar"] * 3
    text = write_report(out).read_text(encoding="utf-8")
    assert "Failed points" not in text
    assert "updatemenus" in text  # per-point figures still offer the 6 points


def test_missing_flows_and_timeline(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, flows=False, timeline=False)
    text = write_report(out).read_text(encoding="utf-8")
    assert "per-flow recording was turned off" in text
    assert "No link timeline (timeline.parquet)" in text
    assert f'id="{DIV_IDS["fct"]}"' not in text and f'id="{DIV_IDS["heatmap"]}"' not in text
    for key in ("completion", "link_load", "busiest", "gantt"):
        assert f'id="{DIV_IDS[key]}"' in text, key
    for title in TITLES.values():
        assert f">{title}</h2>" in text


def test_empty_detail_tables_and_no_error_column(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, failed=None)
    results = pd.read_parquet(out / "results.parquet").drop(columns="error")
    results.to_parquet(out / "results.parquet", index=False)  # as a runner without an error column
    for name in ("links", "ops", "flows", "timeline"):
        table = pd.read_parquet(out / f"{name}.parquet")
        table.iloc[:0].to_parquet(out / f"{name}.parquet", index=False)
    text = write_report(out).read_text(encoding="utf-8")
    assert f'id="{DIV_IDS["completion"]}"' in text
    assert text.count("class='skipped'") == 5


def test_all_points_failed(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, [{"transport": "ecmp"}], failed=0)
    text = write_report(out).read_text(encoding="utf-8")
    assert FAILED_ERROR in text and "No point succeeded." in text
    assert "Plotly.newPlot" not in text


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
    fig = completion_figure(res).figure
    assert fig.layout.xaxis.title.text == "message size (MiB)" and fig.layout.xaxis.type == "log"
    assert fig.layout.xaxis2.title.text == "uplink bandwidth (Gbit/s)"
    assert list(fig.layout.xaxis2.tickvals) == [200.0, 400.0]
    titles = [a.text for a in fig.layout.annotations]
    assert any("at uplink bandwidth = 200 Gbit/s" in t for t in titles)  # the lower middle of (200, 400)
    assert any("at message size = 8 MiB" in t for t in titles)
    assert len(fig.data) == 4 and sum(t.showlegend is not False for t in fig.data) == 2
    text = write_report(out).read_text(encoding="utf-8")
    assert "message size = 64 MiB, uplink bandwidth = 200 Gbit" in text  # a configuration option


def test_size_with_200k_flows(tmp_path: Path) -> None:
    out = make_results_dir(tmp_path, flows_per_point=200_000 // 7 + 1)
    assert len(pd.read_parquet(out / "flows.parquet", columns=["point"])) >= 200_000
    size = write_report(out).stat().st_size
    data = size - len(get_plotlyjs().encode())
    assert data < 1_000_000, f"{data} bytes besides plotly.js"
    assert size < 6_500_000


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
    ("param", "value", "text"),
    [
        ("workload.size", 16 * MIB, "16 MiB"),
        ("workload.size", 4096, "4 KiB"),
        ("topology.uplink_bandwidth", 50e9, "400 Gbit/s"),
        ("topology.link_latency", 5e-7, "500 ns"),
        ("transport", "split:4", "split:4"),
    ],
)
def test_format_value(param: str, value: object, text: str) -> None:
    assert format_value(param, value) == text


def test_string_and_bool_parameters_are_categories(tmp_path: Path) -> None:
    points = [
        {"transport": t, "workload.op": op, "topology.rail_optimized": rail}
        for t in ("ecmp", "spray")
        for op in ("all_to_all", "all_gather")
        for rail in (False, True)
    ]
    out = make_results_dir(tmp_path, points, flows_per_point=30, failed=None)
    fig = completion_figure(load_results(out)).figure
    assert fig.layout.xaxis.type == "category" and fig.layout.xaxis2.type == "category"
    assert {tuple(t.x) for t in fig.data} == {("all_gather", "all_to_all"), ("False", "True")}
    write_report(out)
