"""REST contract details of API.md "Conventions", in process on SQLite and PostgreSQL: required
fields, flat 422 ``fields``, a JSON body on every state-changing request, integer and number
bounds, clean ``invalid_json`` messages, and ``updated_at`` of sessions. A refused request
changes nothing and publishes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from support import error, ok, types_of

MAX_INT64 = 2**63 - 1
INTERNALS = ("sys.", "int_max_str_digits", "Exceeds the limit", "codec", "Traceback")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _job(client, status: str = "queued") -> dict:
    """A new job of a kind of its own, claimed when ``status`` is running."""
    kind = _unique("contract")
    job = ok(client.post("/api/jobs", json={"kind": kind}), 201)
    if status == "running":
        job = ok(client.post("/api/jobs/claim", json={"worker": "w", "kinds": [kind]}))
    return job


def _refused(published, action, status: int, code: str) -> dict:
    """Run ``action``; it must answer ``status``/``code`` and publish nothing."""
    response, events = published.after(action)
    body = error(response, status, code)
    assert events == [], types_of(events)
    return body


@pytest.mark.parametrize(
    "body", [{"type": "contract.notice"}, {"type": "job_cancelled", "channel": "jobs"}]
)
def test_broadcast_requires_data(client, published, body):
    refused = _refused(
        published,
        lambda: client.post("/api/websocket/broadcast", json=body),
        422,
        "validation_error",
    )
    assert refused["fields"] == {"data": ["Missing data for required field."]}


@pytest.mark.parametrize(
    "fields",
    [
        {"file_name": "b.jpg", "file_path": "/in/b.jpg"},
        {"file_name": "b.jpg", "file_path": "/in/b.jpg", "source": None},
    ],
)
def test_photo_import_requires_source(client, published, session, fields):
    refused = _refused(
        published,
        lambda: client.post(f"/api/sessions/{session['id']}/photos", json=fields),
        422,
        "validation_error",
    )
    assert list(refused["fields"]) == ["source"]
    assert ok(client.get(f"/api/sessions/{session['id']}"))["total_photos"] == 0


def test_nested_field_errors_are_flat_dotted_keys(client, published):
    job = _job(client, "running")
    path = f"/api/jobs/{job['id']}/progress"
    refused = _refused(
        published,
        lambda: client.post(
            path, json={"progress": 5, "counters": {"files_scanned": "many", "value": -1}}
        ),
        422,
        "validation_error",
    )
    # the "value" level marshmallow puts under a map entry is not part of the key
    assert set(refused["fields"]) == {"counters.files_scanned", "counters.value"}
    assert all(
        isinstance(m, list) and m and all(isinstance(t, str) for t in m)
        for m in refused["fields"].values()
    )
    assert ok(client.get(f"/api/jobs/{job['id']}"))["counters"] is None

    refused = _refused(
        published,
        lambda: client.post("/api/jobs/claim", json={"worker": "w", "kinds": ["ok", "", 5]}),
        422,
        "validation_error",
    )
    assert set(refused["fields"]) == {"kinds.1", "kinds.2"}
    refused = _refused(
        published, lambda: client.post("/api/jobs/claim", json=["w"]), 422, "validation_error"
    )
    assert refused["fields"] == {"_schema": ["the body must be a JSON object"]}


def test_broadcast_catalog_errors_are_keyed_data_dot_path(client, published):
    refused = _refused(
        published,
        lambda: client.post(
            "/api/websocket/broadcast",
            json={
                "type": "job_progress",
                "channel": "jobs",
                "data": {"progress": 5, "counters": {"files_scanned": "x"}, "bogus": 1},
            },
        ),
        422,
        "validation_error",
    )
    assert set(refused["fields"]) == {"data.job_id", "data.counters.files_scanned", "data.bogus"}
    refused = _refused(
        published,
        lambda: client.post(
            "/api/websocket/broadcast",
            json={"type": "contract.notice", "client_types": ["gui", "NOT OK"], "data": {"seq": 1}},
        ),
        422,
        "validation_error",
    )
    assert set(refused["fields"]) == {"client_types.1"}


def test_bodyless_actions_are_415_and_change_nothing(client, published, pending_photo):
    photo_id = pending_photo["id"]
    body = _refused(
        published,
        lambda: client.post(f"/api/approval/{photo_id}/approve"),
        415,
        "unsupported_media_type",
    )
    assert "{}" in body["message"]
    assert ok(client.get(f"/api/photos/{photo_id}"))["approval_status"] == "pending"

    queued = _job(client)
    _refused(
        published,
        lambda: client.post(f"/api/jobs/{queued['id']}/cancel"),
        415,
        "unsupported_media_type",
    )
    assert ok(client.get(f"/api/jobs/{queued['id']}"))["status"] == "queued"

    running = _job(client, "running")
    _refused(
        published,
        lambda: client.post(f"/api/jobs/{running['id']}/complete"),
        415,
        "unsupported_media_type",
    )
    assert ok(client.get(f"/api/jobs/{running['id']}"))["status"] == "running"

    # the same actions with {} go through
    approved, events = published.after(
        lambda: ok(client.post(f"/api/approval/{photo_id}/approve", json={}))
    )
    assert approved["approval_status"] == "approved" and "photo_approved" in types_of(events)
    assert ok(client.post(f"/api/jobs/{queued['id']}/cancel", json={}))["status"] == "cancelled"
    assert ok(client.post(f"/api/jobs/{running['id']}/complete", json={}))["status"] == "completed"


@pytest.mark.parametrize(
    "headers, data",
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, "name=Evil&import_folder=/x"),
        (
            {"Content-Type": "multipart/form-data; boundary=b"},
            '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nEvil\r\n--b--\r\n',
        ),
        ({"Content-Type": "text/plain"}, '{"name": "Evil", "import_folder": "/x"}'),
        ({}, ""),
    ],
)
def test_form_and_simple_cross_site_requests_change_nothing(
    client, published, session, pending_photo, headers, data
):
    # a form without fields sends an empty body: an action without fields must still refuse it
    _refused(
        published,
        lambda: client.post(
            f"/api/approval/{pending_photo['id']}/approve", data="", headers=headers
        ),
        415,
        "unsupported_media_type",
    )
    assert ok(client.get(f"/api/photos/{pending_photo['id']}"))["approval_status"] == "pending"
    before = ok(client.get("/api/sessions?limit=500"))["items"]
    _refused(
        published,
        lambda: client.post("/api/sessions", data=data, headers=headers),
        415,
        "unsupported_media_type",
    )
    _refused(
        published,
        lambda: client.patch(f"/api/sessions/{session['id']}", data=data, headers=headers),
        415,
        "unsupported_media_type",
    )
    assert ok(client.get("/api/sessions?limit=500"))["items"] == before


def test_empty_json_body_is_415_and_routing_errors_keep_their_status(
    client, published, pending_photo
):
    _refused(
        published,
        lambda: client.post(
            f"/api/approval/{pending_photo['id']}/approve",
            headers={"Content-Type": "application/json"},
        ),
        415,
        "unsupported_media_type",
    )
    error(client.post("/api/no/such/thing"), 404, "not_found")
    error(client.post("/api/system/health"), 405, "method_not_allowed")
    ok(client.get("/api/system/status"))  # reads need no body


def _updated_at(client, session_id: str) -> datetime:
    return datetime.fromisoformat(ok(client.get(f"/api/sessions/{session_id}"))["updated_at"])


def test_counter_changes_bump_session_updated_at(client, published, session, photo):
    imported = _updated_at(client, session["id"])
    _, events = published.after(
        lambda: ok(
            client.post(
                f"/api/photos/{photo['id']}/analysis",
                json={"ai_score": 0.5, "analysis_results": None},
            )
        )
    )
    assert types_of(events)[-1] == "session_updated" and events[-1]["processed_photos"] == 1
    analysed = _updated_at(client, session["id"])
    assert analysed > imported

    _, events = published.after(
        lambda: ok(client.post(f"/api/approval/{photo['id']}/approve", json={}))
    )
    assert types_of(events)[-1] == "session_updated"
    approved = ok(client.get(f"/api/sessions/{session['id']}"))
    assert approved["approved_photos"] == 1
    assert datetime.fromisoformat(approved["updated_at"]) > analysed


@pytest.mark.parametrize("path", ["/api/jobs", "/api/sessions", "/api/approval", "{photos}"])
def test_cursor_and_limit_are_bounded(client, session, path):
    path = path.format(photos=f"/api/sessions/{session['id']}/photos")
    for cursor in (str(MAX_INT64 + 1), "9" * 4000, "²", "-1", "1.5"):
        refused = error(client.get(path, query_string={"cursor": cursor}), 422, "validation_error")
        assert list(refused["fields"]) == ["cursor"]
    assert ok(client.get(path, query_string={"cursor": str(MAX_INT64)})) == {
        "items": [],
        "next_cursor": None,
    }
    for limit in (str(MAX_INT64 + 1), "0", " 5", "5_0", "+5"):
        refused = error(client.get(path, query_string={"limit": limit}), 422, "validation_error")
        assert list(refused["fields"]) == ["limit"]
    assert ok(client.get(path, query_string={"limit": str(MAX_INT64)}))["next_cursor"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs/²",
        f"/api/jobs/{MAX_INT64 + 1}",
        f"/api/jobs/{MAX_INT64}",
        "/api/jobs/4294967296",
        "/api/photos/²",
        "/api/sessions/١٢",
        "/api/exports/²",
        "/api/exports/4294967296",
    ],
)
def test_path_ids_that_name_nothing_are_404(client, path):
    error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "photo_id", ["²", "4294967296", str(MAX_INT64), str(MAX_INT64 + 1), "1" * 30, 5]
)
def test_body_ids_out_of_range_are_422(client, published, photo_id):
    for path, body in (
        ("/api/jobs", {"kind": "k", "photo_id": photo_id}),
        ("/api/exports", {"photo_id": photo_id, "preset_name": "p", "destination": "/o"}),
    ):
        refused = _refused(published, lambda: client.post(path, json=body), 422, "validation_error")
        assert list(refused["fields"]) == ["photo_id"]


def test_export_file_size_is_bounded(client, published, photo):
    export = ok(
        client.post(
            "/api/exports",
            json={"photo_id": photo["id"], "preset_name": "Web", "destination": "/out"},
        ),
        201,
    )
    path = f"/api/exports/{export['id']}/complete"
    for size in (MAX_INT64 + 1, 10**30, -1):
        refused = _refused(
            published,
            lambda: client.post(path, json={"output_path": "/out/a.jpg", "file_size": size}),
            422,
            "validation_error",
        )
        assert list(refused["fields"]) == ["file_size"]
    assert ok(client.get(f"/api/exports/{export['id']}"))["status"] == "running"
    done, events = published.after(
        lambda: ok(client.post(path, json={"output_path": "/out/a.jpg", "file_size": MAX_INT64}))
    )
    assert done["file_size"] == MAX_INT64 and events[-1]["file_size"] == MAX_INT64


def test_job_numbers_are_bounded(client, published):
    job = _job(client, "running")
    path = f"/api/jobs/{job['id']}/progress"
    for body, field in (
        ({"progress": 5, "counters": {"files_scanned": MAX_INT64 + 1}}, "counters.files_scanned"),
        ({"progress": 5, "counters": {"files_scanned": -1}}, "counters.files_scanned"),
        ({"progress": 10**400}, "progress"),
    ):
        refused = _refused(published, lambda: client.post(path, json=body), 422, "validation_error")
        assert list(refused["fields"]) == [field]
    reply, events = published.after(
        lambda: ok(
            client.post(path, json={"progress": 5, "counters": {"files_scanned": MAX_INT64}})
        )
    )
    assert reply["counters"] == {"files_scanned": MAX_INT64}
    progress = [e for e in events if e["type"] == "job_progress"]
    assert progress and progress[-1]["counters"] == {"files_scanned": MAX_INT64}
    refused = _refused(
        published,
        lambda: client.post("/api/jobs", json={"kind": "k", "priority": MAX_INT64 + 1}),
        422,
        "validation_error",
    )
    assert list(refused["fields"]) == ["priority"]


def test_ai_score_must_fit_a_float(client, published, photo):
    for score in (10**400, -(10**309)):
        refused = _refused(
            published,
            lambda: client.post(
                f"/api/photos/{photo['id']}/analysis",
                json={"ai_score": score, "analysis_results": None},
            ),
            422,
            "validation_error",
        )
        assert list(refused["fields"]) == ["ai_score"]
    assert ok(client.get(f"/api/photos/{photo['id']}"))["approval_status"] == "none"


@pytest.mark.parametrize(
    "type_, data, field",
    [
        (
            "job_progress",
            {"job_id": "j", "progress": 1, "counters": {"files_scanned": 10**30}},
            "data.counters.files_scanned",
        ),
        ("job_queued", {"job_id": "j", "position": MAX_INT64 + 1}, "data.position"),
        ("export_completed", {"export_id": "e", "file_size": MAX_INT64 + 1}, "data.file_size"),
        (
            "resource_warning",
            {"resource_type": "disk", "current_value": 10**400, "threshold": 1},
            "data.current_value",
        ),
        ("job_cancelled", {"job_id": 10**30}, "data.job_id"),
    ],
)
def test_broadcast_catalog_numbers_are_bounded(client, published, type_, data, field):
    refused = _refused(
        published,
        lambda: client.post("/api/websocket/broadcast", json={"type": type_, "data": data}),
        422,
        "validation_error",
    )
    assert list(refused["fields"]) == [field]


def test_system_event_numbers_are_bounded(client, published):
    refused = _refused(
        published,
        lambda: client.post(
            "/api/system/events",
            json={
                "type": "resource_warning",
                "resource_type": "disk",
                "current_value": 10**400,
                "threshold": 90,
            },
        ),
        422,
        "validation_error",
    )
    assert list(refused["fields"]) == ["current_value"]
    refused = _refused(
        published,
        lambda: client.post(
            "/api/system/events",
            json={"type": "error_occurred", "error_message": "x", "job_id": 2**63},
        ),
        422,
        "validation_error",
    )
    assert set(refused["fields"]) == {"error_type", "job_id"}
    assert all(isinstance(m, list) and m for m in refused["fields"].values())


@pytest.mark.parametrize(
    "raw, says",
    [
        ('{"name": ' + "1" * 5000 + ', "import_folder": "/a"}', "a number has too many digits"),
        ('{"name": "x", "import_folder": "/a", "n": 1e400}', "a number is too large"),
        ('{"name": "x", "import_folder": NaN}', "NaN is not a JSON value"),
        ('{"name": "x",\n "import_folder": }', "Expecting value (line 2, column 19)"),
        (b'{"name": "\xff\xfe"}', "not valid UTF-8"),
    ],
)
def test_invalid_json_messages_are_plain(client, published, raw, says):
    refused = _refused(
        published,
        lambda: client.post(
            "/api/sessions", data=raw, headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    assert says in refused["message"], refused
    assert not any(internal in refused["message"] for internal in INTERNALS), refused
