"""Where each configured budget stands for the report: spent, limit, warnings crossed, forecast.

Spend comes from ``Ledger``'s own exact status query (``costkit.budgets.status``) at the
report's end (or now, for a period that has not ended). The forecast is linear: the
period's spend so far, scaled to the whole period by elapsed time, in integer
nano-USD. A ``total`` budget has no end, so no forecast.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy.engine import Engine

from costkit.budgets.budget import Budget
from costkit.budgets.status import budget_events, budget_status
from costkit.money import NANO_PER_USD
from costkit.reports.shape import percent


def _nano(usd: Decimal) -> int:
    return int(usd * NANO_PER_USD)


def forecast_nanousd(spent: int, start: datetime, end: datetime | None, now: datetime) -> int | None:
    """``spent`` so far scaled linearly from ``[start, now)`` to ``[start, end)``; None without an end."""
    if end is None:
        return None
    whole = (end - start).total_seconds()
    elapsed = (min(now, end) - start).total_seconds()
    if elapsed <= 0 or elapsed >= whole:
        return spent
    return int((Decimal(spent) * Decimal(whole) / Decimal(elapsed)).to_integral_value(ROUND_HALF_EVEN))


def budget_rows(engine: Engine, budgets: list[Budget], until: datetime) -> list[dict[str, Any]]:
    """One row per budget: its period holding the report's last moment, and where spend stands in it."""
    now = datetime.now(timezone.utc)
    at = min(now, until - timedelta(microseconds=1))
    events = budget_events(engine) if budgets else []
    rows = []
    for budget in budgets:
        status = budget_status(engine, budget, at)
        start = status.period_start.astimezone(timezone.utc)
        end = None if status.period_end is None else status.period_end.astimezone(timezone.utc)
        spent, limit = _nano(status.spent_usd), budget.limit_nanousd
        forecast = forecast_nanousd(spent, start, end, now)
        crossed = [t for t in budget.warn_at if spent >= limit * t]
        recorded = [
            event
            for event in events
            if event.budget == budget.name and event.period_start.astimezone(timezone.utc) == start
        ]
        rows.append(
            {
                "budget": budget.name,
                "period": budget.period,
                "tz": budget.tz,
                "tags": "; ".join(f"{k}={v}" for k, v in budget.tags.items()),
                "hard": budget.hard,
                "period_start": status.period_start.isoformat(),
                "period_end": None if status.period_end is None else status.period_end.isoformat(),
                "limit_nanousd": limit,
                "spent_nanousd": spent,
                "reserved_nanousd": _nano(status.reserved_usd),
                "remaining_nanousd": _nano(status.remaining_usd),
                "used_pct": percent(spent, limit),
                "forecast_nanousd": forecast,
                "forecast_pct": None if forecast is None else percent(forecast, limit),
                "warnings_crossed": ", ".join(f"{(t * 100).normalize():f}%" for t in crossed),
                "warnings_recorded": ", ".join(
                    f"{(e.threshold * 100).normalize():f}% at {e.at.isoformat(timespec='seconds')}"
                    for e in recorded
                ),
            }
        )
    return rows
