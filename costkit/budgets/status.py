"""What a budget stands at, computed exactly from the ledger, and the warnings it has recorded.

``budget_status`` is the reader's view and may sum: spend is the ``SUM`` of the
period's matching rows (never the counter the reservations use, so it also checks
that counter), reservations are those of the period still within their lease. These
reads run in the caller's thread, like ``Ledger.rows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.engine import Engine

from costkit.budgets.budget import Budget
from costkit.budgets.events import BudgetEvent
from costkit.budgets.sql import MONEY, TIME, budget_of, period_spend_params, period_spend_sql, sql
from costkit.ledger.errors import LedgerError
from costkit.money import money_context, to_usd

_RESERVED = sql(
    "SELECT COALESCE(SUM(amount_nanousd), 0) FROM costkit_budget_reservations "
    "WHERE budget = :budget AND period_start = :start AND expires_at > :now",
    "start",
    "now",
)
_DEFINITIONS = text("SELECT name, limit_nanousd, period, tz, tags, hard, warn_at FROM costkit_budgets")
_EVENTS = sql(
    "SELECT e.budget, e.period_start, e.threshold, e.limit_nanousd, e.spent_nanousd, e.created_at, b.tz "
    "FROM costkit_budget_events e LEFT JOIN costkit_budgets b ON b.name = e.budget "
    "ORDER BY e.created_at, e.budget, e.threshold",
    columns={"period_start": TIME, "created_at": TIME, "limit_nanousd": MONEY, "spent_nanousd": MONEY},
)


@dataclass(frozen=True)
class BudgetStatus:
    """A budget in its period holding ``at``: exact ``Decimal`` dollars and aware period bounds.

    ``period_start``/``period_end`` are in the budget's zone (``period_end`` is exclusive, and
    None for a ``total`` budget); subtract them in UTC for the period's length (Python subtracts
    two times of one zone as wall-clock times, so a 25-hour day would show as 24).
    ``remaining_usd`` is the limit less spent and reserved (negative once a soft budget is
    overspent).
    """

    budget: Budget
    period_start: datetime
    period_end: datetime | None
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def limit_usd(self) -> Decimal:
        return self.budget.limit_usd

    @property
    def remaining_usd(self) -> Decimal:
        with money_context():
            return self.budget.limit_usd - self.spent_usd - self.reserved_usd


def registered_budgets(engine: Engine) -> dict[str, Budget]:
    """The budgets registered in the ledger, by name (definitions this machine cannot use left out)."""
    found: dict[str, Budget] = {}
    with engine.connect() as connection:
        for row in connection.execute(_DEFINITIONS):
            try:
                found[row.name] = budget_of(row)
            except (ValueError, TypeError):
                continue
    return found


def budget_status(engine: Engine, budget: Budget | str, at: datetime | None = None) -> BudgetStatus:
    """The status of ``budget`` (a ``Budget``, or the name of one registered in the ledger) at ``at``."""
    now = datetime.now(timezone.utc)
    if at is None:
        at = now
    elif at.tzinfo is None:
        raise ValueError("budget_status needs an aware datetime for at=")
    if isinstance(budget, str):
        found = registered_budgets(engine).get(budget)
        if found is None:
            raise LedgerError(f"no budget named {budget!r} is registered in this ledger")
        budget = found
    if not isinstance(budget, Budget):
        raise TypeError(f"budget_status takes a costkit.Budget or a budget name, not {type(budget).__name__}")
    start, end = budget.bounds(at)
    with engine.connect() as connection:
        spent = connection.execute(
            period_spend_sql(budget, end is not None), period_spend_params(budget, start, end)
        ).scalar_one()
        reserved = connection.execute(
            _RESERVED, {"budget": budget.name, "start": start, "now": now}
        ).scalar_one()
    zone = budget.zone
    return BudgetStatus(
        budget=budget,
        period_start=start.astimezone(zone),
        period_end=None if end is None else end.astimezone(zone),
        spent_usd=to_usd(int(spent)),
        reserved_usd=to_usd(int(reserved)),
    )


def budget_events(engine: Engine, budget: str | None = None) -> list[BudgetEvent]:
    """The warning thresholds crossed and recorded, oldest first (of one budget, or of all)."""
    events = []
    with engine.connect() as connection:
        for row in connection.execute(_EVENTS):
            if budget is not None and row.budget != budget:
                continue
            try:
                zone = ZoneInfo(row.tz) if row.tz else timezone.utc
            except (ValueError, KeyError):
                zone = timezone.utc
            events.append(
                BudgetEvent(
                    budget=row.budget,
                    threshold=Decimal(row.threshold),
                    period_start=row.period_start.astimezone(zone),
                    limit_usd=to_usd(int(row.limit_nanousd)),
                    spent_usd=to_usd(int(row.spent_nanousd)),
                    at=row.created_at,
                )
            )
    return events
