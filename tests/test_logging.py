"""Logs in process: JSON or text lines with request and client ids, the access log, request ids
taken from the client only when sane, and ids that stay with their own greenlet or thread."""

from __future__ import annotations

import io
import json
import logging
import threading
import warnings

import pytest

from local_bridge import create_app, state_of
from local_bridge.config import ConfigError, load_settings
from local_bridge.observability import logs
from local_bridge.observability.access_log import request_id_of
from support import run_under_gevent


@pytest.fixture
def captured():
    """Configure the server's logging into a buffer; undo it afterwards (other tests read
    ``local_bridge`` records through pytest's root handler)."""
    logger = logging.getLogger(logs.ROOT_LOGGER)
    level, propagate = logger.level, logger.propagate
    handlers: list[logging.Handler] = []

    def configure(log_format: str = "json", level_name: str = "info") -> io.StringIO:
        stream = io.StringIO()
        handlers.append(logs.configure_logging(level_name, log_format, stream))
        return stream

    yield configure
    logging.captureWarnings(False)
    warnings_logger = logging.getLogger(logs.WARNINGS_LOGGER)
    for handler in handlers:
        logger.removeHandler(handler)
        warnings_logger.removeHandler(handler)
    warnings_logger.propagate = True
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def app(tmp_path):
    application = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/l.db"})
    yield application
    state_of(application).close()


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def test_json_access_log_line_carries_the_request_id(app, captured):
    stream = captured("json")
    response = app.test_client().get("/api/sessions", headers={"X-Request-ID": "req-42.a"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-42.a"
    (line,) = [entry for entry in lines_of(stream) if entry["logger"] == "local_bridge.access"]
    assert line["request_id"] == "req-42.a"
    assert line["level"] == "info" and line["time"].endswith("+00:00")
    assert line["method"] == "GET" and line["path"] == "/api/sessions"
    assert line["status"] == 200 and line["duration_ms"] >= 0
    assert line["remote_addr"] == "127.0.0.1"
    assert "GET /api/sessions" in line["message"]


def test_records_written_during_a_request_carry_its_id(app, captured):
    stream = captured("json")

    def noisy():
        logging.getLogger("local_bridge.test").warning("inside the view")
        return "done"

    app.add_url_rule("/test/noisy", "noisy", noisy)
    response = app.test_client().get("/test/noisy")
    generated = response.headers["X-Request-ID"]
    assert len(generated) == 32
    inside = [e for e in lines_of(stream) if e["message"] == "inside the view"]
    assert inside and inside[0]["request_id"] == generated and inside[0]["level"] == "warning"
    assert logs.request_id.get() is None  # nothing left behind after the request


def test_errors_and_refusals_are_logged_with_their_status(app, captured):
    stream = captured("json")
    client = app.test_client()
    client.get("/no/such/thing")
    client.post("/api/sessions", data="not json", content_type="application/json")
    statuses = [e["status"] for e in lines_of(stream) if e["logger"] == "local_bridge.access"]
    assert statuses == [404, 400]


@pytest.mark.parametrize(
    "header",
    ["x" * 129, "has space", "new\\nline", "<script>", "semi;colon", ""],
)
def test_an_unsafe_request_id_is_replaced(header):
    generated = request_id_of(header)
    assert generated != header and len(generated) == 32 and generated.isalnum()


def test_a_sane_request_id_is_kept():
    for header in ("abc", "0f" * 16, "trace:1/2+3=4_5.6@7-8", "x" * 128):
        assert request_id_of(header) == header


def test_an_unsafe_request_id_header_gets_a_fresh_one_in_the_response(app):
    response = app.test_client().get("/api/system/live", headers={"X-Request-ID": "a b"})
    assert response.headers["X-Request-ID"] != "a b" and len(response.headers["X-Request-ID"]) == 32


def test_text_format_is_one_line_with_the_ids(app, captured):
    stream = captured("text")
    app.test_client().get("/api/system/live", headers={"X-Request-ID": "text-1"})
    (line,) = [x for x in stream.getvalue().splitlines() if "local_bridge.access" in x]
    assert " INFO local_bridge.access: " in line and line.endswith("[request_id=text-1]")
    assert '"GET /api/system/live" 200' in line


def test_access_log_can_be_turned_off(tmp_path, captured):
    stream = captured("json")
    quiet = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/q.db", "ACCESS_LOG": False})
    try:
        assert quiet.test_client().get("/api/system/live").status_code == 200
    finally:
        state_of(quiet).close()
    assert not [e for e in lines_of(stream) if e["logger"] == "local_bridge.access"]


def test_log_level_filters(app, captured):
    stream = captured("json", "warning")
    app.test_client().get("/api/system/live")
    logging.getLogger("local_bridge.test").warning("kept")
    assert [e["message"] for e in lines_of(stream)] == ["kept"]


def test_json_lines_carry_exceptions_on_one_line(captured):
    stream = captured("json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("local_bridge.test").exception("failed")
    (line,) = lines_of(stream)
    assert "ValueError: boom" in line["exception"] and line["message"] == "failed"
    assert len(stream.getvalue().strip().splitlines()) == 1


def test_python_warnings_are_log_lines_too(captured):
    stream = captured("json")
    warnings.warn("something is deprecated", DeprecationWarning, stacklevel=1)
    (line,) = lines_of(stream)
    assert line["logger"] == "py.warnings" and "something is deprecated" in line["message"]


def test_settings_validate_log_level_and_format():
    settings = load_settings(environ={})
    assert (settings.LOG_LEVEL, settings.LOG_FORMAT) == ("info", "text")
    environ = {"LOCAL_BRIDGE_LOG_FORMAT": "json", "LOCAL_BRIDGE_LOG_LEVEL": "debug"}
    assert load_settings(environ=environ).LOG_FORMAT == "json"
    for name, bad in (("LOG_FORMAT", "xml"), ("LOG_LEVEL", "loud")):
        with pytest.raises(ConfigError, match=name):
            load_settings(environ={f"LOCAL_BRIDGE_{name}": bad})


def test_ids_stay_with_their_own_thread():
    seen: dict[str, str | None] = {}
    barrier = threading.Barrier(2)

    def serve(name: str) -> None:
        logs.client_id.set(name)
        barrier.wait(5)  # both have set theirs before either reads
        seen[name] = logs.client_id.get()

    threads = [threading.Thread(target=serve, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert seen == {"a": "a", "b": "b"} and logs.client_id.get() is None


@pytest.mark.e2e  # a process of its own (gevent's patching)
def test_ids_stay_with_their_own_greenlet_under_gevent():
    out = run_under_gevent(
        "import gevent\n"
        "from gevent.event import Event\n"
        "from local_bridge.observability import logs\n"
        "both = Event(); seen = {}\n"
        "def serve(name, last):\n"
        "    logs.request_id.set(name)\n"
        "    if last: both.set()\n"
        "    both.wait(5)\n"
        "    seen[name] = logs.request_id.get()\n"
        "gevent.joinall([gevent.spawn(serve, 'a', False), gevent.spawn(serve, 'b', True)])\n"
        "print(sorted(seen.items()), logs.request_id.get())\n"
    )
    assert out.strip() == "[('a', 'a'), ('b', 'b')] None"
