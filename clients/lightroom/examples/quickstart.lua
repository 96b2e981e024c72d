-- Quick start, outside Lightroom (LuaSocket and dkjson), against a running server:
--   LUA_PATH="clients/lightroom/?.lua;;" lua5.1 clients/lightroom/examples/quickstart.lua
local LocalBridge = require "LocalBridge"

local client = LocalBridge.new {
    base_url = os.getenv("LOCAL_BRIDGE_URL") or "http://127.0.0.1:5100",
    http = require("LocalBridgeLuaSocket").new(), -- in Lightroom: LocalBridgeLrHttp
    token = os.getenv("LOCAL_BRIDGE_TOKEN"), -- only when the server runs with auth on
}

-- Follow the bus: a handler per event type, and what to do when events were lost.
local follower = client:follower {
    channels = { "sessions", "photos", "jobs" },
    wait = 25, -- seconds the server may hold each poll
    max_iterations = 50, -- a bound for this demo; a plugin stops it with follower:stop()
    on_resync = function(info)
        print("resync (" .. info.reason .. "): reload the state over REST")
    end,
    on_error = function(err, delay)
        print(tostring(err) .. "; trying again in " .. delay .. " s")
    end,
}
follower:on("photo_imported", function(event)
    print("imported " .. event.file_name .. " from " .. event.source)
end)
follower:on("photo_approved", function(event)
    print("approved " .. event.photo_id)
end)
follower:on("job_progress", function(event)
    print("job " .. event.stage .. " " .. event.progress .. "%")
end)
follower:on("job_completed", function(event, f)
    print("job completed: " .. event.result_url)
    f:stop()
end)
follower:step() -- start at the bus's current position

-- Drive the workflow over REST.
local session = client:create_session("Quick start", "/Pictures/quick-start")
local photo = client:import_photo(session.id, {
    file_name = "IMG_0001.dng",
    file_path = "/Pictures/quick-start/IMG_0001.dng",
}) -- source: "lightroom"
client:record_analysis(photo.id, 0.87, { sharpness = 0.9 })
client:approve(photo.id)
client:create_job { kind = "quick-start-render", photo_id = photo.id }
local job = client:claim_job("quick-start-worker", { "quick-start-render" })
client:report_progress(job.id, { progress = 50, stage = "rendering" })
client:complete_job(job.id, { result_url = "file:///Pictures/out/IMG_0001.jpg" })

follower:run() -- prints the events above as they come, until job_completed

-- Failures raise error objects that read well.
local ok, err = pcall(client.get_photo, client, "no-such-photo")
print(ok, tostring(err))
