"""The live dashboard (``/``, ``/dashboard``) in headless Chromium (Playwright, Debian's
``chromium``) against the real server: it loads cleanly under its Content-Security-Policy, job
cards follow a worker's progress and queue positions, the feed filters and pauses, user text is
shown as text, it carries on by itself across a server restart (resuming with Redis history,
reloading over REST without it), and with authentication on it asks for a token.

Without Chromium or Playwright these tests are skipped, except under CI (``CI=true``), where that
is a failure.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from browser_support import chromium
from redis_support import drop_prefix, fresh_prefix, redis_url
from support import ServerProcess, ok

WAIT_MS = 8000  # the longest any page-side wait may take (a restart and a reconnect fit in it)
XSS = '<img src=x onerror="window.__pwned = 1">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def bridge() -> Iterator[ServerProcess]:
    """The shared server of the tests that do not restart it."""
    process = ServerProcess().start()
    yield process
    process.stop()


@pytest.fixture
def open_dashboard(browser):
    """Open the dashboard of a server in a fresh browser context. ``page.problems`` collects
    console errors and uncaught exceptions; ``page.urls`` every URL the page asked for."""
    contexts = []

    def open_at(server: ServerProcess, path: str = "/", wait_live: bool = True):
        context = browser.new_context()
        contexts.append(context)
        shim = os.environ.get("LOCAL_BRIDGE_DASHBOARD_SHIM")
        if shim:
            context.route("**/static/local-bridge.js", lambda route: route.fulfill(path=shim))
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.problems = []
        page.urls = []
        page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
        page.on("request", lambda r: page.urls.append(r.url))
        page.on("websocket", lambda ws: page.urls.append(ws.url))
        page.goto(server.http + path)
        if wait_live:
            wait_live_state(page)
        return page

    yield open_at
    for context in contexts:
        context.close()


def wait_live_state(page) -> None:
    """The page is connected and its first load is done."""
    page.wait_for_selector("#conn-state[data-state=open]")
    page.wait_for_function("document.getElementById('bus-epoch').textContent.length > 2")


def job_card(page, job_id: str):
    return page.locator(f"article.job[data-job-id='{job_id}']")


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.textContent || '').includes(t)",
        arg=[selector, text],
    )


def feed_has(page, seq: int) -> None:
    page.wait_for_selector(f"#feed tr[data-seq='{seq}']", state="attached")


def dashboard_client(server: ServerProcess) -> dict[str, Any]:
    clients = ok(server.get("/api/websocket/clients"))["items"]
    return next(c for c in clients if c["client_type"] == "dashboard")


def wait_subscribed(page, server: ServerProcess, channel: str) -> None:
    """Until the server lists the dashboard's connection as subscribed to ``channel``."""
    for _ in range(WAIT_MS // 20):
        if channel in dashboard_client(server)["channels"]:
            return
        page.wait_for_timeout(20)
    raise AssertionError(f"the dashboard never subscribed to {channel}")


# ---------------------------------------------------------------------------- the page


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_the_page_is_served_open_with_a_strict_policy(bridge, path):
    response = requests.get(bridge.http + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert f"connect-src 'self' ws://127.0.0.1:{bridge.port} wss://" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in response.text  # no inline script: only the module by URL
    assert 'src="/static/dashboard.js"' in response.text


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_the_page_loads_and_connects_without_console_errors(bridge, open_dashboard, path):
    page = open_dashboard(bridge, path)
    status = ok(bridge.get("/api/system/status"))
    assert page.text_content("#bus-epoch") == status["epoch"]
    assert page.text_content("#bus-backplane") == "memory · ok"
    assert page.text_content("#bus-auth") == "none"
    page.wait_for_selector("#client-types li:has-text('dashboard')")
    assert page.problems == []


# ---------------------------------------------------------------------------- jobs


def test_a_job_card_follows_its_queue_position_and_the_workers_progress(bridge, open_dashboard):
    page = open_dashboard(bridge)
    first = ok(bridge.post("/api/jobs", json={"kind": "dash-analysis", "priority": 90}), 201)
    second = ok(bridge.post("/api/jobs", json={"kind": "dash-export", "priority": 90}), 201)
    card = job_card(page, second["id"])
    card.wait_for()
    wait_text(page, f"article.job[data-job-id='{second['id']}'] .job-position", "in queue")
    position = ok(bridge.get(f"/api/jobs/{second['id']}"))["position"]
    assert f"#{position} in queue" in card.locator(".job-position").text_content()
    wait_subscribed(page, bridge, f"jobs:{second['id']}")

    claimed = ok(
        bridge.post("/api/jobs/claim", json={"worker": "w-dash", "kinds": ["dash-analysis"]})
    )
    assert claimed["id"] == first["id"]
    # the claim moved the second job up: a job_queued on its own sub-channel
    wait_text(
        page,
        f"article.job[data-job-id='{second['id']}'] .job-position",
        f"#{position - 1} in queue",
    )

    running = job_card(page, first["id"])
    bar = running.locator("[role=progressbar]")
    steps = [(10, "scanning", 3), (50, "analyzing", 40), (90, "writing", 77)]
    for progress, stage, files in steps:
        ok(
            bridge.post(
                f"/api/jobs/{first['id']}/progress",
                json={"progress": progress, "stage": stage, "counters": {"files_scanned": files}},
            )
        )
        page.wait_for_function(
            "([id, v]) => document.querySelector(`article.job[data-job-id='${id}'] "
            "[role=progressbar]`)?.getAttribute('aria-valuenow') === v",
            arg=[first["id"], str(progress)],
        )
        assert running.get_attribute("data-status") == "running"
        assert bar.locator(".bar-fill").evaluate("e => e.style.width") == f"{progress}%"
        assert running.locator(".job-stage").text_content() == stage
        assert (
            running.locator("[data-counter=files_scanned]").text_content()
            == f"files_scanned {files}"
        )
        assert "worker w-dash" in running.locator(".job-extra").text_content()

    ok(bridge.post(f"/api/jobs/{first['id']}/complete", json={}))
    page.wait_for_selector(f"article.job[data-job-id='{first['id']}'][data-status=completed]")
    assert bar.get_attribute("aria-valuenow") == "100"
    ok(bridge.post(f"/api/jobs/{second['id']}/cancel", json={"reason": "test over"}))
    page.wait_for_selector(f"article.job[data-job-id='{second['id']}'][data-status=cancelled]")


# ---------------------------------------------------------------------------- the feed


def test_the_feed_filters_by_channel_and_type_and_pauses(bridge, open_dashboard):
    page = open_dashboard(bridge)
    session = ok(bridge.post("/api/sessions", json={"name": "feed", "import_folder": "/in"}), 201)
    seq = bridge.publish("test.dashboard_feed", {"n": 1}, channel="system")["seq"]
    feed_has(page, seq)
    page.wait_for_selector("#feed tr[data-type=session_created]", state="attached")

    page.select_option("#filter-channel", "sessions")
    page.wait_for_selector(f"#feed tr[data-seq='{seq}']", state="detached")
    channels = page.eval_on_selector_all("#feed tr", "rows => rows.map(r => r.dataset.channel)")
    assert channels and all(c.split(":")[0] == "sessions" for c in channels), channels

    page.select_option("#filter-channel", "")
    page.select_option("#filter-type", "test.dashboard_feed")
    # the feed is redrawn on the next animation frame: wait for the other types to go
    page.wait_for_selector("#feed tr[data-type=session_created]", state="detached")
    feed_has(page, seq)
    types = page.eval_on_selector_all("#feed tr", "rows => rows.map(r => r.dataset.type)")
    assert set(types) == {"test.dashboard_feed"}, types

    page.click("#feed-pause")
    held = bridge.publish("test.dashboard_feed", {"n": 2}, channel="system")["seq"]
    wait_text(page, "#feed-note", "1 new events held back")
    assert page.locator(f"#feed tr[data-seq='{held}']").count() == 0
    page.click("#feed-pause")
    feed_has(page, held)
    ok(bridge.patch(f"/api/sessions/{session['id']}", json={"status": "archived"}))


def test_a_busy_feed_keeps_the_last_500_rows(bridge, open_dashboard):
    page = open_dashboard(bridge)
    for batch in range(4):
        events = [
            {"type": "test.busy", "channel": "system", "data": {"batch": batch, "i": i}}
            for i in range(500)
        ]
        seqs = ok(bridge.post("/api/events/batch", json={"events": events}), 202)["seqs"]
    feed_has(page, seqs[-1])
    assert page.locator("#feed tr").count() == 500
    first = page.eval_on_selector("#feed tr", "row => row.dataset.seq")
    assert first == str(seqs[-1])  # newest first
    assert page.problems == []


def test_user_text_in_events_is_shown_as_text(bridge, open_dashboard):
    page = open_dashboard(bridge)
    session = ok(bridge.post("/api/sessions", json={"name": XSS, "import_folder": "/in"}), 201)
    photo = ok(
        bridge.post(
            f"/api/sessions/{session['id']}/photos",
            json={"file_name": XSS, "file_path": "/in/" + XSS, "source": "web"},
        ),
        201,
    )
    page.wait_for_selector("#feed tr[data-type=photo_imported]", state="attached")
    row = page.locator("#feed tr[data-type=photo_imported]").first
    assert f"file_name={XSS}" in row.text_content()
    # the session's name in the approval counts, and a job's stage and message on its card
    ok(
        bridge.post(
            f"/api/photos/{photo['id']}/analysis", json={"ai_score": 0.5, "analysis_results": {}}
        )
    )
    wait_text(page, "#approval-sessions", f"{XSS} (#{session['id']})")
    job = ok(bridge.post("/api/jobs", json={"kind": XSS, "priority": 100}), 201)
    claimed = ok(bridge.post("/api/jobs/claim", json={"worker": "w", "kinds": [XSS]}))
    assert claimed["id"] == job["id"]
    progress = {"progress": 5, "stage": XSS, "message": XSS, "counters": {"n": 1}}
    ok(bridge.post(f"/api/jobs/{job['id']}/progress", json=progress))
    wait_text(page, f"article.job[data-job-id='{job['id']}'] .job-message", XSS)
    card = job_card(page, job["id"])
    assert card.locator(".job-kind").text_content() == XSS
    assert card.locator(".job-stage").text_content() == XSS
    ok(bridge.post(f"/api/jobs/{job['id']}/complete", json={}))
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.problems == []


def test_the_demo_shows_every_event_type(bridge, open_dashboard):
    """What a new user does first: open the page, run `local-bridge demo`, watch."""
    from local_bridge.catalog import CATALOG

    page = open_dashboard(bridge)
    demo = subprocess.run(
        [sys.executable, "-m", "local_bridge.cli", "demo", "--port", str(bridge.port)]
        + ["--pace", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("LOCAL_BRIDGE_")},
    )
    assert demo.returncode == 0, demo.stderr
    for type_ in CATALOG:
        page.wait_for_selector(f"#feed tr[data-type='{type_}']", state="attached")
    page.wait_for_selector("article.job[data-status=completed]")
    page.wait_for_selector("article.job[data-status=failed]")
    page.wait_for_selector("article.job[data-status=cancelled]")
    assert page.problems == []


# ---------------------------------------------------------------------------- restarts


def test_after_a_restart_without_shared_history_it_reloads_over_rest(open_dashboard):
    server = ServerProcess().start()
    try:
        page = open_dashboard(server)
        before = page.text_content("#bus-epoch")
        server.restart()
        # published at once: most likely before the page is back (then fetched for the feed
        # from the new history), else received live; shown either way
        early = server.publish("test.just_after_restart", {"n": 0})["seq"]
        job = ok(server.post("/api/jobs", json={"kind": "after-restart"}), 201)
        epoch = ok(server.get("/api/system/status"))["epoch"]
        assert epoch != before
        page.wait_for_selector("#conn-state[data-state=open]")
        wait_text(page, "#bus-epoch", epoch)
        job_card(page, job["id"]).wait_for()
        wait_text(page, "#bus-link", "state reloaded over REST")
        seq = server.publish("test.after_restart", {"n": 1})["seq"]
        feed_has(page, seq)
        shown = f"#feed tr[data-seq='{early}'][data-type='test.just_after_restart']"
        page.wait_for_selector(shown, state="attached")
        assert page.locator(shown).count() == 1
    finally:
        page.context.close()  # its idle keep-alive connections would hold the shutdown
        server.stop()


def test_after_a_restart_with_redis_it_resumes_and_misses_nothing(open_dashboard):
    url, prefix = redis_url(), fresh_prefix()
    server = ServerProcess({"REDIS_URL": url, "REDIS_PREFIX": prefix}).start()
    try:
        page = open_dashboard(server)
        epoch = page.text_content("#bus-epoch")
        wait_text(page, "#bus-backplane", "redis · ok")
        seqs = [server.publish("test.before_restart", {"n": i})["seq"] for i in range(5)]
        server.restart()
        seqs += [server.publish("test.after_restart", {"n": i})["seq"] for i in range(3)]
        for seq in seqs:
            feed_has(page, seq)
        page.wait_for_selector("#conn-state[data-state=open]")
        assert ok(server.get("/api/system/status"))["epoch"] == epoch
        wait_text(page, "#bus-link", "resumed")
        assert "reloaded" not in page.text_content("#bus-link")
    finally:
        page.context.close()
        server.stop()
        drop_prefix(url, prefix)


# ---------------------------------------------------------------------------- auth


def test_with_auth_on_it_asks_for_a_token_and_says_when_it_is_refused(open_dashboard):
    from local_bridge.auth.tokens import mint

    secret = secrets.token_urlsafe(48)
    server = ServerProcess({"AUTH": "token", "SECRET_KEY": secret}).start()
    try:
        admin = {"Authorization": "Bearer " + mint(secret, sub="t", role="admin", ttl=600)[0]}
        page = open_dashboard(server, wait_live=False)
        page.wait_for_selector("#token-panel:not([hidden])")
        assert page.get_attribute("#conn-state", "data-state") == "needs-token"

        page.fill("#token-input", "not.a.token")
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#token-panel[data-refused]:not([hidden])")
        assert "refused" in page.text_content("#token-reason").lower()

        token, claims = mint(secret, sub="viewer", role="client", ttl=600)
        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        wait_live_state(page)
        assert page.is_hidden("#token-panel")
        assert page.text_content("#identity") == "viewer (client)"
        assert page.text_content("#bus-auth") == "token"
        # not an admin: the counts by client type, from /api/system/status
        wait_text(page, "#clients-note", "needs an admin token")
        page.wait_for_selector("#client-types li:has-text('dashboard')")

        job = ok(server.post("/api/jobs", json={"kind": "with-auth"}, headers=admin), 201)
        job_card(page, job["id"]).wait_for()
        # kept for this tab only, and never in a URL
        assert page.evaluate("Object.keys(localStorage)") == []
        assert token in page.evaluate("Object.values(sessionStorage)")
        assert not [u for u in page.urls if "token" in u], page.urls

        # revoked while in use: the bus closes 4001, the page says so and asks again
        ok(server.post("/api/auth/revoke", json={"jti": claims.jti}, headers=admin))
        page.wait_for_selector("#token-panel[data-refused]:not([hidden])")
        assert page.get_attribute("#conn-state", "data-state") == "refused"
        assert "refused" in page.text_content("#token-reason").lower()
        assert page.evaluate("Object.values(sessionStorage)") == []  # forgotten
        page.fill("#token-input", mint(secret, sub="viewer", role="client", ttl=600)[0])
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#conn-state[data-state=open]")
        body = {"type": "test.after_new_token", "data": {"n": 1}}
        seq = ok(server.post("/api/websocket/broadcast", json=body, headers=admin), 202)["seq"]
        feed_has(page, seq)
    finally:
        page.context.close()
        server.stop()
