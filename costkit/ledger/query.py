"""Reading the ledger: filters in SQL, shaping in pandas, money exact.

Time filters apply to ``started_at``: ``since`` inclusive, ``until`` exclusive.
Tag filters are ``EXISTS`` subqueries on the indexed ``costkit_request_tags(key, value)``;
every given pair must match.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.engine import Engine

from costkit.ledger.schema import REQUEST_COLUMNS, request_tags_table, requests_table
from costkit.money import to_usd

if TYPE_CHECKING:
    import pandas as pd

FRAME_COLUMNS: tuple[str, ...] = (*REQUEST_COLUMNS, "cost_usd", "tags")
_NULLABLE_INTS = ("http_status", "estimated_input_tokens", "latency_us", "ttft_us")
_INTS = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_nanousd")

TimeBound = datetime | date | None


def utc_bound(value: TimeBound, name: str) -> datetime | None:
    """A filter bound as aware UTC; a ``date`` means its midnight UTC; a naive datetime is refused."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (got {value.isoformat()})")
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise TypeError(f"{name} must be a datetime or a date, not {type(value).__name__}")


def select_requests(
    since: TimeBound = None, until: TimeBound = None, tags: Mapping[str, str] | None = None
) -> Select[Any]:
    """SELECT of the ``costkit_requests`` rows matching the filters (no order, no limit)."""
    table = requests_table
    conditions = []
    start, end = utc_bound(since, "since"), utc_bound(until, "until")
    if start is not None:
        conditions.append(table.c.started_at >= start)
    if end is not None:
        conditions.append(table.c.started_at < end)
    for key, value in (tags or {}).items():
        tag = request_tags_table.alias()
        conditions.append(
            exists().where(tag.c.request_id == table.c.request_id, tag.c.key == key, tag.c.value == value)
        )
    return select(table).where(and_(True, *conditions))


def read_rows(
    engine: Engine,
    since: TimeBound = None,
    until: TimeBound = None,
    tags: Mapping[str, str] | None = None,
    *,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """Matching rows as dicts (columns, ``tags`` dict and exact ``cost_usd``), oldest first.

    With ``last``, only the ``last`` most recent rows by ``started_at``.
    """
    query = select_requests(since, until, tags)
    table = requests_table
    if last is not None:
        query = query.order_by(table.c.started_at.desc(), table.c.request_id.desc()).limit(last)
    else:
        query = query.order_by(table.c.started_at, table.c.request_id)
    chosen = query.subquery()
    tag_query = select(request_tags_table).where(
        request_tags_table.c.request_id.in_(select(chosen.c.request_id))
    )
    with engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(query).mappings()]
        pairs = connection.execute(tag_query).all()
    tags_of: dict[str, dict[str, str]] = {}
    for request_id, key, value in pairs:
        tags_of.setdefault(request_id, {})[key] = value
    if last is not None:
        rows.reverse()
    for row in rows:
        row["cost_usd"] = to_usd(row["cost_nanousd"])
        row["tags"] = dict(sorted(tags_of.get(row["request_id"], {}).items()))
    return rows


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with ``FRAME_COLUMNS``: UTC datetimes, int64 money, Decimal ``cost_usd``, dict ``tags``."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for name in FRAME_COLUMNS:
        values = [row[name] for row in rows]
        if name in ("started_at", "finished_at"):
            columns[name] = pd.Series(pd.to_datetime(values, utc=True), dtype="datetime64[us, UTC]")
        elif name in _INTS:
            columns[name] = pd.Series(values, dtype="int64")
        elif name in _NULLABLE_INTS:
            columns[name] = pd.Series(pd.array(values, dtype="Int64"))
        elif name == "stream":
            columns[name] = pd.Series(values, dtype="bool")
        else:
            columns[name] = pd.Series(values, dtype="object")
    return pd.DataFrame(columns)
