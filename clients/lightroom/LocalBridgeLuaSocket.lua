--[[
LocalBridgeLuaSocket.lua: LocalBridge's HTTP adapter on LuaSocket (socket.http + ltn12), for
running the client outside Lightroom (scripts, tests, a worker on a server).

    local http = require("LocalBridgeLuaSocket").new()
    local status, body, headers = http.request { method = "GET", url = "http://...",
        headers = {}, body = nil, timeout = 10 }
    -- on a connection failure: nil, "connection refused"

It also provides sleep (socket.sleep) and clock (socket.gettime) for the follower.
]]

local socket = require "socket"
local socket_http = require "socket.http"
local ltn12 = require "ltn12"

local M = {}

--- A new adapter. `options.user_agent` names the client in the server's logs.
function M.new(options)
    options = options or {}
    local user_agent = options.user_agent or "local-bridge-lua"
    local adapter = {}

    function adapter.request(req)
        local chunks = {}
        local headers = { ["User-Agent"] = user_agent }
        for name, value in pairs(req.headers or {}) do
            headers[name] = value
        end
        local source
        if req.body ~= nil then
            headers["Content-Length"] = tostring(#req.body)
            source = ltn12.source.string(req.body)
        end
        -- socket.http applies its module-wide TIMEOUT to each connection it opens; Lua runs one
        -- request at a time here, so setting it around the call is safe.
        local saved = socket_http.TIMEOUT
        socket_http.TIMEOUT = req.timeout or 10
        local ok, status = socket_http.request {
            url = req.url,
            method = req.method,
            headers = headers,
            source = source,
            sink = ltn12.sink.table(chunks),
            redirect = false,
        }
        socket_http.TIMEOUT = saved
        if not ok then
            return nil, tostring(status) -- "connection refused", "timeout", "closed" ...
        end
        if type(status) ~= "number" then
            return nil, "no HTTP status (" .. tostring(status) .. ")"
        end
        return status, table.concat(chunks)
    end

    adapter.sleep = socket.sleep
    adapter.clock = socket.gettime
    return adapter
end

return M
