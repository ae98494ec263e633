"""Open a Perennial report page in headless Chromium, check it renders offline, and screenshot it.

`check_page(html, png)` is what a user sees: Debian's chromium (no browser download), every http(s)
request blocked and recorded (the page must open with no network), console errors and uncaught
exceptions collected, the Plotly charts counted once drawn, and a PNG of the page.

`uv run python docs/screenshots.py` runs `perennial demo` in a temporary folder, checks the report
page the demo wrote and saves docs/images/report.png (the top of the page: the
summary and the main chart, small enough to commit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent
IMAGE = DOCS / "images" / "report.png"
WINDOW = {"width": 1400, "height": 900}
# Chromium as root in a container: no sandbox, no GPU, and none of its own calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Every Plotly div on the page has drawn its SVG (true at once on a page without any).
CHARTS_DRAWN = ("() => [...document.querySelectorAll('.plotly-graph-div')]"
                ".every(div => div.querySelector('.main-svg'))")
TRACES = ".scatterlayer .trace, .barlayer .trace, .heatmaplayer .hm"
DEMO_BATCHES = 11
MAX_IMAGE_BYTES = 400_000


class NoChromium(RuntimeError):
    """Debian's chromium is not installed."""


@dataclass
class PageCheck:
    """What the page showed in the browser."""

    charts: int  # `.js-plotly-plot`: Plotly figures drawn
    traces: int  # scatter, bar and heatmap traces drawn
    summary: str  # the text of the page's paragraphs (the summary on top)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    blocked: list[str] = field(default_factory=list)  # http(s) requests refused
    drawn: bool = True  # every chart drew before the timeout
    screenshot: Path | None = None

    @property
    def errors(self) -> list[str]:
        return self.console_errors + self.page_errors


def chromium() -> str:
    """The system's chromium (Playwright's own browser is never downloaded)."""
    path = shutil.which("chromium")
    if path is None:
        raise NoChromium("chromium not found: install Debian's chromium (apt-get install chromium), "
                         "as .ci/run does")
    return path


def check_page(html: Path, png: Path, *, full_page: bool = True, until: str | None = None,
               timeout_s: float = 60) -> PageCheck:
    """Open `html` offline in headless Chromium (window 1400x900) and save a screenshot to `png`: the
    whole page, or only the window (`full_page=False`), or the page's top down to the bottom of the
    first element matching the selector `until`."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=WINDOW)
            check = _watch(page)
            page.goto(Path(html).resolve().as_uri(), wait_until="load")
            check.drawn = _wait_drawn(page, timeout_s)
            check.charts = page.locator(".js-plotly-plot").count()
            check.traces = page.locator(TRACES).count()
            check.summary = "\n".join(p.strip() for p in page.locator("body > p").all_inner_texts())
            check.screenshot = _screenshot(page, Path(png), full_page, until)
            return check
        finally:
            browser.close()


def _watch(page) -> PageCheck:
    """Record console errors, uncaught exceptions and refused http(s) requests of `page`."""
    check = PageCheck(charts=0, traces=0, summary="")

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("http://", "https://")):
            check.blocked.append(url)
            request_route.abort("blockedbyclient")
        else:
            request_route.continue_()

    page.route("**/*", route)
    page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: check.page_errors.append(f"{exc.name}: {exc.message}"))
    return check


def _wait_drawn(page, timeout_s: float) -> bool:
    """Whether every chart drew its SVG within `timeout_s`; then one more frame for the last paint."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(CHARTS_DRAWN, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        return False
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return True


def _screenshot(page, png: Path, full_page: bool, until: str | None) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    if until is not None and (box := page.locator(until).first.bounding_box()):
        width = page.evaluate("() => document.documentElement.scrollWidth")
        clip = {"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"]}
        page.screenshot(path=str(png), clip=clip, full_page=True)
    else:
        page.screenshot(path=str(png), full_page=full_page)
    return png


def perennial(*args: str, env: dict[str, str]) -> str:
    """Run the installed `perennial` command (beside this Python) and return its output."""
    command = [str(Path(sys.executable).parent / "perennial"), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def demo_report(folder: Path) -> Path:
    """`perennial demo` in `folder`: the report page it wrote (the path it prints)."""
    from perennial.app.local_server import quiet_env

    # The demo's own state and servers, none of the caller's settings.
    out = perennial("demo", "--workdir", str(folder / "demo"), env=quiet_env())
    return Path(re.search(r"Report: +(\S+)", out).group(1))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="perennial-screenshot-") as tmp:
        print("Running `perennial demo` (about a minute)...", flush=True)
        page = demo_report(Path(tmp))
        check = check_page(page, IMAGE, until=".js-plotly-plot")
    problems = [*(f"error: {e}" for e in check.errors), *(f"blocked: {u}" for u in check.blocked)]
    if not check.drawn or check.charts == 0 or check.traces == 0:
        problems.append(f"charts not drawn ({check.charts} charts, {check.traces} traces)")
    if f"{DEMO_BATCHES} batches" not in check.summary:
        problems.append(f"the summary does not name {DEMO_BATCHES} batches: {check.summary!r}")
    if (size := IMAGE.stat().st_size) > MAX_IMAGE_BYTES:
        problems.append(f"{IMAGE} is {size:,} bytes, over {MAX_IMAGE_BYTES:,}")
    print(check.summary)
    print(f"{check.charts} charts, {check.traces} traces; {IMAGE} ({size:,} bytes)")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
