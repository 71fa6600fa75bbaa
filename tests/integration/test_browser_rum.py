"""A real browser sends RUM beacons to the edge from a customer's site (another origin).

Headless Chromium (Debian package `chromium`) loads a page served from a second
localhost origin. The page posts exactly as the Lookout RUM script does:
`navigator.sendBeacon(url, Blob([JSON], {type: "application/json"}))` with the key
only in the body, credentials mode "include". That makes the browser preflight
every beacon, and drop it silently unless the edge's CORS answers are right, so
events stored at the receiver prove the preflight and CORS headers work.

In CI (CI=true) a missing browser fails the run; elsewhere it skips with the reason.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RUM_PROJECT = "other"  # project 102

# What the RUM script does: JSON in a Blob typed application/json, key in the body only.
PAGE = """<!doctype html>
<html><head><title>shop</title></head><body><h1>Checkout</h1>
<script>
  const EDGE = {edge}, KEY = {key}, MARKER = {marker};
  function beacon(path, body) {{
    const blob = new Blob([JSON.stringify({{api_key: KEY, marker: MARKER, ...body}})], {{type: "application/json"}});
    return navigator.sendBeacon(EDGE + path, blob);
  }}
  window.sent = [
    beacon("/api/ingest/rum", {{type: "page-view", url: location.href}}),
    beacon("/api/ingest/dump", {{entries: [{{dump: "array:1 [0 => 'cart']", line: 12}}]}}),
  ];
  addEventListener("pagehide", () => beacon("/api/ingest/rum", {{type: "web-vitals", lcp: 812.5, cls: 0.01}}));
</script></body></html>
"""


def browser_missing() -> str | None:
    """Why the real-browser test cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (install the Debian package: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing (requirements-dev.txt)"
    return None


@pytest.fixture(scope="session")
def chromium() -> None:
    """Fails (CI) or skips (elsewhere) before the stack starts when there is no browser."""
    missing = browser_missing()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the real-browser RUM test must run in CI, but {missing}; .ci/run installs it", pytrace=False)
    pytest.skip(f"no real browser here: {missing}")


class CustomerSite:
    """The customer's page on a localhost port of its own (an origin other than the edge's)."""

    def __init__(self, page: str):
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        # "localhost" while the edge is at 127.0.0.1: another host and port, so another origin.
        self.url = f"http://localhost:{self.server.server_address[1]}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(e2e) -> Iterator[tuple[CustomerSite, str]]:
    marker = uuid.uuid4().hex
    page = PAGE.format(edge=json.dumps(e2e.edge_url), key=json.dumps(e2e.keys[RUM_PROJECT]), marker=json.dumps(marker))
    served = CustomerSite(page)
    yield served, marker
    served.stop()


def stored_with_marker(e2e: Any, signal: str, marker: str) -> list[dict]:
    events = e2e.store.events(project_id="102", signal=signal, limit=1000)
    return [event for event in events if event["payload"].get("marker") == marker]


def edge_preflights(e2e: Any) -> list[str]:
    """The edge's access-log lines for the beacons' preflights."""
    return [line for line in e2e.log.getvalue().splitlines() if line.startswith("edge") and '"OPTIONS /api/' in line]


def test_browser_beacons_pass_the_preflight_and_reach_lookout(chromium, e2e, site, tmp_path):
    from playwright.sync_api import sync_playwright

    customer, marker = site
    preflights_before = len(edge_preflights(e2e))
    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        try:
            page = browser.new_page()
            page.on("console", lambda message: console.append(message.text))
            page.goto(customer.url)
            assert page.evaluate("window.sent") == [True, True], "sendBeacon refused to queue the beacons"
            assert page.evaluate("location.origin") != e2e.edge_url
            page.goto("about:blank")  # pagehide: the RUM script's last beacon
            deadline = time.monotonic() + 30
            while len(stored_with_marker(e2e, "rum", marker)) < 2 or not stored_with_marker(e2e, "dump", marker):
                assert time.monotonic() < deadline, f"beacons never reached Lookout; browser console: {console}"
                time.sleep(0.2)
        finally:
            browser.close()

    rum = sorted(stored_with_marker(e2e, "rum", marker), key=lambda event: event["payload"]["type"])
    assert [event["payload"]["type"] for event in rum] == ["page-view", "web-vitals"]
    assert rum[0]["payload"]["url"] == customer.url
    (dump,) = stored_with_marker(e2e, "dump", marker)
    assert dump["payload"]["entries"][0]["line"] == 12
    for event in [*rum, dump]:
        assert "api_key" not in event["payload"]
        assert e2e.keys[RUM_PROJECT] not in json.dumps(event)
        assert "HeadlessChrome" in (event["user_agent"] or "")
    preflights = edge_preflights(e2e)[preflights_before:]
    assert any("/api/ingest/rum" in line and " 204 " in line for line in preflights), preflights
    assert any("/api/ingest/dump" in line and " 204 " in line for line in preflights), preflights
