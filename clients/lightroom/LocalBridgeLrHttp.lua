--[[
LocalBridgeLrHttp.lua: LocalBridge's HTTP adapter on the Lightroom SDK's LrHttp.

Call it from a task (LrTasks.startAsyncTask): LrHttp blocks the task, not Lightroom. The
adapter hands LocalBridge LrTasks.sleep for backoff, LrDate.currentTime as its clock and
LrTasks.pcall to catch errors across LrHttp's yields.

    local adapter = require("LocalBridgeLrHttp").new()   -- imports LrHttp, LrTasks, LrDate

LrHttp, as documented by the SDK:
  LrHttp.get(url, headers, timeout)               -> body, response
  LrHttp.post(url, body, headers, method, timeout) -> body, response
where `headers` is a list of {field = ..., value = ...}, and `response` holds `status` and,
when no answer came (server down, timeout), `error` = {errorCode = ..., name = ...}.
]]

local M = {}

--- A new adapter. `modules` may give LrHttp, LrTasks and LrDate (they are imported otherwise).
function M.new(modules)
    modules = modules or {}
    local LrHttp = modules.LrHttp or import "LrHttp"
    local LrTasks = modules.LrTasks or (import and import "LrTasks")
    local LrDate = modules.LrDate or (import and import "LrDate")
    local adapter = {}

    function adapter.request(req)
        local headers = {}
        for name, value in pairs(req.headers or {}) do
            headers[#headers + 1] = { field = name, value = value }
        end
        local body, response
        if req.method == "GET" then
            body, response = LrHttp.get(req.url, headers, req.timeout)
        else
            body, response = LrHttp.post(req.url, req.body or "", headers, req.method,
                req.timeout)
        end
        if type(response) ~= "table" then
            return nil, "no answer"
        end
        if response.error then
            local why = response.error
            return nil, tostring(why.name or why.errorCode or "connection failed")
        end
        if type(response.status) ~= "number" then
            return nil, "no HTTP status"
        end
        return response.status, body or ""
    end

    if LrTasks then
        adapter.sleep = function(seconds)
            LrTasks.sleep(seconds)
        end
        -- LrHttp yields the task: a plain pcall around it fails ("attempt to yield across
        -- metamethod/C-call boundary"), LrTasks.pcall does not.
        adapter.pcall = LrTasks.pcall
    end
    if LrDate then
        adapter.clock = function()
            return LrDate.currentTime()
        end
    end
    return adapter
end

return M
