--[[ A stand-in for the Lightroom SDK's LrHttp, on LuaSocket, answering in LrHttp's documented
shapes: get(url, headers, timeout) and post(url, body, headers, method, timeout) return the body
and a response table holding `status` and the headers as a list of {field, value}; when no
answer came, the body is nil and the table holds `error` = {errorCode, name}. It lets the tests
run LocalBridgeLrHttp outside Lightroom. ]]

local socket_http = require "socket.http"
local ltn12 = require "ltn12"

local LrHttp = {}

local function perform(url, method, body, headers, timeout)
    local request_headers = {}
    for _, header in ipairs(headers or {}) do
        request_headers[header.field] = header.value
    end
    if body then
        request_headers["Content-Length"] = tostring(#body)
    end
    local chunks = {}
    local saved = socket_http.TIMEOUT
    socket_http.TIMEOUT = timeout or 30
    local ok, status, response_headers = socket_http.request {
        url = url,
        method = method,
        headers = request_headers,
        source = body and ltn12.source.string(body) or nil,
        sink = ltn12.sink.table(chunks),
    }
    socket_http.TIMEOUT = saved
    if not ok then
        local code = status == "timeout" and "timedOut" or "cannotConnectToHost"
        return nil, { error = { errorCode = code, name = "Could not connect: " .. status } }
    end
    local response = { status = status }
    for field, value in pairs(response_headers or {}) do
        response[#response + 1] = { field = field, value = value }
    end
    return table.concat(chunks), response
end

function LrHttp.get(url, headers, timeout)
    return perform(url, "GET", nil, headers, timeout)
end

function LrHttp.post(url, body, headers, method, timeout)
    return perform(url, method or "POST", body, headers, timeout)
end

return LrHttp
