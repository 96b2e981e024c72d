"""The REST resources of API.md, in process on SQLite and PostgreSQL: refused writes change and
publish nothing; pages, 404s and 409s. Each write's events through the real server:
tests/e2e/test_workflow_e2e.py."""

from __future__ import annotations

import pytest

from support import error, ok, types_of


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},
        {"name": "", "import_folder": "/a"},
        {"name": "x", "import_folder": "/a", "extra": 1},
        {"name": 5, "import_folder": "/a"},
    ],
)
def test_bad_session_bodies_write_and_publish_nothing(client, published, body):
    before = ok(client.get("/api/sessions?limit=500"))["items"]
    response, events = published.after(lambda: client.post("/api/sessions", json=body))
    error(response, 422, "validation_error")
    assert response.get_json()["error"]["fields"]
    assert events == []
    assert ok(client.get("/api/sessions?limit=500"))["items"] == before


def test_session_list_pages(client):
    ids = [
        ok(client.post("/api/sessions", json={"name": f"s{i}", "import_folder": "/"}), 201)["id"]
        for i in range(3)
    ]
    seen, cursor = [], None
    for _ in range(100):
        body = ok(
            client.get(
                "/api/sessions", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}
            )
        )
        assert len(body["items"]) <= 2
        seen += [s["id"] for s in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))


def test_patch_session_errors(client, published, session):
    response, events = published.after(
        lambda: client.patch(f"/api/sessions/{session['id']}", json={"status": "exploded"})
    )
    error(response, 422, "validation_error")
    error(client.patch("/api/sessions/999999", json={"name": "x"}), 404, "not_found")
    error(client.patch("/api/sessions/abc", json={"name": "x"}), 404, "not_found")
    error(
        client.patch(
            f"/api/sessions/{session['id']}", data="{", headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    error(
        client.patch(
            f"/api/sessions/{session['id']}", data="name=x", headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    assert events == []


def test_import_into_unknown_session_is_404(client, published):
    response, events = published.after(
        lambda: client.post(
            "/api/sessions/424242/photos",
            json={"file_name": "x.jpg", "file_path": "/x", "source": "web"},
        )
    )
    error(response, 404, "not_found")
    assert events == []


def test_reject_needs_a_reason_and_publishes(client, published, photo):
    ok(
        client.post(
            f"/api/photos/{photo['id']}/analysis", json={"ai_score": 0.2, "analysis_results": None}
        )
    )
    response, events = published.after(
        lambda: client.post(f"/api/approval/{photo['id']}/reject", json={})
    )
    assert error(response, 422, "validation_error")["fields"] == {
        "reason": ["Missing data for required field."]
    }
    assert events == []
    rejected, events = published.after(
        lambda: ok(client.post(f"/api/approval/{photo['id']}/reject", json={"reason": "blurry"}))
    )
    assert (rejected["approval_status"], rejected["rejection_reason"]) == ("rejected", "blurry")
    assert types_of(events) == ["photo_rejected", "approval_queue_updated"]
    assert events[0]["reason"] == "blurry"


def test_approving_an_unanalysed_photo_is_409(client, published, photo):
    response, events = published.after(
        lambda: client.post(f"/api/approval/{photo['id']}/approve", json={})
    )
    error(response, 409, "conflict")
    assert events == []
    error(client.post("/api/approval/777777/approve", json={}), 404, "not_found")


def test_export_failure_and_bad_ids(client, published, photo):
    export = ok(
        client.post(
            "/api/exports",
            json={"photo_id": photo["id"], "preset_name": "Print", "destination": "/out"},
        ),
        201,
    )
    failed, events = published.after(
        lambda: ok(
            client.post(f"/api/exports/{export['id']}/fail", json={"error_message": "disk full"})
        )
    )
    assert failed["status"] == "failed" and types_of(events) == ["export_failed"]
    response, events = published.after(
        lambda: client.post(
            "/api/exports",
            json={"photo_id": "999999", "preset_name": "Print", "destination": "/out"},
        )
    )
    assert "photo_id" in error(response, 422, "validation_error")["fields"]
    assert events == []
    error(
        client.post("/api/exports/999999/complete", json={"output_path": "/o", "file_size": 1}),
        404,
        "not_found",
    )
