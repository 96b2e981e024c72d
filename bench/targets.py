"""The benchmark's targets (N = 1,000 unless said), each with the measured value and whether
it is met."""

from __future__ import annotations

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
    rows = peer_targets(table) + slow_client_targets(results)
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


def peer_targets(table: dict) -> list[Row]:
    """local_bridge against websockets and flask-sock at N = 1,000."""
    rows: list[Row] = []
    n = 1000
    lb = table.get(("local_bridge", n), {})
    for peer, at_least in (("websockets", 2.0), ("flask-sock", 3.0)):
        x = ratio(lb.get("deliveries_per_s"), table.get((peer, n), {}).get("deliveries_per_s"))
        if x is not None:
            rows.append(
                (f"deliveries/s ≥ {at_least:g}× {LABELS[peer]}", f"{x:.2f}×", x >= at_least)
            )
    ws = table.get(("websockets", n), {})
    x = ratio(lb.get("p99_ms"), ws.get("p99_ms"))
    if x is not None:
        rows.append(("p99 at 20 events/s no worse than websockets", f"{x:.2f}×", x <= 1.0))
    x = ratio(lb.get("rss_per_conn_kib"), ws.get("rss_per_conn_kib"))
    if x is not None:
        rows.append(("RSS per idle connection ≤ 2× websockets", f"{x:.2f}×", x <= 2.0))
    return rows


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
