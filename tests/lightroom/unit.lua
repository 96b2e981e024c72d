--[[ The follower's and the adapters' edge cases, without a server: a scripted adapter answers
each request from a list. Prints {"ok": true, "checks": N}, or fails with a readable error. ]]

local H = require "harness"
local json = require "dkjson"
local LocalBridge = require "LocalBridge"

local checks = 0
local function check(condition, what)
    checks = checks + 1
    if not condition then
        error("check failed: " .. what, 2)
    end
end

-- An adapter answering from `script`: each entry {status, body-table} or {nil, message}.
local function scripted(script)
    local adapter = { requests = {}, slept = {} }
    function adapter.request(req)
        adapter.requests[#adapter.requests + 1] = req
        local answer = table.remove(script, 1)
        assert(answer, "unexpected request " .. req.method .. " " .. req.url)
        if answer[1] == nil then
            return nil, answer[2]
        end
        return answer[1], answer[2] and json.encode(answer[2]) or ""
    end
    function adapter.sleep(seconds)
        adapter.slept[#adapter.slept + 1] = seconds
    end
    local now = 0
    function adapter.clock()
        now = now + 0.01 -- every answer comes "at once"
        return now
    end
    return adapter
end

local function page(items, next_since, epoch, recovered)
    return { items = items, next_since = next_since, seq = next_since, epoch = epoch or "e1",
        recovered = recovered ~= false }
end

local function ev(seq, kind)
    return { type = kind or "job_cancelled", seq = seq, channel = "jobs", job_id = "j" .. seq }
end

local function url_of(http, i)
    return http.requests[i] and http.requests[i].url or ""
end

H.main(function()
    -- A reload that fails (the server went away again) is retried: the position moves only
    -- once on_resync succeeded.
    local http = scripted {
        { 200, page({ ev(4) }, 7, "e2", false) },
        { nil, "connection refused" }, -- the reload
        { 200, page({}, 7, "e2", false) },
        { 200, { seq = 7 } }, -- the reload again
        { 200, page({ ev(8) }, 8, "e2") },
    }
    local client = LocalBridge.new { http = http, json = json }
    local got, infos = {}, {}
    local f = client:follower {
        since = 5, epoch = "e1", wait = 10, backoff = { initial = 0.25, jitter = 0 },
        on_resync = function(info)
            infos[#infos + 1] = info
            client:status()
        end,
    }
    f:on("*", function(event) got[#got + 1] = event.seq end)
    for _ = 1, 3 do
        f:step()
    end
    check(#infos == 2 and f.resyncs == 1, "on_resync retried, counted once")
    check(infos[1].since == 5 and infos[1].reason == "epoch" and infos[1].skipped == 1,
        "resync info")
    check(#got == 1 and got[1] == 8, "nothing of the lost page dispatched, then the new event")
    check(#http.slept == 1 and http.slept[1] == 0.25, "one backoff wait")
    check(url_of(http, 3):find("since=5", 1, true) and url_of(http, 3):find("epoch=e1", 1, true),
        "the retried poll asks from the old position")
    check(url_of(http, 5):find("since=7", 1, true) and url_of(http, 5):find("epoch=e2", 1, true),
        "then from next_since in the new epoch")
    check(url_of(http, 5):find("client_type=lightroom", 1, true), "polls act as lightroom")
    check(url_of(http, 5):find("wait=10", 1, true), "long polling")

    -- A failing handler ends run() and leaves `since` before its event; with
    -- on_handler_error it is reported and following goes on.
    http = scripted { { 200, page({ ev(11), ev(12, "boom"), ev(13) }, 13) } }
    client = LocalBridge.new { http = http, json = json }
    f = client:follower { since = 10, epoch = "e1", max_iterations = 1 }
    f:on("boom", function() error("handler broke") end)
    local ok, err = pcall(f.run, f)
    check(not ok and tostring(err):find("handler broke", 1, true), "a handler error ends run")
    check(f.since == 11, "since stays before the failing event")

    http = scripted { { 200, page({ ev(11), ev(12, "boom"), ev(13) }, 13) } }
    client = LocalBridge.new { http = http, json = json }
    local reported = {}
    f = client:follower {
        since = 10, epoch = "e1", max_iterations = 1,
        on_handler_error = function(e, event) reported[#reported + 1] = event.seq end,
    }
    f:on("boom", function() error("handler broke") end)
    f:run()
    check(#reported == 1 and reported[1] == 12 and f.since == 13, "on_handler_error goes on")

    -- A held poll answered empty at once (a server shutting down) is followed by a pause;
    -- a 503 is waited out; a 401 is raised at once.
    http = scripted {
        { 200, page({}, 20) },
        { 503, { error = { code = "unavailable", message = "database down" } } },
        { 401, { error = { code = "unauthorized", message = "token expired" } } },
    }
    client = LocalBridge.new { http = http, json = json, token = "secret-token" }
    local errors = {}
    f = client:follower {
        since = 20, epoch = "e1", wait = 20, backoff = { initial = 2, jitter = 0 },
        on_error = function(e, delay) errors[#errors + 1] = { e, delay } end,
    }
    f:step()
    check(#http.slept == 1 and http.slept[1] == 0.5, "a pause after an early empty answer")
    f:step()
    check(#errors == 1 and errors[1][1].status == 503 and errors[1][2] == 2, "503 waited out")
    check(#http.slept == 5, "a long wait is slept in slices (stop() stays prompt)")
    ok, err = pcall(f.step, f)
    check(not ok and err.status == 401 and err.code == "unauthorized", "401 raised")
    check(not tostring(err):find("secret-token", 1, true), "the token never shows")
    check(http.requests[1].headers.Authorization == "Bearer secret-token", "bearer header")

    -- stop() during a backoff ends it at the next slice, and run() returns.
    http = scripted { { nil, "connection refused" } }
    client = LocalBridge.new { http = http, json = json }
    f = client:follower { since = 1, backoff = { initial = 30, jitter = 0 } }
    local slices = 0
    client.sleep = function()
        slices = slices + 1
        if slices == 2 then
            f:stop()
        end
    end
    f:run()
    check(slices == 2 and f.iterations == 1, "stop during a backoff")

    -- Bodies: an action without fields sends {}, empty nested tables stay objects.
    http = scripted { { 200, { id = "1" } }, { 200, { seq = 1, recipients = 0 } } }
    client = LocalBridge.new { http = http, json = json }
    client:approve("a b/c")
    check(http.requests[1].body == "{}", "an empty body is {}")
    check(http.requests[1].url:find("/api/approval/a%20b%2Fc/approve", 1, true), "ids escaped")
    client:publish("x.y", {})
    check(http.requests[2].body:find('"data":{}', 1, true), "empty data is an object")

    -- An answer that is not JSON, and an error without the envelope.
    http = scripted { { 200, nil }, { 502, nil } }
    http.request = (function(inner)
        return function(req)
            local status = inner(req)
            return status, status == 200 and "<html>" or "Bad Gateway"
        end
    end)(http.request)
    client = LocalBridge.new { http = http, json = json }
    ok, err = pcall(client.get_job, client, "1")
    check(not ok and err.kind == "response" and tostring(err):find("not JSON", 1, true),
        "a body that is not JSON")
    ok, err = pcall(client.get_job, client, "1")
    check(not ok and err.status == 502 and tostring(err):find("HTTP 502", 1, true),
        "an error without the envelope")

    -- The LrHttp adapter maps LrHttp's documented shapes.
    local calls = {}
    local lrhttp = require("LocalBridgeLrHttp").new {
        LrHttp = {
            get = function(url, headers, timeout)
                calls[#calls + 1] = { "get", url, headers, timeout }
                return nil, { error = { errorCode = "cannotConnectToHost", name = "Could not connect" } }
            end,
            post = function(url, body, headers, method, timeout)
                calls[#calls + 1] = { "post", url, body, headers, method, timeout }
                return '{"ok":true}', { status = 201, { field = "Content-Type", value = "application/json" } }
            end,
        },
        LrTasks = { sleep = function() end, pcall = pcall },
        LrDate = { currentTime = function() return 1 end },
    }
    local status, why = lrhttp.request { method = "GET", url = "http://h/x", headers = { A = "1" }, timeout = 7 }
    check(status == nil and why == "Could not connect", "an LrHttp error is a connection failure")
    check(calls[1][3][1].field == "A" and calls[1][3][1].value == "1" and calls[1][4] == 7,
        "headers as {field, value}, timeout passed")
    local body
    status, body = lrhttp.request { method = "PATCH", url = "http://h/y", body = "{}", timeout = 3 }
    check(status == 201 and body == '{"ok":true}', "status and body")
    check(calls[2][3] == "{}" and calls[2][5] == "PATCH" and calls[2][6] == 3, "post with method")
    check(lrhttp.pcall == pcall and lrhttp.clock() == 1, "LrTasks.pcall and LrDate handed on")

    H.emit { ok = true, checks = checks }
end)
