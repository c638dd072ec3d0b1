"""The calibration report: the printed table and the self-contained HTML page."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import calibration.report as report
from calibration.fit import Calibration, TierFit, calibrate, simulated_times
from calibration.report import (
    DIV_IDS,
    EXPLORER_COLUMNS,
    EXPLORER_ID,
    TITLES,
    busbw_figure,
    efficiency_figure,
    error_figure,
    explorer_rows,
    format_efficiency,
    format_table,
    time_figure,
    write_calibration_report,
)
from pages.html import PLOTLY_FILE, plotly_js
from topologies.leaf_spine import LeafSpine

MIB = 2**20
GIB = 2**30
PLOTLY_MARKER = "* plotly.js (cartesian - minified) v"  # the bundle's licence header

SPEC = LeafSpine(
    leaves=2,
    spines=2,
    hosts_per_leaf=1,
    gpus_per_host=8,
    nic_bandwidth=50e9,
    uplink_bandwidth=50e9,
    nvlink_bandwidth=450e9,
)
# source, op, nranks, size (bytes), role, measured µs, relative error (simulated/measured - 1)
ROWS = [
    ("a.txt", "all_reduce", 16, 8, "fit", 20.0, 0.30),
    ("a.txt", "all_reduce", 16, 1024, "fit", 22.0, -0.05),
    ("a.txt", "all_reduce", 16, 16 * MIB, "fit", 700.0, 0.02),
    ("a.txt", "all_reduce", 16, 8 * GIB, "holdout", 350_000.0, -0.09),
    ("b.txt", "all_to_all", 8, 64 * 1024, "fit", 15.0, 0.10),
    ("b.txt", "all_to_all", 8, 2 * MIB, "holdout", 40.0, 0.04),
    ("b.txt", "all_to_all", 8, 64 * MIB, "fit", 250.0, -0.01),
]
NIC = TierFit("nic", 6e-6, 45e9, ((65536.0, 0.42), (1048576.0, 1.0)), rows=3, alpha_fitted=True)
NVLINK = TierFit("nvlink", 2e-6, 400e9, (), rows=2, alpha_fitted=False)  # empty curve, α kept


def make_table(rows: list[tuple]) -> pd.DataFrame:
    """A table with the columns calibrate() writes, from (source, op, nranks, size, role, µs, error)."""
    frame = pd.DataFrame(rows, columns=["source", "op", "nranks", "size", "role", "measured_us", "rel_error"])
    factor = np.where(frame["op"] == "all_reduce", 2 * (frame["nranks"] - 1) / frame["nranks"], 1.0)
    simulated = frame["measured_us"] * (1 + frame["rel_error"])
    return pd.DataFrame(
        {
            "source": frame["source"],
            "op": frame["op"],
            "nranks": frame["nranks"].astype(int),
            "size": frame["size"].astype(np.int64),
            "tier": np.where(frame["nranks"] > SPEC.gpus_per_host, "nic", "nvlink"),
            "role": frame["role"],
            "measured_us": frame["measured_us"],
            "simulated_us": simulated,
            "rel_error": frame["rel_error"],
            "measured_busbw_gbps": frame["size"] / frame["measured_us"] * factor / 1e3,
            "simulated_busbw_gbps": frame["size"] / simulated * factor / 1e3,
        }
    )


@pytest.fixture
def cal() -> Calibration:
    return Calibration(SPEC, (NVLINK, NIC), make_table(ROWS))


def _lines_with(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(w in line for w in words)]


# ------------------------------------------------------------------------------------------- table


def test_table_has_every_row_with_human_sizes(cal: Calibration) -> None:
    text = format_table(cal).split("\n\n")[0]  # the rows, not the summary
    header = text.splitlines()[0]
    for column in ("source", "op", "ranks", "size", "role", "measured µs", "simulated µs", "error %"):
        assert column in header
    assert "measured busbw GB/s" in header and "simulated busbw GB/s" in header
    for size in ("8 B", "1 KiB", "16 MiB", "8 GiB", "64 KiB", "2 MiB", "64 MiB"):
        assert re.search(rf"\s{re.escape(size)}\s", text), size
    (big,) = _lines_with(text, "a.txt", " 8 GiB")
    assert "holdout" in big and "-9.0" in big and "350000.00" in big
    (small,) = _lines_with(text, "a.txt", " 8 B")
    assert "fit" in small and "+30.0" in small and "20.00" in small and "26.00" in small
    busbw = 16 * MIB / 700.0 * (2 * 15 / 16) / 1e3  # GB/s
    (mid,) = _lines_with(text, " 16 MiB")
    assert f"{busbw:.2f}" in mid and f"{busbw / 1.02:.2f}" in mid


def test_table_columns_are_fixed_width(cal: Calibration) -> None:
    lines = format_table(cal).split("\n\n")[0].splitlines()
    assert len(lines) == 2 + len(ROWS)  # header, rule, rows
    assert len({len(line) for line in lines}) == 1  # the last column is right-aligned: equal widths
    header = lines[0]
    error_end = header.index("error %") + len("error %")
    for line in lines[2:]:
        assert line[error_end - 1].isdigit()  # the error column's numbers end under its header


def test_mape_lines_match_hand_computation(cal: Calibration) -> None:
    text = format_table(cal)
    # all rows: (30 + 5 + 2 + 9 + 10 + 4 + 1) / 7; from 1 MiB: 16 MiB (2), 8 GiB (9), 2 MiB (4), 64 MiB (1)
    assert _lines_with(text, "MAPE, all rows", "8.7 %", "(7 rows)")
    assert _lines_with(text, "MAPE, size >= 1 MiB, all", "4.0 %", "(4 rows)")
    assert _lines_with(text, "MAPE, size >= 1 MiB, fit", "1.5 %", "(2 rows)")
    assert _lines_with(text, "MAPE, size >= 1 MiB, holdout", "6.5 %", "(2 rows)")
    assert cal.mape() == pytest.approx(61 / 7)
    assert cal.mape("holdout", MIB) == pytest.approx(6.5)
    (worst,) = _lines_with(text, "Worst held-out row")
    assert "a.txt all_reduce 16 ranks 8 GiB: -9.0 %" in worst
    other = format_table(cal, min_size=GIB)
    assert _lines_with(other, "MAPE, size >= 1 GiB, all", "9.0 %", "(1 row)")
    assert _lines_with(other, "MAPE, size >= 1 GiB, fit", "–", "(0 rows)")


def test_parameters_per_tier(cal: Calibration) -> None:
    text = format_table(cal)
    params = text[text.index("Parameters per tier") :]
    assert "per host = × 8 GPUs" in params
    nvlink, nic = params.index("  nvlink ("), params.index("  nic (")
    assert nvlink < nic
    nv, ni = params[nvlink:nic], params[nic:]
    assert "2 fitted rows" in nv and "2.000 µs (kept)" in nv
    assert "400.00 GB/s = 3200.0 Gb/s per GPU" in nv and "3200.00 GB/s = 25600.0 Gb/s per host" in nv
    assert "none (η = 1)" in nv
    assert "3 fitted rows" in ni and "6.000 µs (fitted)" in ni
    assert "45.00 GB/s = 360.0 Gb/s per GPU" in ni and "360.00 GB/s = 2880.0 Gb/s per host" in ni
    assert "efficiency  64 KiB: 0.42, 1 MiB: 1.00" in ni
    assert format_efficiency(((512.0, 0.1), (8 * MIB, 0.955))) == "512 B: 0.10, 8 MiB: 0.95"


def test_single_source_without_holdout_and_unfitted_tier() -> None:
    rows = [r[:4] + ("fit",) + r[5:] for r in ROWS if r[0] == "a.txt"]
    cal = Calibration(SPEC, (), make_table(rows))  # the NIC tier has rows but was not fitted
    text = format_table(cal)
    assert _lines_with(text, "MAPE, size >= 1 MiB, holdout", "–", "(0 rows)")
    assert "none (no held-out rows)" in text
    assert "nic (not fitted: the topology's values)" in text
    assert "5.000 µs (kept)" in text and "50.00 GB/s = 400.0 Gb/s per GPU" in text
    assert "  nvlink (" not in text  # no NVLink row: the tier is not shown


# ------------------------------------------------------------------------------------------ figures


def test_time_figure_log_log_with_open_holdout_markers(cal: Calibration) -> None:
    fig = time_figure(cal)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.title.text == "message size (bytes)"
    assert fig.layout.yaxis.title.text == "time (µs)"
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 2 and len({t.line.color for t in lines}) == 2  # one colour per source/op
    held = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "circle-open"]
    assert sorted(float(x) for t in held for x in t.x) == [2 * MIB, 8 * GIB]
    fitted = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "circle"]
    assert sum(len(t.x) for t in fitted) == 5
    a = next(t for t in lines if t.name.startswith("a.txt"))
    np.testing.assert_allclose(a.y, [26.0, 20.9, 714.0, 318_500.0])  # simulated, sorted by size


def test_busbw_error_and_efficiency_figures(cal: Calibration) -> None:
    bus = busbw_figure(cal)
    assert bus.layout.xaxis.type == "log" and bus.layout.yaxis.title.text == "bus bandwidth (GB/s)"
    err = error_figure(cal)
    assert {t.name for t in err.data} == {"fitted", "held out"}
    assert sorted(float(s.y0) for s in err.layout.shapes) == [-10.0, 0.0, 10.0]
    assert err.layout.yaxis.title.text.endswith("(%)")
    held = next(t for t in err.data if t.name == "held out")
    np.testing.assert_allclose(sorted(held.y), [-9.0, 4.0])
    eff = efficiency_figure(cal)
    knots = next(t for t in eff.data if t.name == "NIC: knots")
    np.testing.assert_allclose(knots.x, [65536.0, 1048576.0])
    np.testing.assert_allclose(knots.y, [0.42, 1.0])
    flat = next(t for t in eff.data if t.name.startswith("NVLink"))  # the empty curve: η = 1
    assert list(flat.y) == [1.0, 1.0] and flat.line.dash == "dot"
    assert eff.layout.xaxis.type == "log" and "bytes" in eff.layout.xaxis.title.text


# --------------------------------------------------------------------------------------------- page


def test_page_is_self_contained_with_every_figure(cal: Calibration, tmp_path: Path) -> None:
    target = tmp_path / "out" / "calibration.html"
    path = write_calibration_report(
        cal, target, title="Fit <A3>", notes=["from a & b", "two sources"], self_contained=True
    )
    assert path == target and path.exists()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)  # no <script src=http...>: plotly.js is inline
    assert "<script src=http" not in text and not re.search(r"<link[^>]*\bhref\s*=\s*[\"']https?:", text)
    assert text.count(PLOTLY_MARKER) == 1 and text.count(plotly_js()[:2000]) == 1
    for key, title in TITLES.items():
        assert f'id="{DIV_IDS[key]}"' in text, key
        assert f">{title}</h2>" in text
    assert text.count("Plotly.newPlot") == len(TITLES)
    assert "<h1>Fit &lt;A3&gt;</h1>" in text and "from a &amp; b" in text and "two sources" in text
    for snippet in ("8.7 %", "6.5 %", "64 KiB: 0.42, 1 MiB: 1.00", "none (η = 1)", "360.00", "kept"):
        assert snippet in text, snippet
    assert [p.name for p in path.parent.iterdir()] == ["calibration.html"]  # no temporary file left
    assert f'id="{EXPLORER_ID}-plot"' in text or f"id='{EXPLORER_ID}-plot'" in text


def test_page_shares_plotly_beside_it_by_default(cal: Calibration, tmp_path: Path) -> None:
    path = write_calibration_report(cal, tmp_path / "cal.html", title="t")
    text = path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.html", PLOTLY_FILE]
    assert f"src='{PLOTLY_FILE}'" in text and PLOTLY_MARKER not in text
    assert (tmp_path / PLOTLY_FILE).read_text(encoding="utf-8") == plotly_js()
    assert len(text.encode()) < 200_000  # the page alone: tables, figures and the explorer's rows


def test_explorer_rows_are_every_row_in_base_units(cal: Calibration) -> None:
    rows = explorer_rows(cal)
    assert set(rows.columns) == set(EXPLORER_COLUMNS) and len(rows) == len(ROWS)
    first = rows[(rows["op"] == "all_reduce") & (rows["size"] == 16 * MIB)].iloc[0]
    assert first["measured_s"] == pytest.approx(700e-6) and first["simulated_s"] == pytest.approx(714e-6)
    assert first["error_pct"] == pytest.approx(2.0) and first["abs_error_pct"] == pytest.approx(2.0)
    assert (first["tier"], first["role"], first["nranks"]) == ("NIC", "fitted", 16)
    held = rows[rows["role"] == "held out"]
    assert sorted(held["error_pct"]) == pytest.approx([-9.0, 4.0])
    assert first["measured_busbw"] == pytest.approx(16 * MIB / 700e-6 * 2 * 15 / 16)


def test_page_written_atomically_and_replaced(
    cal: Calibration, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, Path]] = []
    real = report.write_atomic

    def spy(path: Path, write: object) -> None:
        def wrapped(tmp: Path) -> None:
            calls.append((path, tmp))
            write(tmp)  # type: ignore[operator]
            assert not path.exists() or path.read_text(encoding="utf-8") == "old"  # not touched yet

        real(path, wrapped)

    monkeypatch.setattr(report, "write_atomic", spy)
    target = tmp_path / "cal.html"
    target.write_text("old", encoding="utf-8")
    write_calibration_report(cal, target, title="t")
    ((final, tmp),) = calls
    assert final == target and tmp.parent == tmp_path and tmp != target
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.html", PLOTLY_FILE]


def test_page_with_one_source_no_holdout_and_no_curves(tmp_path: Path) -> None:
    rows = [r[:4] + ("fit",) + r[5:] for r in ROWS if r[0] == "b.txt"]
    flat = dataclasses.replace(NVLINK, alpha_fitted=True)
    cal = Calibration(SPEC, (flat,), make_table(rows))
    path = write_calibration_report(cal, tmp_path / "one.html", title="one", self_contained=True)
    text = path.read_text(encoding="utf-8")
    assert text.count("Plotly.newPlot") == len(TITLES)
    assert "none (no held-out rows)" in text
    assert not [t for t in time_figure(cal).data if t.marker.symbol == "circle-open"]
    assert {t.name for t in error_figure(cal).data} == {"fitted"}
    (line,) = efficiency_figure(cal).data
    assert list(line.y) == [1.0, 1.0]


# ------------------------------------------------------------------------------------ real calibrate


def test_report_of_a_real_calibration(tmp_path: Path) -> None:
    """calibrate() on times simulated on a known fabric, then both reports of the result."""
    truth = LeafSpine(
        leaves=2,
        spines=1,
        hosts_per_leaf=1,
        gpus_per_host=2,
        nic_bandwidth=40e9,
        uplink_bandwidth=40e9,
        nvlink_bandwidth=300e9,
        message_latency=8e-6,
        nvlink_message_latency=3e-6,
        nic_efficiency=((65536.0, 0.4), (1048576.0, 1.0)),
    )
    sizes = [8, 64 * 1024, MIB, 16 * MIB, 256 * MIB]
    rows = pd.DataFrame(
        [
            {"source": source, "op": "all_reduce", "nranks": nranks, "size": size}
            for source, nranks in (("nvlink.txt", 2), ("net.txt", 4))
            for size in sizes
        ]
    )
    rows["time_s"] = simulated_times(truth, rows)
    start = dataclasses.replace(  # the same NICs (NCCL chooses alike), other rates
        truth,
        nic_line_rate=40e9,
        nic_bandwidth=50e9,
        nvlink_bandwidth=450e9,
        message_latency=5e-6,
        nvlink_message_latency=2e-6,
        nic_efficiency=(),
    )
    cal = calibrate(start, rows, holdout=list(rows["size"] == 16 * MIB))
    assert cal.mape("fit", MIB) < 1.0 and cal.mape("holdout") < 5.0
    text = format_table(cal)
    assert len(_lines_with(text, "all_reduce", "holdout", "16 MiB")) == 2
    assert "  nvlink (4 fitted rows)" in text and "  nic (4 fitted rows)" in text
    # one op per tier: α and the per-call latency are one unknown, which the call latency takes
    assert "µs (kept)" in text and "  collective  " in text
    path = write_calibration_report(cal, tmp_path / "real.html", title="synthetic", notes=["truth known"])
    page = path.read_text(encoding="utf-8")
    assert all(f'id="{div}"' in page for div in DIV_IDS.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == [PLOTLY_FILE, "real.html"]
