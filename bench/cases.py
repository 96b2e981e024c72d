"""The Redis scenario's cases: which measurements it makes, in the order they alternate."""

from __future__ import annotations

from bench.servers import LABELS

# (target, followers, capped) of each Redis-scenario measurement, in the order they alternate;
# capped: each server process in a cgroup of its own allowed --redis-server-cpu cores
REDIS_CASES = (
    ("local_bridge", None, False),
    ("local_bridge-redis", None, False),
    ("local_bridge-redis-x2", None, False),
    ("local_bridge-redis", None, True),
    ("local_bridge-redis-x2", None, True),
    ("local_bridge-redis-x2", "steady", False),
    ("local_bridge-redis-x2", "resuming", False),
)


def redis_cases(opts) -> list[tuple[str, str | None, float | None]]:
    """(target, followers, cores per server or None) of the cases this run measures."""
    cap = None if opts.redis_cap_skipped else opts.redis_server_cpu
    return [(t, f, cap if capped else None) for t, f, capped in REDIS_CASES if cap or not capped]


def case_label(target: str, followers: str | None, cap: float | None) -> str:
    label = LABELS[target]
    if cap:
        label += f", capped at {cap:g} cores" + (" each" if target.endswith("-x2") else "")
    return label + (f" + {followers} followers" if followers else "")
