"""Load every page of a built site in headless Chromium and check it.

Serves the site folder on 127.0.0.1 (a random free port, in a thread), opens each HTML page
with Selenium and the system chromedriver at each window width asked for (default 1280 and
390 CSS px; below 600 px the page is laid out as on a phone), and checks that:

- every <img> loaded (naturalWidth > 0);
- the browser logged no console errors and the server answered no request with an error;
- the page asked no host but the local server for anything (the site must work offline):
  every request in Chrome's performance log and resource timing, and every <script src>,
  <link href> that loads something (stylesheet, icon, preload, ...), <img src/srcset>,
  <source>, <iframe>, <video>/<audio>, <object> and <embed> must be on the local server
  (data:, blob: and about: URLs are fine; links a reader may follow are not requests);
- every interactive chart drew: each chart container (``.report-chart``, report-builder's
  Vega-Lite charts) holds an <svg> or <canvas> once the page has loaded (waiting up to
  CHART_WAIT_SECONDS); a problem names the chart and why it did not draw, when the page said;
  and none is drawn wider than it is shown (CSS would shrink it, its text with it: a chart
  must fit the column at its own font sizes);
- no table is wider than its container, i.e. none would scroll sideways: the table's width
  (and Material's ``.md-typeset__scrollwrap`` scroll width) against the wrapper's
  clientWidth, 1 px tolerance. Closed <details> are opened and every tab of a tabbed set
  is shown in turn, so hidden tables are measured too; code blocks' line-number tables are
  left out.

Saves a full-page screenshot per page and width: ``<page>.png`` at the first width,
``<page>-<width>px.png`` at the others, and one of each chart at the first width,
``<page>-chart-<name>.png``. Prints ``ok``/``FAIL`` per page with its problems;
a table problem names the width, the table (its number on the page, the heading above it
and its first header cells) and both widths in px.

    python scripts/check_site.py site/ --screenshots out/screenshots
    python scripts/check_site.py site/ --widths 1280          # one width only
    python scripts/check_site.py site/ --widths 1280,768,390  # any list of CSS px widths

Exit status: 0 when every page passed, 1 when any page had a problem, 2 when the check could
not run (no chromium, chromedriver or selenium; not a built site; a bad option).
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
DEFAULT_WIDTHS = (1280, 390)
WINDOW_HEIGHT = 900
MOBILE_BELOW = 600  # narrower windows are emulated as a phone (viewport meta, overlay scrollbars)
TABLE_TOLERANCE_PX = 1.0
IMAGE_WAIT_SECONDS = 10.0
CHART_WAIT_SECONDS = 15.0
CHART_SELECTOR = ".report-chart"
SKIPPED_PAGES = ("404.html",)
# URL schemes that fetch nothing from another host
LOCAL_SCHEMES = ("data", "blob", "about", "javascript", "mailto", "tel", "chrome", "chrome-error", "devtools")
MAX_LISTED_URLS = 5


class CheckSetupError(RuntimeError):
    """Chromium, chromedriver or selenium is not available, or the site folder is not a site."""


@dataclass
class PageResult:
    path: str
    images: int = 0
    tables: int = 0
    charts: int = 0
    problems: list[str] = field(default_factory=list)
    screenshot: Path | None = None  # at the first width checked
    screenshots: dict[int, Path] = field(default_factory=dict)  # width -> screenshot
    chart_screenshots: dict[str, Path] = field(default_factory=dict)  # chart name -> screenshot (first width)
    widths: list[int] = field(default_factory=list)

    def add(self, problem: str) -> None:
        """Record `problem` once (a problem that does not depend on the width is seen at every width)."""
        if problem not in self.problems:
            self.problems.append(problem)


def find_executable(candidates: tuple[str, ...], name: str) -> str:
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    found = shutil.which(name)
    if found:
        return found
    raise CheckSetupError(f"{name} not found (looked at {', '.join(candidates)} and PATH)")


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files quietly and remembers every request answered with an error."""

    failed_requests: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return

    def log_request(self, code: object = "-", size: object = "-") -> None:
        status = getattr(code, "value", code)
        if isinstance(status, int) and status >= 400:
            self.failed_requests.append(f"HTTP {status} for {self.path}")


@contextmanager
def serve(site_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``site_dir`` on 127.0.0.1 in a thread; yields the base URL and the failed-request list."""
    failed: list[str] = []
    handler = type("Handler", (RecordingHandler,), {"failed_requests": failed})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", failed
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def open_browser() -> Iterator[object]:
    """Headless Chromium through Selenium and the system chromedriver (never downloaded)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        raise CheckSetupError("selenium is not installed (pip install selenium)") from error
    chromium = find_executable(CHROMIUM_CANDIDATES, "chromium")
    chromedriver = find_executable(CHROMEDRIVER_CANDIDATES, "chromedriver")
    with tempfile.TemporaryDirectory(prefix="check-site-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        # "performance": every network request of the page, for the offline check
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def site_pages(site_dir: Path) -> list[str]:
    """Every HTML page of the site as a URL path relative to its root, sorted."""
    pages = []
    for path in sorted(site_dir.rglob("*.html")):
        relative = path.relative_to(site_dir).as_posix()
        if relative in SKIPPED_PAGES:
            continue
        pages.append(relative)
    return pages


def set_window_width(driver: object, width: int) -> None:
    """Lay pages out for a window `width` CSS px wide (and WINDOW_HEIGHT high), as a phone below MOBILE_BELOW."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": WINDOW_HEIGHT, "deviceScaleFactor": 1, "mobile": width < MOBILE_BELOW,
    })


IMAGE_STATE_SCRIPT = """
return Array.from(document.images).map(function (image) {
  return {src: image.currentSrc || image.src, complete: image.complete, width: image.naturalWidth};
});
"""


def wait_for_images(driver: object) -> list[dict[str, object]]:
    """Scroll through the page (for lazy images) and wait until every image settled."""
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
    driver.execute_script("window.scrollTo(0, 0);")
    deadline = time.monotonic() + IMAGE_WAIT_SECONDS
    images = driver.execute_script(IMAGE_STATE_SCRIPT)
    while any(not image["complete"] for image in images) and time.monotonic() < deadline:
        time.sleep(0.1)
        images = driver.execute_script(IMAGE_STATE_SCRIPT)
    return images


# Each chart container: its name, whether it holds a drawing, and what the page's script said;
# for an <svg>, the width it was drawn for (its width attribute) and the width it is shown at.
CHART_STATE_SCRIPT = """
return Array.from(document.querySelectorAll(arguments[0])).map(function (container, index) {
  var svg = container.querySelector("svg");
  return {index: index + 1, name: container.getAttribute("data-chart") || "",
          drawn: !!container.querySelector("svg, canvas"),
          state: container.getAttribute("data-chart-state") || "", error: container.getAttribute("data-chart-error") || "",
          natural_width: svg ? parseFloat(svg.getAttribute("width")) || 0 : 0,
          shown_width: svg ? svg.getBoundingClientRect().width : 0};
});
"""
#: A chart shown narrower than this share of the width it was drawn for has its text shrunk with it.
CHART_MIN_SCALE = 0.95


def wait_for_charts(driver: object, timeout: float | None = None) -> list[dict[str, object]]:
    """Wait until every chart container of the page holds an <svg> or <canvas> or its script gave
    up on it (data-chart-state="failed"), at most `timeout` seconds (default CHART_WAIT_SECONDS);
    returns each chart's state."""
    deadline = time.monotonic() + (CHART_WAIT_SECONDS if timeout is None else timeout)
    charts = driver.execute_script(CHART_STATE_SCRIPT, CHART_SELECTOR)
    while any(not chart["drawn"] and chart["state"] != "failed" or chart["state"] == "loading" for chart in charts) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
        charts = driver.execute_script(CHART_STATE_SCRIPT, CHART_SELECTOR)
    return charts


def describe_chart(chart: dict[str, object]) -> str:
    return f'chart {chart["index"]} "{chart["name"]}"' if chart["name"] else f"chart {chart['index']}"


def check_charts(driver: object, width: int | None) -> tuple[list[dict[str, object]], list[str]]:
    """The page's charts and a problem for each that did not draw."""
    charts = wait_for_charts(driver)
    where = f"at {width} px: " if width is not None else ""
    problems = []
    for chart in charts:
        natural, shown = chart.get("natural_width") or 0, chart.get("shown_width") or 0
        if chart["drawn"] and natural > 0 and shown < CHART_MIN_SCALE * natural:
            problems.append(f"{where}{describe_chart(chart)} is drawn {natural:.0f} px wide but shown {shown:.0f} px wide: "
                            f"its text is shrunk to {100 * shown / natural:.0f}%")
        if chart["drawn"]:
            continue
        why = f": {chart['error']}" if chart["error"] else (f" (state: {chart['state']})" if chart["state"] else " (its script never ran)")
        problems.append(f"{where}{describe_chart(chart)} did not draw: no <svg> or <canvas> in its container{why}")
    return charts, problems


def chart_screenshots(driver: object, page: str, screenshots: Path) -> dict[str, Path]:
    """A screenshot of each drawn chart of the loaded page: ``<page>-chart-<name>.png``."""
    from selenium.webdriver.common.by import By

    saved = {}
    for index, element in enumerate(driver.find_elements(By.CSS_SELECTOR, CHART_SELECTOR), start=1):
        if not element.find_elements(By.CSS_SELECTOR, "svg, canvas"):
            continue
        name = element.get_attribute("data-chart") or str(index)
        safe = "".join(character if character.isalnum() or character in "-_" else "_" for character in name)
        target = screenshots / f"{screenshot_name(page)[:-4]}-chart-{safe}.png"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(element.screenshot_as_png)
        saved[name] = target
    driver.execute_script("window.scrollTo(0, 0);")
    return saved


# Every URL the page loaded or points a loading element at, resolved against the page.
LOADED_URLS_SCRIPT = """
var urls = [];
function add(value) { if (value) { try { urls.push(new URL(value, document.baseURI).href); } catch (e) { urls.push(String(value)); } } }
function addSrcset(value) { (value || "").split(",").forEach(function (part) { add(part.trim().split(/\\s+/)[0]); }); }
performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
  .forEach(function (entry) { add(entry.name); });
document.querySelectorAll("script[src]").forEach(function (e) { add(e.getAttribute("src")); });
var loading = /(^|\\s)(stylesheet|icon|apple-touch-icon|mask-icon|preload|modulepreload|prefetch|preconnect|dns-prefetch|prerender|manifest)(\\s|$)/i;
document.querySelectorAll("link[href]").forEach(function (e) { if (loading.test(e.getAttribute("rel") || "")) add(e.getAttribute("href")); });
document.querySelectorAll("img, source, iframe, video, audio, embed, track, input[type=image]").forEach(function (e) {
  add(e.getAttribute("src")); addSrcset(e.getAttribute("srcset")); add(e.getAttribute("poster"));
});
document.querySelectorAll("object[data]").forEach(function (e) { add(e.getAttribute("data")); });
return urls;
"""


def performance_log_urls(driver: object) -> list[str]:
    """The URLs of the requests in Chrome's performance log since it was last read (reading empties it)."""
    urls = []
    try:
        entries = driver.get_log("performance")
    except Exception:  # a chromedriver without the log: resource timing and the DOM still tell
        return urls
    for entry in entries:
        try:
            message = json.loads(entry["message"])["message"]
        except (KeyError, TypeError, ValueError):
            continue
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(params.get("request", {}).get("url", ""))
        elif message.get("method") == "Network.webSocketCreated":
            urls.append(params.get("url", ""))
    return urls


def off_host(urls: Iterable[str], base_url: str) -> list[str]:
    """The `urls` (each once, in order) that are not on the server at `base_url`: another host
    or port, or a scheme that is neither http(s) on that server nor one that fetches nothing."""
    base = urlsplit(base_url)
    found = []
    for url in urls:
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES:
            continue
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc == base.netloc:
            continue
        if url not in found:
            found.append(url)
    return found


# The size of every table against its container, after opening every <details> and showing each
# tab of every tabbed set in turn; a table counts with the widest overflow seen while displayed.
TABLE_SCRIPT = """
var tolerance = arguments[0];
var all = Array.from(document.querySelectorAll("table")).filter(function (table) {
  return !table.closest(".highlight, .highlighttable, pre, code") && !table.classList.contains("highlighttable");
});
var headingOf = new Map(), heading = "";
document.querySelectorAll("h1, h2, h3, h4, h5, h6, table").forEach(function (element) {
  if (element.tagName === "TABLE") { headingOf.set(element, heading); }
  else { heading = (element.textContent || "").replace(/\\u00b6/g, "").trim(); }
});
var seen = new Map();
function measure() {
  all.forEach(function (table, index) {
    if (!table.getClientRects().length) { return; }  // not displayed (a hidden tab)
    var wrap = table.closest(".md-typeset__scrollwrap");
    var needed, available;
    if (wrap) {  // Material: the wrapper scrolls sideways when what it holds is wider than it
      needed = Math.max(wrap.scrollWidth, table.getBoundingClientRect().width);
      available = wrap.clientWidth;
    } else {     // no wrapper (no JS): the table sticks out of its container, or scrolls inside itself
      var container = table.parentElement;
      while (container.parentElement && getComputedStyle(container).display === "inline") { container = container.parentElement; }
      if (table.scrollWidth - table.clientWidth > table.getBoundingClientRect().width - container.clientWidth) {
        needed = table.scrollWidth; available = table.clientWidth;
      } else {
        needed = table.getBoundingClientRect().width; available = container.clientWidth;
      }
    }
    var overflow = needed - available;
    var previous = seen.get(index);
    if (!previous || overflow > previous.overflow) {
      seen.set(index, {overflow: overflow, width: Math.round(needed), container: Math.round(available)});
    }
  });
}
document.querySelectorAll("details").forEach(function (details) { details.open = true; });
measure();
document.querySelectorAll(".tabbed-set > input[type=radio]").forEach(function (input) {
  input.checked = true;
  input.dispatchEvent(new Event("change", {bubbles: true}));
  measure();
});
return all.map(function (table, index) {
  var cells = Array.from((table.tHead && table.tHead.rows[0] || table.rows[0] || {cells: []}).cells)
    .map(function (cell) { return (cell.textContent || "").trim().replace(/\\s+/g, " "); });
  var result = seen.get(index) || {overflow: 0, width: 0, container: 0};
  return {index: index + 1, heading: headingOf.get(table) || "", header: cells, measured: seen.has(index),
          overflow: result.overflow, width: result.width, container: result.container,
          too_wide: seen.has(index) && result.overflow > tolerance};
});
"""


def describe_table(table: dict[str, object]) -> str:
    header = " | ".join(str(cell) for cell in table["header"]) if any(table["header"]) else ""
    if len(header) > 60:
        header = header[:57] + "..."
    where = f' under "{table["heading"]}"' if table["heading"] else ""
    return f"table {table['index']}{where} ({header})" if header else f"table {table['index']}{where}"


def check_tables(driver: object, width: int) -> tuple[int, list[str]]:
    """The number of tables on the loaded page and a problem for each that would scroll sideways."""
    tables = driver.execute_script(TABLE_SCRIPT, TABLE_TOLERANCE_PX)
    problems = [
        f"at {width} px: {describe_table(table)} is {table['overflow']:.0f} px wider than its container "
        f"(needs {table['width']} px, has {table['container']} px): it would scroll sideways"
        for table in tables if table["too_wide"]
    ]
    return len(tables), problems


def full_page_screenshot(driver: object, target: Path) -> None:
    """Capture the whole page, not just the viewport, through the DevTools protocol."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    width, height = int(size["width"]), min(int(size["height"]), 16000)
    capture = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True,
         "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(capture["data"]))


def screenshot_name(page: str, width: int | None = None) -> str:
    """``home.png`` for the site's index page, ``models_baseline.png`` for models/baseline/index.html;
    with a `width`, ``home-390px.png``."""
    name = page.removesuffix("index.html").strip("/").replace("/", "_") or "home"
    return f"{name}-{width}px.png" if width is not None else f"{name}.png"


def check_page(driver: object, base_url: str, page: str, screenshots: Path | None,
               result: PageResult | None = None, width: int | None = None, first_width: bool = True) -> PageResult:
    """Load `page` in the browser (already set to `width`, when given) and add what is wrong to `result`."""
    result = result if result is not None else PageResult(path=page)
    performance_log_urls(driver)  # empty the log: what follows belongs to this page
    driver.get(base_url + page)
    if not driver.title:
        result.add("page has no title (did it load?)")
    if width is not None:
        inner = driver.execute_script("return window.innerWidth;")
        if inner != width:
            result.add(f"at {width} px: the window is {inner} px wide, not {width} px: the width check did not apply")
        result.widths.append(width)
    images = wait_for_images(driver)
    result.images = len(images)
    for image in images:
        if not image["complete"] or not image["width"]:
            result.add(f"image did not load: {image['src']}")
    charts, chart_problems = check_charts(driver, width)
    result.charts = len(charts)
    for problem in chart_problems:
        result.add(problem)
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            result.add(f"console error: {entry.get('message')}")
    if screenshots is not None:
        target = screenshots / screenshot_name(page, None if first_width else width)
        full_page_screenshot(driver, target)
        if width is not None:
            result.screenshots[width] = target
        if first_width:
            result.screenshot = target
            result.chart_screenshots = chart_screenshots(driver, page, screenshots)
    result.tables, table_problems = check_tables(driver, width if width is not None else driver.execute_script("return window.innerWidth;"))
    for problem in table_problems:
        result.add(problem)
    urls = driver.execute_script(LOADED_URLS_SCRIPT) + performance_log_urls(driver)
    foreign = off_host(urls, base_url)
    if foreign:
        listed = ", ".join(foreign[:MAX_LISTED_URLS]) + (f" and {len(foreign) - MAX_LISTED_URLS} more" if len(foreign) > MAX_LISTED_URLS else "")
        result.add(f"requests to a host other than the local server (the site must work offline): {listed}")
    return result


def parse_widths(text: str) -> tuple[int, ...]:
    """``"1280,390"`` -> (1280, 390); each a whole number of CSS px from 200 to 4000, listed once."""
    widths: list[int] = []
    for part in text.split(","):
        part = part.strip().removesuffix("px")
        if not part.isdigit() or not 200 <= int(part) <= 4000:
            raise argparse.ArgumentTypeError(f"not a window width in CSS px (200 to 4000): {part!r}")
        if int(part) not in widths:
            widths.append(int(part))
    return tuple(widths)


def check_site(site_dir: Path, screenshots: Path | None = None, widths: Iterable[int] = DEFAULT_WIDTHS) -> list[PageResult]:
    """Check every page of ``site_dir`` at each of `widths` (CSS px); returns one result per page,
    with the problems found at any width listed in it."""
    site_dir = Path(site_dir)
    widths = tuple(widths)
    if not widths:
        raise CheckSetupError("no window width to check")
    if not (site_dir / "index.html").is_file():
        raise CheckSetupError(f"not a built site (no index.html): {site_dir}")
    pages = site_pages(site_dir)
    results = {page: PageResult(path=page) for page in pages}
    with serve(site_dir) as (base_url, failed_requests), open_browser() as driver:
        for position, width in enumerate(widths):
            set_window_width(driver, width)
            for page in pages:
                failed_before = len(failed_requests)
                check_page(driver, base_url, page, screenshots, results[page], width, first_width=position == 0)
                for problem in failed_requests[failed_before:]:
                    results[page].add(problem)
    return list(results.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_dir", type=Path, help="the built site folder (mkdocs build output)")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per page and width")
    parser.add_argument("--widths", type=parse_widths, default=DEFAULT_WIDTHS, metavar="W[,W...]",
                        help="comma-separated window widths in CSS px to load every page at (default: 1280,390: desktop and phone)")
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        results = check_site(arguments.site_dir, arguments.screenshots, arguments.widths)
    except CheckSetupError as error:
        print(f"check_site: {error}", file=sys.stderr)
        return 2
    problem_count = 0
    for result in results:
        state = "ok" if not result.problems else "FAIL"
        print(f"{state:4} {result.path} ({result.images} images, {result.tables} tables, {result.charts} charts)")
        for problem in result.problems:
            print(f"     - {result.path}: {problem}")
        problem_count += len(result.problems)
    widths_text = ", ".join(f"{width} px" for width in arguments.widths)
    print(f"{len(results)} pages checked at {widths_text}, {problem_count} problems")
    return 1 if problem_count else 0


if __name__ == "__main__":
    sys.exit(main())
