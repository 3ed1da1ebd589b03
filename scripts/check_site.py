"""Load every page of a built site in headless Chromium and check it.

Serves the site folder on 127.0.0.1 (a random free port, in a thread), opens each HTML page
with Selenium and the system chromedriver, and checks that every <img> loaded
(naturalWidth > 0), that the browser logged no console errors and that the server answered
no request with an error. Saves a full-page screenshot per page. Exits 1 on any problem.

    python scripts/check_site.py site/ --screenshots out/screenshots
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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
IMAGE_WAIT_SECONDS = 10.0
SKIPPED_PAGES = ("404.html",)


class CheckSetupError(RuntimeError):
    """Chromium, chromedriver or selenium is not available."""


@dataclass
class PageResult:
    path: str
    images: int = 0
    problems: list[str] = field(default_factory=list)
    screenshot: Path | None = None


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
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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


def full_page_screenshot(driver: object, target: Path) -> None:
    """Capture the whole page, not just the viewport, through the DevTools protocol."""
    import base64

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


def screenshot_name(page: str) -> str:
    name = page.removesuffix("index.html").strip("/").replace("/", "_")
    return f"{name or 'home'}.png"


def check_page(driver: object, base_url: str, page: str, screenshots: Path | None) -> PageResult:
    result = PageResult(path=page)
    driver.get(base_url + page)
    if not driver.title:
        result.problems.append("page has no title (did it load?)")
    images = wait_for_images(driver)
    result.images = len(images)
    for image in images:
        if not image["complete"] or not image["width"]:
            result.problems.append(f"image did not load: {image['src']}")
    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            result.problems.append(f"console error: {entry.get('message')}")
    if screenshots is not None:
        result.screenshot = screenshots / screenshot_name(page)
        full_page_screenshot(driver, result.screenshot)
    return result


def check_site(site_dir: Path, screenshots: Path | None = None) -> list[PageResult]:
    """Check every page of ``site_dir``; returns one result per page (problems listed in each)."""
    site_dir = Path(site_dir)
    if not (site_dir / "index.html").is_file():
        raise CheckSetupError(f"not a built site (no index.html): {site_dir}")
    results = []
    with serve(site_dir) as (base_url, failed_requests), open_browser() as driver:
        for page in site_pages(site_dir):
            failed_before = len(failed_requests)
            result = check_page(driver, base_url, page, screenshots)
            result.problems.extend(failed_requests[failed_before:])
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_dir", type=Path, help="the built site folder (mkdocs build output)")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for one PNG per page")
    arguments = parser.parse_args(argv)
    try:
        results = check_site(arguments.site_dir, arguments.screenshots)
    except CheckSetupError as error:
        print(f"check_site: {error}", file=sys.stderr)
        return 2
    problem_count = 0
    for result in results:
        state = "ok" if not result.problems else "FAIL"
        print(f"{state:4} {result.path} ({result.images} images)")
        for problem in result.problems:
            print(f"     - {problem}")
        problem_count += len(result.problems)
    print(f"{len(results)} pages checked, {problem_count} problems")
    return 1 if problem_count else 0


if __name__ == "__main__":
    sys.exit(main())
