--[[
LocalBridge.lua: a local_bridge client for Lua 5.1 (Lightroom Classic plugins, or plain Lua).

It follows the event bus by long polling `GET /api/events` (the Lightroom SDK has no
WebSocket), publishes events, and drives the photo workflow over the REST API.

It touches the network only through an HTTP adapter (a table with `request`), so the same code
runs on Lightroom's LrHttp (LocalBridgeLrHttp.lua) and on LuaSocket (LocalBridgeLuaSocket.lua).
JSON goes through an injected codec (a table with `encode` and `decode`); dkjson is used when
none is given.

    local LocalBridge = require "LocalBridge"
    local client = LocalBridge.new {
        base_url = "http://127.0.0.1:5100",
        http = require("LocalBridgeLuaSocket").new(),   -- or LocalBridgeLrHttp in Lightroom
        token = nil,                                    -- a bearer token when auth is on
    }

Every failed call raises an error object (see LocalBridge.is_error): a table with `kind`
("http", "connection" or "response"), `status`, `code`, `message`, `fields`, `method`, `path`,
whose tostring() is one readable line.

Written for Lua 5.1 only (no goto, no integer division, no `//`), without LuaJIT extensions.
]]

local LocalBridge = { VERSION = "1.0.0", PROTOCOL = 1 }

local DEFAULT_BASE_URL = "http://127.0.0.1:5100"
local DEFAULT_TIMEOUT = 10 -- seconds for an ordinary REST call
local MAX_WAIT = 30 -- the server holds a long poll at most this long (API.md)
local WAIT_MARGIN = 10 -- a long poll's socket timeout is its `wait` plus this

-- ---------------------------------------------------------------------------- errors

local Error = {}
Error.__index = Error
Error.__tostring = function(err)
    return err.text
end

local function sorted_keys(t)
    local keys = {}
    for key in pairs(t) do
        keys[#keys + 1] = tostring(key)
    end
    table.sort(keys)
    return keys
end

-- "ai_score: Not a valid number.; file_name: Missing data for required field."
local function describe_fields(fields)
    local parts = {}
    for _, name in ipairs(sorted_keys(fields)) do
        local why = fields[name]
        if type(why) == "table" then
            local reasons = {}
            for _, reason in ipairs(why) do
                reasons[#reasons + 1] = tostring(reason)
            end
            why = table.concat(reasons, " ")
        end
        parts[#parts + 1] = name .. ": " .. tostring(why)
    end
    return table.concat(parts, "; ")
end

local function new_error(err)
    local where = (err.method or "?") .. " " .. (err.path or "?")
    local text
    if err.kind == "connection" then
        text = string.format("local_bridge: %s: cannot reach the server at %s (%s)",
            where, err.base_url or "?", err.message)
    elseif err.kind == "http" then
        text = string.format("local_bridge: %s: HTTP %d %s: %s",
            where, err.status, err.code or "error", err.message)
        if err.fields and next(err.fields) ~= nil then
            text = text .. " [" .. describe_fields(err.fields) .. "]"
        end
    else
        text = string.format("local_bridge: %s: %s", where, err.message)
    end
    err.text = text
    return setmetatable(err, Error)
end

--- Whether `value` is an error raised by this module.
function LocalBridge.is_error(value)
    return getmetatable(value) == Error
end

-- ---------------------------------------------------------------------------- helpers

local OBJECT = { __jsontype = "object" } -- dkjson's marker; other codecs ignore it
local ARRAY = { __jsontype = "array" }

--- Mark `t` (a new table when nil) to be encoded as a JSON object even when empty.
function LocalBridge.object(t)
    t = t or {}
    if getmetatable(t) == nil then
        setmetatable(t, OBJECT)
    end
    return t
end

--- Mark `t` to be encoded as a JSON array even when empty.
function LocalBridge.array(t)
    t = t or {}
    if getmetatable(t) == nil then
        setmetatable(t, ARRAY)
    end
    return t
end

local function escape(value)
    return (string.gsub(tostring(value), "[^A-Za-z0-9%-_%.~]", function(c)
        return string.format("%%%02X", string.byte(c))
    end))
end
LocalBridge.escape = escape

-- Integers as plain digits: tostring(1e15) would give "1e+15", which the server refuses.
local function digits(n)
    return string.format("%.0f", n)
end

local function query_string(params)
    local parts = {}
    for _, name in ipairs(sorted_keys(params)) do
        local value = params[name]
        if type(value) == "table" then
            value = table.concat(value, ",")
        elseif type(value) == "number" and value == math.floor(value) then
            value = digits(value)
        end
        parts[#parts + 1] = escape(name) .. "=" .. escape(value)
    end
    if #parts == 0 then
        return ""
    end
    return "?" .. table.concat(parts, "&")
end

local function shallow_copy(t)
    local copy = {}
    for key, value in pairs(t or {}) do
        copy[key] = value
    end
    return copy
end

-- The codec: anything with encode(value) -> string and decode(string) -> value.
local function default_codec()
    local ok, dkjson = pcall(require, "dkjson")
    if not ok then
        error("local_bridge: no JSON codec given and dkjson is not available; "
            .. "pass json = <a table with encode and decode>", 2)
    end
    return dkjson
end

-- ---------------------------------------------------------------------------- the client

local Client = {}
Client.__index = Client

--[[ Create a client. Options:
  base_url  "http://127.0.0.1:5100" (default)
  http      the HTTP adapter (required): request{method, url, headers, body, timeout}
            -> status, body, headers | nil, message
  json      the JSON codec (default: dkjson)
  token     a bearer token (auth on), or nil
  timeout   seconds for a REST call (default 10)
  sleep     function(seconds) for backoff (default: the adapter's)
  clock     function() -> seconds, for pacing (default: the adapter's, may be nil)
  pcall     a pcall through which HTTP may yield (default: the adapter's, else pcall);
            in Lightroom LrTasks.pcall, since a plain pcall cannot span LrHttp's yields
]]
function LocalBridge.new(options)
    options = options or {}
    local http = options.http
    if type(http) ~= "table" or type(http.request) ~= "function" then
        error("local_bridge: `http` must be an adapter with a request function", 2)
    end
    local self = setmetatable({}, Client)
    self.base_url = string.gsub(options.base_url or DEFAULT_BASE_URL, "/+$", "")
    self.http = http
    self.json = options.json or default_codec()
    self.token = options.token
    self.timeout = options.timeout or DEFAULT_TIMEOUT
    self.sleep = options.sleep or http.sleep
    self.clock = options.clock or http.clock
    self.pcall = options.pcall or http.pcall or pcall
    return self
end

--- Use another bearer token from now on (nil: none).
function Client:set_token(token)
    self.token = token
end

function Client:_encode(body)
    if body == nil or (type(body) == "table" and next(body) == nil) then
        return "{}" -- the server wants a JSON object, even for an action without fields
    end
    local ok, text = pcall(self.json.encode, body)
    if not ok or type(text) ~= "string" then
        error(new_error { kind = "response", message = "cannot encode the request body: "
            .. tostring(text) }, 3)
    end
    return text
end

function Client:_decode(text)
    local ok, value, _, why = pcall(self.json.decode, text)
    if not ok then
        return nil, tostring(value)
    end
    if value == nil then
        return nil, tostring(why or "not JSON")
    end
    return value
end

--[[ One REST call: `method` and `path` ("/api/..."), an optional body table, optional query
parameters and options {timeout}. Returns the decoded body (nil for 204) and the status;
raises an error object otherwise. ]]
function Client:request(method, path, body, query, options)
    options = options or {}
    local headers = { Accept = "application/json" }
    local payload
    if method ~= "GET" then
        payload = self:_encode(body)
        headers["Content-Type"] = "application/json"
    end
    if self.token then
        headers["Authorization"] = "Bearer " .. self.token
    end
    local url = self.base_url .. path .. query_string(query or {})
    local status, text = self.http.request {
        method = method,
        url = url,
        headers = headers,
        body = payload,
        timeout = options.timeout or self.timeout,
    }
    if status == nil then
        error(new_error { kind = "connection", method = method, path = path,
            base_url = self.base_url, message = tostring(text or "no answer") }, 0)
    end
    if status == 204 or text == nil or text == "" then
        if status >= 200 and status < 300 then
            return nil, status
        end
    end
    local decoded, why = self:_decode(text or "")
    if status >= 200 and status < 300 then
        if decoded == nil then
            error(new_error { kind = "response", method = method, path = path, status = status,
                message = "the answer is not JSON (" .. why .. ")" }, 0)
        end
        return decoded, status
    end
    -- The server's error envelope: {"error": {"code", "message", "fields"}}.
    local envelope = type(decoded) == "table" and type(decoded.error) == "table" and decoded.error
    error(new_error {
        kind = "http",
        method = method,
        path = path,
        status = status,
        code = envelope and envelope.code or nil,
        message = envelope and tostring(envelope.message) or ("HTTP status " .. status),
        fields = envelope and type(envelope.fields) == "table" and envelope.fields or nil,
    }, 0)
end

function Client:get(path, query)
    return (self:request("GET", path, nil, query))
end

function Client:post(path, body)
    return (self:request("POST", path, body))
end

function Client:patch(path, body)
    return (self:request("PATCH", path, body))
end

-- ---------------------------------------------------------------------------- the bus

--[[ One poll of GET /api/events: the page as the server answers it
({items, next_since, recovered, seq, epoch}). `options`: since, epoch, channels (a list),
limit, wait (seconds, 0-30), client_type. ]]
function Client:poll(options)
    options = options or {}
    local wait = options.wait or 0
    if wait > MAX_WAIT then
        wait = MAX_WAIT
    end
    local query = {
        since = options.since or 0,
        epoch = options.epoch,
        limit = options.limit,
        client_type = options.client_type,
    }
    if options.channels and #options.channels > 0 then
        query.channels = options.channels
    end
    if wait > 0 then
        query.wait = wait
    end
    local page = self:request("GET", "/api/events", nil, query,
        { timeout = wait + math.max(WAIT_MARGIN, self.timeout) })
    page.items = page.items or {}
    return page
end

--[[ Publish an event (admin): POST /api/websocket/broadcast. `data` holds the event's own
fields; `options`: channel, client_types (a list). Returns {seq, recipients}. ]]
function Client:publish(event_type, data, options)
    options = options or {}
    local body = { type = event_type, data = LocalBridge.object(data or {}) }
    body.channel = options.channel
    body.client_types = options.client_types
    return self:post("/api/websocket/broadcast", body)
end

--- The bus and server state: GET /api/system/status.
function Client:status()
    return self:get("/api/system/status")
end

-- ---------------------------------------------------------------------------- the workflow

local function id_path(prefix, id, suffix)
    return prefix .. escape(id) .. (suffix or "")
end

function Client:create_session(name, import_folder)
    return self:post("/api/sessions", { name = name, import_folder = import_folder })
end

function Client:get_session(session_id)
    return self:get(id_path("/api/sessions/", session_id))
end

function Client:list_sessions(query)
    return self:get("/api/sessions", query)
end

--- `fields`: name and/or status (active, processing, completed, archived).
function Client:update_session(session_id, fields)
    return self:patch(id_path("/api/sessions/", session_id), fields)
end

--- `photo`: file_name, file_path, source (default "lightroom").
function Client:import_photo(session_id, photo)
    local body = shallow_copy(photo)
    if body.source == nil then
        body.source = "lightroom"
    end
    return self:post(id_path("/api/sessions/", session_id, "/photos"), body)
end

function Client:get_photo(photo_id)
    return self:get(id_path("/api/photos/", photo_id))
end

function Client:list_session_photos(session_id, query)
    return self:get(id_path("/api/sessions/", session_id, "/photos"), query)
end

function Client:record_analysis(photo_id, ai_score, analysis_results)
    return self:post(id_path("/api/photos/", photo_id, "/analysis"), {
        ai_score = ai_score,
        analysis_results = LocalBridge.object(analysis_results or {}),
    })
end

function Client:record_selection(photo_id, context_tag, selected_preset)
    return self:post(id_path("/api/photos/", photo_id, "/selection"),
        { context_tag = context_tag, selected_preset = selected_preset })
end

--- The approval queue, optionally of one session.
function Client:approval_queue(session_id)
    return self:get("/api/approval", { session_id = session_id })
end

function Client:approve(photo_id)
    return self:post(id_path("/api/approval/", photo_id, "/approve"))
end

function Client:reject(photo_id, reason)
    return self:post(id_path("/api/approval/", photo_id, "/reject"), { reason = reason })
end

--- `job`: kind, photo_id, priority (0-100), params.
function Client:create_job(job)
    return self:post("/api/jobs", job)
end

function Client:get_job(job_id)
    return self:get(id_path("/api/jobs/", job_id))
end

function Client:list_jobs(status)
    return self:get("/api/jobs", { status = status })
end

--- The next queued job for `worker` (optionally of `kinds`, a list), or nil when none.
function Client:claim_job(worker, kinds)
    return self:post("/api/jobs/claim", { worker = worker, kinds = kinds })
end

--- `report`: progress (0-100), stage, message, counters. The answer is the job: stop when
--- its `cancel_requested` is true (then call cancel_job).
function Client:report_progress(job_id, report)
    return self:post(id_path("/api/jobs/", job_id, "/progress"), report)
end

--- `outcome`: result, result_url.
function Client:complete_job(job_id, outcome)
    return self:post(id_path("/api/jobs/", job_id, "/complete"), outcome)
end

--- `failure`: error_message, error_details, retryable.
function Client:fail_job(job_id, failure)
    return self:post(id_path("/api/jobs/", job_id, "/fail"), failure)
end

function Client:cancel_job(job_id, reason)
    return self:post(id_path("/api/jobs/", job_id, "/cancel"), { reason = reason })
end

function Client:set_priority(job_id, priority, reason)
    return self:patch(id_path("/api/jobs/", job_id, "/priority"),
        { priority = priority, reason = reason })
end

function Client:start_export(photo_id, preset_name, destination)
    return self:post("/api/exports",
        { photo_id = photo_id, preset_name = preset_name, destination = destination })
end

function Client:get_export(export_id)
    return self:get(id_path("/api/exports/", export_id))
end

function Client:complete_export(export_id, output_path, file_size)
    return self:post(id_path("/api/exports/", export_id, "/complete"),
        { output_path = output_path, file_size = file_size })
end

function Client:fail_export(export_id, error_message)
    return self:post(id_path("/api/exports/", export_id, "/fail"),
        { error_message = error_message })
end

-- ---------------------------------------------------------------------------- the follower

local Follower = {}
Follower.__index = Follower

-- Failures worth waiting out: the server is down or restarting, or asks to slow down.
local function retryable(err)
    if not LocalBridge.is_error(err) then
        return false
    end
    if err.kind == "connection" then
        return true
    end
    return err.kind == "http" and (err.status == 429 or err.status >= 500)
end

--[[ A follower of the bus. Options:
  channels        a list of channels (default: every main channel)
  client_type     what the polls act as (default "lightroom"; false: none)
  since, epoch    where to resume (saved from an earlier follower's `since` and `epoch`);
                  without `since` it starts at the bus's current seq
  wait            seconds a poll may be held (default 25, at most 30)
  limit           events per poll (server default when nil)
  handlers        {event_type = function(event, follower)}; "*" receives every event
  on_resync       function(info, follower): the server no longer holds every event since
                  the last one seen (a restart, or history expired): reload state over REST.
                  info = {reason, since, epoch, next_since, new_epoch, skipped}
  on_error        function(err, delay, follower), before waiting `delay` seconds on a
                  connection failure (or 5xx/429)
  on_handler_error function(err, event, follower): when set, a failing handler is reported
                  here and following goes on; otherwise the error ends `run`
  backoff         {initial = 0.5, max = 30, factor = 2, jitter = 0.1}
  max_iterations  `run` returns after this many polls
  should_stop     function() -> true to end `run` (checked between polls)
]]
function Client:follower(options)
    options = options or {}
    local self_ = setmetatable({}, Follower)
    self_.client = self
    self_.channels = options.channels
    self_.client_type = options.client_type
    if self_.client_type == nil then
        self_.client_type = "lightroom"
    end
    self_.since = options.since
    self_.epoch = options.epoch
    self_.wait = options.wait or 25
    self_.limit = options.limit
    self_.handlers = {}
    for event_type, handler in pairs(options.handlers or {}) do
        self_.handlers[event_type] = handler
    end
    self_.on_resync = options.on_resync
    self_.on_error = options.on_error
    self_.on_handler_error = options.on_handler_error
    local backoff = options.backoff or {}
    self_.backoff = {
        initial = backoff.initial or 0.5,
        max = backoff.max or 30,
        factor = backoff.factor or 2,
        jitter = backoff.jitter or 0.1,
    }
    self_.max_iterations = options.max_iterations
    self_.should_stop = options.should_stop
    self_.iterations = 0 -- polls made (answered or not)
    self_.failures = 0 -- consecutive failed polls
    self_.resyncs = 0
    self_.received = 0
    self_.stopped = false
    return self_
end

--- Call `handler(event, follower)` for events of `event_type` ("*": every event).
function Follower:on(event_type, handler)
    self.handlers[event_type] = handler
    return self
end

--- End `run` at the next check (between polls, or during a backoff wait).
function Follower:stop()
    self.stopped = true
end

function Follower:_should_stop()
    if self.stopped then
        return true
    end
    if self.should_stop and self.should_stop() then
        self.stopped = true
        return true
    end
    return false
end

function Follower:_sleep(seconds)
    local sleep = self.client.sleep
    if not sleep then
        error("local_bridge: no sleep function (give `sleep` to LocalBridge.new)", 0)
    end
    -- in slices, so that stop() ends a long backoff promptly
    while seconds > 0 and not self:_should_stop() do
        local slice = math.min(seconds, 0.5)
        sleep(slice)
        seconds = seconds - slice
    end
end

function Follower:_delay()
    local b = self.backoff
    local delay = math.min(b.max, b.initial * b.factor ^ (self.failures - 1))
    if b.jitter > 0 then
        delay = delay * (1 - b.jitter * math.random())
    end
    return delay
end

function Follower:_dispatch(event)
    local handlers = { self.handlers[event.type], self.handlers["*"] }
    for i = 1, 2 do
        local handler = handlers[i]
        if handler then
            if self.on_handler_error then
                local ok, err = self.client.pcall(handler, event, self)
                if not ok then
                    self.on_handler_error(err, event, self)
                end
            else
                handler(event, self)
            end
        end
    end
end

-- Where the bus stands now: a cheap poll for its seq and epoch, nothing replayed.
function Follower:_position()
    local page = self.client:poll { since = 0, limit = 1, channels = self.channels,
        client_type = self.client_type or nil }
    self.since, self.epoch = page.seq, page.epoch
end

--[[ One step: a poll (held up to `wait` seconds), then its events dispatched in seq order,
or on_resync, or a backoff wait after a connection failure. Returns the number of events
dispatched. Errors that waiting will not cure (401, 403, 422 ...) are raised. ]]
function Follower:step()
    self.iterations = self.iterations + 1
    local clock = self.client.clock
    local started = clock and clock()
    local ok, page = self.client.pcall(function()
        if self.since == nil then
            self:_position()
            return nil
        end
        return self.client:poll { since = self.since, epoch = self.epoch, wait = self.wait,
            limit = self.limit, channels = self.channels, client_type = self.client_type or nil }
    end)
    if not ok then
        if not retryable(page) then
            error(page, 0)
        end
        self.failures = self.failures + 1
        local delay = self:_delay()
        if self.on_error then
            self.on_error(page, delay, self)
        end
        self:_sleep(delay)
        return 0
    end
    self.failures = 0
    if page == nil then
        return 0 -- positioned at the current seq
    end
    if page.recovered == false or (self.epoch ~= nil and page.epoch ~= self.epoch) then
        return self:_resync(page)
    end
    local count = 0
    for _, event in ipairs(page.items) do
        self:_dispatch(event)
        self.since = event.seq -- a failing handler leaves `since` before its event
        count = count + 1
        self.received = self.received + 1
        if self:_should_stop() then
            return count
        end
    end
    self.since, self.epoch = page.next_since, page.epoch
    -- A held poll that comes back empty at once (a server shutting down) must not turn
    -- into a tight loop.
    if count == 0 and started and clock() - started < math.min(1, self.wait / 2) then
        self:_sleep(self.wait > 0 and 0.5 or 1)
    elseif count == 0 and self.wait <= 0 then
        self:_sleep(1)
    end
    return count
end

function Follower:_resync(page)
    local info = {
        reason = (self.epoch ~= nil and page.epoch ~= self.epoch) and "epoch" or "history",
        since = self.since,
        epoch = self.epoch,
        next_since = page.next_since,
        new_epoch = page.epoch,
        skipped = #page.items, -- covered by the reload, not dispatched
    }
    if self.on_resync then
        -- A reload that fails (the server went away again) is retried: the position moves
        -- only once it succeeded, so the next poll asks for a resync again.
        local ok, err = self.client.pcall(self.on_resync, info, self)
        if not ok then
            if not retryable(err) then
                error(err, 0)
            end
            self.failures = self.failures + 1
            local delay = self:_delay()
            if self.on_error then
                self.on_error(err, delay, self)
            end
            self:_sleep(delay)
            return 0
        end
    end
    self.resyncs = self.resyncs + 1
    self.since, self.epoch = page.next_since, page.epoch
    return 0
end

--- Poll until stopped (stop(), should_stop) or `max_iterations` polls; returns the position
--- (since, epoch), to save and resume from later.
function Follower:run()
    while not self:_should_stop() do
        if self.max_iterations and self.iterations >= self.max_iterations then
            break
        end
        self:step()
    end
    return self.since, self.epoch
end

LocalBridge.Client = Client
LocalBridge.Follower = Follower
return LocalBridge
