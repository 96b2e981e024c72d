"""The browser trust boundary in a real browser: headless Chromium (Playwright, Debian's
``chromium``) against the real server.

Test pages come from a small HTTP server of their own on another loopback port, so they have an
origin of their own: ``http://127.0.0.1:<page port>`` is the web app the server lists in
``LOCAL_BRIDGE_ALLOWED_ORIGINS``; ``http://evil.example:<page port>`` (the browser resolves
``evil.example`` to 127.0.0.1) is any other site the user happens to have open. What the hostile
page tried is then checked over REST from the test: nothing may have changed.

Without Chromium or Playwright these tests are skipped, except under CI (``CI=true``), where that
is a failure.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import websocket

from browser_support import chromium, unavailable
from support import ServerProcess, error, free_port, ok

# another site, served from loopback: what a public page, or a rebound DNS name, looks like
EVIL_SITE_RULE = "--host-resolver-rules=MAP evil.example 127.0.0.1"
WAIT_MS = 5000  # the longest any page-side wait may take


def test_without_a_browser_ci_fails_and_elsewhere_skips(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        unavailable("no Chromium")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        unavailable("no Chromium")


class _PageHandler(BaseHTTPRequestHandler):
    """Answers every GET with an empty HTML page: the tests put their scripts into it."""

    def do_GET(self):
        body = b"<!doctype html><meta charset=utf-8><title>test page</title><body></body>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def page_port() -> Iterator[int]:
    """The port of the page server: one server, two origins (127.0.0.1 and evil.example)."""
    pages = ThreadingHTTPServer(("127.0.0.1", free_port()), _PageHandler)
    thread = threading.Thread(target=pages.serve_forever, daemon=True)
    thread.start()
    yield pages.server_address[1]
    pages.shutdown()
    pages.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def app_origin(page_port) -> str:
    return f"http://127.0.0.1:{page_port}"


@pytest.fixture(scope="module")
def evil_origin(page_port) -> str:
    return f"http://evil.example:{page_port}"


@pytest.fixture(scope="module")
def bridge(app_origin) -> Iterator[ServerProcess]:
    """The real server, with the test's web app as its one allowed origin."""
    process = ServerProcess({"ALLOWED_ORIGINS": app_origin}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium(EVIL_SITE_RULE) as instance:
        yield instance


class Network:
    """What the browser's network saw, from the DevTools protocol: the status line of every
    answer, also of those the page is not allowed to see (opaque, or refused by CORS)."""

    def __init__(self, page):
        self.page = page
        self.requests: dict[str, tuple[str, str]] = {}  # request id -> (method, url)
        self.statuses: dict[str, int] = {}  # request id -> status
        session = page.context.new_cdp_session(page)
        session.on("Network.requestWillBeSent", self._sent)
        session.on("Network.responseReceivedExtraInfo", self._answered)
        session.on("Network.webSocketCreated", self._websocket)
        session.on("Network.webSocketHandshakeResponseReceived", self._handshake)
        session.on("Network.webSocketFrameError", self._handshake_refused)
        session.send("Network.enable")

    def _sent(self, event):
        self.requests[event["requestId"]] = (event["request"]["method"], event["request"]["url"])

    def _answered(self, event):
        self.statuses[event["requestId"]] = event["statusCode"]

    def _websocket(self, event):
        self.requests[event["requestId"]] = ("GET", event["url"])

    def _handshake(self, event):
        self.statuses[event["requestId"]] = event["response"]["status"]

    def _handshake_refused(self, event):
        # a refused handshake is only told as an error: "... Unexpected response code: 403"
        refused = re.search(r"response code: (\d+)", event["errorMessage"])
        if refused:
            self.statuses[event["requestId"]] = int(refused.group(1))

    def answers(self, method: str, url: str) -> list[int]:
        return [
            self.statuses[rid]
            for rid, request in self.requests.items()
            if request == (method, url) and rid in self.statuses
        ]

    def wait_for_answers(self, method: str, url: str, count: int = 1) -> list[int]:
        """The statuses of ``count`` answers to ``method url``; the browser's events are
        delivered while Playwright waits, so this waits in short steps, up to ``WAIT_MS``."""
        for _ in range(WAIT_MS // 20):
            if len(self.answers(method, url)) >= count:
                break
            self.page.wait_for_timeout(20)
        return self.answers(method, url)


@pytest.fixture
def open_page(browser):
    """Open a page at a URL in a fresh browser context; ``page.network`` records what its
    requests were answered."""
    contexts = []

    def open_at(url: str):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.network = Network(page)
        page.goto(url)
        return page

    yield open_at
    for context in contexts:
        context.close()


# JavaScript run in the pages. Each returns what the page could observe.
FETCH = """async ({url, method, mode, kind, payload}) => {
  const init = {method, mode};
  if (kind === "json") {
    init.headers = {"Content-Type": "application/json"};
    init.body = JSON.stringify(payload);
  } else if (kind === "form") {
    init.body = new URLSearchParams(payload);
  } else if (kind === "multipart") {
    init.body = new FormData();
    for (const [k, v] of Object.entries(payload)) init.body.append(k, v);
  } else if (kind === "text") {
    init.body = JSON.stringify(payload);  // JSON text, sent as text/plain
  }
  try {
    const response = await fetch(url, init);
    const body = response.type === "opaque" ? null : await response.text();
    return {type: response.type, status: response.status, body};
  } catch (e) {
    return {error: String(e)};
  }
}"""

OPEN_EVENT_SOURCE = """(url) => new Promise((resolve) => {
  window.sse = {messages: [], opened: false};
  const source = new EventSource(url);
  window.sse.source = source;
  source.onmessage = (e) => window.sse.messages.push(JSON.parse(e.data));
  source.onopen = () => { window.sse.opened = true; resolve("open"); };
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) resolve("closed"); };
})"""

OPEN_WEBSOCKET = """(url) => new Promise((resolve) => {
  window.ws = {messages: [], opened: false, closeCode: null};
  const socket = new WebSocket(url);
  window.ws.socket = socket;
  socket.onmessage = (e) => window.ws.messages.push(JSON.parse(e.data));
  socket.onopen = () => { window.ws.opened = true; resolve("open"); };
  socket.onclose = (e) => { window.ws.closeCode = e.code; resolve("closed " + e.code); };
})"""


def fetch(page, url: str, method: str = "GET", mode: str = "cors", kind=None, payload=None):
    return page.evaluate(
        FETCH, {"url": url, "method": method, "mode": mode, "kind": kind, "payload": payload}
    )


def status(bridge: ServerProcess) -> dict[str, Any]:
    return ok(bridge.get("/api/system/status"))


def client_ids(bridge: ServerProcess) -> set[str]:
    return {c["client_id"] for c in ok(bridge.get("/api/websocket/clients"))["items"]}


def session_names(bridge: ServerProcess) -> list[str]:
    return [s["name"] for s in ok(bridge.get("/api/sessions?limit=500"))["items"]]


# ---------------------------------------------------------------------------- the web app


def test_an_allowed_origin_uses_rest(bridge, open_page, app_origin):
    page = open_page(app_origin + "/")
    read = fetch(page, bridge.http + "/api/system/status")
    assert read["status"] == 200 and read["type"] == "cors", read
    assert '"seq"' in read["body"]
    created = fetch(
        page,
        bridge.http + "/api/sessions",
        "POST",
        kind="json",
        payload={"name": "from the web app", "import_folder": "/in"},
    )  # preflighted: application/json
    assert created["status"] == 201, created
    assert "from the web app" in session_names(bridge)


def test_an_allowed_origin_receives_events_over_sse(bridge, open_page, app_origin):
    page = open_page(app_origin + "/")
    assert page.evaluate(OPEN_EVENT_SOURCE, bridge.http + "/api/events/stream") == "open"
    seq = bridge.publish("test.browser_sse", {"n": 1})["seq"]
    page.wait_for_function(
        f"window.sse.messages.some(m => m.type === 'test.browser_sse' && m.seq === {seq})"
    )
    page.evaluate("window.sse.source.close()")


def test_an_allowed_origin_receives_events_over_websocket(bridge, open_page, app_origin):
    page = open_page(app_origin + "/")
    assert page.evaluate(OPEN_WEBSOCKET, bridge.ws_url) == "open"
    page.wait_for_function("window.ws.messages.some(m => m.type === 'connected')")
    seq = bridge.publish("test.browser_ws", {"n": 1})["seq"]
    page.wait_for_function(
        f"window.ws.messages.some(m => m.type === 'test.browser_ws' && m.seq === {seq})"
    )
    page.evaluate("window.ws.socket.close()")


# ---------------------------------------------------------------------------- another site


@pytest.fixture
def targets(bridge):
    """A queued job and a connected client: what a hostile page would like to cancel and
    disconnect. Yields them with the state the page must leave untouched."""
    job = ok(bridge.post("/api/jobs", json={"kind": "analysis"}), 201)
    client = bridge.client()
    before = {"seq": status(bridge)["seq"], "sessions": session_names(bridge)}
    yield {"job": job, "client": client, "before": before}
    client.close()


def assert_nothing_changed(bridge: ServerProcess, targets) -> None:
    job = ok(bridge.get(f"/api/jobs/{targets['job']['id']}"))
    assert job["status"] == "queued" and not job["cancel_requested"], job
    assert session_names(bridge) == targets["before"]["sessions"]
    assert status(bridge)["seq"] == targets["before"]["seq"], "an event was published"
    assert targets["client"].client_id in client_ids(bridge)
    targets["client"].request({"type": "ping"}, "pong")  # still served


def test_another_origin_changes_nothing_with_no_cors_requests(
    bridge, open_page, evil_origin, targets
):
    page = open_page(evil_origin + "/")
    paths = [
        f"/api/jobs/{targets['job']['id']}/cancel",
        "/api/sessions",
        "/api/websocket/broadcast",
        f"/api/websocket/disconnect/{targets['client'].client_id}",
    ]
    payloads = {
        "/api/sessions": {"name": "planted", "import_folder": "/x"},
        "/api/websocket/broadcast": {"type": "system_status", "data": {}},
    }
    for path in paths:
        for kind in ("text", "form", "multipart"):
            result = fetch(
                page, bridge.http + path, "POST", "no-cors", kind, payloads.get(path, {})
            )
            # the request reached the server (an opaque answer, not a network error)
            assert result == {"type": "opaque", "status": 0, "body": None}, (path, kind, result)
    for path in paths:  # refused by the Origin check, every time
        assert page.network.wait_for_answers("POST", bridge.http + path, 3) == [403] * 3, path
    assert_nothing_changed(bridge, targets)


def test_another_origin_cannot_send_json(bridge, open_page, evil_origin, targets):
    page = open_page(evil_origin + "/")
    for path, payload in [
        (f"/api/jobs/{targets['job']['id']}/cancel", {}),
        ("/api/sessions", {"name": "planted", "import_folder": "/x"}),
    ]:
        result = fetch(page, bridge.http + path, "POST", "cors", "json", payload)
        assert "error" in result, result
        assert page.network.wait_for_answers("OPTIONS", bridge.http + path) == [403]
        assert page.network.answers("POST", bridge.http + path) == [], "sent past the preflight"
    assert_nothing_changed(bridge, targets)


def test_another_origin_cannot_read_rest(bridge, open_page, evil_origin):
    page = open_page(evil_origin + "/")
    result = fetch(page, bridge.http + "/api/system/status")
    assert "error" in result, result  # answered without CORS headers: withheld from the page
    assert fetch(page, bridge.http + "/api/sessions", mode="no-cors")["type"] == "opaque"
    # fetch metadata: not for embedding by another site
    assert page.network.wait_for_answers("GET", bridge.http + "/api/sessions") == [403]


def test_another_origin_cannot_open_a_websocket(bridge, open_page, evil_origin, targets):
    page = open_page(evil_origin + "/")
    before = client_ids(bridge)
    assert page.evaluate(OPEN_WEBSOCKET, bridge.ws_url) == "closed 1006"
    assert page.evaluate("window.ws.opened") is False
    assert page.network.wait_for_answers("GET", bridge.ws_url) == [403]
    assert client_ids(bridge) <= before
    assert_nothing_changed(bridge, targets)


def test_another_origin_cannot_open_an_event_stream(bridge, open_page, evil_origin):
    page = open_page(evil_origin + "/")
    assert page.evaluate(OPEN_EVENT_SOURCE, bridge.http + "/api/events/stream") == "closed"
    assert page.network.wait_for_answers("GET", bridge.http + "/api/events/stream") == [403]


@pytest.mark.parametrize("enctype", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_form_submitted_from_another_origin_changes_nothing(
    bridge, open_page, evil_origin, targets, enctype
):
    page = open_page(evil_origin + "/")
    action = bridge.http + f"/api/jobs/{targets['job']['id']}/cancel"
    page.evaluate(
        """([action, enctype]) => {
          const form = document.createElement("form");
          form.method = "POST"; form.action = action; form.enctype = enctype;
          const field = document.createElement("input");
          field.name = '{"reason": "'; field.value = '"}';  // text/plain: {"reason": "="}
          form.appendChild(field);
          document.body.appendChild(form);
        }""",
        [action, enctype],
    )
    with page.expect_navigation():
        page.evaluate("document.forms[0].submit()")
    assert page.url == action
    assert '"code":"forbidden"' in page.inner_text("body").replace(" ", "")
    assert_nothing_changed(bridge, targets)


# ---------------------------------------------------------------------------- DNS rebinding


def test_a_rebound_host_is_refused_over_http_and_websocket(bridge):
    rebound = {"Host": f"evil.example:{bridge.port}"}
    error(bridge.get("/api/system/status", headers=rebound), 400, "bad_request")
    before = session_names(bridge)
    error(
        bridge.post(
            "/api/sessions", json={"name": "rebound", "import_folder": "/x"}, headers=rebound
        ),
        400,
        "bad_request",
    )
    assert session_names(bridge) == before
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(bridge.ws_url, host=rebound["Host"], timeout=5)
    assert refused.value.status_code == 400


def test_a_rebound_page_reads_nothing(bridge, open_page):
    # The page was served as http://evil.example:<port>, and its name now resolves to
    # 127.0.0.1: the browser treats the bridge as the page's own origin.
    origin = f"http://evil.example:{bridge.port}"
    page = open_page(origin + "/")
    assert page.network.wait_for_answers("GET", origin + "/") == [400]
    before = session_names(bridge)
    for path in ("/api/system/status", "/api/sessions", "/api/websocket/clients"):
        read = fetch(page, origin + path)
        assert read["status"] == 400 and '"bad_request"' in read["body"], read
        assert "items" not in read["body"] and "seq" not in read["body"]
    write = fetch(
        page,
        origin + "/api/sessions",
        "POST",
        kind="json",
        payload={"name": "r", "import_folder": "/"},
    )  # same origin for the browser: no preflight
    assert write["status"] == 400, write
    socket_url = f"ws://evil.example:{bridge.port}/ws"
    assert page.evaluate(OPEN_WEBSOCKET, socket_url) == "closed 1006"
    assert page.network.wait_for_answers("GET", socket_url) == [400]
    assert session_names(bridge) == before
