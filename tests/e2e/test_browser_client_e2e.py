"""The browser module (``/static/local-bridge.js``) in a real headless Chromium (Playwright,
Debian's ``chromium``) against the real server.

The test page is the module's own URL, so it runs at the server's origin and imports the module
exactly as a page of the server would. A spy wraps the
page's ``WebSocket`` to record the URLs opened and the frames sent. Console errors and uncaught
exceptions fail the test.

Without Chromium or Playwright these tests are skipped, except under CI (``CI=true``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from browser_support import chromium
from local_bridge.auth.tokens import mint
from redis_support import drop_prefix, fresh_prefix, redis_url
from support import ServerProcess, free_port, ok

WAIT_MS = 10000  # the longest any page-side wait may take
HEARTBEAT = 0.5  # s: the test servers' heartbeat interval, so a read deadline is 2 s
FAST_BACKOFF = {"initial": 100, "max": 400}
AUTH_TIMEOUT = 1.0  # s a new connection has to authenticate
SECRET = "browser-client-" + "0123456789abcdef" * 4
PAGE = "<!doctype html><meta charset=utf-8><title>local-bridge.js test</title><body></body>"
MODULE = "/static/local-bridge.js"
MODULE_FILE = Path(__file__).resolve().parents[2] / "local_bridge" / "static" / "local-bridge.js"

# What the page records: every WebSocket opened, every frame sent, and the bridge's events.
SPY = """(() => {
  window.spy = {urls: [], sent: [], openedAt: []};
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      spy.urls.push(String(url));
      spy.openedAt.push(performance.now());
    }
    send(data) { spy.sent.push(JSON.parse(data)); super.send(data); }
  };
})();"""

START = """async ({options, mint, module}) => {
  window.lb = await import(module);
  if (mint) options.token = async () => { spy.minted = (spy.minted || 0) + 1; return await window.mintToken(); };
  const bridge = window.bridge = new lb.Bridge(options);
  window.log = {events: [], states: [], resyncs: [], closed: [], errors: [], greetings: [], messages: [], at: {}};
  bridge.on("*", (e) => log.events.push(e));
  for (const name of ["state", "resync", "closed", "error", "connected"]) {
    const into = {state: "states", resync: "resyncs", closed: "closed", error: "errors", connected: "greetings"}[name];
    bridge.addEventListener(name, (e) => log[into].push(e.detail));
    if (name === "state") bridge.addEventListener(name, (e) => (log.at[e.detail] = performance.now()));
  }
  bridge.addEventListener("message", (e) => log.messages.push(e.detail.type));
  await Promise.race([
    bridge.connect(),
    new Promise((_, reject) => setTimeout(() => reject(new Error("not open within 10 s")), 10000)),
  ]);
  return {clientId: bridge.clientId, seq: bridge.seq, epoch: bridge.epoch, state: bridge.state};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium() as instance:
        yield instance


class _PageHandler(BaseHTTPRequestHandler):
    """A web app's own server: a copy of the module at its usual path, the test page at every
    other path."""

    def do_GET(self):
        if self.path == MODULE:
            body, kind = MODULE_FILE.read_bytes(), "text/javascript"
        else:
            body, kind = PAGE.encode(), "text/html"
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """Another origin, listed in the server's LOCAL_BRIDGE_ALLOWED_ORIGINS: a web app served
    by a server of its own (a real one: Chromium's local network access rules treat a page
    that Playwright made up as public, and refuse it loopback)."""
    pages = ThreadingHTTPServer(("127.0.0.1", free_port()), _PageHandler)
    thread = threading.Thread(target=pages.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{pages.server_address[1]}"
    pages.shutdown()
    pages.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def server(app_origin) -> Iterator[ServerProcess]:
    process = ServerProcess({"HEARTBEAT_INTERVAL": HEARTBEAT, "ALLOWED_ORIGINS": app_origin})
    yield process.start()
    process.stop()


class Page:
    """A page at ``origin`` with the spy installed; ``errors`` collects console errors and
    uncaught exceptions. ``expected_errors`` are substrings of console errors the browser
    itself logs (a refused WebSocket while the server is down) that a test allows."""

    def __init__(self, context, origin: str, same_origin: bool = True):
        self.expected_errors: tuple[str, ...] = ()
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on(
            "console",
            lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"),
        )
        self.page.add_init_script(SPY)
        # no icon to look for (its 404 would be logged as a console error)
        self.page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        # On the bridge's own origin the page is the module itself (shown as text): any page
        # the server really serves will do, while one Playwright made up would count as public
        # for Chromium's local network access checks, and be refused loopback.
        self.page.goto(origin + (MODULE if same_origin else "/"))

    def start(self, mint: bool = False, module: str = MODULE, **options: Any) -> dict[str, Any]:
        options.setdefault("backoff", FAST_BACKOFF)
        return self.page.evaluate(START, {"options": options, "mint": mint, "module": module})

    def eval(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def wait(self, condition: str, arg: Any = None, timeout: float = WAIT_MS) -> Any:
        return self.page.wait_for_function(condition, arg=arg, timeout=timeout).json_value()

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(x in e for x in self.expected_errors)]


@pytest.fixture
def open_page(browser):
    contexts, pages = [], []

    def open_at(origin: str, same_origin: bool = True) -> Page:
        context = browser.new_context()
        contexts.append(context)
        pages.append(Page(context, origin, same_origin))
        return pages[-1]

    yield open_at
    errors = [e for page in pages for e in page.unexpected_errors()]
    for context in contexts:
        context.close()
    assert not errors, errors


def events_of(page: Page, type_: str) -> list[dict[str, Any]]:
    return page.eval("(t) => log.events.filter((e) => e.type === t)", type_)


def wait_for_event(page: Page, type_: str, seq: int) -> None:
    page.wait("([t, s]) => log.events.some((e) => e.type === t && e.seq === s)", [type_, seq])


# ---------------------------------------------------------------------------- serving


def test_the_module_is_served_as_javascript_and_revalidated(server, app_origin):
    response = server.get(MODULE)
    assert response.status_code == 200
    assert response.headers["Content-Type"].split(";")[0] == "text/javascript"
    assert "no-cache" in response.headers["Cache-Control"]  # a server upgrade is seen at once
    etag = response.headers["ETag"]
    assert server.get(MODULE, headers={"If-None-Match": etag}).status_code == 304
    # what a module script of another origin sends: CORS headers for a listed origin only
    module_script = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-site"}
    listed = server.get(MODULE, headers={**module_script, "Origin": app_origin})
    assert listed.headers["Access-Control-Allow-Origin"] == app_origin
    other = server.get(MODULE, headers={**module_script, "Origin": "http://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_an_allowed_origin_imports_the_module_and_connects(server, open_page, app_origin):
    # A module script is fetched in cors mode: the module answers with CORS headers for the
    # listed origins, so a web app served elsewhere can import it.
    page = open_page(app_origin, same_origin=False)
    started = page.start(module=server.http + MODULE, url=server.ws_url, channels=["jobs"])
    assert started["state"] == "open"
    seq = server.publish("job_cancelled", {"job_id": "x"}, channel="jobs")["seq"]
    wait_for_event(page, "job_cancelled", seq)
    page.eval("bridge.close()")


# ---------------------------------------------------------------------------- the bus


def test_connects_registers_subscribes_and_receives_events(server, open_page):
    page = open_page(server.http)
    started = page.start(channels=["jobs", "sessions"], clientName="browser test")
    clients = ok(server.get("/api/websocket/clients"))["items"]
    (mine,) = [c for c in clients if c["client_id"] == started["clientId"]]
    assert (mine["client_type"], mine["client_name"]) == ("web", "browser test")
    assert sorted(mine["channels"]) == ["jobs", "sessions"]
    assert page.eval("spy.urls") == [server.ws_url]  # defaultUrl(): this page's own server

    created = ok(server.post("/api/sessions", json={"name": "B", "import_folder": "/b"}), 201)
    seqs = [
        server.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")["seq"] for i in range(3)
    ]
    wait_for_event(page, "job_cancelled", seqs[-1])
    assert [e["seq"] for e in events_of(page, "job_cancelled")] == seqs
    (session_event,) = events_of(page, "session_created")
    assert session_event["session_id"] == created["id"]
    assert page.eval("bridge.seq") == seqs[-1]

    # heartbeats are answered with pong
    page.wait("() => spy.sent.some((m) => m.type === 'pong')")
    # subscribe / unsubscribe later, remembered in bridge.channels
    reply = page.eval("bridge.subscribe(['photos'])")
    assert reply["type"] == "subscribed" and "photos" in reply["channels"]
    page.eval("bridge.unsubscribe('sessions')")
    assert sorted(page.eval("bridge.channels")) == ["jobs", "photos"]
    page.eval("bridge.close()")
    assert page.eval("log.closed") == [{"code": 1000, "reason": "closed by the client"}]
    assert page.eval("log.states") == ["connecting", "open", "closed"]


def test_an_admin_disconnect_stops_without_reconnecting(server, open_page):
    page = open_page(server.http)
    started = page.start(channels=["jobs"])
    ok(server.post(f"/api/websocket/disconnect/{started['clientId']}", json={}))
    page.wait("() => log.closed.length === 1")
    assert page.eval("log.closed[0].code") == 4009
    assert page.eval("bridge.state") == "closed"
    # Given more than the longest backoff to try, it did not open another socket.
    page.page.wait_for_timeout(3 * FAST_BACKOFF["max"])
    assert page.eval("spy.urls.length") == 1
    assert page.eval("log.states") == ["connecting", "open", "closed"]
    # connect() again starts over on the same bridge, resuming where it stopped
    seq = server.publish("job_cancelled", {"job_id": "while-away"}, channel="jobs")["seq"]
    page.eval("bridge.connect()")
    wait_for_event(page, "job_cancelled", seq)
    resume = [m for m in page.eval("spy.sent") if m["type"] == "subscribe"][-1]
    assert resume["since"] == started["seq"] and resume["epoch"] == started["epoch"]


def test_unknown_channels_are_reported_and_dropped(server, open_page):
    page = open_page(server.http)
    page.start(channels=["jobs", "no-such-channel"])
    (error,) = page.eval("log.errors")
    assert (error["code"], error["request_type"]) == ("unknown_channel", "subscribe")
    assert page.eval("bridge.channels") == ["jobs"]  # not sent again on every reconnect
    reply = page.eval("bridge.subscribe(Array.from({length: 70}, (_, i) => `jobs:j${i}`))")
    assert len(reply["channels"]) == 71  # two requests: at most 64 names each


def test_a_subscription_refused_whole_does_not_stall_the_connection(server, open_page):
    page = open_page(server.http)
    # 300 names: the server takes 256 per connection and refuses the request past that whole
    started = page.start(channels=[f"jobs:j{i}" for i in range(300)])
    assert started["state"] == "open"
    assert page.eval("log.errors.map((e) => e.code)") == ["invalid_message"]
    assert len(page.eval("bridge.channels")) == 256


# 4321: a code the module does not know. (1006, a connection lost or refused, is what the
# restart tests see while the server is down.)
RECONNECTS = [1001, 1011, 4008, 4029, 4321]
STOPS = [1000, 1009, 4001, 4003, 4004, 4009]


def test_close_codes_decide_between_reconnecting_and_stopping(server, open_page):
    page = open_page(server.http)
    streams = []

    def route(ws):
        ws.connect_to_server()  # forwarded both ways, until the test closes the page's side
        streams.append(ws)

    page.page.route_web_socket(server.ws_url, route)
    backoff = {"initial": 50, "max": 100, "rateLimited": 600}
    for code in RECONNECTS + STOPS:
        page.start(channels=["jobs"], backoff=backoff)
        count = len(streams)
        streams[-1].close(code=code, reason="test")
        if code in RECONNECTS:
            page.wait("(n) => spy.urls.length > n && bridge.state === 'open'", count)
            # from "reconnecting" to the next socket: the backoff, measured in the page
            waited = page.eval("spy.openedAt[spy.openedAt.length - 1] - log.at.reconnecting")
            assert (waited >= 600) == (code == 4029), (code, waited)  # rate limited: longer
            assert page.eval("log.states") == ["connecting", "open", "reconnecting", "open"]
            assert page.eval("bridge.lastClose.code") == code  # what the page was told
            page.eval("bridge.close()")
        else:
            page.wait("() => log.closed.length === 1")
            assert page.eval("log.closed[0]") == {"code": code, "reason": "test"}
            assert page.eval("log.states") == ["connecting", "open", "closed"]
    assert len(streams) == 2 * len(RECONNECTS) + len(STOPS)


def test_a_silent_connection_is_given_up_and_replaced(server, open_page):
    page = open_page(server.http)
    frozen = {"on": False}
    opened: list[object] = []

    def route(ws):
        upstream = ws.connect_to_server()
        first_connection = not opened
        opened.append(ws)
        # Server -> page is forwarded until frozen: then the first connection's page side hears
        # nothing, though its socket stays open (what a dead network path looks like to a
        # browser). Later connections are never frozen, however soon they open.
        upstream.on_message(
            lambda message: None if frozen["on"] and first_connection else ws.send(message)
        )

    page.page.route_web_socket(server.ws_url, route)
    first = page.start(channels=["jobs"])
    frozen["on"] = True
    page.wait("() => log.states.includes('reconnecting')", timeout=4 * HEARTBEAT * 1000 + 3000)
    page.wait("() => bridge.state === 'open'")
    assert page.eval("bridge.clientId") != first["clientId"]
    assert page.eval("spy.urls.length") == 2
    seq = server.publish("job_cancelled", {"job_id": "after"}, channel="jobs")["seq"]
    wait_for_event(page, "job_cancelled", seq)
    assert page.eval("log.resyncs") == []  # resumed in the same history: nothing lost


def restart_page(open_page, app_origin: str, server: ServerProcess) -> Page:
    """A page of the web app's origin, with the module from there too: the only connection to
    ``server`` is the bridge's. (An idle HTTP keep-alive connection of the browser's holds a
    stopping server up to its keep-alive time, 5 s, which the restarts need not wait for.)"""
    page = open_page(app_origin, same_origin=False)
    page.expected_errors = ("WebSocket connection to",)  # refused while the server is down
    page.url = server.ws_url
    return page


def test_a_restart_without_history_reconnects_and_asks_for_a_resync(server, open_page, app_origin):
    page = restart_page(open_page, app_origin, server)
    # more channels than one request may name: re-subscribed in several, the last resuming
    channels = ["jobs", *(f"jobs:j{i}" for i in range(80))]
    started = page.start(channels=channels, url=page.url)
    before = server.publish("job_cancelled", {"job_id": "before"}, channel="jobs")["seq"]
    wait_for_event(page, "job_cancelled", before)
    server.restart()  # in-memory history: a new epoch
    page.wait("() => log.resyncs.length === 1")
    page.wait("() => bridge.state === 'open'")
    (resync,) = page.eval("log.resyncs")
    assert resync["type"] == "replay_complete" and resync["recovered"] is False
    assert page.eval("log.states") == ["connecting", "open", "reconnecting", "open"]
    epoch = ok(server.get("/api/system/status"))["epoch"]
    assert epoch != started["epoch"] and page.eval("bridge.epoch") == epoch
    # the new history's numbering is followed, not filtered out as "seen"
    after = server.publish("job_cancelled", {"job_id": "after"}, channel="jobs")["seq"]
    wait_for_event(page, "job_cancelled", after)
    resume = [m for m in page.eval("spy.sent") if m["type"] == "subscribe"][-2:]
    assert [len(m["channels"]) for m in resume] == [64, 17] and "since" not in resume[0]
    assert (resume[1]["since"], resume[1]["epoch"]) == (before, started["epoch"])
    clients = ok(server.get("/api/websocket/clients"))["items"]
    (mine,) = [c for c in clients if c["client_id"] == page.eval("bridge.clientId")]
    assert sorted(mine["channels"]) == sorted(channels)


def test_a_restart_with_redis_history_resumes_and_loses_nothing(open_page, app_origin):
    url, prefix = redis_url(), fresh_prefix()
    settings = {"REDIS_URL": url, "REDIS_PREFIX": prefix, "ALLOWED_ORIGINS": app_origin}
    process = ServerProcess({"HEARTBEAT_INTERVAL": HEARTBEAT, **settings}).start()
    try:
        page = restart_page(open_page, app_origin, process)
        started = page.start(channels=["jobs"], url=page.url)

        def publish(i: int) -> dict[str, Any]:
            return process.publish("job_cancelled", {"job_id": str(i)}, channel="jobs")

        seqs = [publish(i)["seq"] for i in range(3)]
        process.restart()  # SIGTERM: clients are closed 1001; the history stays in Redis
        # published while the page reconnects: each comes replayed or live, once
        seqs += [publish(i)["seq"] for i in range(3, 6)]
        page.wait("() => bridge.state === 'open' && log.states.length > 2")
        seqs += [publish(i)["seq"] for i in range(6, 8)]
        wait_for_event(page, "job_cancelled", seqs[-1])
        assert [e["seq"] for e in events_of(page, "job_cancelled")] == seqs
        assert page.eval("log.resyncs") == []
        (replayed,) = events_of(page, "replay_complete")
        assert replayed["recovered"] is True
        assert page.eval("bridge.epoch") == started["epoch"]
        page.eval("bridge.close()")  # a server stopping with no client to say goodbye to is quick
    finally:
        process.stop()
        drop_prefix(url, prefix)


# ---------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ServerProcess]:
    process = ServerProcess(
        {
            "HEARTBEAT_INTERVAL": HEARTBEAT,
            "AUTH": "token",
            "SECRET_KEY": SECRET,
            "AUTH_TIMEOUT": AUTH_TIMEOUT,
        }
    )
    yield process.start()
    process.stop()


def bearer(role: str = "admin", ttl: float = 60, **claims: Any) -> dict[str, str]:
    return {
        "Authorization": "Bearer " + mint(SECRET, sub=f"{role}-1", role=role, ttl=ttl, **claims)[0]
    }


def test_a_token_is_sent_in_authenticate_and_refreshed_before_it_expires(auth_server, open_page):
    page = open_page(auth_server.http)
    ttl = 3  # s; `exp` counts whole seconds, so the first token lives 2-3 s
    page.page.expose_function(
        "mintToken", lambda: mint(SECRET, sub="web-user", role="client", ttl=ttl)[0]
    )
    started = page.start(mint=True, channels=["jobs"])
    assert all("token" not in url for url in page.eval("spy.urls"))
    sent = page.eval("spy.sent")
    assert sent[0]["type"] == "authenticate" and sent[1]["type"] == "register"
    assert page.eval("log.greetings[0].auth") == "token" and page.eval("bridge.auth") == "token"
    # Past the first token's expiry, the same connection still receives events.
    page.wait(
        "() => log.messages.filter((t) => t === 'refreshed').length >= 2",
        timeout=2 * ttl * 1000 + 3000,
    )
    response = requests.post(
        auth_server.http + "/api/websocket/broadcast",
        json={"type": "job_cancelled", "channel": "jobs", "data": {"job_id": "late"}},
        headers=bearer(),
        timeout=10,
    )
    seq = ok(response, 202)["seq"]
    wait_for_event(page, "job_cancelled", seq)
    assert page.eval("bridge.clientId") == started["clientId"]
    assert page.eval("spy.urls.length") == 1 and page.eval("log.closed") == []


def test_a_token_in_the_url_when_asked_for(auth_server, open_page):
    page = open_page(auth_server.http)
    ttl = 3
    page.page.expose_function(
        "mintToken", lambda: mint(SECRET, sub="web-user", role="client", ttl=ttl)[0]
    )
    page.start(mint=True, channels=["jobs"], tokenInUrl=True)
    (url,) = page.eval("spy.urls")
    assert "?token=" in url
    assert [m["type"] for m in page.eval("spy.sent")][:2] == ["register", "subscribe"]
    # refreshed before expiry all the same: the token's own `exp` tells when
    page.wait("() => log.messages.includes('refreshed')", timeout=ttl * 1000 + 2000)
    assert page.eval("log.closed") == []


def test_no_token_stops_with_4001(auth_server, open_page):
    page = open_page(auth_server.http)
    outcome = page.eval(
        """async () => {
          const lb = await import("/static/local-bridge.js");
          const bridge = new lb.Bridge({token: async () => null});
          const closed = new Promise((r) => bridge.addEventListener("closed", (e) => r(e.detail)));
          const error = await bridge.connect().catch((e) => ({code: e.code}));
          return {error, closed: await closed, state: bridge.state};
        }"""
    )
    assert outcome == {
        "error": {"code": 4001},
        "closed": {"code": 4001, "reason": "no token"},
        "state": "closed",
    }


def test_a_token_given_after_the_servers_deadline_is_used_on_a_new_connection(
    auth_server, open_page
):
    # A token function that asks the user may take longer than the server waits (4001):
    # that is no refusal; the token it gives is used on the next connection.
    page = open_page(auth_server.http)
    token = mint(SECRET, sub="slow-user", role="client", ttl=60)[0]
    outcome = page.eval(
        """async ({token, delay}) => {
          const lb = await import("/static/local-bridge.js");
          let asked = 0;
          const slowly = () => new Promise((r) => { asked++; setTimeout(() => r(token), delay); });
          const bridge = new lb.Bridge({token: slowly, backoff: {initial: 50, max: 100}});
          const states = [];
          bridge.addEventListener("state", (e) => states.push(e.detail));
          await bridge.connect();
          const result = {asked, sockets: spy.urls.length, states: [...states], closeCode: bridge.lastClose.code};
          bridge.close();
          return result;
        }""",
        {"token": token, "delay": int(AUTH_TIMEOUT * 1000 + 500)},
    )
    assert outcome == {
        "asked": 1,
        "sockets": 2,
        "states": ["connecting", "open"],
        "closeCode": 4001,
    }


def test_a_refused_token_stops_with_4001(auth_server, open_page):
    page = open_page(auth_server.http)
    outcome = page.eval(
        """async () => {
          const lb = await import("/static/local-bridge.js");
          const bridge = new lb.Bridge({token: "not-a-token"});
          const closed = new Promise((r) => bridge.addEventListener("closed", (e) => r(e.detail)));
          await bridge.connect().catch(() => {});
          return {closed: (await closed).code, sockets: spy.urls.length};
        }"""
    )
    assert outcome == {"closed": 4001, "sockets": 1}


def test_rest_sends_the_token_and_throws_the_error_envelope(auth_server, open_page):
    page = open_page(auth_server.http)
    page.expected_errors = ("Failed to load resource",)  # the browser logs the 401 and the 422
    token = bearer("client")["Authorization"].split()[1]
    outcome = page.eval(
        """async (token) => {
          const {Rest, RestError} = await import("/static/local-bridge.js");
          const status = await new Rest({token}).get("/api/system/status");
          const refused = await new Rest().get("/api/system/status").catch((e) => e);
          const invalid = await new Rest({token: async () => token})
            .post("/api/sessions", {name: ""}).catch((e) => e);
          return {
            seq: typeof status.seq,
            refused: [refused instanceof RestError, refused.status, refused.code],
            invalid: [invalid.status, invalid.code, Object.keys(invalid.fields || {}).sort()],
          };
        }""",
        token,
    )
    assert outcome["seq"] == "number"
    assert outcome["refused"] == [True, 401, "unauthorized"]
    assert outcome["invalid"][:2] == [422, "validation_error"]
    assert "import_folder" in outcome["invalid"][2]


# ---------------------------------------------------------------------------- followJob


FOLLOW = """async (jobId) => {
  const lb = await import("/static/local-bridge.js");
  window.followed = [];
  window.follow = lb.followJob(location.origin, jobId, {onMessage: (m) => followed.push(m)});
  window.follow.promise.then((end) => (window.ended = end), (e) => (window.failed = {code: e.code, message: e.message}));
}"""


def test_follow_job_sees_the_snapshot_progress_and_the_end(server, open_page):
    page = open_page(server.http)
    job = ok(server.post("/api/jobs", json={"kind": "analysis"}), 201)
    streams = []

    def route(ws):
        ws.connect_to_server()  # forwarded both ways, until the test drops it
        streams.append(ws)

    page.page.route_web_socket(re.compile(r".*/ws/jobs/.*"), route)
    page.eval(FOLLOW, job["id"])
    page.wait("() => followed.length >= 1")
    streams[0].close(code=1011, reason="dropped before the end")
    page.wait("() => followed.filter((m) => m.type === 'job_status').length === 2")
    assert len(streams) == 2  # started again, with a fresh snapshot
    claimed = ok(server.post("/api/jobs/claim", json={"worker": "w1"}))
    assert claimed["id"] == job["id"]
    path = f"/api/jobs/{job['id']}"
    ok(server.post(path + "/progress", json={"progress": 40, "stage": "analyzing"}))
    ok(server.post(path + "/complete", json={"result": {"score": 1}}))
    page.wait("() => window.ended !== undefined")
    types = [m["type"] for m in page.eval("followed")]
    assert types[0] == "job_status" and types[-1] == "job_completed"
    assert "job_started" in types and "job_progress" in types
    progress = [m for m in page.eval("followed") if m["type"] == "job_progress"]
    assert progress[-1]["progress"] == 40 and progress[-1]["stage"] == "analyzing"
    assert page.eval("ended.type") == "job_completed"


def test_follow_job_of_an_unknown_job_fails_with_its_code(server, open_page):
    page = open_page(server.http)
    page.eval(FOLLOW, "no-such-job")
    page.wait("() => window.failed !== undefined")
    assert page.eval("failed.code") == "job_not_found"
