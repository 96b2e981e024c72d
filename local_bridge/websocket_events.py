"""``broadcast_<event>`` functions: one per event of PROTOCOL.md's catalog.

Each validates its fields (a missing or mistyped value raises
:class:`~local_bridge.catalog.EventValidationError` and nothing is published) and publishes the
event on its channel through an application's bus. Inside a Flask application context the
current app's bus is used; elsewhere (a background thread), the bus of the application named
with :func:`bind` (``local-bridge serve`` binds the application it serves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_app_context

from . import catalog
from .publisher import Published
from .state import EXTENSION_KEY, state_of

if TYPE_CHECKING:
    from .bus.facade import Bus

_bound: Bus | None = None


def bind(app: Flask | None) -> None:
    """Publish through ``app``'s bus when no application context is active (None: nowhere)."""
    global _bound
    _bound = state_of(app).bus if app is not None else None


def current_bus() -> Bus:
    """The bus of the current application context, else of the bound application."""
    if has_app_context() and EXTENSION_KEY in current_app.extensions:
        return state_of(current_app).bus
    if _bound is None:
        raise RuntimeError(
            "outside an application context: call local_bridge.websocket_events.bind(app) first"
        )
    return _bound


def publish(type_: str, *, channel: str | None = "", **fields: Any) -> Published:
    """Publish a catalog event with ``fields`` on its channel (or ``channel``)."""
    return current_bus().publish(type_, fields, channel=channel)


# ------------------------------------------------------------------ jobs


def broadcast_job_created(job_id, photo_id=None, priority=50, kind="analysis") -> Published:
    return publish("job_created", job_id=job_id, photo_id=photo_id, priority=priority, kind=kind)


def broadcast_job_queued(
    job_id, position, estimated_start_seconds=None, position_update: bool = False
) -> Published:
    """A job entered the queue (on ``jobs``), or, with ``position_update``, its position moved
    (on its own sub-channel ``jobs:<id>`` only)."""
    channel = f"jobs:{job_id}" if position_update else ""
    return publish(
        "job_queued",
        channel=channel,
        job_id=job_id,
        position=position,
        estimated_start_seconds=estimated_start_seconds,
    )


def broadcast_job_started(job_id, photo_id=None, worker=None) -> Published:
    return publish("job_started", job_id=job_id, photo_id=photo_id, worker=worker)


def broadcast_job_progress(job_id, stage, progress, message=None, counters=None) -> Published:
    return publish(
        "job_progress",
        job_id=job_id,
        stage=stage,
        progress=progress,
        message=message,
        counters=counters,
    )


def broadcast_job_completed(
    job_id, photo_id=None, result=None, result_url=None, duration_seconds=None
) -> Published:
    return publish(
        "job_completed",
        job_id=job_id,
        photo_id=photo_id,
        result=result,
        result_url=result_url,
        duration_seconds=duration_seconds,
    )


def broadcast_job_failed(
    job_id, photo_id=None, error_message="", error_details=None, retryable=False, stage=None
) -> Published:
    return publish(
        "job_failed",
        job_id=job_id,
        photo_id=photo_id,
        error_message=error_message,
        error_details=error_details,
        retryable=retryable,
        stage=stage,
    )


def broadcast_job_cancelled(job_id, reason=None) -> Published:
    return publish("job_cancelled", job_id=job_id, reason=reason)


# ------------------------------------------------------------------ photos


def broadcast_photo_imported(
    photo_id, session_id, file_name, file_path=None, source=None
) -> Published:
    return publish(
        "photo_imported",
        photo_id=photo_id,
        session_id=session_id,
        file_name=file_name,
        file_path=file_path,
        source=source,
    )


def broadcast_photo_analyzed(
    photo_id, ai_score, analysis_results=None, session_id=None
) -> Published:
    return publish(
        "photo_analyzed",
        photo_id=photo_id,
        session_id=session_id,
        ai_score=ai_score,
        analysis_results=analysis_results,
    )


def broadcast_photo_selected(photo_id, context_tag, selected_preset, session_id=None) -> Published:
    return publish(
        "photo_selected",
        photo_id=photo_id,
        session_id=session_id,
        context_tag=context_tag,
        selected_preset=selected_preset,
    )


def broadcast_photo_approved(photo_id, session_id=None) -> Published:
    return publish("photo_approved", photo_id=photo_id, session_id=session_id)


def broadcast_photo_rejected(photo_id, session_id=None, reason=None) -> Published:
    return publish("photo_rejected", photo_id=photo_id, session_id=session_id, reason=reason)


# ------------------------------------------------------------------ sessions


def broadcast_session_created(session_id, session_name, import_folder=None) -> Published:
    return publish(
        "session_created",
        session_id=session_id,
        session_name=session_name,
        import_folder=import_folder,
    )


def broadcast_session_updated(
    session_id, total_photos, processed_photos, status, progress_percent=None
) -> Published:
    """``progress_percent`` defaults to processed/total (0 for an empty session)."""
    if (
        progress_percent is None
        and isinstance(total_photos, int)
        and isinstance(processed_photos, int)
    ):
        progress_percent = catalog.progress_percent(processed_photos, total_photos)
    return publish(
        "session_updated",
        session_id=session_id,
        total_photos=total_photos,
        processed_photos=processed_photos,
        progress_percent=progress_percent,
        status=status,
    )


def broadcast_session_completed(
    session_id, session_name, total_photos, approved_photos
) -> Published:
    return publish(
        "session_completed",
        session_id=session_id,
        session_name=session_name,
        total_photos=total_photos,
        approved_photos=approved_photos,
    )


# ------------------------------------------------------------------ system


def broadcast_system_status(status, details=None) -> Published:
    return publish("system_status", status=status, details=details)


def broadcast_resource_warning(resource_type, current_value, threshold, message=None) -> Published:
    return publish(
        "resource_warning",
        resource_type=resource_type,
        current_value=current_value,
        threshold=threshold,
        message=message,
    )


def broadcast_error_occurred(
    error_type, error_message, error_details=None, job_id=None, photo_id=None
) -> Published:
    return publish(
        "error_occurred",
        error_type=error_type,
        error_message=error_message,
        error_details=error_details,
        job_id=job_id,
        photo_id=photo_id,
    )


# ------------------------------------------------------------------ queue and approval


def broadcast_queue_status(
    pending_count, processing_count, completed_count, failed_count, cancelled_count=0
) -> Published:
    return publish(
        "queue_status",
        pending_count=pending_count,
        processing_count=processing_count,
        completed_count=completed_count,
        failed_count=failed_count,
        cancelled_count=cancelled_count,
    )


def broadcast_priority_changed(job_id, old_priority, new_priority, reason=None) -> Published:
    return publish(
        "priority_changed",
        job_id=job_id,
        old_priority=old_priority,
        new_priority=new_priority,
        reason=reason,
    )


def broadcast_approval_queue_updated(queue_count, session_id=None) -> Published:
    return publish("approval_queue_updated", queue_count=queue_count, session_id=session_id)


# ------------------------------------------------------------------ exports


def broadcast_export_started(
    export_id, photo_id, preset_name, destination, session_id=None
) -> Published:
    return publish(
        "export_started",
        export_id=export_id,
        photo_id=photo_id,
        session_id=session_id,
        preset_name=preset_name,
        destination=destination,
    )


def broadcast_export_completed(
    export_id, photo_id, preset_name, output_path, file_size, session_id=None
) -> Published:
    return publish(
        "export_completed",
        export_id=export_id,
        photo_id=photo_id,
        session_id=session_id,
        preset_name=preset_name,
        output_path=output_path,
        file_size=file_size,
    )


def broadcast_export_failed(
    export_id, photo_id, preset_name, error_message, session_id=None
) -> Published:
    return publish(
        "export_failed",
        export_id=export_id,
        photo_id=photo_id,
        session_id=session_id,
        preset_name=preset_name,
        error_message=error_message,
    )
