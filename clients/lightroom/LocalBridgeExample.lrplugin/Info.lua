--[[ An example Lightroom Classic plugin on local_bridge: send the selected photos to a session,
and follow the bus (job progress, approvals) in the background. It needs dkjson.lua beside
these files (see clients/lightroom/README.md). ]]

return {
    LrSdkVersion = 10.0,
    LrSdkMinimumVersion = 6.0,
    LrToolkitIdentifier = "org.local-bridge.example",
    LrPluginName = "local_bridge example",
    LrLibraryMenuItems = {
        { title = "Send Selected Photos to local_bridge", file = "SendPhotos.lua" },
        { title = "Follow local_bridge", file = "FollowBus.lua" },
        { title = "Stop Following local_bridge", file = "StopFollowing.lua" },
    },
    LrShutdownPlugin = "StopFollowing.lua",
    VERSION = { major = 1, minor = 0, revision = 0 },
}
