"""local_bridge: a real-time event bus for photo-processing workflows.

The public names are imported on first use, so ``import local_bridge.protocol`` or the client
SDK (``local_bridge.client``) does not import Flask, SQLAlchemy or Alembic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .app import create_app
    from .bus.websocket_server import WebSocketServer
    from .config import ConfigError, Settings
    from .publisher import Published, Publisher
    from .state import BridgeState, state_of

#: public name -> the module that defines it
_HOMES = {
    "BridgeState": ".state",
    "state_of": ".state",
    "create_app": ".app",
    "WebSocketServer": ".bus.websocket_server",
    "ConfigError": ".config",
    "Settings": ".config",
    "Published": ".publisher",
    "Publisher": ".publisher",
}

__all__ = [
    "BridgeState",
    "ConfigError",
    "Published",
    "Publisher",
    "Settings",
    "WebSocketServer",
    "__version__",
    "create_app",
    "state_of",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
