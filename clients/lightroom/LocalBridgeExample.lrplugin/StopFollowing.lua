--[[ Menu item, and the plugin's shutdown script: stop the follower (it ends after its current
poll, at most `wait` seconds). ]]

local Bridge = require "Bridge"

if Bridge.follower ~= nil then
    Bridge.follower:stop()
end
