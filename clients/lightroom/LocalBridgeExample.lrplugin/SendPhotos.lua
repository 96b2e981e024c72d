--[[ Menu item: create a session and import the selected photos into it (source "lightroom"). ]]

local LrApplication = import "LrApplication"
local LrDialogs = import "LrDialogs"
local LrPathUtils = import "LrPathUtils"
local LrTasks = import "LrTasks"
local Bridge = require "Bridge"

LrTasks.startAsyncTask(function()
    local ok, err = LrTasks.pcall(function()
        local photos = LrApplication.activeCatalog():getTargetPhotos()
        if #photos == 0 then
            LrDialogs.message("local_bridge", "Select some photos first.", "info")
            return
        end
        local client = Bridge.client()
        local folder = LrPathUtils.parent(photos[1]:getRawMetadata("path"))
        local session = client:create_session("Lightroom " .. os.date("%Y-%m-%d %H:%M"), folder)
        for _, photo in ipairs(photos) do
            client:import_photo(session.id, {
                file_name = photo:getFormattedMetadata("fileName"),
                file_path = photo:getRawMetadata("path"),
            })
        end
        LrDialogs.showBezel(#photos .. " photo(s) sent to local_bridge")
    end)
    if not ok then
        LrDialogs.message("local_bridge", tostring(err), "critical")
    end
end)
