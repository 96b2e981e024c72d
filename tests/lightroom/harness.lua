--[[ What the Lua test scripts share: a client built from the environment, an HTTP adapter that
counts requests and sleeps, and results written to stdout as one JSON object a line.

Environment: LB_URL (the server), LB_TOKEN (a bearer token, optional), LB_ADAPTER ("luasocket",
the default, or "lrhttp": LocalBridgeLrHttp on an LrHttp stand-in built on LuaSocket). ]]

local json = require "dkjson"
local socket = require "socket"
local LocalBridge = require "LocalBridge"

local H = {}

--- Write `record` as one JSON line, at once (pytest reads it while the script runs).
function H.emit(record)
    io.stdout:write(json.encode(record), "\n")
    io.stdout:flush()
end

--- The adapter named by LB_ADAPTER, wrapped to count requests and the seconds slept.
function H.adapter()
    local inner
    if os.getenv("LB_ADAPTER") == "lrhttp" then
        inner = require("LocalBridgeLrHttp").new {
            LrHttp = require "fake_lrhttp",
            LrTasks = { sleep = socket.sleep, pcall = pcall },
            LrDate = { currentTime = socket.gettime },
        }
    else
        inner = require("LocalBridgeLuaSocket").new()
    end
    local counted = { requests = 0, slept = 0, sleeps = {}, clock = inner.clock,
        pcall = inner.pcall }
    function counted.request(req)
        counted.requests = counted.requests + 1
        return inner.request(req)
    end
    function counted.sleep(seconds)
        counted.slept = counted.slept + seconds
        counted.sleeps[#counted.sleeps + 1] = seconds
        inner.sleep(seconds)
    end
    return counted
end

--- A client for LB_URL (or `options.base_url`) with LB_TOKEN, on H.adapter().
function H.client(options)
    options = options or {}
    local token = os.getenv("LB_TOKEN")
    if token == "" then
        token = nil
    end
    local http = H.adapter()
    local client = LocalBridge.new {
        base_url = options.base_url or os.getenv("LB_URL"),
        http = http,
        json = json,
        token = options.token or token,
        timeout = 5,
    }
    return client, http
end

--- An error object's parts, for comparing in pytest.
function H.error_info(err)
    if not LocalBridge.is_error(err) then
        return { foreign = tostring(err) }
    end
    return {
        kind = err.kind,
        status = err.status,
        code = err.code,
        message = err.message,
        fields = err.fields,
        text = tostring(err),
    }
end

--- Run `fn`, returning its error object (nil when it did not fail).
function H.failure(fn, ...)
    local ok, err = pcall(fn, ...)
    if ok then
        return nil
    end
    return err
end

--- Run `fn` as the script's body: exit 0, or print the error readably and exit 1.
function H.main(fn)
    local ok, err = xpcall(fn, function(e)
        return tostring(e) .. "\n" .. debug.traceback()
    end)
    if not ok then
        io.stderr:write(err, "\n")
        os.exit(1)
    end
    os.exit(0)
end

function H.number(name, default)
    return tonumber(os.getenv(name) or "") or default
end

function H.list(name)
    local value = os.getenv(name)
    if value == nil or value == "" then
        return nil
    end
    local items = {}
    for item in string.gmatch(value, "[^,]+") do
        items[#items + 1] = item
    end
    return items
end

return H
