--[[ Drive the workflow over REST as a Lightroom plugin would: a session, two photos imported
from Lightroom, analysis, a selection, an approval and a rejection, jobs (one claimed, run with
progress and completed; one failed; one cancelled while queued), an export. Then read back,
by polling, every event published meanwhile. Lines: {"step": ..., ...} for each call, then
{"events": [{type, seq, ...}, ...]}. ]]

local H = require "harness"

H.main(function()
    local client = H.client()
    local start = client:poll { since = 0, limit = 1 }.seq -- the bus before the workflow

    local session = client:create_session("Lightroom import", "/Pictures/shoot")
    H.emit { step = "session", id = session.id, status = session.status }
    local a = client:import_photo(session.id, { file_name = "a.dng", file_path = "/Pictures/shoot/a.dng" })
    local b = client:import_photo(session.id, { file_name = "b.dng", file_path = "/Pictures/shoot/b.dng" })
    H.emit { step = "import", a = a.id, b = b.id, source = a.source }

    local analyzed = client:record_analysis(a.id, 0.91, { sharpness = 0.8, faces = 2 })
    client:record_analysis(b.id, 0.2, {})
    H.emit { step = "analysis", approval_status = analyzed.approval_status }
    local selected = client:record_selection(a.id, "portrait", "Warm Skin")
    H.emit { step = "selection", preset = selected.selected_preset }
    local queue = client:approval_queue(session.id)
    H.emit { step = "approval_queue", count = #queue.items }
    local approved = client:approve(a.id)
    local rejected = client:reject(b.id, "out of focus")
    H.emit { step = "decisions", a = approved.approval_status, b = rejected.approval_status }

    local job = client:create_job { kind = "render", photo_id = a.id, priority = 70,
        params = { preset = "Warm Skin" } }
    local claimed = client:claim_job("lightroom-worker", { "render" })
    H.emit { step = "claim", created = job.id, claimed = claimed.id, status = claimed.status }
    local reported = client:report_progress(claimed.id, { progress = 40, stage = "rendering",
        message = "developing", counters = { files_done = 1 } })
    H.emit { step = "progress", progress = reported.progress, cancel = reported.cancel_requested }
    local done = client:complete_job(claimed.id, { result = { pixels = 24 },
        result_url = "file:///out/a.jpg" })
    H.emit { step = "complete", status = done.status }

    local failing = client:create_job { kind = "upload", photo_id = a.id }
    client:claim_job("lightroom-worker", { "upload" })
    local failed = client:fail_job(failing.id, { error_message = "disk full", retryable = true })
    local queued = client:create_job { kind = "render", photo_id = b.id, priority = 10 }
    local cancelled = client:cancel_job(queued.id, "not needed")
    H.emit { step = "jobs", failed = failed.status, cancelled = cancelled.status,
        none_left = client:claim_job("lightroom-worker", { "nothing-of-this-kind" }) == nil }

    local export = client:start_export(a.id, "Web JPEG", "/out")
    local exported = client:complete_export(export.id, "/out/a.jpg", 123456)
    local closed = client:update_session(session.id, { status = "completed" })
    H.emit { step = "export", status = exported.status, session = closed.status }

    -- every event since `start`, page by page, as a follower sees them
    local events, since = {}, start
    repeat
        local page = client:poll { since = since, limit = 20 }
        assert(page.recovered, "history lost")
        for _, event in ipairs(page.items) do
            events[#events + 1] = { type = event.type, seq = event.seq, source = event.source,
                progress = event.progress, channel = event.channel }
        end
        since = page.next_since
    until since >= page.seq
    H.emit { events = events }
end)
