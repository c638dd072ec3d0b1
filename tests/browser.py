"""Headless Chromium for the browser tests, the page-load benchmark and the report screenshots.

Needs Debian's ``chromium`` and ``chromium-driver`` and ``pip install selenium``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


class BrowserMissing(RuntimeError):
    """Chromium, its driver or selenium is missing or would not start (the message says which)."""


def find(*names: str) -> str | None:
    """The first of ``names`` on PATH or an absolute path that exists."""
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@contextmanager
def headless_chromium(
    width: int = 1300,
    height: int = 1100,
    console: bool = True,
    browser: str | None = None,
    chromedriver: str | None = None,
) -> Iterator[Any]:
    """A headless Chromium on a fresh temporary profile (removed afterwards), with the browser
    console logged when ``console``. Raises :class:`BrowserMissing` saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserMissing("selenium is not installed (pip install selenium)") from None
    browser = browser or find("chromium", "chromium-browser", "/usr/bin/chromium")
    chromedriver = chromedriver or find("chromedriver", "/usr/bin/chromedriver")
    if browser is None:
        raise BrowserMissing("chromium is not installed (apt-get install chromium)")
    if chromedriver is None:
        raise BrowserMissing("chromedriver is not installed (apt-get install chromium-driver)")
    profile = tempfile.mkdtemp(prefix="moesim-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    except WebDriverException as err:
        shutil.rmtree(profile, ignore_errors=True)
        raise BrowserMissing(
            f"cannot start headless chromium: {err.msg.splitlines()[0] if err.msg else err}"
        ) from None
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


REQUIRED = os.environ.get("MOESIM_REQUIRE_BROWSER") == "1"
"""Set by .ci/run: there a missing browser is a failure, not a skip."""


def missing(reason: str) -> None:
    """In a browser test: skip (the whole module, when called at import) saying what is missing,
    or fail under :data:`REQUIRED`."""
    import pytest

    if REQUIRED:
        pytest.fail(f"MOESIM_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)


def browser_driver() -> Iterator[Any]:
    """The browser tests' ``driver`` fixture body: a headless Chromium with console logging, or
    :func:`missing` saying what is missing."""
    try:
        with headless_chromium() as drv:
            yield drv
    except BrowserMissing as err:
        missing(str(err))
