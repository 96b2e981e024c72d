"""One HTTP request on a fresh connection to a server under test (127.0.0.1)."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, NamedTuple

from bench.wsclient import HOST


class Answer(NamedTuple):
    status: int | None  # None: no answer (``error`` says why)
    body: Any  # the JSON body, decoded; None when there is none or it is not JSON
    elapsed: float  # seconds from the request to the whole answer (or the error)
    error: str | None


def http_call(port: int, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Answer:
    """One request; never raises for a network error (see :attr:`Answer.error`)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - start
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Answer(response.status, parsed, elapsed, None)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def connections(port: int, timeout: float = 10.0) -> int | None:
    """``connections.total`` of local_bridge's ``GET /api/system/status``; None without it."""
    answer = http_call(port, "GET", "/api/system/status", timeout=timeout)
    try:
        return answer.body["connections"]["total"] if answer.status == 200 else None
    except (KeyError, TypeError):
        return None
