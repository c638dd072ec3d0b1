"""The report in a real browser: headless Chromium renders every figure without JavaScript errors,
and the per-point dropdown switches the heatmap (and, in step, the other per-point figures).

Needs Chromium, its driver and selenium (Debian: ``apt-get install chromium chromium-driver``;
``pip install selenium``); skipped with the reason when any is missing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from experiments.cli import main
from experiments.report import DIV_IDS, write_report
from experiments.results_schema import read_results

sys.path.insert(0, str(Path(__file__).parent))
from browser import browser_driver, missing  # noqa: E402
from report_fixture import make_results_dir  # noqa: E402

PAGE_KEYS = [k for k in DIV_IDS if k not in ("explorer", "moe_phases", "moe_tokens", "moe_cross_host")]
"""The figures of a (non-MoE) report drawn with Plotly.newPlot."""
MOE_KEYS = ["headline", "moe_phases", "moe_tokens", "moe_cross_host", "gantt"]

try:
    import selenium  # noqa: F401  (the imports below need it)
except ImportError:
    missing("selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

driver = pytest.fixture(scope="module", name="driver")(browser_driver)


@pytest.fixture(scope="module")
def page(driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fixture's report, loaded and every figure drawn."""
    out = make_results_dir(tmp_path_factory.mktemp("results"))
    report = write_report(out)
    driver.get_log("browser")  # start from an empty console
    driver.get(report.as_uri())
    ids = [DIV_IDS[key] for key in PAGE_KEYS]
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return arguments[0].every(id => { const gd = document.getElementById(id);"
            " return gd && gd._fullLayout && gd.querySelector('svg.main-svg'); })",
            ids,
        )
    )
    return driver


def _heatmap_state(driver: Any) -> dict[str, Any]:
    """The heatmap's visible trace (index, name, first z row, x-axis title) and each menu's choice."""
    return driver.execute_script(
        """
        const gd = document.getElementById(arguments[0]);
        const i = gd.data.findIndex(t => t.visible !== false);
        const z = gd._fullData[i].z;
        const active = {};
        for (const id of arguments[1]) {
          const other = document.getElementById(id);
          active[id] = other.layout.updatemenus ? other.layout.updatemenus[0].active : null;
        }
        return {index: i, name: gd.data[i].name, z0: Array.from(z[0]).slice(0, 50),
                visible: gd.data.filter(t => t.visible !== false).length,
                xtitle: gd._fullLayout.xaxis.title.text, active: active};
        """,
        DIV_IDS["heatmap"],
        [DIV_IDS["busiest"], DIV_IDS["gantt"], DIV_IDS["heatmap"]],
    )


def test_every_figure_rendered(page: Any) -> None:
    for key in PAGE_KEYS:
        div_id = DIV_IDS[key]
        div = page.find_element(By.ID, div_id)
        assert div.find_elements(By.CSS_SELECTOR, ".plot-container"), key
        assert div.find_elements(By.CSS_SELECTOR, "svg.main-svg"), key
        drawn = page.execute_script(  # traces are <g class="trace ...">, a heatmap is an <image>
            "return document.getElementById(arguments[0])"
            ".querySelectorAll('g.trace, .heatmaplayer image').length",
            div_id,
        )
        assert drawn > 0, f"{key}: nothing drawn"


def test_no_javascript_errors(page: Any) -> None:
    severe = [entry for entry in page.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe


def test_dropdown_switches_heatmap_point(page: Any) -> None:
    before = _heatmap_state(page)
    assert before["index"] == 0 and before["visible"] == 1
    header = page.find_element(By.CSS_SELECTOR, f"#{DIV_IDS['heatmap']} .updatemenu-header-group")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", header)
    header.click()
    buttons = WebDriverWait(page, 10).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR,
            f"#{DIV_IDS['heatmap']} .updatemenu-dropdown-button-group .updatemenu-dropdown-button",
        )
    )
    target = next(b for b in buttons if "16 MiB" in b.text)  # another point, of a 16x longer burst
    label = target.text
    target.click()
    WebDriverWait(page, 10).until(lambda d: _heatmap_state(d)["index"] != before["index"])
    time.sleep(0.2)  # let the synchronised figures redraw
    after = _heatmap_state(page)
    assert after["visible"] == 1
    assert after["name"] != before["name"]
    assert after["z0"] != before["z0"]
    assert after["xtitle"] == "time (ms)" and before["xtitle"] == "time (µs)"
    header_text = page.find_element(By.CSS_SELECTOR, f"#{DIV_IDS['heatmap']} .updatemenu-header-group").text
    assert header_text.startswith(label)
    # The other per-point figures followed the choice.
    assert set(after["active"].values()) == {after["index"]}
    severe = [entry for entry in page.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe


def test_screenshot(page: Any, tmp_path: Path) -> None:
    """A full-page screenshot can be taken (kept for a person to look at when the test is debugged)."""
    height = page.execute_script("return document.body.scrollHeight")
    page.set_window_size(1300, min(int(height) + 100, 16000))
    shot = tmp_path / "report.png"
    assert page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    page.set_window_size(1300, 1100)


# ------------------------------------------------------------------- the explorer on real runs' pages

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "leaves": 2,
    "spines": 2,
    "hosts_per_leaf": 1,
    "gpus_per_host": 4,
    "nic_bandwidth": "400Gbps",
    "uplink_bandwidth": "400Gbps",
}
RUNS = {
    "quickstart": None,  # experiments/examples/quickstart.yaml as shipped
    "moe": {
        "name": "moe",
        "topology": TINY,
        "workload": {
            "kind": "moe",
            "hidden": 512,
            "synth": {"experts": 16, "top_k": 2, "layers": 2, "tokens_per_gpu": 64, "imbalance": 1.0},
        },
        "sweep": {"placement": ["round_robin", "greedy"], "transport": ["ecmp", "spray"]},
    },
    "zip": {
        "name": "zip",
        "topology": TINY,
        "workload": {"kind": "collective", "op": "all_reduce", "size": "1MiB"},
        "record": {"flows": False},
        "report": {"baseline": {"transport": "spray"}},
        "sweep": {
            "zip": {"workload.op": ["all_reduce", "all_to_all"], "workload.algorithm": ["ring", "direct"]},
            "workload.size": ["256KiB", "1MiB"],
            "transport": ["ecmp", "spray"],
            "seed": [0, 1],
        },
    },
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Results directories of the quickstart, a small MoE sweep and a zip: sweep, run by moesim."""
    import yaml

    base = tmp_path_factory.mktemp("runs")
    out = {}
    for name, experiment in RUNS.items():
        path = ROOT / "experiments" / "examples" / "quickstart.yaml"
        if experiment is not None:
            path = base / f"{name}.yaml"
            path.write_text(yaml.safe_dump(experiment, sort_keys=False))
        out[name] = base / name
        assert main(["run", str(path), "--out", str(out[name]), "--workers", "1"]) == 0
    return out


def _explorer_state(driver: Any, div: str = "explorer") -> dict[str, Any]:
    text = driver.execute_script(f"return document.getElementById('{div}-plot').getAttribute('data-state')")
    return json.loads(text) if text else {}


def _pick(driver: Any, which: str, value: str, div: str = "explorer") -> dict[str, Any]:
    """Choose ``value`` in the explorer's ``which`` select by clicking, and wait for the redraw."""
    before = _explorer_state(driver, div).get("draws", 0)
    select = driver.find_element(By.ID, f"{div}-{which}")
    if select.get_attribute("value") == value:  # already chosen: nothing to redraw
        return _explorer_state(driver, div)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", select)
    select.click()
    select.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
    WebDriverWait(driver, 10).until(lambda d: _explorer_state(d, div).get("draws", 0) > before)
    return _explorer_state(driver, div)


def _traces(driver: Any, div: str = "explorer") -> list[dict[str, Any]]:
    return driver.execute_script(
        f"return document.getElementById('{div}-plot').data.map(t => ({{name: t.name, x: t.x, y: t.y}}))"
    )


def _load(driver: Any, page: Path, ids: list[str]) -> None:
    """Open ``page`` on an empty console and wait until the plots with these ``ids`` are drawn."""
    driver.get_log("browser")
    driver.get(page.as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return arguments[0].every(id => { const gd = document.getElementById(id);"
            " return gd && gd._fullLayout; })",
            ids,
        )
    )


def _means(results: pd.DataFrame, by: list[str], metric: str) -> dict[tuple, float]:
    ok = results[results["error"].isna()]
    return {k if isinstance(k, tuple) else (k,): v for k, v in ok.groupby(by)[metric].mean().items()}


def _scale(drawn: list[float], wanted: list[float]) -> float:
    """The display factor (1, 1e3, 1e6, 1/2**20 ...) that maps ``wanted`` onto ``drawn``."""
    factor = drawn[0] / wanted[0]
    assert [d / factor for d in drawn] == pytest.approx(wanted, rel=1e-9)
    return factor


@pytest.mark.parametrize("name", list(RUNS))
def test_explorer_redraws_real_reports(driver: Any, runs: dict[str, Path], name: str) -> None:
    out = runs[name]
    results, schema = read_results(out / "results.parquet")
    keys = MOE_KEYS if name == "moe" else ["headline", "link_load", "gantt"]
    _load(driver, out / "report.html", [*(DIV_IDS[k] for k in keys), "explorer-plot"])
    # y: a metric; x: a parameter; colour: another parameter (or none), each chosen by a click
    y = "max_link_utilization"
    state = _pick(driver, "y", y)
    assert state["y"] == y
    x = {"quickstart": "transport", "moe": "placement", "zip": "workload.size"}[name]
    colour = {"quickstart": "", "moe": "transport", "zip": "transport"}[name]
    _pick(driver, "x", x)
    state = _pick(driver, "colour", colour)
    assert (state["x"], state["colour"]) == (x, colour)
    drawn = _traces(driver)
    by = [c for c in (colour, x) if c]
    if name == "zip":  # the page starts faceted by op (its zip: partner algorithm follows it)
        by = ["workload.op", "transport", x]
        assert state["facet"] == "workload.op" and not state["mixed"] and len(drawn) == 4
        state = _pick(driver, "facet", "")  # now op and algorithm vary in a cell: split, never averaged
        assert state["mixed"] == ["workload.op", "workload.algorithm"] and len(_traces(driver)) == 4
        _pick(driver, "facet", "workload.op")
    means = _means(results, by, y)
    drawn_points = []
    for trace in drawn:
        for xv, yv in zip(trace["x"], trace["y"], strict=True):
            drawn_points.append((trace["name"], xv, yv))
    assert len(drawn_points) == len(means)
    assert sorted(v for _, _, v in drawn_points) == pytest.approx(sorted(means.values()), rel=1e-9)
    # y back to completion time: same points, in its display unit
    _pick(driver, "y", "completion_time_s")
    times = sorted(v for t in _traces(driver) for v in t["y"])
    _scale(times, sorted(_means(results, by, "completion_time_s").values()))
    assert schema.columns[y].role == "metric"
    severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe


def test_calibration_page_explorer_redraws(driver: Any, tmp_path: Path) -> None:
    """The calibration page: plotly.js from beside it, four figures, and an explorer whose redrawn
    points are the calibration's rows (error per op and role, then simulated against measured)."""
    from test_calibration_report import NIC, NVLINK, ROWS, SPEC, make_table

    from calibration.fit import Calibration
    from calibration.report import DIV_IDS as CAL_IDS
    from calibration.report import EXPLORER_ID, explorer_rows, write_calibration_report

    cal = Calibration(SPEC, (NVLINK, NIC), make_table(ROWS))
    page = write_calibration_report(cal, tmp_path / "cal.html", title="calibration")
    _load(driver, page, [*CAL_IDS.values(), f"{EXPLORER_ID}-plot"])
    rows = explorer_rows(cal)
    state = _explorer_state(driver, EXPLORER_ID)
    assert (state["x"], state["y"], state["colour"], state["facet"]) == ("size", "error_pct", "op", "role")
    drawn = sorted(v for t in _traces(driver, EXPLORER_ID) for v in t["y"])
    assert drawn == pytest.approx(sorted(rows["error_pct"]), rel=1e-9)  # one marker per row, in %
    _pick(driver, "facet", "", EXPLORER_ID)
    _pick(driver, "x", "measured_s", EXPLORER_ID)
    state = _pick(driver, "y", "simulated_s", EXPLORER_ID)
    assert (state["x"], state["y"]) == ("measured_s", "simulated_s")
    points = sorted((x, y) for t in _traces(driver, EXPLORER_ID) for x, y in zip(t["x"], t["y"], strict=True))
    assert len(points) == len(rows)
    fx = _scale([p[0] for p in points], sorted(rows["measured_s"]))
    ordered = rows.sort_values("measured_s")
    assert [p[1] / fx for p in points] == pytest.approx(list(ordered["simulated_s"]), rel=1e-9)
    severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe
