"""Small arithmetic and formatting of figures, shared by the measurement and the report."""

from __future__ import annotations

import statistics


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def med(values: list) -> float | None:
    """The median of the values that are not None."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def merge_counts(dicts: list[dict]) -> dict:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


def fmt(x: float | None, digits: int = 0, unit: str = "") -> str:
    if x is None:
        return "—"
    if digits == 0:
        return f"{x:,.0f}{unit}"
    return f"{x:,.{digits}f}{unit}"


def ratio_text(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"
