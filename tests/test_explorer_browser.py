"""The explorer widget in a real browser: every click (x, y, colour, facet, a filter, log axes)
redraws the figure, and the drawn traces are the seed means computed here with pandas.

Needs Chromium, its driver and selenium (Debian: ``apt-get install chromium chromium-driver``;
``pip install selenium``); skipped with the reason when any is missing, a failure when
``MOESIM_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pages.explorer import explorer_html
from pages.html import page_html

sys.path.insert(0, str(Path(__file__).parent))
from browser import browser_driver, missing  # noqa: E402
from test_explorer import MIB, SPECS, synthetic_table  # noqa: E402

try:
    import selenium  # noqa: F401  (the imports below need it)
except ImportError:
    missing("selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PARAMS = ("transport", "workload.size", "workload.op")
"""The parameter columns of the synthetic table (a point is one value of each, seeds aside); its
setting (``algorithm``) follows from ``workload.op`` and never splits a trace."""
TRACES_JS = (
    "return document.getElementById('explorer-plot').data"
    ".map(t => ({name: t.name, x: t.x, y: t.y, xaxis: t.xaxis}))"
)


driver = pytest.fixture(scope="module", name="driver")(browser_driver)


@pytest.fixture()
def page(driver: Any, tmp_path: Path) -> Any:
    """A page with the explorer of the synthetic table, loaded and drawn once."""
    path = tmp_path / "explorer.html"
    path.write_text(page_html("explorer", explorer_html(synthetic_table(), SPECS)), encoding="utf-8")
    driver.get_log("browser")  # start from an empty console
    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: _state(d).get("draws") == 1)
    return driver


# ----------------------------------------------------------------------------------------- helpers


def _state(driver: Any) -> dict[str, Any]:
    text = driver.execute_script(
        "const p = document.getElementById('explorer-plot'); return p && p.dataset.state"
    )
    return json.loads(text) if text else {}


def _act(driver: Any, action: Callable[[], None]) -> dict[str, Any]:
    """Do ``action`` (a click), wait for the redraw it causes and return the new state."""
    before = _state(driver)["draws"]
    action()
    WebDriverWait(driver, 10).until(lambda d: _state(d)["draws"] > before)
    return _state(driver)


def _choose(driver: Any, which: str, value: str) -> dict[str, Any]:
    """Pick ``value`` in the ``explorer-{which}`` select, as a person would."""
    select = Select(driver.find_element(By.ID, f"explorer-{which}"))
    return _act(driver, lambda: select.select_by_value(value))


def _click(driver: Any, css: str) -> dict[str, Any]:
    element = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    return _act(driver, element.click)


def _ordered(values: pd.Series) -> list[Any]:
    """Distinct values as the page orders them: numbers ascending, strings in data order."""
    return sorted(values.unique()) if values.dtype.kind in "iuf" else list(dict.fromkeys(values))


def _label(column: str, value: Any) -> str:
    return f"{value // MIB} MiB" if column == "workload.size" else str(value)


def _expected(
    x: str, y: str, colour: str = "", facet: str = "", off: dict[str, list[Any]] | None = None
) -> dict[tuple[str, str], list[tuple[Any, float]]]:
    """The traces the page must draw, from the table with pandas: ``(name, x axis) -> [(x, y)]``.

    Means over seeds; a parameter that varies inside one (facet, colour, x) cell splits traces.
    x in MiB for sizes, y in ms for the completion time (the display units of this table)."""
    table = synthetic_table()
    ok = table[table["error"].isna()]
    for column, values in (off or {}).items():
        ok = ok[~ok[column].isin(values)]
    chosen = [c for c in (facet, colour, x) if c]
    mixed = [p for p in PARAMS if p not in chosen and (ok.groupby(chosen)[p].nunique() > 1).any()]
    keys = [c for c in (facet, colour) if c] + mixed
    facets = _ordered(ok[facet]) if facet else []
    scale = {"completion_time_s": 1e3}.get(y, 1.0)
    out: dict[tuple[str, str], list[tuple[Any, float]]] = {}
    for key, group in ok.groupby(keys, sort=False) if keys else [((), ok)]:
        key = key if isinstance(key, tuple) else (key,)
        values = dict(zip(keys, key, strict=True))
        parts = [_label(colour, values[colour])] if colour else []
        parts += [f"{SPECS[p].label}={_label(p, values[p])}" for p in mixed]
        name = " · ".join(parts) or SPECS[y].label
        panel = facets.index(values[facet]) if facet else 0
        means = group.groupby(x, sort=ok[x].dtype.kind in "iuf")[y].mean()  # strings: data order
        xs = [v / MIB if x == "workload.size" else v for v in means.index]
        out[(name, "x" + (str(panel + 1) if panel else ""))] = list(
            zip(xs, (means * scale).tolist(), strict=True)
        )
    return out


def _drawn(driver: Any) -> dict[tuple[str, str], list[tuple[Any, float]]]:
    traces = driver.execute_script(TRACES_JS)
    out = {}
    for t in traces:
        assert (t["name"], t["xaxis"]) not in out, f"two traces {t['name']} in {t['xaxis']}"
        out[(t["name"], t["xaxis"])] = list(zip(t["x"], t["y"], strict=True))
    return out


def _assert_figure(driver: Any, expected: dict[tuple[str, str], list[tuple[Any, float]]]) -> None:
    drawn = _drawn(driver)
    assert set(drawn) == set(expected)
    for key, points in expected.items():
        got_x, want_x = [p[0] for p in drawn[key]], [p[0] for p in points]
        assert got_x == (want_x if isinstance(want_x[0], str) else pytest.approx(want_x)), key
        assert [p[1] for p in drawn[key]] == pytest.approx([p[1] for p in points], rel=1e-9), key


def _no_console_errors(driver: Any) -> None:
    severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe


def _layout(driver: Any, key: str) -> Any:
    return driver.execute_script(
        "const l = document.getElementById('explorer-plot')._fullLayout; return arguments[0].split('.')"
        ".reduce((o, k) => (o == null ? o : o[k]), l)",
        key,
    )


def _text(driver: Any, part: str) -> str:
    return driver.find_element(By.ID, f"explorer-{part}").text


# ------------------------------------------------------------------------------------------- tests


def test_initial_view_splits_mixed_groups(page: Any) -> None:
    state = _state(page)
    assert (state["x"], state["y"], state["colour"], state["facet"]) == (
        "workload.size",
        "completion_time_s",
        "transport",
        "",
    )
    assert state["mixed"] == ["workload.op"] and state["errors"] == 1
    _assert_figure(page, _expected("workload.size", "completion_time_s", "transport"))
    assert "op also varies" in _text(page, "warning")
    caption = _text(page, "caption")
    assert "1 row(s) with an error left out" in caption and "mean of 3 seeds, bars min–max" in caption
    assert _layout(page, "xaxis.type") == "log"
    assert _layout(page, "yaxis.title.text") == "completion time (ms)"
    assert _layout(page, "xaxis.ticktext") == ["1 MiB", "4 MiB", "16 MiB"]
    _no_console_errors(page)


def test_clicks_redraw_the_right_figure(page: Any) -> None:
    # facet on op: nothing mixes any more, one panel per op, y shared.
    state = _choose(page, "facet", "workload.op")
    assert state["mixed"] == [] and state["traces"] == 4
    _assert_figure(page, _expected("workload.size", "completion_time_s", "transport", "workload.op"))
    assert not page.find_element(By.ID, "explorer-warning").is_displayed()
    assert _layout(page, "yaxis2.matches") == "y"

    # filter: untick op = all_reduce; one panel left.
    state = _click(page, "#explorer input[data-column='workload.op'][data-value='all_reduce']")
    assert state["filters"] == {"workload.op": ["all_reduce"]}
    off = {"workload.op": ["all_reduce"]}
    _assert_figure(page, _expected("workload.size", "completion_time_s", "transport", "workload.op", off))

    # colour none, facet none: with all_reduce filtered out, only transport varies in a cell.
    _choose(page, "colour", "")
    state = _choose(page, "facet", "")
    assert state["mixed"] == ["transport"]
    _assert_figure(page, _expected("workload.size", "completion_time_s", off=off))
    assert "transport also varies" in _text(page, "warning")

    # y: a unitless metric.
    _choose(page, "colour", "transport")
    _choose(page, "y", "max_link_utilization")
    _assert_figure(page, _expected("workload.size", "max_link_utilization", "transport", off=off))
    assert _layout(page, "yaxis.title.text") == "max link utilization"

    # x: a categorical parameter (categories in data order), colour by size.
    _choose(page, "colour", "workload.size")
    state = _choose(page, "x", "transport")
    assert state["mixed"] == []
    _assert_figure(page, _expected("transport", "max_link_utilization", "workload.size", off=off))
    assert _layout(page, "xaxis.type") == "category"
    assert page.find_element(By.ID, "explorer-logx").get_attribute("disabled") is not None

    # Back to size on x; toggle both log axes by clicking.
    _choose(page, "x", "workload.size")
    assert _layout(page, "xaxis.type") == "log"
    state = _click(page, "#explorer-logx")
    assert state["logx"] is False and _layout(page, "xaxis.type") == "linear"
    state = _click(page, "#explorer-logy")
    assert state["logy"] is True and _layout(page, "yaxis.type") == "log"
    _no_console_errors(page)


def test_metric_on_x_plots_configurations(page: Any) -> None:
    state = _choose(page, "x", "cross_host_bytes")
    assert state["mixed"] == []
    traces = page.execute_script(TRACES_JS)
    assert [t["name"] for t in traces] == ["ecmp", "spray"]
    ok = synthetic_table().query("error.isna()")
    for t in traces:
        sub = ok[ok["transport"] == t["name"]]
        configs = sub.groupby(["workload.size", "workload.op"])
        assert len(t["x"]) == configs.ngroups  # one marker per configuration, seeds averaged
        expected = configs[["cross_host_bytes", "completion_time_s"]].mean()
        expected = expected.sort_values("cross_host_bytes", kind="stable")
        assert sorted(t["x"]) == pytest.approx(sorted(expected["cross_host_bytes"] / MIB))
        assert sorted(t["y"]) == pytest.approx(sorted(expected["completion_time_s"] * 1e3))
    assert _layout(page, "xaxis.title.text") == "cross-host bytes (MiB)"
    assert "each marker is one configuration" in _text(page, "caption")
    _no_console_errors(page)


def test_two_explorers_on_one_page(driver: Any, tmp_path: Path) -> None:
    table = synthetic_table()
    body = explorer_html(table, SPECS) + explorer_html(
        table, SPECS, div_id="other", initial={"facet": "workload.op"}
    )
    path = tmp_path / "two.html"
    path.write_text(page_html("two", body), encoding="utf-8")
    driver.get_log("browser")
    driver.get(path.as_uri())
    states = "return ['explorer', 'other'].map(i => document.getElementById(i + '-plot').dataset.state)"
    WebDriverWait(driver, 30).until(lambda d: all(s != "{}" for s in d.execute_script(states)))
    first, second = (json.loads(s) for s in driver.execute_script(states))
    assert first["facet"] == "" and second["facet"] == "workload.op"
    _act(driver, lambda: Select(driver.find_element(By.ID, "explorer-y")).select_by_value("cross_host_bytes"))
    assert json.loads(driver.execute_script(states)[1])["draws"] == 1  # the other one did not redraw
    _no_console_errors(driver)


def test_many_sizes_keep_human_ticks(driver: Any, tmp_path: Path) -> None:
    """31 sizes from 4 B to 4 GiB on a log axis: every 3rd is a tick, labelled in B/KiB/MiB/GiB."""
    from pages.explorer import ColumnSpec

    sizes = [4 * 2**k for k in range(31)]
    table = pd.DataFrame({"size": sizes, "time_s": [1e-5 + s / 2e11 for s in sizes]})
    specs = {"size": ColumnSpec("parameter", "B", "message size"), "time_s": ColumnSpec("metric", "s")}
    path = tmp_path / "sizes.html"
    path.write_text(page_html("sizes", explorer_html(table, specs)), encoding="utf-8")
    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: _state(d).get("draws") == 1)
    ticks = _layout(driver, "xaxis.ticktext")
    assert ticks == [
        "4 B",
        "32 B",
        "256 B",
        "2 KiB",
        "16 KiB",
        "128 KiB",
        "1 MiB",
        "8 MiB",
        "64 MiB",
        "512 MiB",
        "4 GiB",
    ]
    assert _layout(driver, "xaxis.title.text") == "message size"  # the unit is on every tick
    _no_console_errors(driver)
