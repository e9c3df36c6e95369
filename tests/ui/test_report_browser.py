"""The review pack's `reconciliation.html` in a real browser: Debian's headless Chromium, driven over
the DevTools protocol on loopback. The page is a local file and must need nothing else: every chart
decodes and is painted, every table is laid out and visible, nothing is logged as an error, and no
request leaves the file. A full-page screenshot is kept (the test's tmp dir, and `reports/` of the
simulated home).

Chromium comes from Debian's `chromium` package; when it is missing and we are root, the session
installs it with apt-get. If that is impossible the tests fail, never skip: a report nobody has seen
rendered is not checked.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from PIL import Image
from websockets.sync.client import connect

from conftest import stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
# How this machine runs Chromium: no sandbox as root, and no background traffic to Google's hosts.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
                  "--force-device-scale-factor=1", "--window-size=1280,900")
INSTALL_LOCK = Path("/tmp/comet-ledger-chromium-install.lock")  # xdist workers install one at a time
START_TIMEOUT_S = 30.0
CDP_TIMEOUT_S = 30.0
MAX_SHOT_HEIGHT = 16_000  # px; a longer page is cut there (the tables further down are still checked in the DOM)

# Everything the page tells about itself, measured after every image has decoded.
PAGE_FACTS_JS = """
(async () => {
  const images = [...document.images];
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  const box = el => {
    const r = el.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};
  };
  const shown = el => {
    const s = getComputedStyle(el), r = el.getBoundingClientRect();
    return s.display !== 'none' && s.visibility !== 'hidden' && parseFloat(s.opacity) > 0
      && r.width > 0 && r.height > 0;
  };
  return JSON.stringify({
    title: document.title,
    headings: [...document.querySelectorAll('h1, h2, h3')].map(h => h.textContent.trim()),
    charts: document.querySelectorAll('img, svg').length,
    images: images.map(i => ({alt: i.alt, src: i.currentSrc.slice(0, 26), complete: i.complete,
                              naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
                              box: box(i), shown: shown(i)})),
    tables: [...document.querySelectorAll('table')].map(t => ({
      rows: t.rows.length, columns: t.rows.length ? t.rows[0].cells.length : 0,
      scrollWidth: t.scrollWidth, clientWidth: t.clientWidth,
      header: t.rows.length ? [...t.rows[0].cells].map(c => ({text: c.textContent.trim(), box: box(c)})) : [],
      heading: (() => {
        for (let e = t.previousElementSibling; e; e = e.previousElementSibling)
          if (/^H[1-4]$/.test(e.tagName)) return e.textContent.trim();
        return null;
      })(),
      box: box(t), shown: shown(t)})),
    resources: performance.getEntriesByType('resource').map(e => e.name),
    page: {width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight},
  });
})()
"""


# --- Chromium ---------------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Chromium is missing and `{' '.join(cmd)}` did not finish in {timeout:.0f} s: "
                    f"install it by hand (apt-get install -y chromium) and re-run")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing (as root); a clear failure otherwise."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and the tests do not run as root, so they cannot install it: "
                    f"run `sudo apt-get install -y chromium` (Debian's package) and re-run")
    if not shutil.which("apt-get"):
        pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package")
    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another xdist worker may be installing it right now
        if not CHROMIUM.exists():
            apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-q"]
            update = _run([*apt, "update"], timeout=600)
            install = _run([*apt, "install", "-y", "chromium"], timeout=900)
            if install.returncode != 0 or not CHROMIUM.exists():
                tail = (install.stderr or install.stdout or update.stderr).strip().splitlines()[-5:]
                pytest.fail(f"Chromium is missing and `apt-get install -y chromium` failed "
                            f"(exit {install.returncode}; update exit {update.returncode}): " + " | ".join(tail))
    return CHROMIUM


@dataclass
class Browser:
    port: int
    process: subprocess.Popen
    log: Path


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory) -> Browser:
    """One headless Chromium on a loopback DevTools port, with a fresh profile; always ended."""
    root = tmp_path_factory.mktemp("chromium")
    profile, log = root / "profile", root / "chromium.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(chromium), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"  # Chromium writes the port it chose here
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None:
                pytest.fail(f"Chromium exited with {process.returncode} at start: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port in {START_TIMEOUT_S:.0f} s: "
                            f"{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield Browser(int(port_file.read_text().split()[0]), process, log)
    finally:
        stop_process_group(process, 10)  # its own group: the renderer and GPU helpers go too


# --- the DevTools protocol ----------------------------------------------------------------------------
class DevTools:
    """A minimal CDP session: commands wait for their answer; events are kept in order."""

    def __init__(self, ws):
        self.ws = ws
        self.events: list[dict] = []
        self._next = 0

    def _receive(self, timeout: float) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def call(self, method: str, **params) -> dict:
        self._next += 1
        self.ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
        deadline = time.monotonic() + CDP_TIMEOUT_S
        while True:
            message = self._receive(max(0.1, deadline - time.monotonic()))
            if message.get("id") == self._next:
                if "error" in message:
                    raise AssertionError(f"DevTools {method} failed: {message['error']}")
                return message["result"]
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = CDP_TIMEOUT_S) -> dict:
        seen = len(self.events)
        for message in self.events[:seen]:
            if message["method"] == event:
                return message
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self._receive(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return message
        raise AssertionError(f"no {event} within {timeout:.0f} s")


@dataclass
class Page:
    facts: dict
    screenshot: Path
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error log entries
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    def image(self) -> Image.Image:
        return Image.open(self.screenshot).convert("RGB")


def open_page(browser: Browser, url: str, screenshot: Path, *, width: int = 1280, media: str = "screen",
              pdf: Path | None = None) -> Page:
    """Load `url` in a new tab `width` CSS pixels wide (as `media`: screen or print), measure it, take a
    full-page screenshot (and, given `pdf`, print it to an A4 PDF there), and close the tab."""
    base = f"http://127.0.0.1:{browser.port}"
    target = httpx.put(f"{base}/json/new?about:blank", timeout=10).raise_for_status().json()
    try:
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            tools = DevTools(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                       mobile=False)
            tools.call("Emulation.setEmulatedMedia", media=media)
            navigated = tools.call("Page.navigate", url=url)
            assert "errorText" not in navigated, f"{url}: {navigated['errorText']}"
            tools.wait_for("Page.loadEventFired")
            evaluated = tools.call("Runtime.evaluate", expression=PAGE_FACTS_JS, awaitPromise=True, returnByValue=True)
            assert "exceptionDetails" not in evaluated, evaluated["exceptionDetails"]
            facts = json.loads(evaluated["result"]["value"])
            metrics = tools.call("Page.getLayoutMetrics")["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": metrics["width"], "height": min(metrics["height"], MAX_SHOT_HEIGHT),
                    "scale": 1}
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            if pdf is not None:  # the page's own @page rule sets the paper (A4)
                printed = tools.call("Page.printToPDF", preferCSSPageSize=True, printBackground=True)
                pdf.write_bytes(base64.b64decode(printed["data"]))
            time.sleep(0.2)
            tools.call("Runtime.evaluate", expression="1")  # drains events that arrived meanwhile
    finally:
        httpx.get(f"{base}/json/close/{target['id']}", timeout=10)
    return Page(facts, screenshot, errors=page_errors(tools.events),
                requests=[e["params"]["request"]["url"] for e in tools.events
                          if e["method"] == "Network.requestWillBeSent"])


def page_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        params = event.get("params", {})
        if event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append("console." + params["type"] + ": " +
                          " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif event["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: " + details.get("exception", {}).get("description", details["text"]))
        elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log ({params['entry']['source']}): {params['entry']['text']}")
        elif event["method"] == "Network.loadingFailed":
            errors.append(f"load failed: {params['errorText']}")
    return errors


def distinct_colours(image: Image.Image) -> int:
    colours = image.getcolors(maxcolors=1 << 16)
    return len(colours) if colours is not None else 1 << 16


# --- the report ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(browser, sim_month, tmp_path_factory) -> Page:
    shot = tmp_path_factory.mktemp("screenshot") / f"reconciliation-{sim_month.pack.month}.png"
    page = open_page(browser, sim_month.html.as_uri(), shot)
    kept = sim_month.settings.reports / shot.name  # beside the pack, not in it (its manifest lists its files)
    shutil.copyfile(shot, kept)
    print(f"screenshot: {shot} (copied to {kept})")
    return page


def test_the_report_renders_its_charts_visibly(report, sim_month):
    facts = report.facts
    assert facts["title"] and facts["headings"][0].startswith(f"Budget review evidence pack: {sim_month.pack.month}")
    assert facts["charts"] >= 2
    charts = facts["images"]
    assert len(charts) == 2, charts
    shot = report.image()
    for chart in charts:
        assert chart["src"].startswith("data:image/svg+xml"), chart  # embedded, self-contained
        assert chart["complete"] and chart["naturalWidth"] > 100 and chart["naturalHeight"] > 100, chart
        assert chart["shown"] and chart["box"]["width"] > 300 and chart["box"]["height"] > 150, chart
        box = chart["box"]
        if box["y"] + box["height"] <= shot.height:  # painted: the chart's own pixels are a picture
            region = shot.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]),
                                int(box["y"] + box["height"])))
            assert distinct_colours(region) > 16, f"chart {chart['alt']!r} is blank in the screenshot"


def test_the_report_lays_out_every_table_visibly(report, sim_month):
    html = sim_month.html.read_text()
    tables = report.facts["tables"]
    assert len(tables) == html.count("<table") > 5
    hidden = [t for t in tables if not (t["shown"] and t["box"]["width"] > 100 and t["box"]["height"] > 20)]
    assert hidden == []
    assert all(t["rows"] >= 2 and t["columns"] >= 2 for t in tables), tables  # a header and a row at least
    headings = {t["heading"] for t in tables}
    assert {"By key", "By team", "By model", "Flagged key-days and their explanations", "Anomalies"} <= headings
    # nothing wider than the window: a reviewer reads it without scrolling sideways
    assert report.facts["page"]["width"] <= 1280 + 1


def test_the_screenshot_is_a_picture_and_kept_beside_the_pack(report, sim_month):
    shot = report.image()
    assert shot.width == 1280 and shot.height >= 900
    assert distinct_colours(shot) > 64  # not a blank or single-colour page
    assert (sim_month.settings.reports / report.screenshot.name).read_bytes() == report.screenshot.read_bytes()


def test_no_console_errors_and_no_request_leaves_the_file(report, sim_month):
    assert report.errors == []
    outside = [u for u in report.requests + report.facts["resources"] if not u.startswith(("file:", "data:"))]
    assert outside == []
    assert sim_month.html.as_uri() in report.requests


def test_the_checks_see_a_broken_page(browser, sim_month, tmp_path):
    """The same checks on a copy with a script error, a console error and a broken chart do fail."""
    html = sim_month.html.read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/svg+xml;base64,", "data:image/svg+xml;base64,AAAA", 1)
                      .replace("</body>", "<script>console.error('planted'); undefined_function();</script></body>"))
    page = open_page(browser, broken.as_uri(), tmp_path / "broken.png")
    assert any("planted" in e for e in page.errors), page.errors
    assert any("undefined_function" in e for e in page.errors), page.errors
    assert sorted(image["naturalWidth"] == 0 for image in page.facts["images"]) == [False, True]


# --- the anomalies table on a laptop screen and on A4 ------------------------------------------------
LAPTOP_WIDTH = 1400  # CSS px
A4_LANDSCAPE_WIDTH = round((297 - 2 * 10) / 25.4 * 96)  # the printable width under the page's @page rule, CSS px


@pytest.fixture(scope="module")
def long_evidence_pack(sim_month, tmp_path_factory):
    """The month's pack from a copy of its warehouse whose anomalies carry 400 request ids of evidence
    each, unbroken by spaces: the worst a leaked key's day gives."""
    import duckdb

    from pipelines.lib.review_pack import build_pack
    from ui.conftest import BUILT_AT

    root = tmp_path_factory.mktemp("long-evidence")
    warehouse = root / "warehouse.duckdb"
    shutil.copyfile(sim_month.settings.warehouse_path, warehouse)
    ids = ",".join(f"2026100502{i:06d}a9202069" for i in range(400))
    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE anomalies SET evidence = 'ips=198.51.100.66; request_ids=' || $ids", {"ids": ids})
    settings = sim_month.settings
    return build_pack(warehouse, settings.lake, settings.inbox, sim_month.pack.month, root / "reports",
                      timezone=settings.timezone, built_at=BUILT_AT)


def anomalies_table(page: Page) -> dict:
    [table] = [t for t in page.facts["tables"] if t["heading"] == "Anomalies"]
    return table


def assert_laid_out_within(page: Page, width: int) -> None:
    """Nothing wider than `width`, no table scrolling sideways, and the anomalies table readable: its
    prose columns wide enough for sentences, its last column ("what to do") on the page."""
    assert page.facts["page"]["width"] <= width + 1, page.facts["page"]
    scrolling = [(t["heading"], t["scrollWidth"], t["clientWidth"]) for t in page.facts["tables"]
                 if t["scrollWidth"] > t["clientWidth"] + 1]
    assert scrolling == []
    header = {cell["text"]: cell["box"] for cell in anomalies_table(page)["header"]}
    assert header["detail"]["width"] >= 140 and header["what to do"]["width"] >= 140, header
    assert header["what to do"]["x"] + header["what to do"]["width"] <= width + 1, header


def test_the_anomalies_table_fits_a_laptop_screen(browser, long_evidence_pack, tmp_path_factory):
    shot = tmp_path_factory.mktemp("laptop") / "reconciliation-1400.png"
    page = open_page(browser, (long_evidence_pack.path / "reconciliation.html").as_uri(), shot, width=LAPTOP_WIDTH)
    print(f"screenshot: {shot}")
    assert page.errors == []
    assert_laid_out_within(page, LAPTOP_WIDTH)
    assert page.image().width == LAPTOP_WIDTH
    # the evidence is collapsed to a line (400 ids, open, would be ~100 lines a row), whole in the CSV
    table = anomalies_table(page)
    assert table["box"]["height"] < 200 * table["rows"], table["box"]
    with open(long_evidence_pack.path / f"anomalies_{long_evidence_pack.month}.csv", newline="") as fh:
        assert all(r["evidence"].count(",") == 399 for r in csv.DictReader(fh))


def test_the_report_prints_on_a4(browser, long_evidence_pack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("print")
    pdf = folder / "reconciliation.pdf"
    page = open_page(browser, (long_evidence_pack.path / "reconciliation.html").as_uri(), folder / "print.png",
                     width=A4_LANDSCAPE_WIDTH, media="print", pdf=pdf)
    print(f"PDF: {pdf}")
    assert page.errors == []
    assert_laid_out_within(page, A4_LANDSCAPE_WIDTH)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)
    assert len(boxes) >= 3  # pages
    assert {(round(float(w)), round(float(h))) for w, h in boxes} == {(842, 595)}  # A4 landscape, in points
