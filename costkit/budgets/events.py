"""Warning thresholds: which ones a change of spend crosses, the event that says so, and who hears it.

A threshold (a fraction of the limit, ``warn_at``) is crossed when settled spend
goes from below ``limit × fraction`` to at or above it. Crossings are found where
spend is counted (the writer's batch transaction, or a budget's registration) and
recorded in ``costkit_budget_events`` under a unique (budget, period, threshold), so
across all processes each is recorded, logged and announced once: by the process
whose insert recorded it. ``announce`` logs a warning and calls the ``on_warning``
callbacks registered for that ledger (on the ledger's writer thread: keep them short;
what they raise is logged, never passed on).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from costkit.money import NANO_PER_USD, format_usd, money_context, to_usd

if TYPE_CHECKING:
    from costkit.budgets.budget import Budget

log = logging.getLogger("costkit")


@dataclass(frozen=True)
class BudgetEvent:
    """A warning threshold crossed: ``spent_usd`` reached ``threshold`` × ``limit_usd`` in the period
    starting ``period_start`` (aware, in the budget's zone). ``at`` is when it was recorded (UTC)."""

    budget: str
    threshold: Decimal
    period_start: datetime
    limit_usd: Decimal
    spent_usd: Decimal
    at: datetime

    @classmethod
    def of(cls, budget: Budget, start: datetime, threshold: Decimal, spent: int, at: datetime) -> BudgetEvent:
        return cls(
            budget=budget.name,
            threshold=threshold,
            period_start=start.astimezone(budget.zone),
            limit_usd=budget.limit_usd,
            spent_usd=to_usd(spent),
            at=at,
        )

    def __str__(self) -> str:
        with money_context():
            percent = (self.threshold * 100).normalize()
            limit, spent = int(self.limit_usd * NANO_PER_USD), int(self.spent_usd * NANO_PER_USD)
        return (
            f"budget {self.budget!r} reached {percent:f}% of its ${format_usd(limit)} "
            f"(${format_usd(spent)} spent in the period from "
            f"{self.period_start.isoformat(timespec='minutes')})"
        )


def crossings(budget: Budget, before: int, after: int) -> list[Decimal]:
    """The thresholds of ``budget`` that spend going from ``before`` to ``after`` nano-USD reaches."""
    limit = budget.limit_nanousd
    with money_context():
        return [t for t in budget.warn_at if before < limit * t <= after]


Listener = Callable[[BudgetEvent], None]
_listeners: weakref.WeakKeyDictionary[object, list[tuple[frozenset[str], Listener]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def listen(store: object, budgets: Iterable[str], callback: Listener) -> None:
    """Call ``callback`` for every event this process records on ``store`` for one of ``budgets``."""
    entry = (frozenset(budgets), callback)
    with _lock:
        listeners = _listeners.setdefault(store, [])
        if entry not in listeners:  # wrap() builds a transport per mount, each with the same callback
            listeners.append(entry)


def announce(store: object, events: Iterable[BudgetEvent]) -> None:
    """Log each event once (a warning) and call the listeners for its budget; never raises."""
    with _lock:
        listeners = list(_listeners.get(store, ()))
    for event in events:
        log.warning("costkit: %s", event)
        for names, callback in listeners:
            if event.budget not in names:
                continue
            try:
                callback(event)
            except Exception:
                log.exception("costkit: an on_warning callback failed for budget %r", event.budget)
