--[[ The plugin's settings, its one client, and the follower while one runs; every menu script
requires this module (Lightroom loads it once per plugin). ]]

local LocalBridge = require "LocalBridge"
local LocalBridgeLrHttp = require "LocalBridgeLrHttp"

local Bridge = {
    BASE_URL = "http://127.0.0.1:5100",
    TOKEN = nil, -- a bearer token, when the server runs with LOCAL_BRIDGE_AUTH=token
    follower = nil, -- the running follower, if any
    since = nil, -- where the last follower stopped, to resume from
    epoch = nil,
}

local client

--- The plugin's client (created on first use, inside a task).
function Bridge.client()
    if client == nil then
        client = LocalBridge.new {
            base_url = Bridge.BASE_URL,
            token = Bridge.TOKEN,
            http = LocalBridgeLrHttp.new(), -- LrHttp, LrTasks.sleep/pcall, LrDate
            json = require "dkjson",
        }
    end
    return client
end

return Bridge
