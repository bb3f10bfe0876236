"""Settlement: what a batch of newly inserted rows does to the budget counters, in the same transaction.

The ledger's ``Store`` calls ``settle_batch`` right after inserting a batch, inside its
transaction, whoever the writer is (a process with no budgets of its own included):

1. It reads the registered budgets (one small indexed read; nothing more happens when
   there are none). On PostgreSQL this read runs after the insert, so a budget whose
   registration committed before the rows became visible is seen (see ``store``).
2. Each priced row adds its cost to the counter of every budget whose tags it carries,
   for the period holding its ``started_at``; the counter is created on demand.
3. The reservations of the rows' requests are deleted, and only the amounts of those
   that still existed are taken off ``reserved`` (a reservation swept after its lease
   ended was released then; it is not released twice).
4. Counters are changed in one order (budget, period), so concurrent transactions never
   wait on each other in a cycle; each change returns the new spend, and the thresholds
   it crosses are recorded once (``events``), to be announced after the commit.

Only rows that this transaction inserted count: a request id already in the ledger
(a replayed spool line) adds nothing. ``Ambiguous`` asks the store to say which rows are
new when it could not tell (SQLite's ``executemany`` reports only how many).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from costkit.budgets.budget import Budget
from costkit.budgets.events import BudgetEvent, crossings
from costkit.budgets.sql import MONEY, TIME, budget_of, record_event, sql

_BUDGETS = text("SELECT name, limit_nanousd, period, tz, tags, hard, warn_at FROM costkit_budgets")
_DELETE_RESERVATIONS = sql(
    "DELETE FROM costkit_budget_reservations WHERE request_id IN :ids "
    "RETURNING budget, period_start, amount_nanousd",
    expanding=["ids"],
    columns={"period_start": TIME, "amount_nanousd": MONEY},
)
_APPLY = sql(
    "INSERT INTO costkit_budget_periods (budget, period_start, spent_nanousd, reserved_nanousd) "
    "VALUES (:budget, :start, :spent, 0) "
    "ON CONFLICT (budget, period_start) DO UPDATE SET "
    "spent_nanousd = costkit_budget_periods.spent_nanousd + :spent, "
    "reserved_nanousd = costkit_budget_periods.reserved_nanousd - :released "
    "RETURNING spent_nanousd",
    "start",
)
_CHUNK = 500
log = logging.getLogger("costkit")


class Ambiguous(Exception):
    """Budgets are registered and the store could not say which rows of the batch are new."""


class _Definitions:
    """Parsed budget rows, kept while the stored definitions stay the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw: tuple[Any, ...] = ()
        self._budgets: dict[str, _Counted] = {}

    def of(self, rows: Sequence[Any]) -> dict[str, _Counted]:
        raw = tuple(tuple(row) for row in rows)
        with self._lock:
            if raw != self._raw:
                self._budgets = {}
                for row in rows:
                    try:
                        self._budgets[row.name] = _Counted(budget_of(row))
                    except (ValueError, TypeError) as error:  # a zone this machine lacks, say
                        # Rows must never be refused for it: they are stored, not counted here.
                        log.error("costkit: budget %r in the ledger cannot be used here: %s", row.name, error)
                self._raw = raw
            return self._budgets


class _Counted:
    """A budget and the last period looked up for it (rows of one batch mostly share one)."""

    __slots__ = ("budget", "span")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.span: tuple[datetime, datetime | None] | None = None  # one attribute: writer threads share it

    def period_start(self, at: datetime) -> datetime:
        span = self.span
        if span is not None and at >= span[0] and (span[1] is None or at < span[1]):
            return span[0]
        span = self.span = self.budget.bounds(at)
        return span[0]


_definitions = _Definitions()


def settle_batch(
    connection: Connection, records: Sequence[dict[str, Any]], inserted: Sequence[dict[str, Any]] | None
) -> list[BudgetEvent]:
    """Count ``inserted`` (the records of ``records`` this transaction inserted; None: unknown).

    Returns the threshold crossings recorded. Raises ``Ambiguous`` when budgets are
    registered and ``inserted`` is None; raises the database's errors (the batch rolls back).
    """
    rows = connection.execute(_BUDGETS).all()
    if not rows:
        return []
    if inserted is None:
        raise Ambiguous
    budgets = _definitions.of(rows)
    spent: dict[tuple[str, datetime], int] = {}
    released: dict[tuple[str, datetime], int] = {}
    for record in inserted:
        cost = record["cost_nanousd"]
        if cost <= 0:
            continue
        tags = record["tags"] or {}
        for counted in budgets.values():
            if counted.budget.covers(tags):
                key = (counted.budget.name, counted.period_start(record["started_at"]))
                spent[key] = spent.get(key, 0) + cost
    ids = [record["request_id"] for record in inserted]
    for index in range(0, len(ids), _CHUNK):
        for row in connection.execute(_DELETE_RESERVATIONS, {"ids": ids[index : index + _CHUNK]}):
            key = (row.budget, row.period_start)
            released[key] = released.get(key, 0) + int(row.amount_nanousd)
    events: list[BudgetEvent] = []
    now = datetime.now(timezone.utc)
    for key in sorted(spent.keys() | released.keys()):
        name, start = key
        added = spent.get(key, 0)
        after = int(
            connection.execute(
                _APPLY, {"budget": name, "start": start, "spent": added, "released": released.get(key, 0)}
            ).scalar_one()
        )
        found = budgets.get(name)
        if found is None or not added:
            continue
        for threshold in crossings(found.budget, after - added, after):
            if record_event(connection, found.budget, start, after, threshold, now):
                events.append(BudgetEvent.of(found.budget, start, threshold, after, now))
    return events
