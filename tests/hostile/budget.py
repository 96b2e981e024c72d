"""The hostile-input suites' budget: short in CI, minutes with ``LOCAL_BRIDGE_HOSTILE=long``
(``scripts/hostile``, the run before a release)."""

from __future__ import annotations

import os

LONG = os.environ.get("LOCAL_BRIDGE_HOSTILE") == "long"


def examples(ci: int, long: int) -> int:
    """How many examples a property-based test runs: ``ci`` by default, ``long`` in the long run."""
    return long if LONG else ci


def seconds(ci: float, long: float) -> float:
    """How long an attack lasts: ``ci`` by default, ``long`` in the long run."""
    return long if LONG else ci
