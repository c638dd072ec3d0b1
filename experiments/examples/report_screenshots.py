"""PNG screenshots of report pages, as a reader sees them in headless Chromium.

Usage::

    python experiments/examples/report_screenshots.py out/quickstart/report.html \\
        docs/figures/report_quickstart.png
    python experiments/examples/report_screenshots.py PAGE.html OUT.png --element fig-headline-section \\
        --explorer x=workload.size,colour=transport,facet=workload.op

Each page is loaded from disk, every Plotly figure is awaited, and either the top of the page
(``--height`` pixels of a ``--width`` wide window) or one element and what follows it up to
``--height`` is saved. ``--explorer`` sets the explorer's selects first and ``--hide`` unticks
filter values (as a user would); ``logx=log`` / ``logy=linear`` set the log boxes, and
``--explorer-id cal-explorer`` aims at the calibration page's explorer.
Needs Chromium, chromedriver and selenium (``apt-get install chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from browser import headless_chromium  # noqa: E402  (tests/browser.py: one way to start Chromium)


def _wait_for_plots(driver: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready = driver.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.querySelectorAll('.js-plotly-plot')).every(d => d._fullLayout);"
        )
        if ready:
            time.sleep(0.5)
            return
        time.sleep(0.2)
    raise TimeoutError("the page's figures did not finish drawing")


def screenshot(
    page: Path,
    target: Path,
    width: int = 1300,
    height: int = 1400,
    element: str | None = None,
    explorer: dict[str, str] | None = None,
    hide: list[tuple[str, str]] | None = None,
    explorer_id: str = "explorer",
) -> Path:
    """Save a PNG of ``page`` (the top, or from ``element`` down) to ``target``."""
    with headless_chromium(width, height, console=False) as driver:
        driver.get(Path(page).resolve().as_uri())
        _wait_for_plots(driver)
        for key, value in (explorer or {}).items():
            if key in ("logx", "logy"):  # a checkbox: set it to the value asked for
                box = driver.find_element(By.ID, f"{explorer_id}-{key}")
                if box.is_selected() != (value == "log"):
                    driver.execute_script("arguments[0].click();", box)
            else:
                Select(driver.find_element(By.ID, f"{explorer_id}-{key}")).select_by_value(value)
            time.sleep(0.3)
        for column, value in hide or []:  # untick a filter value, as a user would
            box = driver.find_element(By.CSS_SELECTOR, f"input[data-column='{column}'][data-value='{value}']")
            driver.execute_script("arguments[0].click();", box)
            time.sleep(0.3)
        if element:
            driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", element)
            time.sleep(0.3)
        target.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(target))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1300)
    parser.add_argument("--height", type=int, default=1400)
    parser.add_argument("--element", default=None, help="id of the element to start from")
    parser.add_argument(
        "--explorer", default="", help="explorer choices, e.g. x=workload.size,colour=transport"
    )
    parser.add_argument("--hide", default="", help="filter values to untick, e.g. workload.op=shift")
    parser.add_argument("--explorer-id", default="explorer", help="the explorer's id (cal-explorer)")
    args = parser.parse_args()
    choices = dict(item.split("=", 1) for item in args.explorer.split(",") if item)
    hide = [tuple(item.split("=", 1)) for item in args.hide.split(",") if item]
    size = (args.width, args.height)
    print(screenshot(args.page, args.png, *size, args.element, choices, hide, args.explorer_id))


if __name__ == "__main__":
    main()
