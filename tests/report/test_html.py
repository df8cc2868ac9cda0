"""The HTML report: one self-contained file that headless Chromium opens without console
errors, with the tables, plots and sorting a reader uses.

The browser check drives Debian's `chromium` through `chromedriver`'s W3C WebDriver HTTP
API (plain urllib, no selenium), reads the browser's console log, measures the DOM and
takes a screenshot. A control page with a deliberate error proves the console capture
itself works, so a silent log cannot pass for a clean one.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_efficientllm.report.write import write_report
from tests.helpers.report_records import sample_run

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


def test_the_file_is_self_contained(tmp_path: Path) -> None:
    html = write_report(sample_run(), tmp_path / "r.html").read_text()
    # Nothing is fetched: no external scripts, styles, images or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "<script src" not in html
    # Every drawn plot is an embedded PNG; the sample run has 5 drawable plots (see the browser test):
    # its single decode test of the attention axis is in the unranked table, which has none.
    images = re.findall(r'<img class="plot" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 5
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    # Unavailable values carry their reason on hover, estimates their model.
    assert 'data-na="1" title="no GPU: NVML not available"' in html
    assert re.search(r'<td class="est[^"]*" data-v="35.0" title="estimate: CPU-seconds x 17.5 W per core">35 W~', html)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


class Browser:
    """A chromedriver session over its HTTP API: just what these checks need."""

    def __init__(self, port: int, profile: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": FLAGS + [f"--user-data-dir={profile}"]},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }
            }
        }
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def open(self, url: str) -> None:
        self.call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script: str) -> Any:
        return self.call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def console(self) -> list[dict[str, Any]]:
        return self.call("POST", f"/session/{self.session}/se/log", {"type": "browser"})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("GET", f"/session/{self.session}/screenshot"))

    def close(self) -> None:
        self.call("DELETE", f"/session/{self.session}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(f"headless Chromium not installed: {INSTALL}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        b = Browser(port, tmp_path / "chromium-profile")
        try:
            yield b
        finally:
            b.close()
    finally:
        driver.terminate()
        driver.wait(timeout=10)


def test_report_opens_in_chromium_with_tables_plots_and_sorting(browser: Browser, tmp_path: Path) -> None:
    # Control: the console capture sees a deliberate error, so an empty log below means a clean page.
    control = tmp_path / "control.html"
    control.write_text(
        "<!DOCTYPE html><html><body><script>console.error('deliberate'); notDefined();</script></body></html>"
    )
    browser.open(control.as_uri())
    assert sum(e["level"] == "SEVERE" for e in browser.console()) >= 2

    path = write_report(sample_run(), tmp_path / "r.html")
    browser.open(path.as_uri())
    assert browser.console() == []  # no error, warning or log line at all
    dom = browser.js("""
        const imgs = Array.from(document.querySelectorAll('img.plot'));
        return {boards: document.querySelectorAll('table.board').length,
                rows: document.querySelectorAll('table.board tbody tr').length,
                failing: document.querySelectorAll('table.board tr.fail').length,
                verdicts: document.querySelectorAll('table.verdicts tbody tr').length,
                na: document.querySelectorAll('td.na').length,
                images: imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.width])};
    """)
    assert dom["boards"] == 3 and dom["rows"] == 6 and dom["failing"] == 1 and dom["verdicts"] == 1
    assert dom["na"] >= 6  # PCU on every CPU row at least
    assert len(dom["images"]) == 5
    assert all(done and w >= 400 and h >= 250 and shown > 0 for done, w, h, shown in dom["images"])

    # Sorting: click the AL header of the prefill table twice (ascending, then descending).
    order = browser.js("""
        const table = document.querySelectorAll('table.board')[0];
        const th = Array.from(table.tHead.rows[0].cells).find(c => c.textContent.startsWith('AL'));
        const col = th.cellIndex, names = () => Array.from(table.tBodies[0].rows).map(r => r.cells[0].textContent);
        th.click(); const up = names(); th.click(); return [up, names()];
    """)
    assert order == [["mqa", "gqa", "mha"], ["mha", "gqa", "mqa"]]
    assert browser.console() == []

    shot = browser.screenshot()
    (tmp_path / "report.png").write_bytes(shot)
    assert png_size(shot) == (1400, browser.js("return window.innerHeight"))
