"""The report's parts for publishing: the saturation phases by publisher count and the burst
(from the main matrix's measurements), the publish path with no subscriber, and the RSS of idle
connections at ``--rss-n``; medians of the rounds, ratios local_bridge / peer."""

from __future__ import annotations

from bench.measure import PHASE_KEY
from bench.servers import LABELS
from bench.stats import fmt, med

LB = "local_bridge"


def phase_summary(rs: list[dict]) -> dict:
    """Medians of the ``pub<k>_`` and ``burst_`` figures of a case's rounds (``_missing``:
    summed); added to :func:`bench.report.case_summary`."""
    keys = {k for r in rs for k in r if PHASE_KEY.match(k) or k.startswith("burst_")}
    s: dict = {}
    for key in sorted(keys):
        values = [r.get(key) for r in rs]
        if not all(v is None or isinstance(v, (int, float)) for v in values):
            continue  # the errors: dicts
        if key.endswith("_missing"):
            s[key] = sum(max(0, v or 0) for v in values)
        else:
            s[key] = med(values)
    return s


def counts_of(opts) -> list[int]:
    return list(getattr(opts, "publisher_counts", None) or [opts.publishers])


def render_phases(table: dict, targets: list[str], ns: list[int], opts) -> list[str]:
    """Deliveries/s and p99 saturated for each publisher count, and the burst, per N and
    target; then local_bridge's ratios to each peer."""
    counts = counts_of(opts)
    burst = getattr(opts, "burst", 0)
    # the targets measured with these phases (not the gthread peers)
    targets = [
        t
        for t in targets
        if any(f"pub{counts[0]}_deliveries_per_s" in (table.get((t, n)) or {}) for n in ns)
    ]
    if (len(counts) < 2 and not burst) or not targets:
        return []
    again = ", then ".join(f"{k} publishing connection{'s' if k > 1 else ''}" for k in counts[1:])
    out = [
        f"Publishing connections and bursts: after the main table's saturation phase ({counts[0]} "
        "publishing connections), each measurement above"
        + (
            f" saturates again with {again} ({opts.duration:g} s, the same subscribers, "
            "drained in between)"
            if again
            else ""
        )
        + (
            f"{', and then' if again else ''} publishes a burst of {burst:,} events back to back on one "
            "connection, "
            "each POST waiting for its answer, timed from the first POST until the last "
            "subscriber has the last event (burst deliveries/s = deliveries / that time; "
            "*published in*: until the last answer)"
            if burst
            else ""
        )
        + ". Medians of the rounds; missing: summed.",
        "",
    ]
    head = "| N | server |"
    rule = "|---:|---|"
    for k in counts:
        head += f" deliveries/s, {k} pub | p99 ms saturated, {k} pub |"
        rule += "---:|---:|"
    if burst:
        head += " burst deliveries/s | burst s | published in s | burst missing |"
        rule += "---:|---:|---:|---:|"
    out += [head, rule]
    for n in ns:
        for t in targets:
            s = table.get((t, n)) or {}
            row = f"| {n:,} | {LABELS[t]} |"
            for k in counts:
                row += (
                    f" {fmt(s.get(f'pub{k}_deliveries_per_s'))} |"
                    f" {fmt(s.get(f'pub{k}_sat_p99_ms'))} |"
                )
            if burst:
                row += (
                    f" {fmt(s.get('burst_deliveries_per_s'))} | {fmt(s.get('burst_s'), 2)} |"
                    f" {fmt(s.get('burst_publish_s'), 2)} | {burst_missing(s)} |"
                )
            out.append(row)
    out.append("")
    out += render_phase_ratios(table, targets, ns, counts, burst)
    return out


def burst_missing(s: dict) -> str:
    if "burst_missing" not in s:
        return "—"
    return f"{s['burst_missing']:,}" + (" (incomplete)" if s["burst_missing"] > 0 else "")


def render_phase_ratios(
    table: dict, targets: list[str], ns: list[int], counts: list[int], burst: int
) -> list[str]:
    peers = [t for t in targets if t != LB]
    if LB not in targets or not peers:
        return []
    head = "| N | peer |" + "".join(f" deliveries/s, {k} pub |" for k in counts)
    head += " burst deliveries/s |" if burst else ""
    head += "".join(f" p99 saturated, {k} pub |" for k in counts)
    keys = [f"pub{k}_deliveries_per_s" for k in counts] + (
        ["burst_deliveries_per_s"] if burst else []
    )
    keys += [f"pub{k}_sat_p99_ms" for k in counts]
    out = [
        "Ratios local_bridge / peer (deliveries/s: above 1 means local_bridge delivers more; "
        "p99: below 1 means local_bridge is better):",
        "",
        head,
        "|---:|---|" + "---:|" * len(keys),
    ]
    for n in ns:
        a = table.get((LB, n)) or {}
        for t in peers:
            b = table.get((t, n)) or {}
            out.append(
                f"| {n:,} | {LABELS[t]} | "
                + " | ".join(ratio_cell(a.get(k), b.get(k)) for k in keys)
                + " |"
            )
    out.append("")
    return out


def ratio_cell(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def scenario_rows(results: list[dict], scenario: str) -> list[dict]:
    return [r for r in results if r.get("scenario") == scenario and "error" not in r]


def publish_medians(results: list[dict]) -> dict[str, dict]:
    """{target: medians of its publish-path rounds}."""
    out: dict[str, dict] = {}
    rows = scenario_rows(results, "publish")
    for t in dict.fromkeys(r["target"] for r in rows):
        rs = [r for r in rows if r["target"] == t]
        out[t] = {
            key: med([r.get(key) for r in rs])
            for key in (
                "publish_rate",
                "publish_http_p50_ms",
                "publish_http_p99_ms",
                "publish_cpu_server_s",
                "batch_events_per_s",
                "batch_http_p50_ms",
                "batch_http_p99_ms",
                "batch_cpu_server_s",
            )
        }
        out[t]["rounds"] = len(rs)
        out[t]["errors"] = sum(
            sum((r.get("publish_errors") or {}).values())
            + sum((r.get("batch_errors") or {}).values())
            for r in rs
        )
    return out


def render_publish_path(results: list[dict], opts) -> list[str]:
    """Publishes/s with no subscriber from one keep-alive connection; batch events/s."""
    medians = publish_medians(results)
    if not medians:
        return []
    out = [
        f"Publish path: each server fresh, no subscriber, one keep-alive connection publishing "
        f"as fast as answers come for {opts.publish_duration:g} s (`POST "
        "/api/websocket/broadcast`); then, for local_bridge only (the peers have no such "
        f"endpoint), as long of `POST /api/events/batch` with {opts.batch_size} events per "
        "request. Server CPU over each window; medians of the rounds.",
        "",
        "| server | publishes/s | HTTP p50 / p99 ms | CPU s server | batch events/s | "
        "batch HTTP p50 / p99 ms | batch CPU s server | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, m in medians.items():
        out.append(
            f"| {LABELS[t]} | {fmt(m['publish_rate'])} | {fmt(m['publish_http_p50_ms'], 2)} / "
            f"{fmt(m['publish_http_p99_ms'], 2)} | {fmt(m['publish_cpu_server_s'], 1)} | "
            f"{fmt(m['batch_events_per_s'])} | "
            + (
                f"{fmt(m['batch_http_p50_ms'], 1)} / {fmt(m['batch_http_p99_ms'], 1)}"
                if m["batch_events_per_s"] is not None
                else "—"
            )
            + f" | {fmt(m['batch_cpu_server_s'], 1)} | {m['errors']:,} |"
        )
    out.append("")
    return out


def rss_medians(results: list[dict]) -> dict[tuple[str, int], dict]:
    """{(target, N): medians of its idle-RSS rounds}."""
    rows = scenario_rows(results, "rss")
    out: dict[tuple[str, int], dict] = {}
    for key in dict.fromkeys((r["target"], r["n"]) for r in rows):
        rs = [r for r in rows if (r["target"], r["n"]) == key]
        out[key] = {
            "rss_per_conn_kib": med([r.get("rss_per_conn_kib") for r in rs]),
            "connect_s": med([r.get("connect_s") for r in rs]),
            "ready_min": min(r.get("ready", 0) for r in rs),
            "rounds": len(rs),
        }
    return out


def render_rss(results: list[dict], opts) -> list[str]:
    """RSS per idle connection at each ``--rss-n``, and local_bridge's ratio to each peer."""
    medians = rss_medians(results)
    if not medians:
        return []
    targets = list(dict.fromkeys(t for t, _ in medians))
    out = [
        "Idle connections: each server fresh, N subscribers connected and subscribed, nothing "
        f"published; RSS per connection = (worker RSS {opts.settle:g} s after the last "
        "subscribed − RSS before) / N. Medians of the rounds.",
        "",
        "| N | server | RSS KiB/conn | local_bridge / this | connect s | connected |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in opts.rss_ns:
        lb = (medians.get((LB, n)) or {}).get("rss_per_conn_kib")
        for t in targets:
            m = medians.get((t, n))
            if not m:
                continue
            out.append(
                f"| {n:,} | {LABELS[t]} | {fmt(m['rss_per_conn_kib'], 1)} | "
                f"{'—' if t == LB else ratio_cell(lb, m['rss_per_conn_kib'])} | "
                f"{fmt(m['connect_s'], 2)} | {m['ready_min']:,} |"
            )
    out.append("")
    return out
