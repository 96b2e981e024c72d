"""REST endpoints of the photo workflow: sessions, photos, approval, jobs, exports (API.md).

Each view parses its body with a schema, calls one domain service and serializes the answer;
the services publish the events after their commit.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..domain import schemas
from ..state import state_of
from .body import load
from .pagination import page_params

bp = Blueprint("workflow", __name__, url_prefix="/api")


def _listing(items, next_cursor):
    return jsonify({"items": items, "next_cursor": next_cursor})


# ------------------------------------------------------------------ sessions and photos


@bp.post("/sessions")
def create_session():
    domain = state_of(current_app).domain
    body = load(schemas.SessionCreate)
    return jsonify(domain.sessions.create(body["name"], body["import_folder"])), 201


@bp.get("/sessions")
def list_sessions():
    domain = state_of(current_app).domain
    return _listing(*domain.sessions.list(*page_params()))


@bp.get("/sessions/<session_id>")
def get_session(session_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.sessions.get(session_id))


@bp.patch("/sessions/<session_id>")
def update_session(session_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.sessions.update(session_id, load(schemas.SessionUpdate)))


@bp.post("/sessions/<session_id>/photos")
def import_photo(session_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.PhotoImport)
    return jsonify(domain.sessions.import_photo(session_id, body)), 201


@bp.get("/sessions/<session_id>/photos")
def list_session_photos(session_id: str):
    domain = state_of(current_app).domain
    return _listing(*domain.sessions.photos(session_id, *page_params()))


@bp.get("/photos/<photo_id>")
def get_photo(photo_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.photos.get(photo_id))


@bp.post("/photos/<photo_id>/analysis")
def record_analysis(photo_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.AnalysisRecord)
    return jsonify(
        domain.photos.record_analysis(photo_id, body["ai_score"], body["analysis_results"])
    )


@bp.post("/photos/<photo_id>/selection")
def record_selection(photo_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.SelectionRecord)
    return jsonify(
        domain.photos.record_selection(photo_id, body["context_tag"], body["selected_preset"])
    )


# ------------------------------------------------------------------ approval


@bp.get("/approval")
def approval_queue():
    domain = state_of(current_app).domain
    return _listing(*domain.photos.approval_queue(request.args.get("session_id"), *page_params()))


@bp.post("/approval/<photo_id>/approve")
def approve(photo_id: str):
    domain = state_of(current_app).domain
    load(schemas.Empty)
    return jsonify(domain.photos.approve(photo_id))


@bp.post("/approval/<photo_id>/reject")
def reject(photo_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.photos.reject(photo_id, load(schemas.Rejection)["reason"]))


# ------------------------------------------------------------------ jobs


@bp.post("/jobs")
def create_job():
    domain = state_of(current_app).domain
    body = load(schemas.JobCreate)
    return jsonify(
        domain.jobs.create(body["kind"], body["photo_id"], body["priority"], body["params"])
    ), 201


@bp.get("/jobs")
def list_jobs():
    domain = state_of(current_app).domain
    return _listing(*domain.jobs.list(request.args.get("status"), *page_params()))


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.jobs.get(job_id))


@bp.post("/jobs/claim")
def claim_job():
    domain = state_of(current_app).domain
    body = load(schemas.JobClaim)
    job = domain.jobs.claim(body["worker"], body["kinds"])
    return (jsonify(job), 200) if job is not None else ("", 204)


@bp.post("/jobs/<job_id>/progress")
def report_progress(job_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.JobProgress)
    return jsonify(domain.jobs.mark_progress(job_id, **body))


@bp.post("/jobs/<job_id>/complete")
def complete_job(job_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.JobComplete)
    return jsonify(domain.jobs.mark_completed(job_id, body["result"], body["result_url"]))


@bp.post("/jobs/<job_id>/fail")
def fail_job(job_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.JobFail)
    return jsonify(
        domain.jobs.mark_failed(
            job_id, body["error_message"], body["error_details"], body["retryable"]
        )
    )


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.JobCancel)
    job, ended = domain.jobs.cancel(job_id, body["reason"])
    return jsonify(job), 200 if ended else 202


@bp.patch("/jobs/<job_id>/priority")
def reprioritize_job(job_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.JobPriority)
    return jsonify(domain.jobs.reprioritize(job_id, body["priority"], body["reason"]))


# ------------------------------------------------------------------ exports


@bp.post("/exports")
def start_export():
    domain = state_of(current_app).domain
    body = load(schemas.ExportCreate)
    return jsonify(
        domain.exports.start(body["photo_id"], body["preset_name"], body["destination"])
    ), 201


@bp.get("/exports/<export_id>")
def get_export(export_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.exports.get(export_id))


@bp.post("/exports/<export_id>/complete")
def complete_export(export_id: str):
    domain = state_of(current_app).domain
    body = load(schemas.ExportComplete)
    return jsonify(domain.exports.complete(export_id, body["output_path"], body["file_size"]))


@bp.post("/exports/<export_id>/fail")
def fail_export(export_id: str):
    domain = state_of(current_app).domain
    return jsonify(domain.exports.fail(export_id, load(schemas.ExportFail)["error_message"]))
