--[[ Token authentication (LB_TOKEN). Argument "publish": publish an event and read it back by
polling; "follow": poll (a refusal is reported); "claim": create and claim a job. One JSON line. ]]

local H = require "harness"

H.main(function()
    local client = H.client()
    local mode = arg[1]
    local result = { mode = mode }
    local err = H.failure(function()
        if mode == "publish" then
            local since = client:poll { since = 0, limit = 1 }.seq
            local published = client:publish("lightroom.hello", { text = "hi" }, { channel = "system" })
            local page = client:poll { since = since, channels = { "system" }, wait = 5 }
            result.seq = published.seq
            result.received = page.items[1] and page.items[1].seq
            result.text = page.items[1] and page.items[1].text
        elseif mode == "follow" then
            local follower = client:follower { max_iterations = 3 }
            follower:run()
            result.iterations = follower.iterations
        elseif mode == "claim" then
            local job = client:create_job { kind = "lr-auth" }
            local claimed = client:claim_job("lr-worker", { "lr-auth" })
            result.claimed = claimed and claimed.id == job.id
        end
    end)
    if err then
        result.error = H.error_info(err)
    end
    H.emit(result)
end)
