--[[ Menu item: follow the bus in a background task until "Stop Following" (or Lightroom
quits), showing job progress and approvals. ]]

local LrDialogs = import "LrDialogs"
local LrTasks = import "LrTasks"
local Bridge = require "Bridge"

if Bridge.follower ~= nil then
    LrDialogs.showBezel("Already following local_bridge")
    return
end

LrTasks.startAsyncTask(function()
    local follower = Bridge.client():follower {
        channels = { "jobs", "photos", "export" },
        since = Bridge.since, -- resume where the last follower stopped
        epoch = Bridge.epoch,
        on_resync = function(info)
            -- events were lost (a server restart): a real plugin reloads its state here
            LrDialogs.showBezel("local_bridge restarted: reloading (" .. info.reason .. ")")
        end,
    }
    follower:on("job_progress", function(event)
        LrDialogs.showBezel(string.format("%s %d%%", event.stage or "job", event.progress or 0))
    end)
    follower:on("job_completed", function(event)
        LrDialogs.showBezel("Job finished: " .. tostring(event.result_url))
    end)
    follower:on("photo_approved", function(event)
        LrDialogs.showBezel("Approved photo " .. event.photo_id)
    end)
    Bridge.follower = follower
    local ok, err = LrTasks.pcall(function()
        Bridge.since, Bridge.epoch = follower:run()
    end)
    Bridge.follower = nil
    if not ok then
        LrDialogs.message("local_bridge", tostring(err), "critical")
    end
end)
