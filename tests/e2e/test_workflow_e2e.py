"""The REST resources of API.md and the events each write publishes, through the real server on
SQLite and PostgreSQL (refusals, pages and 404s run in process: tests/api/test_workflow.py)."""

from __future__ import annotations

from support import error, ok, types_of

# ------------------------------------------------------------------ sessions


def test_create_session_publishes_session_created(workflow_server, watcher):
    created, events = watcher.after(
        lambda: ok(
            workflow_server.post(
                "/api/sessions", json={"name": "Portraits", "import_folder": "/shoots/p"}
            ),
            201,
        )
    )
    assert created["status"] == "active" and created["total_photos"] == 0
    assert set(created) == {
        "id",
        "name",
        "import_folder",
        "status",
        "total_photos",
        "processed_photos",
        "approved_photos",
        "created_at",
        "updated_at",
    }
    assert types_of(events) == ["session_created"]
    assert (events[0]["session_id"], events[0]["session_name"], events[0]["import_folder"]) == (
        created["id"],
        "Portraits",
        "/shoots/p",
    )
    assert ok(workflow_server.get(f"/api/sessions/{created['id']}")) == created


def test_patch_session_to_completed(workflow_server, watcher, session, photo):
    updated, events = watcher.after(
        lambda: ok(
            workflow_server.patch(f"/api/sessions/{session['id']}", json={"status": "completed"})
        )
    )
    assert updated["status"] == "completed" and updated["total_photos"] == 1
    assert types_of(events) == ["session_updated", "session_completed"]
    assert events[0]["status"] == "completed" and events[0]["total_photos"] == 1
    assert (events[1]["session_name"], events[1]["total_photos"], events[1]["approved_photos"]) == (
        "Wedding",
        1,
        0,
    )
    _, again = watcher.after(
        lambda: ok(
            workflow_server.patch(f"/api/sessions/{session['id']}", json={"name": "Wedding 2"})
        )
    )
    assert types_of(again) == ["session_updated"]


# ------------------------------------------------------------------ photos and approval


def test_import_photo_publishes_photo_imported_then_session_updated(workflow_server, session):
    sub = workflow_server.client()
    sub.subscribe(f"sessions:{session['id']}")
    photo = ok(
        workflow_server.post(
            f"/api/sessions/{session['id']}/photos",
            json={"file_name": "b.jpg", "file_path": "/in/b.jpg", "source": "android_app"},
        ),
        201,
    )
    first, second = sub.recv(), sub.recv()
    assert (first["type"], first["channel"], first["photo_id"], first["source"]) == (
        "photo_imported",
        "photos",
        photo["id"],
        "android_app",
    )
    assert (
        second["type"],
        second["total_photos"],
        second["processed_photos"],
        second["progress_percent"],
    ) == ("session_updated", 1, 0, 0.0)
    assert photo["approval_status"] == "none"
    assert [
        p["id"] for p in ok(workflow_server.get(f"/api/sessions/{session['id']}/photos"))["items"]
    ] == [photo["id"]]
    sub.close()


def test_analysis_approval_and_rejection(workflow_server, watcher, session, photo):
    analysed, events = watcher.after(
        lambda: ok(
            workflow_server.post(
                f"/api/photos/{photo['id']}/analysis",
                json={"ai_score": 0.87, "analysis_results": {"sharpness": 0.9}},
            )
        )
    )
    assert analysed["approval_status"] == "pending" and analysed["ai_score"] == 0.87
    assert types_of(events) == ["photo_analyzed", "approval_queue_updated", "session_updated"]
    assert (
        events[0]["analysis_results"] == {"sharpness": 0.9}
        and events[0]["session_id"] == session["id"]
    )
    assert (events[1]["queue_count"], events[1]["session_id"]) == (1, session["id"])
    assert (events[2]["processed_photos"], events[2]["progress_percent"]) == (1, 100.0)
    queue = ok(workflow_server.get("/api/approval", params={"session_id": session["id"]}))["items"]
    assert [p["id"] for p in queue] == [photo["id"]]

    approved, events = watcher.after(
        lambda: ok(workflow_server.post(f"/api/approval/{photo['id']}/approve", json={}))
    )
    assert approved["approval_status"] == "approved"
    assert types_of(events) == ["photo_approved", "approval_queue_updated", "session_updated"]
    assert events[1]["queue_count"] == 0
    assert ok(workflow_server.get(f"/api/sessions/{session['id']}"))["approved_photos"] == 1

    again, events = watcher.after(
        lambda: workflow_server.post(f"/api/approval/{photo['id']}/approve", json={})
    )
    error(again, 409, "conflict")
    rejected, more = watcher.after(
        lambda: workflow_server.post(f"/api/approval/{photo['id']}/reject", json={"reason": "late"})
    )
    error(rejected, 409, "conflict")
    assert events == [] and more == []


def test_selection(workflow_server, watcher, photo):
    selected, events = watcher.after(
        lambda: ok(
            workflow_server.post(
                f"/api/photos/{photo['id']}/selection",
                json={"context_tag": "portrait", "selected_preset": "Warm"},
            )
        )
    )
    assert (selected["context_tag"], selected["selected_preset"]) == ("portrait", "Warm")
    assert types_of(events) == ["photo_selected"]
    assert events[0]["selected_preset"] == "Warm"
    error(
        workflow_server.post(f"/api/photos/{photo['id']}/selection", json={"context_tag": "x"}),
        422,
        "validation_error",
    )


# ------------------------------------------------------------------ exports


def test_export_lifecycle(workflow_server, watcher, session, photo):
    export, events = watcher.after(
        lambda: ok(
            workflow_server.post(
                "/api/exports",
                json={"photo_id": photo["id"], "preset_name": "Web 2048", "destination": "/out"},
            ),
            201,
        )
    )
    assert export["status"] == "running"
    assert types_of(events) == ["export_started"]
    assert (events[0]["export_id"], events[0]["session_id"], events[0]["destination"]) == (
        export["id"],
        session["id"],
        "/out",
    )
    done, events = watcher.after(
        lambda: ok(
            workflow_server.post(
                f"/api/exports/{export['id']}/complete",
                json={"output_path": "/out/a.jpg", "file_size": 123456},
            )
        )
    )
    assert (done["status"], done["file_size"]) == ("completed", 123456) and done["finished_at"]
    assert types_of(events) == ["export_completed"] and events[0]["output_path"] == "/out/a.jpg"
    twice, events = watcher.after(
        lambda: workflow_server.post(
            f"/api/exports/{export['id']}/fail", json={"error_message": "disk full"}
        )
    )
    error(twice, 409, "conflict")
    assert events == []
