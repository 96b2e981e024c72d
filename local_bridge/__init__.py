"""local_bridge: a real-time event bus for photo-processing workflows."""
from .app import BridgeState, create_app, state_of
from .bus.server import WebSocketServer
from .config import ConfigError, Settings
from .publisher import Published, Publisher
from .version import __version__

__all__ = ["BridgeState", "ConfigError", "Published", "Publisher", "Settings",
           "WebSocketServer", "__version__", "create_app", "state_of"]
