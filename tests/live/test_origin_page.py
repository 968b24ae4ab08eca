"""Cross-site use, in real Chromium: a page from another loopback port cannot open a session on
the server (no key needed on loopback, so only the Origin check stands in the way); the
server's own page and an ``--allow-origin`` page can."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from streamo.live.server import ServeSettings

from .conftest import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no system Chromium (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

OPEN_SESSION = """async (url) => await new Promise((resolve) => {
  const socket = new WebSocket(url, ["streamo.v1"]);
  socket.onmessage = (message) => { resolve(JSON.parse(message.data).type); socket.close(); };
  socket.onclose = (event) => resolve("closed " + event.code);
})"""


@pytest.fixture(scope="module")
def other_site(tmp_path_factory):
    """A page on another loopback port, as any site a user visits could be."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "index.html").write_text("<!doctype html><title>elsewhere</title><p>another site</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{files.server_address[1]}"
    files.shutdown()


def test_a_page_from_elsewhere_is_refused_and_the_servers_own_page_works(loaded_model, other_site):
    with running_server(loaded_model) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            socket_url = server.url.replace("http", "ws") + "/v1/stream"
            page = browser.new_page()
            page.goto(other_site)
            from_elsewhere = page.evaluate(OPEN_SESSION, socket_url)
            page.goto(server.url)
            from_own_page = page.evaluate(OPEN_SESSION, socket_url)
        finally:
            browser.close()
        refused = server.state.metrics.refused.labels("origin")._value.get()
    assert from_elsewhere == "closed 1006" and refused == 1  # the handshake got HTTP 403
    assert from_own_page == "ready"


def test_allow_origin_lets_a_named_site_in(loaded_model, other_site):
    with running_server(loaded_model, ServeSettings(allow_origins=[other_site])) as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(other_site)
            outcome = page.evaluate(OPEN_SESSION, server.url.replace("http", "ws") + "/v1/stream")
        finally:
            browser.close()
    assert outcome == "ready"
