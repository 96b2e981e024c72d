"""Thin helpers over local_bridge's REST API (API.md), on the standard library alone.

    rest = RestClient("http://127.0.0.1:5100", token=None)
    session = rest.create_session("Wedding", "/photos/wedding")
    photo = rest.import_photo(session["id"], "a.jpg", "/photos/wedding/a.jpg", "gui")
    job = rest.create_job("analyze", photo_id=photo["id"])

Every method returns the parsed JSON answer. An error answer raises :class:`ApiError`; a server
that cannot be reached raises :class:`ServerUnreachable`, an :class:`OSError`. Connections are
kept alive and reused (a worker reports progress often), one per thread at a time, so one
client may be shared by several threads.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

#: A bearer token, or a function returning a fresh one before each request.
Token = str | Callable[[], str | None] | None

DEFAULT_URL = "http://127.0.0.1:5100"
LONG_POLL_MARGIN = 10.0  # seconds a long poll's socket waits beyond its ``wait``


class ApiError(Exception):
    """The server answered with an error (API.md): ``status`` (HTTP), ``code``
    (``validation_error``, ``not_found``, ``conflict`` ...), ``message``, and for a 422
    ``fields``, each field's list of reasons. ``body`` is the parsed answer, when it was JSON."""

    body: Any = None

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.fields: dict[str, list[str]] = dict(fields or {})
        super().__init__(status, code, message, self.fields)

    def __str__(self) -> str:
        text = f"HTTP {self.status} {self.code}: {self.message}"
        if self.fields:
            why = "; ".join(
                f"{name}: {' '.join(map(str, reasons))}" for name, reasons in self.fields.items()
            )
            text += f" ({why})"
        return " ".join(text.split())  # one line, whatever the message holds


class ServerUnreachable(ConnectionError):
    """No answer from ``url``: refused, timed out, unknown host, connection reset."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach local_bridge at {url}: {reason}")
        self.url = url
        self.reason = reason


def _reason(exc: BaseException) -> str:
    """``connection refused`` rather than ``[Errno 111] Connection refused``."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.HTTPException):
        return "the answer is not HTTP: is something other than local_bridge listening there?"
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    text = text or exc.__class__.__name__
    return text[:1].lower() + text[1:]


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by the server meanwhile: its socket
    reads as ready (end of file, or bytes nobody asked for) or is gone."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class RestClient:
    """The REST API of one local_bridge server.

    ``base_url`` may hold an IPv6 address (``http://[::1]:5100``) and a path prefix (a reverse
    proxy's). ``token`` is a bearer token, or a callable returning one before each request
    (so a long-lived client can renew it). ``timeout`` applies to connecting and to each
    answer (a long poll waits ``wait`` seconds more).
    """

    def __init__(
        self, base_url: str = DEFAULT_URL, *, token: Token = None, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connections (the client stays usable: it opens new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _bearer(self) -> str | None:
        return self.token() if callable(self.token) else self.token

    def _connect(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still open (reused: True), or a new one."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not _dropped(connection):
                    connection.timeout = timeout
                    if connection.sock is not None:
                        connection.sock.settimeout(timeout)
                    return connection, True
                connection.close()
        factory = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return factory(self._host, self._port, timeout=timeout), False

    def _release(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append(connection)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request to ``path`` (``/api/...``); the parsed JSON answer (None for 204).

        ``body`` goes as JSON (a write without fields sends ``{}``, as API.md requires);
        ``query`` entries that are None are left out.
        """
        target = self._prefix + path
        given = {k: v for k, v in (query or {}).items() if v is not None}
        if given:
            target += "?" + urlencode(given)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None or method not in ("GET", "HEAD", "DELETE"):
            payload = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        bearer = self._bearer()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        url = self.base_url + path
        wait = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            connection, reused = self._connect(wait)
            try:
                connection.request(method, target, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                connection.close()
                # A kept-alive connection the server closed just as this request went out:
                # it never read the request, so sending it again on a new one is safe.
                if reused and attempt == 1:
                    continue
                raise ServerUnreachable(self.base_url, _reason(exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise ServerUnreachable(self.base_url, _reason(exc)) from None
            if response.will_close:
                connection.close()
            else:
                self._release(connection)
            return _answer(url, response.status, response.getheader("Content-Type"), data)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, path: str, **query: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", path, query=query))

    def _post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("POST", path, body or {}))

    def _patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("PATCH", path, body))

    # ------------------------------------------------------------------ sessions and photos

    def create_session(self, name: str, import_folder: str) -> dict[str, Any]:
        """``POST /api/sessions``: a new import session (status active)."""
        return self._post("/api/sessions", {"name": name, "import_folder": import_folder})

    def get_session(self, session_id: str) -> dict[str, Any]:
        return self._get(f"/api/sessions/{_id(session_id)}")

    def list_sessions(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page: ``{"items": [...], "next_cursor": ...}``."""
        return self._get("/api/sessions", limit=limit, cursor=cursor)

    def update_session(self, session_id: str, **fields: Any) -> dict[str, Any]:
        """``PATCH /api/sessions/<id>`` with ``name`` and/or ``status``."""
        return self._patch(f"/api/sessions/{_id(session_id)}", fields)

    def import_photo(
        self, session_id: str, file_name: str, file_path: str, source: str
    ) -> dict[str, Any]:
        """Import a photo into a session; ``source`` names where it came from (web, gui ...)."""
        return self._post(
            f"/api/sessions/{_id(session_id)}/photos",
            {"file_name": file_name, "file_path": file_path, "source": source},
        )

    def get_photo(self, photo_id: str) -> dict[str, Any]:
        return self._get(f"/api/photos/{_id(photo_id)}")

    def session_photos(
        self, session_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        return self._get(f"/api/sessions/{_id(session_id)}/photos", limit=limit, cursor=cursor)

    def record_analysis(
        self, photo_id: str, ai_score: float | None, analysis_results: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Record (or replace) a photo's analysis: it enters the approval queue."""
        return self._post(
            f"/api/photos/{_id(photo_id)}/analysis",
            {"ai_score": ai_score, "analysis_results": analysis_results},
        )

    def record_selection(
        self, photo_id: str, context_tag: str | None, selected_preset: str | None
    ) -> dict[str, Any]:
        return self._post(
            f"/api/photos/{_id(photo_id)}/selection",
            {"context_tag": context_tag, "selected_preset": selected_preset},
        )

    # ------------------------------------------------------------------ approval

    def approval_queue(
        self, session_id: str | None = None, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """Analyzed photos awaiting a decision (of one session, or all)."""
        return self._get("/api/approval", session_id=session_id, limit=limit, cursor=cursor)

    def approve(self, photo_id: str) -> dict[str, Any]:
        return self._post(f"/api/approval/{_id(photo_id)}/approve")

    def reject(self, photo_id: str, reason: str) -> dict[str, Any]:
        return self._post(f"/api/approval/{_id(photo_id)}/reject", {"reason": reason})

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        kind: str,
        photo_id: str | None = None,
        priority: int = 50,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue a job; the answer carries its ``position`` in the queue."""
        body = {"kind": kind, "photo_id": photo_id, "priority": priority, "params": params}
        return self._post("/api/jobs", body)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/api/jobs/{_id(job_id)}")

    def list_jobs(
        self, status: str | None = None, *, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        return self._get("/api/jobs", status=status, limit=limit, cursor=cursor)

    def claim_job(self, worker: str, kinds: Iterable[str] | None = None) -> dict[str, Any] | None:
        """Take the next queued job (highest priority, then oldest), or None when none waits."""
        body: dict[str, Any] = {"worker": worker}
        if kinds is not None:
            body["kinds"] = list(kinds)
        claimed = self.request("POST", "/api/jobs/claim", body)
        return cast(dict[str, Any], claimed) if claimed is not None else None

    def report_progress(
        self,
        job_id: str,
        progress: float,
        stage: str | None = None,
        message: str | None = None,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Report a running job's progress; the answer is the job, with ``cancel_requested``."""
        body: dict[str, Any] = {"progress": progress}
        for name, value in (("stage", stage), ("message", message), ("counters", counters)):
            if value is not None:
                body[name] = value
        return self._post(f"/api/jobs/{_id(job_id)}/progress", body)

    def complete_job(
        self, job_id: str, result: Any = None, result_url: str | None = None
    ) -> dict[str, Any]:
        return self._post(
            f"/api/jobs/{_id(job_id)}/complete", {"result": result, "result_url": result_url}
        )

    def fail_job(
        self,
        job_id: str,
        error_message: str,
        error_details: Any = None,
        retryable: bool = False,
    ) -> dict[str, Any]:
        return self._post(
            f"/api/jobs/{_id(job_id)}/fail",
            {
                "error_message": error_message,
                "error_details": error_details,
                "retryable": retryable,
            },
        )

    def cancel_job(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        """Cancel a queued job at once; for a running job only ``cancel_requested`` is set (its
        worker ends it), unless it was already set: then it ends cancelled now."""
        return self._post(f"/api/jobs/{_id(job_id)}/cancel", {"reason": reason})

    def set_priority(self, job_id: str, priority: int, reason: str | None = None) -> dict[str, Any]:
        """Reprioritize a queued job."""
        return self._patch(
            f"/api/jobs/{_id(job_id)}/priority", {"priority": priority, "reason": reason}
        )

    # ------------------------------------------------------------------ exports

    def create_export(self, photo_id: str, preset_name: str, destination: str) -> dict[str, Any]:
        return self._post(
            "/api/exports",
            {"photo_id": photo_id, "preset_name": preset_name, "destination": destination},
        )

    def get_export(self, export_id: str) -> dict[str, Any]:
        return self._get(f"/api/exports/{_id(export_id)}")

    def complete_export(self, export_id: str, output_path: str, file_size: int) -> dict[str, Any]:
        return self._post(
            f"/api/exports/{_id(export_id)}/complete",
            {"output_path": output_path, "file_size": file_size},
        )

    def fail_export(self, export_id: str, error_message: str) -> dict[str, Any]:
        return self._post(f"/api/exports/{_id(export_id)}/fail", {"error_message": error_message})

    # ------------------------------------------------------------------ publishing and events

    def publish(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        channel: str | None = None,
        client_types: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """``POST /api/websocket/broadcast`` (admin): ``{"seq", "recipients"}``. ``channel``
        None reaches every connected client."""
        body: dict[str, Any] = {"type": type, "data": dict(data or {}), "channel": channel}
        if client_types is not None:
            body["client_types"] = list(client_types)
        return self._post("/api/websocket/broadcast", body)

    def publish_batch(self, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """``POST /api/events/batch`` (admin): events shaped like :meth:`publish`'s body."""
        return self._post("/api/events/batch", {"events": [dict(e) for e in events]})

    def system_event(self, type: str, **fields: Any) -> dict[str, Any]:
        """``POST /api/system/events`` (admin): system_status, resource_warning or
        error_occurred with its fields."""
        return self._post("/api/system/events", {"type": type, **fields})

    def events(
        self,
        since: int | None = None,
        epoch: str | None = None,
        channels: Iterable[str] | None = None,
        limit: int | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """``GET /api/events``: ``{"items", "next_since", "recovered", "seq", "epoch"}``.
        ``wait`` (0-30 s) holds the request until an event arrives (long polling)."""
        query = {
            "since": since,
            "epoch": epoch,
            "channels": ",".join(channels) if channels is not None else None,
            "limit": limit,
            "wait": _seconds(wait) if wait is not None else None,
        }
        timeout = self.timeout + (wait or 0) + (LONG_POLL_MARGIN if wait else 0)
        return cast(
            dict[str, Any], self.request("GET", "/api/events", query=query, timeout=timeout)
        )

    # ------------------------------------------------------------------ system and admin

    def status(self) -> dict[str, Any]:
        """``GET /api/system/status``: version, seq, epoch, connections, queue counts."""
        return self._get("/api/system/status")

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded", "checks": {...}}``; a degraded server's 503 answer is
        returned too, not raised."""
        try:
            return self._get("/api/system/health")
        except ApiError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "checks" in exc.body:
                return cast(dict[str, Any], exc.body)
            raise

    def live(self) -> dict[str, Any]:
        return self._get("/api/system/live")

    def clients(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """Connected bus clients (admin)."""
        return self._get("/api/websocket/clients", limit=limit, cursor=cursor)

    def disconnect(self, client_id: str) -> dict[str, Any]:
        """Close a bus client with 4009 (admin)."""
        return self._post(f"/api/websocket/disconnect/{_id(client_id)}")

    def revoke_token(self, jti: str) -> dict[str, Any]:
        """Refuse every token with this ``jti`` from now on (admin)."""
        return self._post("/api/auth/revoke", {"jti": jti})


def _id(value: str | int) -> str:
    """An id as one path segment, whatever it holds."""
    return quote(str(value), safe="")


def _seconds(value: float) -> str:
    """``wait`` as the server reads it: digits, at most six decimals."""
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def _answer(url: str, status: int, content_type: str | None, data: bytes) -> Any:
    """The JSON of a success; :class:`ApiError` for an error or an answer that is not
    local_bridge's (an HTML page, another service on the port)."""
    if status == 204 and not data:
        return None
    parsed: Any = None
    is_json = (content_type or "").split(";")[0].strip().lower() == "application/json"
    if is_json:
        try:
            parsed = json.loads(data)
        except ValueError:
            is_json = False
    if 200 <= status < 300 and is_json:
        return parsed
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    ):
        fields = error.get("fields")
        exc = ApiError(
            status,
            error["code"],
            error["message"],
            {str(k): v if isinstance(v, list) else [v] for k, v in fields.items()}
            if isinstance(fields, dict)
            else None,
        )
    else:
        kind = (content_type or "no content type").split(";")[0]
        exc = ApiError(
            status,
            "unexpected_response",
            f"{url} did not answer like local_bridge (HTTP {status}, {kind}): "
            "is it a local_bridge server?",
        )
    exc.body = parsed
    raise exc


__all__ = ["ApiError", "RestClient", "ServerUnreachable", "Token"]
