"""The report in a real browser: headless Chromium renders every figure without JavaScript errors,
and the per-point dropdown switches the heatmap (and, in step, the other per-point figures).

Needs Chromium, its driver and selenium (Debian: ``apt-get install chromium chromium-driver``;
``pip install selenium``); skipped with the reason when any is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.report import DIV_IDS, write_report

sys.path.insert(0, str(Path(__file__).parent))
from report_fixture import make_results_dir  # noqa: E402

REQUIRED = os.environ.get("MOESIM_REQUIRE_BROWSER") == "1"
"""Set by .ci/run: there a missing browser is a failure, not a skip."""


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"MOESIM_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)


try:
    from selenium import webdriver
except ImportError:
    _missing("selenium is not installed (pip install selenium)")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1300,1100",
)


def _find(*names: str) -> str | None:
    """The first of ``names`` on PATH or an absolute path that exists."""
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """A headless Chromium with browser-console logging, or a skip saying what is missing."""
    browser = _find("chromium", "chromium-browser", "/usr/bin/chromium")
    chromedriver = _find("chromedriver", "/usr/bin/chromedriver")
    if browser is None:
        _missing("chromium is not installed (apt-get install chromium)")
    if chromedriver is None:
        _missing("chromedriver is not installed (apt-get install chromium-driver)")
    profile = tempfile.mkdtemp(prefix="moesim-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(chromedriver), options=options)
    except WebDriverException as err:
        shutil.rmtree(profile, ignore_errors=True)
        _missing(f"cannot start headless chromium: {err.msg.splitlines()[0] if err.msg else err}")
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fixture's report, loaded and every figure drawn."""
    out = make_results_dir(tmp_path_factory.mktemp("results"))
    report = write_report(out)
    driver.get_log("browser")  # start from an empty console
    driver.get(report.as_uri())
    ids = list(DIV_IDS.values())
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
    for key, div_id in DIV_IDS.items():
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
