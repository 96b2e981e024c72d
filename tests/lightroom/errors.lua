--[[ How failures surface: one JSON line per case, {case, kind, status, code, message, fields,
text}. LB_DOWN_URL names a port where nothing listens. With the argument "uncaught", a 404 is
left to end the script (exit 1, the readable line on stderr). ]]

local H = require "harness"

H.main(function()
    local client = H.client()
    if arg[1] == "uncaught" then
        client:get_photo("no-such-photo")
        return
    end
    local function report(case, fn)
        local err = H.failure(fn)
        local info = err and H.error_info(err) or { none = true }
        info.case = case
        H.emit(info)
    end

    report("not_found", function() client:get_photo("no-such-photo") end)
    report("unknown_job", function() client:complete_job("nope/../x", {}) end)
    local session = client:create_session("errors", "/in")
    report("missing_fields", function() client:import_photo(session.id, { source = "lightroom" }) end)
    local photo = client:import_photo(session.id, { file_name = "a.dng", file_path = "/in/a.dng" })
    report("bad_value", function() client:record_analysis(photo.id, "very good", {}) end)
    report("conflict", function() client:approve(photo.id) end) -- not analyzed: not pending

    local down = H.client { base_url = os.getenv("LB_DOWN_URL") }
    report("server_down", function() down:create_session("x", "/in") end)

    -- A follower against a server that is down: it backs off, and `run` ends after
    -- max_iterations instead of spinning.
    local follower_client, http = H.client { base_url = os.getenv("LB_DOWN_URL") }
    local retries = {}
    local follower = follower_client:follower {
        wait = 5,
        max_iterations = 4,
        backoff = { initial = 0.05, factor = 2, max = 0.15, jitter = 0 },
        on_error = function(err, delay)
            retries[#retries + 1] = { kind = err.kind, delay = delay }
        end,
    }
    follower:run()
    H.emit { case = "follower_down", iterations = follower.iterations, requests = http.requests,
        sleeps = http.sleeps, retries = retries }

    -- A follower whose request the server refuses for good (a bad channel): raised, not retried.
    local refused, refused_http = H.client()
    local bad = refused:follower { channels = { "no-such-channel" }, max_iterations = 5 }
    local err = H.failure(function() bad:run() end)
    local info = H.error_info(err)
    info.case = "follower_refused"
    info.requests = refused_http.requests
    H.emit(info)
end)
