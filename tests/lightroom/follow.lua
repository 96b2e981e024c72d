--[[ Follow the bus and report every event, resync and retry as a JSON line, until an event of
type "test.stop" arrives (or LB_MAX_ITERATIONS polls). First line: {"event": "ready", ...} once
the follower knows where the bus stands; last: {"event": "done", requests, ...}.

Environment besides the harness's: LB_CHANNELS (comma-separated), LB_WAIT (seconds),
LB_BACKOFF_INITIAL, LB_BACKOFF_MAX, LB_MAX_ITERATIONS. ]]

local H = require "harness"

H.main(function()
    local client, http = H.client()
    local follower = client:follower {
        channels = H.list("LB_CHANNELS"),
        wait = H.number("LB_WAIT", 20),
        backoff = {
            initial = H.number("LB_BACKOFF_INITIAL", 0.1),
            max = H.number("LB_BACKOFF_MAX", 1),
            jitter = 0,
        },
        max_iterations = H.number("LB_MAX_ITERATIONS", 200),
        on_resync = function(info)
            -- what a plugin does here: reload its state over REST
            local status = client:status()
            H.emit {
                event = "resync",
                reason = info.reason,
                since = info.since,
                next_since = info.next_since,
                epoch_changed = info.epoch ~= info.new_epoch,
                skipped = info.skipped,
                reloaded_seq = status.seq,
            }
        end,
        on_error = function(err, delay)
            H.emit { event = "retry", kind = err.kind, delay = delay, text = tostring(err) }
        end,
    }
    follower:on("*", function(event)
        H.emit { event = "received", type = event.type, seq = event.seq, channel = event.channel,
            job_id = event.job_id, photo_id = event.photo_id }
    end)
    follower:on("test.stop", function(_, f)
        f:stop()
    end)
    follower:step() -- where the bus stands now
    H.emit { event = "ready", since = follower.since, epoch = follower.epoch }
    local since, epoch = follower:run()
    H.emit { event = "done", since = since, epoch = epoch, requests = http.requests,
        iterations = follower.iterations, resyncs = follower.resyncs,
        received = follower.received, slept = http.slept }
end)
