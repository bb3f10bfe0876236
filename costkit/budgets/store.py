"""The budget tables' SQL, per backend: register a budget, reserve, extend and sweep leases, read counters.

Every statement that decides money is one the database makes atomic:

* **Reserve** is one transaction over the request's hard budgets, in name order (so two
  transactions lock counters in the same order): for each, one conditional
  ``UPDATE … SET reserved = reserved + :a WHERE … AND spent + reserved + :a <= :limit``.
  Only when that updates nothing (the period's counter does not exist yet, or the budget
  looks full) does it create the counter, sweep the budget's expired reservations
  (deleting them and subtracting their amounts) and try once more. Zero rows again:
  the transaction rolls back (no budget keeps a partial reservation) and ``Refused``
  says which budget and what it held. No period's rows are summed on this path.
* **Register** writes a budget's definition. When its scope is new (a new name, or a
  new period, zone or tags), it sums the current period's matching rows into a fresh
  counter, once, so spend committed before the budget existed counts. On PostgreSQL
  it first takes ``LOCK TABLE costkit_requests IN SHARE MODE``: writers insert rows
  under ``ROW EXCLUSIVE`` and read the budget list after inserting (each statement
  its own snapshot), so a row committed before the lock is in the sum, and a row
  inserted after it waits, then sees the budget and is counted by its writer. SQLite's
  single write lock (``BEGIN IMMEDIATE``) serialises the same steps.
* **Settle** is not here: the ledger's ``Store`` calls ``costkit.budgets.settle`` in the
  transaction that inserts rows.

SQLite transactions run under the store's ``write_lock`` (the fork hook takes it, so no
transaction is in flight when a process forks). Times are bound through ``UTCDateTime``,
so they compare as the ledger's own columns do.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from costkit.budgets.budget import Budget
from costkit.budgets.events import BudgetEvent, crossings
from costkit.budgets.sql import (
    MONEY,
    TIME,
    definition_values,
    period_spend_params,
    period_spend_sql,
    record_event,
    sql,
)

if TYPE_CHECKING:
    from costkit.ledger.store import Store

RETRIES = 3
"""Attempts of a budget transaction PostgreSQL aborted as a deadlock or serialisation failure."""
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


@dataclass(frozen=True, slots=True)
class Claim:
    """One hard budget's share of a reservation: its period (by start, UTC) and the worst case."""

    budget: Budget
    period_start: datetime
    amount_nanousd: int


class Refused(Exception):
    """A budget could not hold the claim: what its counter held when it said no."""

    def __init__(self, claim: Claim, spent_nanousd: int, reserved_nanousd: int) -> None:
        self.claim = claim
        self.spent_nanousd = spent_nanousd
        self.reserved_nanousd = reserved_nanousd
        super().__init__(claim.budget.name)


class _Redefined(Exception):
    """The ledger holds another definition of a budget than this process's: register, then retry."""


_TAKE = sql(
    "UPDATE costkit_budget_periods SET reserved_nanousd = reserved_nanousd + :amount "
    "WHERE budget = :budget AND period_start = :start "
    "AND spent_nanousd + reserved_nanousd + :amount <= :limit",
    "start",
)
_ENSURE_COUNTER = sql(
    "INSERT INTO costkit_budget_periods (budget, period_start, spent_nanousd, reserved_nanousd) "
    "VALUES (:budget, :start, 0, 0) ON CONFLICT (budget, period_start) DO NOTHING",
    "start",
)
_NEW_COUNTER = sql(
    "INSERT INTO costkit_budget_periods (budget, period_start, spent_nanousd, reserved_nanousd) "
    "VALUES (:budget, :start, :spent, 0)",
    "start",
)
_COUNTER = sql(
    "SELECT spent_nanousd, reserved_nanousd FROM costkit_budget_periods "
    "WHERE budget = :budget AND period_start = :start",
    "start",
)
_RELEASE = sql(
    "UPDATE costkit_budget_periods SET reserved_nanousd = reserved_nanousd - :amount "
    "WHERE budget = :budget AND period_start = :start",
    "start",
)
_SWEEP = {
    "sqlite": sql(
        "DELETE FROM costkit_budget_reservations WHERE budget = :budget AND expires_at <= :now "
        "RETURNING period_start, amount_nanousd",
        "now",
        columns={"period_start": TIME, "amount_nanousd": MONEY},
    ),
    # SKIP LOCKED: a reservation a writer is settling (or its owner extending) right now is theirs.
    "postgresql": sql(
        "DELETE FROM costkit_budget_reservations WHERE (request_id, budget) IN ("
        "SELECT request_id, budget FROM costkit_budget_reservations "
        "WHERE budget = :budget AND expires_at <= :now FOR UPDATE SKIP LOCKED) "
        "RETURNING period_start, amount_nanousd",
        "now",
        columns={"period_start": TIME, "amount_nanousd": MONEY},
    ),
}
_INSERT_RESERVATION = sql(
    "INSERT INTO costkit_budget_reservations "
    "(request_id, budget, period_start, amount_nanousd, expires_at, created_at, pid, host) "
    "VALUES (:request_id, :budget, :start, :amount, :expires, :now, :pid, :host)",
    "start",
    "expires",
    "now",
)
_EXTEND = {
    "sqlite": sql(
        "UPDATE costkit_budget_reservations SET expires_at = :expires WHERE request_id IN :ids",
        "expires",
        expanding=["ids"],
    ),
    "postgresql": sql(
        "UPDATE costkit_budget_reservations SET expires_at = :expires WHERE (request_id, budget) IN ("
        "SELECT request_id, budget FROM costkit_budget_reservations WHERE request_id IN :ids "
        "FOR UPDATE SKIP LOCKED)",
        "expires",
        expanding=["ids"],
    ),
}
_DEFINITION = text(
    "SELECT name, limit_nanousd, period, tz, tags, hard, warn_at FROM costkit_budgets WHERE name = :name"
)
_UPSERT_DEFINITION = sql(
    "INSERT INTO costkit_budgets (name, limit_nanousd, period, tz, tags, hard, warn_at, registered_at) "
    "VALUES (:name, :limit_nanousd, :period, :tz, :tags, :hard, :warn_at, :now) "
    "ON CONFLICT (name) DO UPDATE SET limit_nanousd = :limit_nanousd, period = :period, tz = :tz, "
    "tags = :tags, hard = :hard, warn_at = :warn_at, registered_at = :now",
    "now",
)


def _retryable(error: BaseException) -> bool:
    return getattr(getattr(error, "orig", None), "sqlstate", None) in _RETRYABLE_SQLSTATES


class BudgetStore:
    """The budget tables of one ledger database. Thread-safe; one per ledger ``Store`` (``budget_store``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self.dialect = store.engine.dialect.name
        self._sweep = _SWEEP["postgresql" if self.dialect == "postgresql" else "sqlite"]
        self._extend = _EXTEND["postgresql" if self.dialect == "postgresql" else "sqlite"]
        self._registered: dict[str, Budget] = {}
        self._register_lock = threading.Lock()
        self._host = socket.gethostname()[:200]

    @contextmanager
    def transaction(self, *, hold: bool = False) -> Iterator[Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` under the store's write lock on SQLite.

        ``hold``: a reservation or a lease, not spend. On PostgreSQL it commits without waiting
        for the disk flush (``synchronous_commit = off``: 2.5 ms a request on a disk that
        fsyncs slowly, against 0.2 ms). Atomicity and isolation are unchanged; only a server
        crash can lose the last such commits, which drops the holds of requests in flight at
        that instant (their rows still count when written). SQLite's ``synchronous=NORMAL`` in
        WAL mode makes the same trade for every commit.
        """
        self.store.ensure_schema()
        if self.dialect == "sqlite":
            with self.store.write_lock, self.engine.connect() as connection:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield connection
                connection.commit()
        else:
            with self.engine.begin() as connection:
                if hold:
                    connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield connection

    # -- registration --------------------------------------------------------------------------

    def registered(self, budget: Budget) -> bool:
        return self._registered.get(budget.name) == budget

    def forget(self, budget: Budget) -> None:
        self._registered.pop(budget.name, None)

    def ensure_registered(self, budgets: Sequence[Budget]) -> list[BudgetEvent]:
        """Register each budget this process has not registered yet; the thresholds already crossed."""
        events: list[BudgetEvent] = []
        for budget in budgets:
            if self._registered.get(budget.name) == budget:
                continue
            with self._register_lock:
                if self._registered.get(budget.name) == budget:
                    continue
                events += self._retrying(functools.partial(self._register, budget))
                self._registered[budget.name] = budget
        return events

    def _retrying(self, action: Any) -> Any:
        for attempt in range(RETRIES):
            try:
                return action()
            except Exception as error:
                if attempt + 1 == RETRIES or not _retryable(error):
                    raise
        raise AssertionError("unreachable")

    def _register(self, budget: Budget) -> list[BudgetEvent]:
        now = datetime.now(timezone.utc)
        values = definition_values(budget)
        with self.transaction() as connection:
            if self.dialect == "postgresql":  # one registration at a time; writers never wait on this
                connection.exec_driver_sql("LOCK TABLE costkit_budgets IN SHARE ROW EXCLUSIVE MODE")
            stored = connection.execute(_DEFINITION, {"name": budget.name}).one_or_none()
            if stored is not None:
                current = {key: getattr(stored, key) for key in values}
                current["hard"] = bool(current["hard"])
                if current == values:
                    return []
                same_scope = all(current[key] == values[key] for key in ("period", "tz", "tags"))
                if same_scope:  # a new limit or new thresholds: the counters still hold
                    connection.execute(_UPSERT_DEFINITION, {**values, "now": now})
                    return self._crossed_now(connection, budget, now)
            if self.dialect == "postgresql":
                connection.exec_driver_sql("LOCK TABLE costkit_requests IN SHARE MODE")
            connection.execute(_UPSERT_DEFINITION, {**values, "now": now})
            # A new scope: counters and holds left under this name (an old scope's) counted other rows.
            name = {"budget": budget.name}
            for table in ("costkit_budget_periods", "costkit_budget_reservations"):
                connection.execute(text(f"DELETE FROM {table} WHERE budget = :budget"), name)
            start, end = budget.bounds(now)
            spent = int(
                connection.execute(
                    period_spend_sql(budget, end is not None), period_spend_params(budget, start, end)
                ).scalar_one()
            )
            connection.execute(_NEW_COUNTER, {"budget": budget.name, "start": start, "spent": spent})
            return self._crossed_now(connection, budget, now)

    def _crossed_now(self, connection: Connection, budget: Budget, now: datetime) -> list[BudgetEvent]:
        """Record the thresholds the current period's spend has already reached (at registration)."""
        start, _ = budget.bounds(now)
        row = connection.execute(_COUNTER, {"budget": budget.name, "start": start}).one_or_none()
        if row is None:
            return []
        spent = int(row.spent_nanousd)
        events = []
        for threshold in crossings(budget, -1, spent):
            if record_event(connection, budget, start, spent, threshold, now):
                events.append(BudgetEvent.of(budget, start, threshold, spent, now))
        return events

    # -- reservations --------------------------------------------------------------------------

    def reserve(
        self, request_id: str, claims: Sequence[Claim], lease_s: float, now: datetime | None = None
    ) -> None:
        """Hold every claim for ``request_id``, or none: raises ``Refused`` for the first that does not fit.

        Raises the database's own error when it cannot be reached (the caller fails closed).
        """
        ordered = sorted(claims, key=lambda c: c.budget.name)
        for attempt in range(RETRIES):
            try:
                self._reserve_once(request_id, ordered, lease_s, now or datetime.now(timezone.utc))
                return
            except _Redefined as redefined:
                budget = redefined.args[0]
                self.forget(budget)
                self.ensure_registered([budget])
            except Refused:
                raise
            except Exception as error:
                if attempt + 1 == RETRIES or not _retryable(error):
                    raise
        raise RuntimeError(  # the caller fails closed: BudgetUnavailable
            "another process keeps registering a different definition of "
            + ", ".join(repr(c.budget.name) for c in ordered)
        )

    def _reserve_once(self, request_id: str, claims: Sequence[Claim], lease_s: float, now: datetime) -> None:
        with self.transaction(hold=True) as connection:
            for claim in claims:
                params = {
                    "budget": claim.budget.name,
                    "start": claim.period_start,
                    "amount": claim.amount_nanousd,
                    "limit": claim.budget.limit_nanousd,
                }
                if connection.execute(_TAKE, params).rowcount == 1:
                    continue
                self._check_definition(connection, claim.budget)
                connection.execute(_ENSURE_COUNTER, params)
                self.sweep(connection, claim.budget.name, now)
                if connection.execute(_TAKE, params).rowcount == 1:
                    continue
                held = connection.execute(_COUNTER, params).one()
                raise Refused(claim, int(held.spent_nanousd), int(held.reserved_nanousd))
            expires = now + timedelta(seconds=lease_s)
            pid = os.getpid()
            connection.execute(
                _INSERT_RESERVATION,
                [
                    {
                        "request_id": request_id,
                        "budget": claim.budget.name,
                        "start": claim.period_start,
                        "amount": claim.amount_nanousd,
                        "expires": expires,
                        "now": now,
                        "pid": pid,
                        "host": self._host,
                    }
                    for claim in claims
                ],
            )

    def _check_definition(self, connection: Connection, budget: Budget) -> None:
        """The slow path only: the ledger must still hold this process's definition of ``budget``."""
        stored = connection.execute(_DEFINITION, {"name": budget.name}).one_or_none()
        values = definition_values(budget)
        if stored is None or any(
            (bool(getattr(stored, k)) if k == "hard" else getattr(stored, k)) != v for k, v in values.items()
        ):
            raise _Redefined(budget)

    def sweep(self, connection: Connection, budget: str, now: datetime) -> int:
        """Delete ``budget``'s expired reservations and release their amounts; how many there were."""
        released: dict[datetime, int] = {}
        for row in connection.execute(self._sweep, {"budget": budget, "now": now}):
            released[row.period_start] = released.get(row.period_start, 0) + int(row.amount_nanousd)
        for start in sorted(released):
            connection.execute(_RELEASE, {"budget": budget, "start": start, "amount": released[start]})
        return len(released)

    def extend(self, request_ids: Sequence[str], lease_s: float) -> None:
        """Push the leases of these requests' reservations ``lease_s`` seconds past now."""
        if not request_ids:
            return
        expires = datetime.now(timezone.utc) + timedelta(seconds=lease_s)
        with self.transaction(hold=True) as connection:
            for chunk in range(0, len(request_ids), 500):
                ids = list(request_ids[chunk : chunk + 500])
                connection.execute(self._extend, {"ids": ids, "expires": expires})


_stores: weakref.WeakKeyDictionary[Store, BudgetStore] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def budget_store(store: Store) -> BudgetStore:
    """The one ``BudgetStore`` of a ledger ``Store`` (so registrations are remembered once per database)."""
    with _stores_lock:
        found = _stores.get(store)
        if found is None:
            found = _stores[store] = BudgetStore(store)
        return found
