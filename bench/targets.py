"""The benchmark's targets (N = 1,000 unless said), each with the measured value and whether
it is met."""

from __future__ import annotations

from bench.report_phases import publish_medians, rss_medians
from bench.report_redis import capped_caveats, quota_text, redis_medians
from bench.servers import LABELS
from bench.stats import fmt, med

#: Ratios closer to 1 than this are within what two measurements of one case differ by here.
NOISE = 0.15


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


Row = tuple[str, str, "bool | None"]  # the target, the measured value, whether it is met


def render_targets(table: dict, results: list[dict], opts) -> list[str]:
    """Each target of the benchmark (N = 1,000 unless said), measured value, met or not."""
    rows = peer_targets(table, opts) + publishing_targets(results, opts)
    rows += slow_client_targets(results)
    medians = redis_medians(results, opts)
    for rn in opts.redis_ns:
        rows += redis_targets(medians, rn, opts)
    if not rows:
        return []
    out = [
        "Targets (N = 1,000 unless said; medians of this run):",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, value, met in rows:
        out.append(f"| {name} | {value} | {'—' if met is None else 'yes' if met else '**no**'} |")
    out += [
        "",
        "10,000 connections in one process: `python -m bench.capacity` (docs/worker-choice.md).",
        "",
    ]
    return out


#: Deliveries/s of local_bridge: at least this many times each peer's, at every N, with every
#: publisher count and in the burst.
SPEED = (("websockets", 2.0), ("picows", 1.3))
P99_SATURATED = 2.0  # p99 saturated: at most this many times websockets'
RSS_PER_CONN = 1.5  # RSS per idle connection: at most this many times websockets'
PUBLISHES_PER_S = 3000  # no subscriber, one keep-alive connection
BATCH_EVENTS_PER_S = 20000  # POST /api/events/batch


def per_n(values: list[tuple[int, float]]) -> str:
    return ", ".join(f"N = {n:,}: {x:.2f}×" for n, x in values)


def ratios_by_n(table: dict, ns: list[int], peer: str, key: str) -> list[tuple[int, float]]:
    """local_bridge's ``key`` over the peer's at each N where both were measured and the peer
    did not collapse (local_bridge collapsing shows in its own figures)."""
    out = []
    for n in ns:
        a, b = table.get(("local_bridge", n), {}), table.get((peer, n), {})
        if b.get("collapsed"):
            continue
        x = ratio(a.get(key), b.get(key))
        if x is not None:
            out.append((n, x))
    return out


def phase_modes(opts) -> list[tuple[str, str, str]]:
    """(label, deliveries/s key, p99 saturated key) per publisher count, then the burst's."""
    counts = getattr(opts, "publisher_counts", None) or [opts.publishers]
    modes = [
        (
            f"{k} publishing connection{'s' if k > 1 else ''}",
            f"pub{k}_deliveries_per_s",
            f"pub{k}_sat_p99_ms",
        )
        for k in counts
    ]
    if getattr(opts, "burst", 0):
        modes.append((f"a burst of {opts.burst:,} events", "burst_deliveries_per_s", ""))
    return modes


def peer_targets(table: dict, opts) -> list[Row]:
    """local_bridge against websockets and picows at every N (speed with each publisher count
    and in the burst, p99 at 20 events/s and saturated), and against flask-sock at 1,000."""
    rows: list[Row] = []
    ns = opts.ns
    modes = phase_modes(opts)
    for label, key, _ in modes:
        for peer, at_least in SPEED:
            xs = ratios_by_n(table, ns, peer, key)
            if xs:
                rows.append(
                    (
                        f"deliveries/s ≥ {at_least:g}× {LABELS[peer]}, {label}",
                        per_n(xs),
                        all(x >= at_least for _, x in xs),
                    )
                )
    x = ratio(
        table.get(("local_bridge", 1000), {}).get("deliveries_per_s"),
        table.get(("flask-sock", 1000), {}).get("deliveries_per_s"),
    )
    if x is not None:
        rows.append((f"deliveries/s ≥ 3× {LABELS['flask-sock']}", f"{x:.2f}×", x >= 3.0))
    xs = ratios_by_n(table, ns, "websockets", "p99_ms")
    if xs:
        rows.append(
            ("p99 at 20 events/s no worse than websockets", per_n(xs), all(x <= 1 for _, x in xs))
        )
    for label, _, key in modes:
        xs = ratios_by_n(table, ns, "websockets", key) if key else []
        if xs:
            rows.append(
                (
                    f"p99 saturated ≤ {P99_SATURATED:g}× websockets, {label}",
                    per_n(xs),
                    all(x <= P99_SATURATED for _, x in xs),
                )
            )
    return rows


def publishing_targets(results: list[dict], opts) -> list[Row]:
    """The publish path and batches (local_bridge alone), RSS per idle connection against
    websockets (the idle RSS scenario; else the main matrix at N = 1,000)."""
    rows: list[Row] = []
    lb = publish_medians(results).get("local_bridge") or {}
    if lb.get("publish_rate") is not None:
        rows.append(
            (
                f"≥ {PUBLISHES_PER_S:,} publishes/s with no subscriber, one keep-alive connection",
                f"{lb['publish_rate']:,.0f}/s",
                lb["publish_rate"] >= PUBLISHES_PER_S,
            )
        )
    if lb.get("batch_events_per_s") is not None:
        rows.append(
            (
                f"≥ {BATCH_EVENTS_PER_S:,} events/s by POST /api/events/batch "
                f"({opts.batch_size} per request)",
                f"{lb['batch_events_per_s']:,.0f}/s",
                lb["batch_events_per_s"] >= BATCH_EVENTS_PER_S,
            )
        )
    rss = rss_medians(results)
    xs = [
        (n, x)
        for n in opts.rss_ns
        if (
            x := ratio(
                (rss.get(("local_bridge", n)) or {}).get("rss_per_conn_kib"),
                (rss.get(("websockets", n)) or {}).get("rss_per_conn_kib"),
            )
        )
        is not None
    ]
    label = f"RSS per idle connection ≤ {RSS_PER_CONN:g}× websockets"
    if not xs:  # no idle RSS scenario: the main matrix's figure
        table = summarize_rss_fallback(results)
        if table is not None:
            xs, label = [(1000, table)], label + " (main matrix)"
    if xs:
        rows.append((label, per_n(xs), all(x <= RSS_PER_CONN for _, x in xs)))
    return rows


def summarize_rss_fallback(results: list[dict]) -> float | None:
    """local_bridge / websockets RSS per connection in the main matrix at N = 1,000."""

    def rss(target: str) -> float | None:
        return med(
            [
                r.get("rss_per_conn_kib")
                for r in results
                if r["target"] == target
                and r["n"] == 1000
                and not r.get("scenario")
                and not r.get("stall")
                and not r.get("slow_client_baseline")
                and "error" not in r
            ]
        )

    return ratio(rss("local_bridge"), rss("websockets"))


def slow_client_targets(results: list[dict]) -> list[Row]:
    base = [r for r in results if r.get("slow_client_baseline") and "error" not in r]
    stall = [r for r in results if r["stall"] and "error" not in r]
    if not (base and stall):
        return []
    d = med([r["deliveries_per_s"] for r in stall]) / med([r["deliveries_per_s"] for r in base])
    q = med([r["p99_ms"] for r in stall]) / med([r["p99_ms"] for r in base])
    codes = [(r.get("stalled") or {}).get("close_code") for r in stall]
    return [
        ("slow client: the others keep ≥ 90 % of their deliveries/s", f"{d:.2f}×", d >= 0.9),
        (
            "slow client: the others keep their p99 (at most 1/0.9 = 1.11×)",
            f"{q:.2f}×",
            q <= 1 / 0.9,
        ),
        (
            "slow client: the stalled one is closed 4008",
            ", ".join(str(c) for c in codes),
            all(c == 4008 for c in codes),
        ),
    ]


def redis_targets(medians: dict, rn: int, opts) -> list[Row]:
    """Two processes on Redis against one (capped, or uncapped when the caps could not run),
    and resuming against steady followers, at N = ``rn``."""
    rows: list[Row] = []
    cap = opts.redis_server_cpu

    def get(target, followers, key, cap=None):
        return (medians.get((rn, target, followers, cap)) or {}).get(key)

    one_c = medians.get((rn, "local_bridge-redis", None, cap)) if cap else None
    two_c = medians.get((rn, "local_bridge-redis-x2", None, cap)) if cap else None
    xc = ratio(two_c and two_c.get("deliveries_per_s"), one_c and one_c.get("deliveries_per_s"))
    if xc is not None:  # the target: servers on a fixed CPU budget, cores left to the clients
        caveats = capped_caveats(one_c, two_c, short=True)
        rows.append(
            (
                f"Redis, N = {rn:,}: two processes deliver ≥ 1.5× one, each capped at "
                f"{cap:g} cores",
                f"{xc:.2f}× (quota used: one {quota_text(one_c)}, two {quota_text(two_c)}; "
                f"machine CPU {fmt(one_c.get('machine') and 100 * one_c['machine'], 0, ' %')} / "
                f"{fmt(two_c.get('machine') and 100 * two_c['machine'], 0, ' %')})"
                + (f" — {caveats}" if caveats else ""),
                xc >= 1.5,
            )
        )
    x = ratio(
        get("local_bridge-redis-x2", None, "deliveries_per_s"),
        get("local_bridge-redis", None, "deliveries_per_s"),
    )
    if x is not None:
        cpu = get("local_bridge-redis-x2", None, "machine")
        value = f"{x:.2f}×" + (f" (machine CPU {100 * cpu:.0f} %)" if cpu else "")
        if xc is not None:  # for reference: uncapped, the pair is bound by the machine
            rows.append(
                (
                    f"Redis, N = {rn:,}: two uncapped processes / one (reference; "
                    "they share the cores with the clients)",
                    value,
                    None,
                )
            )
        else:
            why = opts.redis_cap_skipped or "capped cases failed"
            rows.append(
                (
                    f"Redis, N = {rn:,}: two processes deliver ≥ 1.5× one (uncapped: "
                    f"the capped cases did not run: {why})",
                    value,
                    x >= 1.5,
                )
            )
    d = ratio(
        get("local_bridge-redis-x2", "resuming", "deliveries_per_s"),
        get("local_bridge-redis-x2", "steady", "deliveries_per_s"),
    )
    q = ratio(
        get("local_bridge-redis-x2", "resuming", "p99_ms"),
        get("local_bridge-redis-x2", "steady", "p99_ms"),
    )
    if d is not None and q is not None:
        rows.append(
            (
                f"Redis, N = {rn:,}: resuming followers cost live delivery nothing "
                f"measurable (deliveries/s and p99 within ±{NOISE:.0%})",
                f"{d:.2f}×, p99 {q:.2f}×",
                abs(d - 1) <= NOISE and abs(q - 1) <= NOISE,
            )
        )
    return rows
