"""The Redis scenario's part of the report: its table, its ratios, and how the capped cases
were run."""

from __future__ import annotations

import os

from bench.cases import case_label, redis_cases
from bench.cgroups import CFS_PERIOD_US, CGROUPS
from bench.stats import fmt, med, ratio_text


def case_rows(
    results: list[dict], n: int, target: str, followers: str | None, cap: float | None
) -> list[dict]:
    """The Redis scenario's measurements of one case (failed ones included)."""
    return [
        r
        for r in results
        if r.get("scenario") == "redis"
        and r["n"] == n
        and r["target"] == target
        and r.get("followers") == followers
        and r.get("server_cpu") == cap
    ]


def redis_medians(results: list[dict], opts) -> dict[tuple, dict]:
    """{(n, target, followers, cap): medians of the Redis scenario's measurements of that case}."""
    cores = os.cpu_count() or 1
    medians: dict[tuple, dict] = {}
    for n in opts.redis_ns:
        for target, followers, cap in redis_cases(opts):
            rs = [r for r in case_rows(results, n, target, followers, cap) if "error" not in r]
            if not rs:
                continue
            m = {
                key: med([r.get(key) for r in rs])
                for key in (
                    "deliveries_per_s",
                    "p50_ms",
                    "p99_ms",
                    "sat_p99_ms",
                    "cpu_server_s",
                    "cpu_clients_s",
                )
            }
            m["machine"] = med(
                [
                    (
                        r["cpu_server_s"]
                        + r["cpu_clients_s"]
                        + (r.get("cpu_publisher_s") or 0)
                        + (r.get("cpu_followers_s") or 0)
                    )
                    / (cores * r["sat_window_s"])
                    for r in rs
                    if r.get("cpu_server_s") is not None and r.get("sat_window_s")
                ]
            )
            m["per_cpu"] = med(
                [
                    r["deliveries_per_s"] * r["sat_window_s"] / r["cpu_server_s"]
                    for r in rs
                    if r.get("cpu_server_s") and r.get("sat_window_s")
                ]
            )
            m["machine_busy"] = med([r.get("machine_busy") for r in rs])
            if cap:  # per server process, in the order of the servers
                for key in ("quota_use", "throttled_share"):
                    m[key] = [
                        med([(r.get(key) or [None] * (i + 1))[i] for r in rs])
                        for i in range(2 if target.endswith("-x2") else 1)
                    ]
            medians[(n, target, followers, cap)] = m
    return medians


#: Quota use at least this: the cap was the limit. Machine CPU at least this: the machine was.
CAP_BOUND = 0.9
MACHINE_BOUND = 0.9


def quota_text(m: dict | None, key: str = "quota_use") -> str:
    """'98 %' or '97 % and 96 %': each capped server's median share of its quota (or ``key``)."""
    uses = (m or {}).get(key) or []
    return " and ".join(fmt(u if u is None else 100 * u, 0, " %") for u in uses) or "—"


def capped_caveats(one: dict, two: dict, short: bool = False) -> str:
    """What else than the cap may have limited the capped pair (empty when nothing)."""
    notes = []
    low = [
        u
        for m in (one, two)
        for u in m.get("quota_use") or []
        if u is not None and round(100 * u) < 100 * CAP_BOUND
    ]  # as shown, not 89.6 as "90 %"
    if low:
        notes.append(
            "quota not used up"
            if short
            else f"a server used less than {CAP_BOUND:.0%} of its quota, so not only the cap "
            "limited it"
        )
    busy = [
        x
        for m in (one, two)
        for x in (m.get("machine"), m.get("machine_busy"))
        if x is not None and x >= MACHINE_BOUND
    ]
    if busy:
        notes.append(
            "machine saturated"
            if short
            else f"the machine was still saturated ({100 * max(busy):.0f} % busy): the clients "
            "and the publisher (and whatever else ran) took the cores the cap left, so the "
            "machine, not only the cap, limited the servers"
        )
    return "; ".join(notes)


def render_redis(results: list[dict], opts) -> list[str]:
    """The Redis scenario's table and ratios."""
    if opts.redis_skipped:
        return [f"Redis scenario: not run ({opts.redis_skipped}).", ""]
    rows = [r for r in results if r.get("scenario") == "redis"]
    if not rows:
        return []
    out = [redis_method(opts)]
    out += [
        "",
        "| N | case | deliveries/s | p50 ms | p99 ms | p99 ms saturated | missing | "
        "CPU s servers | deliveries per server CPU s | CPU s clients | machine CPU | quota used | "
        "followers: resumes / replayed / recovered false / missing / duplicated / out of order |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    medians = redis_medians(results, opts)
    for n in opts.redis_ns:
        for target, followers, c in redis_cases(opts):
            out.append(redis_row(rows, medians, n, target, followers, c))
    out.append("")
    for n in opts.redis_ns:
        out += redis_ratios(medians, n, opts.redis_server_cpu)
    out.append("")
    return out


def redis_method(opts) -> str:
    """How the Redis scenario was run."""
    cores = os.cpu_count() or 1
    text = (
        f"Redis scenario: `local-bridge serve` processes sharing one Redis ({opts.redis_url}, "
        "keys under a prefix of their own, deleted afterwards), subscribers split evenly "
        "between the processes (one client process each), publishing connections alternating "
        "between them; the in-memory backplane alongside for reference. The follower runs add "
        f"{opts.followers} followers of `jobs` and a witness in one more client process: "
        f"*steady* ones stay connected, *resuming* ones drop their connection every "
        f"{opts.follow_live:g} s, stay away {opts.follow_away:g} s and resume with `since` + "
        "`epoch` on the other process; each follower's stream is checked against the "
        f"witness's. {opts.redis_rounds} round(s), cases alternating, medians shown. "
        f"**Machine CPU** is the CPU all processes of the measurement used during saturation "
        f"(servers, clients, followers, publisher; Redis not counted) over {cores} cores × "
        "the window: near 100 % the machine, not the server, is the limit."
    )
    return text + capped_method(opts, cores)


def redis_row(
    rows: list[dict], medians: dict, n: int, target: str, followers: str | None, c: float | None
) -> str:
    """One case's row of the Redis table."""
    rs = [r for r in case_rows(rows, n, target, followers, c) if "error" not in r]
    label = case_label(target, followers, c)
    if not rs:
        return f"| {n:,} | {label} | failed |" + " |" * 10
    m = medians[(n, target, followers, c)]
    missing = sum(max(0, r.get("sat_missing") or 0) + max(0, r.get("lat_missing") or 0) for r in rs)
    fol = ""
    if followers:
        fr = [r.get("followers_result") or {} for r in rs]
        fol = " / ".join(
            f"{sum(f.get(key, 0) for f in fr):,}"
            for key in (
                "resumes",
                "replayed",
                "unrecovered",
                "missing",
                "duplicates",
                "out_of_order",
            )
        )
    return (
        f"| {n:,} | {label} | {fmt(m['deliveries_per_s'])} | {fmt(m['p50_ms'], 1)} | "
        f"{fmt(m['p99_ms'], 1)} | {fmt(m['sat_p99_ms'])} | {missing:,} | "
        f"{fmt(m['cpu_server_s'], 1)} | {fmt(m['per_cpu'])} | {fmt(m['cpu_clients_s'], 1)} | "
        f"{fmt(m['machine'] and 100 * m['machine'], 0, ' %')} | "
        f"{quota_text(m) if c else ''} | {fol} |"
    )


def redis_ratios(medians: dict, n: int, cap: float) -> list[str]:
    """The ratios of the Redis scenario at N = ``n``: two processes / one, capped and not,
    Redis / in memory, resuming / steady followers."""
    out = []

    def get(target, followers, key, cap=None):
        return (medians.get((n, target, followers, cap)) or {}).get(key)

    one = ("local_bridge-redis", None)
    two = ("local_bridge-redis-x2", None)
    steady = ("local_bridge-redis-x2", "steady")
    resuming = ("local_bridge-redis-x2", "resuming")
    one_c = medians.get((n, *one, cap)) if cap else None
    two_c = medians.get((n, *two, cap)) if cap else None
    judged = (
        (
            "machine CPU "
            + fmt(get(*two, "machine") and 100 * get(*two, "machine"), 0, " %")
            + "; the target is judged on the capped pair"
        )
        if one_c and two_c
        else "target ≥ 1.5×"
    )
    out.append(
        f"- N = {n:,}: two processes / one process on Redis, deliveries/s "
        f"{ratio_text(get(*two, 'deliveries_per_s'), get(*one, 'deliveries_per_s'))} ({judged}), "
        f"per server CPU second {ratio_text(get(*two, 'per_cpu'), get(*one, 'per_cpu'))}; "
        f"one process on Redis / in memory "
        f"{ratio_text(get(*one, 'deliveries_per_s'), get('local_bridge', None, 'deliveries_per_s'))}; "
        f"resuming / steady followers: deliveries/s "
        f"{ratio_text(get(*resuming, 'deliveries_per_s'), get(*steady, 'deliveries_per_s'))}, "
        f"p99 {ratio_text(get(*resuming, 'p99_ms'), get(*steady, 'p99_ms'))}, "
        f"p99 saturated {ratio_text(get(*resuming, 'sat_p99_ms'), get(*steady, 'sat_p99_ms'))}."
    )
    if one_c and two_c:
        caveats = capped_caveats(one_c, two_c)
        pair = (one_c, two_c)
        out.append(
            f"- N = {n:,}, each process capped at {cap:g} cores: two processes / one, "
            f"deliveries/s {ratio_text(two_c['deliveries_per_s'], one_c['deliveries_per_s'])} "
            f"(target ≥ 1.5×); quota used: one process {quota_text(one_c)} (throttled in "
            f"{quota_text(one_c, 'throttled_share')} of the periods), two processes "
            f"{quota_text(two_c)} (throttled in {quota_text(two_c, 'throttled_share')}); "
            "machine CPU "
            + " / ".join(fmt(m["machine"] and 100 * m["machine"], 0, " %") for m in pair)
            + " (the whole machine, Redis and any other process included: "
            + " / ".join(
                fmt(m.get("machine_busy") and 100 * m["machine_busy"], 0, " %") for m in pair
            )
            + " busy)"
            + (
                f". **Caveat:** {caveats}."
                if caveats
                else ": each server used (nearly) all its quota with cores to spare, so the "
                "cap, not the machine, was the limit."
            )
        )
    return out


def capped_method(opts, cores: int) -> str:
    """How the capped cases were run, or why they were not."""
    cap = opts.redis_server_cpu
    if opts.redis_cap_skipped:
        return f" Capped cases: not run ({opts.redis_cap_skipped})."
    kind = CGROUPS["kind"]
    knob = "`cpu.cfs_quota_us`" if kind == "v1" else "`cpu.max`"
    text = (
        f" *Capped* cases: each server process (gunicorn master and its worker) runs in a "
        f"cgroup of its own (cgroup {kind}, {knob} = {cap:g} × a {CFS_PERIOD_US // 1000} ms "
        f"period), so one process gets at most {cap:g} cores and two at most {2 * cap:g} of "
        f"the {cores}, the rest being left to the clients and the publisher; **quota used** is "
        f"a server's CPU seconds during saturation over {cap:g} × the window: near 100 % the "
        "cap, not the machine, is the limit."
    )
    if 2 * cap >= cores:
        text += (
            f" **With {cap:g} cores each, two capped servers can take the whole machine: "
            "lower `--redis-server-cpu`.**"
        )
    return text
