"""How fast a report page loads and draws its Plotly figures in headless Chromium.

Usage::

    python benchmarks/report_load.py out/quickstart/report.html [more.html ...] [--repeat 5]

For each page it prints: its size in bytes; the bytes of the local files it loads beside it
(``<script src>``, ``<link href>``, ``<img src>`` with relative paths, e.g. a shared
``plotly.min.js``); the number of Plotly figures drawn; and, as the median (and min–max) over
``--repeat`` loads:

* ``first plot``: milliseconds from navigation start (``performance.timeOrigin``) until the first
  ``Plotly.newPlot``/``Plotly.react`` call's promise resolves, i.e. the first figure's SVG is built
  in the DOM (it is painted in the next frame). Measured in the page by a probe installed before
  any page script (CDP ``Page.addScriptToEvaluateOnNewDocument``) that wraps those calls as soon as
  ``window.Plotly`` is set; when a page draws figures some other way, the time the first
  ``.js-plotly-plot .main-svg`` appears (a MutationObserver) is used instead.
* ``all plots``: until the last such promise resolves, once the page has fired ``load`` and no
  call has been pending or started for ``--idle`` ms (figures drawn later, e.g. on a click, are
  not counted).
* ``load``: the ``load`` event's end (``PerformanceNavigationTiming.loadEventEnd``), and ``fcp``:
  first contentful paint.

Every load starts a new Chromium with a fresh, empty profile (no cache, no compiled-code cache),
unless ``--warm``, which reuses one browser and so measures repeat visits. Times include parsing
the page (with plotly.js inline that is ~4.6 MB of JavaScript), not Chromium's start-up. Pages
are opened as ``file://`` URLs; nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import headless_chromium  # noqa: E402  (tests/browser.py: one way to start Chromium)

PROBE = """
(() => {
  const P = window.__plotProbe = {calls: 0, settled: 0, first: null, last: null, lastCall: 0,
                                  firstSvg: null, errors: []};
  const wrap = (obj) => {
    for (const name of ["newPlot", "react"]) {
      const f = obj && obj[name];
      if (typeof f !== "function" || f.__probe) continue;
      const w = function () {
        P.calls++; P.lastCall = performance.now();
        const out = f.apply(this, arguments);
        Promise.resolve(out).then(() => {
          const t = performance.now();
          P.settled++; if (P.first === null) P.first = t; P.last = Math.max(P.last || 0, t);
        }, (e) => { P.settled++; P.errors.push(String(e)); });
        return out;
      };
      w.__probe = true;
      obj[name] = w;
    }
  };
  let value;
  Object.defineProperty(window, "Plotly", {configurable: true, enumerable: true,
                                           get: () => value, set: (v) => { value = v; wrap(v); }});
  new MutationObserver(() => {
    const svg = document.querySelector(".js-plotly-plot .main-svg");
    if (P.firstSvg === null && svg) P.firstSvg = performance.now();
  }).observe(document, {childList: true, subtree: true});
})();
"""

COLLECT = """
const idle = arguments[0], done = arguments[arguments.length - 1], P = window.__plotProbe;
function check() {
  const now = performance.now(), quiet = now - Math.max(P.lastCall, P.last || 0) >= idle;
  if (document.readyState === "complete" && P.settled >= P.calls && quiet) {
    const nav = performance.getEntriesByType("navigation")[0] || {};
    const fcp = performance.getEntriesByName("first-contentful-paint")[0];
    const divs = [...document.querySelectorAll(".js-plotly-plot")];
    done({first: P.first === null ? P.firstSvg : P.first, last: P.last === null ? P.firstSvg : P.last,
          calls: P.calls, plots: divs.filter((d) => d.querySelector(".main-svg")).length,
          load: nav.loadEventEnd || null, fcp: fcp ? fcp.startTime : null, errors: P.errors});
  } else {
    setTimeout(check, 20);
  }
}
check();
"""


class _Refs(HTMLParser):
    """Collects the ``src``/``href`` of scripts, stylesheets and images."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {"script": "src", "img": "src", "link": "href"}.get(tag)
        values = dict(attrs)
        if attr and values.get(attr) and (tag != "link" or "stylesheet" in (values.get("rel") or "")):
            self.refs.append(str(values[attr]))


def beside_files(page: Path) -> list[Path]:
    """The existing local files ``page`` loads by relative path (absolute URLs and ``data:`` skipped)."""
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    found: dict[Path, None] = {}
    for ref in parser.refs:
        url = urlparse(ref)
        if url.scheme or url.netloc or not url.path or url.path.startswith("/"):
            continue
        path = (page.parent / unquote(url.path)).resolve()
        if path.is_file():
            found[path] = None
    return list(found)


def _which(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    sys.exit(f"none of {', '.join(names)} found (apt-get install chromium chromium-driver)")


@contextmanager
def chromium(browser: str, chromedriver: str) -> Iterator[Any]:
    """A headless Chromium on a fresh temporary profile, with the probe installed on every page."""
    with headless_chromium(console=False, browser=browser, chromedriver=chromedriver) as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        yield driver


def measure(driver: Any, page: Path, idle_ms: float, timeout_s: float) -> dict[str, Any]:
    """Load ``page`` once and return the probe's numbers (milliseconds from navigation start)."""
    driver.set_page_load_timeout(timeout_s)
    driver.set_script_timeout(timeout_s)
    driver.get(page.resolve().as_uri())
    return driver.execute_async_script(COLLECT, idle_ms)


def _summary(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "–"
    return f"{statistics.median(known):.0f} ({min(known):.0f}–{max(known):.0f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path, help="HTML pages to load")
    parser.add_argument("--repeat", type=int, default=5, help="loads per page (default 5)")
    parser.add_argument("--idle", type=float, default=500.0, help="ms with no plot call that ends a load")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one load may take")
    parser.add_argument("--warm", action="store_true", help="reuse one browser for all loads of a page")
    parser.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    parser.add_argument("--chromedriver", default=None, help="driver binary (default: chromedriver on PATH)")
    args = parser.parse_args(argv)
    try:
        import selenium  # noqa: F401
    except ImportError:
        sys.exit("selenium is not installed (pip install selenium)")
    browser = args.chromium or _which("chromium", "chromium-browser", "/usr/bin/chromium")
    chromedriver = args.chromedriver or _which("chromedriver", "/usr/bin/chromedriver")

    header = ("page", "bytes", "beside", "plots", "first plot ms", "all plots ms", "load ms", "fcp ms")
    missing = [str(page) for page in args.pages if not page.is_file()]
    if missing:
        sys.exit(f"no such file: {', '.join(missing)}")
    rows = []
    for page in args.pages:
        runs: list[dict[str, Any]] = []
        if args.warm:
            with chromium(browser, chromedriver) as driver:
                runs = [measure(driver, page, args.idle, args.timeout) for _ in range(args.repeat)]
        else:
            for _ in range(args.repeat):
                with chromium(browser, chromedriver) as driver:
                    runs.append(measure(driver, page, args.idle, args.timeout))
        errors = sorted({e for run in runs for e in run["errors"]})
        if errors:
            print(f"{page}: plot errors: {'; '.join(errors)}", file=sys.stderr)
        beside = sum(p.stat().st_size for p in beside_files(page))
        plots = sorted({run["plots"] for run in runs})
        rows.append(
            (
                str(page),
                f"{page.stat().st_size:,}",
                f"{beside:,}",
                "/".join(map(str, plots)),
                *(_summary([run[key] for run in runs]) for key in ("first", "last", "load", "fcp")),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    mode = "one warm browser per page" if args.warm else "a fresh browser and profile per load"
    print(f"median (min–max) of {args.repeat} loads, {mode}; times from navigation start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
