"""Whether this process runs under gevent's monkey-patching (the gevent worker)."""

from __future__ import annotations

import sys


def gevent_patched(module: str = "threading") -> bool:
    """True when gevent has patched the standard library's ``module`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched(module)
