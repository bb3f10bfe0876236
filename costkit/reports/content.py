"""``report.json``: the one source every other file renders from.

Schema ``costkit.report/1``: money as decimal strings (``*_usd``, exact) beside integer
nano-USD (``*_nanousd``); percentages as decimal strings to one place, exactly as shown;
times ISO 8601. ``tables`` holds every table of the page, row by row, and the CSV files
are those same rows.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from costkit.money import NANO_PER_USD, format_usd
from costkit.reports.aggregate import Aggregates
from costkit.reports.period import Period
from costkit.reports.shape import SUMS, percent

SCHEMA = "costkit.report/1"


def usd_text(amount: Decimal) -> str:
    """Exact dollars as text: at least cents, no trailing zeros beyond them (``'0.003532'``, ``'12.50'``)."""
    return format_usd(int(amount * NANO_PER_USD))


def plain(value: Any, column: str = "") -> Any:
    """A cell or value as JSON: exact decimal strings, ISO times, None for missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Decimal):
        return usd_text(value) if column.endswith("_usd") else f"{value:f}"
    if isinstance(value, bool):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item(), column)
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows as JSON objects (what the page shows and the CSV holds)."""
    columns = [str(c) for c in frame.columns]
    return [
        {column: plain(value, column) for column, value in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def sums(values: dict[str, int]) -> dict[str, Any]:
    """Totals with uncached input and exact dollars beside the integers."""
    found: dict[str, Any] = {name: int(values[name]) for name in SUMS}
    found["uncached_input_tokens"] = found["input_tokens"] - found["cached_input_tokens"]
    found["cost_usd"] = format_usd(found["cost_nanousd"])
    return found


def change(now: dict[str, Any], before: dict[str, Any], *, whole: bool = True) -> dict[str, Any]:
    """Differences from an earlier period: absolute, and in percent (None when the earlier one was 0,
    or was not ``whole``: a ledger begun halfway through it would show a growth that never was)."""
    cost = now["cost_nanousd"] - before["cost_nanousd"]
    requests = now["requests"] - before["requests"]
    return {
        "requests": requests,
        "requests_pct": plain(percent(requests, before["requests"])) if whole else None,
        "cost_nanousd": cost,
        "cost_usd": format_usd(cost) if cost >= 0 else "-" + format_usd(-cost),
        "cost_pct": plain(percent(cost, before["cost_nanousd"])) if whole else None,
    }


def _ms(microseconds: int | None) -> str | None:
    return None if microseconds is None else f"{Decimal(microseconds).scaleb(-3):f}"


def summary_sections(cube: pd.DataFrame, daily: pd.DataFrame, aggregates: Aggregates) -> dict[str, Any]:
    """Cache, timing, drift and status numbers: single values, each shown on the page."""

    def total(name: str) -> int:
        return int(cube[name].sum()) if len(cube) else 0

    saved = total("saved_nanousd")
    cached_cost = int(daily["cached_input_nanousd"].sum())
    statuses = {s: 0 for s in ("ok", "error", "partial", "blocked")}
    for status, count in cube.groupby("status")["requests"].sum().items() if len(cube) else ():
        statuses[str(status)] = int(count)
    estimated = cube[cube["usage_source"] == "estimated"] if len(cube) else cube
    drift_est, drift_prov = total("drift_estimated_tokens"), total("drift_provider_tokens")
    latency, ttft = aggregates.timings["latency_us"], aggregates.timings["ttft_us"]
    return {
        "cache": {
            "input_tokens": total("input_tokens"),
            "cached_input_tokens": total("cached_input_tokens"),
            "token_hit_rate_pct": plain(percent(total("cached_input_tokens"), total("input_tokens"))),
            "requests_with_cache_hits": total("cache_hit_requests"),
            "request_hit_rate_pct": plain(percent(total("cache_hit_requests"), total("requests"))),
            "saved_nanousd": saved,
            "saved_usd": format_usd(saved),
            "cached_input_cost_nanousd": cached_cost,
            "cached_input_cost_usd": format_usd(cached_cost),
            "missed_requests": total("cache_miss_requests"),
            "missed_input_tokens": total("cache_miss_tokens"),
        },
        "timings": {
            "requests_with_latency": latency["count"],
            "latency_ms_p50": _ms(latency["p50"]),
            "latency_ms_p95": _ms(latency["p95"]),
            "requests_with_ttft": ttft["count"],
            "ttft_ms_p50": _ms(ttft["p50"]),
            "ttft_ms_p95": _ms(ttft["p95"]),
        },
        "drift": {
            "requests": total("drift_requests"),
            "estimated_input_tokens": drift_est,
            "provider_input_tokens": drift_prov,
            "net_drift_tokens": drift_est - drift_prov,
            "net_drift_pct": plain(percent(drift_est - drift_prov, drift_prov)),
            "absolute_drift_tokens": total("drift_abs_tokens"),
        },
        "estimated": {
            "requests": int(estimated["requests"].sum()) if len(estimated) else 0,
            "cost_nanousd": int(estimated["cost_nanousd"].sum()) if len(estimated) else 0,
            "cost_usd": format_usd(int(estimated["cost_nanousd"].sum()) if len(estimated) else 0),
        },
        "statuses": statuses,
        "streamed_requests": total("stream_requests"),
    }


def period_json(period: Period) -> dict[str, Any]:
    return {
        "since": period.first.isoformat(),
        "until": period.end.isoformat(),
        "tz": period.tz,
        "days": len(period.days),
        "since_utc": period.since.isoformat(),
        "until_utc": period.until.isoformat(),
    }
