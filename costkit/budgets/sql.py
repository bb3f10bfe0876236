"""SQL shared by the budget code: typed text statements, how a definition is stored, threshold events.

Statements are plain SQL both backends run (``ON CONFLICT``, ``RETURNING``: SQLite 3.35+
and PostgreSQL), with time parameters bound through the ledger's ``UTCDateTime`` so they
compare exactly as the ledger's own columns do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, TextClause, bindparam, text
from sqlalchemy.engine import Connection

from costkit.budgets.budget import Budget
from costkit.ledger.schema import UTCDateTime

TIME = UTCDateTime()
MONEY = BigInteger()


def sql(
    statement: str, *times: str, expanding: Sequence[str] = (), columns: dict[str, Any] | None = None
) -> TextClause:
    """A text statement whose named time parameters bind as ``UTCDateTime`` (and result columns typed)."""
    params = [bindparam(name, type_=TIME) for name in times]
    params += [bindparam(name, expanding=True) for name in expanding]
    clause = text(statement).bindparams(*params)
    if columns:
        return clause.columns(**columns)  # type: ignore[return-value]
    return clause


def definition_values(budget: Budget) -> dict[str, Any]:
    """A budget's definition as ``costkit_budgets`` stores it (tags as sorted JSON, thresholds as text)."""
    return {
        "name": budget.name,
        "limit_nanousd": budget.limit_nanousd,
        "period": budget.period,
        "tz": budget.tz,
        "tags": json.dumps(dict(budget.tags), sort_keys=True, ensure_ascii=False),
        "hard": budget.hard,
        "warn_at": ",".join(f"{t:f}" for t in budget.warn_at),
    }


def budget_of(row: Any) -> Budget:
    """The ``Budget`` a ``costkit_budgets`` row defines."""
    from costkit.money import to_usd

    return Budget(
        row.name,
        to_usd(int(row.limit_nanousd)),
        period=row.period,
        tz=row.tz,
        tags=json.loads(row.tags),
        hard=bool(row.hard),
        warn_at=[t for t in str(row.warn_at).split(",") if t],
    )


_INSERT_EVENT = sql(
    "INSERT INTO costkit_budget_events "
    "(budget, period_start, threshold, limit_nanousd, spent_nanousd, created_at) "
    "VALUES (:budget, :start, :threshold, :limit, :spent, :now) "
    "ON CONFLICT (budget, period_start, threshold) DO NOTHING",
    "start",
    "now",
)


def period_spend_sql(budget: Budget, bounded: bool) -> TextClause:
    """``SUM(cost_nanousd)`` of the rows in ``[:start, :end)`` that carry every tag of ``budget``."""
    where = ["r.started_at >= :start"]
    times = ["start"]
    if bounded:
        where.append("r.started_at < :end")
        times.append("end")
    for index in range(len(budget.tags)):
        where.append(
            "EXISTS (SELECT 1 FROM costkit_request_tags t WHERE t.request_id = r.request_id "
            f"AND t.key = :k{index} AND t.value = :v{index})"
        )
    return sql(
        f"SELECT COALESCE(SUM(r.cost_nanousd), 0) FROM costkit_requests r WHERE {' AND '.join(where)}",
        *times,
    )


def period_spend_params(budget: Budget, start: datetime, end: datetime | None) -> dict[str, Any]:
    params: dict[str, Any] = {"start": start, "end": end}
    for index, (key, value) in enumerate(budget.tags.items()):
        params[f"k{index}"] = key
        params[f"v{index}"] = value
    return params


def record_event(
    connection: Connection, budget: Budget, start: datetime, spent: int, threshold: Any, at: datetime
) -> bool:
    """Record a crossed threshold at ``at``; True if this call recorded it (recorded once, by anyone)."""
    result = connection.execute(
        _INSERT_EVENT,
        {
            "budget": budget.name,
            "start": start,
            "threshold": f"{threshold:f}",
            "limit": budget.limit_nanousd,
            "spent": spent,
            "now": at,
        },
    )
    return bool(result.rowcount)
