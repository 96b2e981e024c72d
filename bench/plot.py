"""docs/benchmarks.png: deliveries/s and p99 against N, one line per target."""

from __future__ import annotations

from pathlib import Path

from bench.report import summarize
from bench.servers import LABELS


def plot(results: list[dict], targets: list[str], ns: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(results, targets, ns)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    for t in targets:
        xs, dv, p99, label = series(table, t, ns)
        style = dict(marker="o", linewidth=2.5 if t == "local_bridge" else 1.5)
        a1.plot(xs, dv, label=label, **style)
        a2.plot(xs, p99, label=label, **style)
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([f"{n:,}" for n in ns])
        ax.set_xlabel("subscribers (N)")
        ax.grid(True, which="both", alpha=0.3)
    a1.set_yscale("log")
    a1.set_ylabel("deliveries/s at saturation")
    a1.set_title("Throughput (higher is better)")
    a2.set_yscale("log")
    a2.set_ylabel("publish → receive p99 (ms)")
    a2.set_title("p99 latency at 20 events/s (lower is better)")
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def series(table: dict, target: str, ns: list[int]) -> tuple[list, list, list, str]:
    """(N, deliveries/s, p99) of one target where it did not collapse, and its label."""
    xs, dv, p99, collapsed = [], [], [], []
    for n in ns:
        s = table[(target, n)]
        if not s.get("rounds") or s.get("collapsed") or not s.get("deliveries_per_s"):
            collapsed.append(n)
            continue
        xs.append(n)
        dv.append(s["deliveries_per_s"])
        p99.append(s["p99_ms"])
    label = LABELS[target] + (
        " (collapsed at N=" + ", ".join(f"{n:,}" for n in collapsed) + ")" if collapsed else ""
    )
    return xs, dv, p99, label
