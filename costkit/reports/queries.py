"""The report's SQL: every aggregate runs in the database, over the period's rows only.

Each statement filters ``started_at >= :since AND started_at < :until`` (the
``started_at`` index), so a report's cost grows with the period's rows, not the
ledger's. Money comes back as exact integers: SQLite sums integers as integers,
PostgreSQL sums ``bigint`` as ``numeric`` (a ``Decimal``), turned into ``int`` here.
Local dates are computed in SQL: PostgreSQL with ``AT TIME ZONE``, SQLite by adding
the zone's UTC offset piece by piece (see ``period.offset_changes``).

Latency percentiles are nearest-rank (``percentile_disc``): PostgreSQL computes them
in SQL; SQLite has no percentile function, so its latency columns (integers, the
period's successful rows) are read in one pass, as text, and ranked in numpy with the
same definition. Tags: PostgreSQL hash-joins the tag table; SQLite, which can only
look up and sort, looks each request's tags up by primary key (see ``_by_tags_pivoted``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, column, text
from sqlalchemy.engine import Connection

from costkit.ledger.errors import LedgerError
from costkit.ledger.schema import UTCDateTime
from costkit.reports.period import offset_changes

_TIME = UTCDateTime()
_RANGE = "r.started_at >= :since AND r.started_at < :until"
CACHE_MIN_PROMPT = 1024
"""Prompts shorter than this are never cached by the provider: only longer ones count as cache misses."""
TOP_ROWS = 20
SQLITE_MMAP_BYTES = 1 << 30
SQLITE_CACHE_KIB = 256 * 1024
"""The page cache a report's SQLite connection may grow to; its sorts (GROUP BY) stay in it."""
ERROR_TEXT = 300
"""Error texts are grouped by their first characters, so ids inside a long message do not split the groups."""

CUBE_COLUMNS = (
    "day",
    "model",
    "price_id",
    "status",
    "usage_source",
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_nanousd",
    "cache_hit_requests",
    "cache_miss_requests",
    "cache_miss_tokens",
    "drift_requests",
    "drift_estimated_tokens",
    "drift_provider_tokens",
    "drift_abs_tokens",
    "stream_requests",
)
TOTAL_COLUMNS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_nanousd")
ROW_COLUMNS = (
    "request_id",
    "started_at",
    "model",
    "status",
    "usage_source",
    "stream",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "estimated_input_tokens",
    "cost_nanousd",
    "latency_us",
    "error",
    "notes",
)


@dataclass(frozen=True)
class Window:
    """The UTC bounds of a query and the zone its local dates are in."""

    since: datetime
    until: datetime
    zone: ZoneInfo

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until}


def _statement(sql: str, times: Sequence[str] = ("since", "until"), expanding: Sequence[str] = ()) -> Any:
    binds = [bindparam(name, type_=_TIME) for name in times]
    binds += [bindparam(name, expanding=True) for name in expanding]
    return text(sql).bindparams(*binds)


def _day_expression(connection: Connection, window: Window) -> tuple[str, dict[str, Any], list[str]]:
    """SQL for the local date of ``r.started_at`` (``YYYY-MM-DD`` text on SQLite, a ``date`` on
    PostgreSQL, where casting costs a third of the cube's time less than ``to_char``), its parameters,
    and which of them are times."""
    if connection.dialect.name == "postgresql":
        return "CAST(r.started_at AT TIME ZONE :tz AS date)", {"tz": window.zone.key}, []
    pieces = offset_changes(window.zone, window.since, window.until)
    if len(pieces) == 1 and pieces[0][1] == 0:
        return "substr(r.started_at, 1, 10)", {}, []  # UTC: the stored text starts with the date
    params: dict[str, Any] = {}
    branches = []
    for index, (start, _) in enumerate(pieces[1:], start=1):
        params[f"change{index}"] = start
        branches.append(f"WHEN r.started_at < :change{index} THEN '{pieces[index - 1][1]:+d} minutes'")
    modifier = (
        f"CASE {' '.join(branches)} ELSE '{pieces[-1][1]:+d} minutes' END"
        if branches
        else (f"'{pieces[0][1]:+d} minutes'")
    )
    return f"date(r.started_at, {modifier})", params, list(params)


def _money(value: Any) -> int:
    """An exact integer from a SUM (``int`` on SQLite, ``Decimal`` on PostgreSQL, None for no rows)."""
    return 0 if value is None else int(value)


def tune(connection: Connection) -> None:
    """Let SQLite read the file through memory mapping (the report's lookups touch much of it) and
    sort a period's rows in memory rather than in temporary files."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
        connection.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")


def cube(connection: Connection, window: Window) -> list[dict[str, Any]]:
    """The period's rows grouped by local day, model, price entry, status and usage source.

    Every total on the page except tags, percentiles and row lists is a sum over this small table.
    """
    day, day_params, day_times = _day_expression(connection, window)
    drift = "r.usage_source = 'provider' AND r.estimated_input_tokens IS NOT NULL"
    missed = f"r.cached_input_tokens = 0 AND r.input_tokens >= {CACHE_MIN_PROMPT}"
    sql = f"""
        SELECT {day} AS day, r.model, r.price_id, r.status, r.usage_source,
            COUNT(*), SUM(r.input_tokens), SUM(r.cached_input_tokens), SUM(r.output_tokens),
            SUM(r.cost_nanousd),
            SUM(CASE WHEN r.cached_input_tokens > 0 THEN 1 ELSE 0 END),
            SUM(CASE WHEN {missed} THEN 1 ELSE 0 END),
            SUM(CASE WHEN {missed} THEN r.input_tokens ELSE 0 END),
            SUM(CASE WHEN {drift} THEN 1 ELSE 0 END),
            SUM(CASE WHEN {drift} THEN r.estimated_input_tokens ELSE 0 END),
            SUM(CASE WHEN {drift} THEN r.input_tokens ELSE 0 END),
            SUM(CASE WHEN {drift} THEN ABS(r.estimated_input_tokens - r.input_tokens) ELSE 0 END),
            SUM(CASE WHEN r.stream THEN 1 ELSE 0 END)
        FROM costkit_requests r
        WHERE {_RANGE}
        GROUP BY 1, 2, 3, 4, 5
    """
    statement = _statement(sql, ["since", "until", *day_times])
    result = connection.execute(statement, {**window.params(), **day_params})
    rows = []
    for values in result:
        row = dict(zip(CUBE_COLUMNS, values, strict=True))
        if isinstance(row["day"], date):
            row["day"] = row["day"].isoformat()
        for name in CUBE_COLUMNS[5:]:
            row[name] = _money(row[name])
        rows.append(row)
    return rows


def totals(connection: Connection, window: Window) -> dict[str, int]:
    """Requests, tokens by kind and cost of the period: the previous period's comparison."""
    sql = f"""
        SELECT COUNT(*), SUM(r.input_tokens), SUM(r.cached_input_tokens), SUM(r.output_tokens),
            SUM(r.cost_nanousd)
        FROM costkit_requests r WHERE {_RANGE}
    """
    values = connection.execute(_statement(sql), window.params()).one()
    return {name: _money(value) for name, value in zip(TOTAL_COLUMNS, values, strict=True)}


def has_rows_before(connection: Connection, moment: datetime) -> bool:
    """Whether the ledger holds a request that started before ``moment`` (one index probe): when
    it holds none before the previous period, that period is not whole and no change is shown."""
    sql = "SELECT 1 FROM costkit_requests r WHERE r.started_at < :since LIMIT 1"
    return connection.execute(_statement(sql, times=("since",)), {"since": moment}).first() is not None


def by_tags(connection: Connection, window: Window, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Requests, tokens and cost per value of each tag key, through the tag table."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    if connection.dialect.name == "sqlite":
        return _by_tags_pivoted(connection, window, keys)
    # PostgreSQL hashes the period's requests against the tag table: one pass for all keys.
    sql = f"""
        SELECT t.key, t.value, COUNT(*), SUM(r.input_tokens), SUM(r.cached_input_tokens),
            SUM(r.output_tokens), SUM(r.cost_nanousd)
        FROM costkit_requests r JOIN costkit_request_tags t ON t.request_id = r.request_id
        WHERE {_RANGE} AND t.key IN :keys
        GROUP BY t.key, t.value
    """
    result = connection.execute(_statement(sql, expanding=["keys"]), {**window.params(), "keys": keys})
    return [
        {"key": key, "value": value, **{n: _money(v) for n, v in zip(TOTAL_COLUMNS, sums, strict=True)}}
        for key, value, *sums in result
    ]


PIVOT_KEYS = 2
"""Tag keys one SQLite query groups by together (their combinations are the groups it returns)."""


def _by_tags_pivoted(connection: Connection, window: Window, keys: list[str]) -> list[dict[str, Any]]:
    """SQLite: each request's value of every key in one row, grouped by the combination, summed per value.

    SQLite has no hash join or hash aggregate: a join with the tag table makes one row per
    tag and sorts them all. Instead each key is one ``LEFT JOIN`` on the tag table's primary
    key ``(request_id, key)``, so a request stays one row, and the groups are the combinations
    of values, which Python adds up per key and value (integers: exact). At most
    ``PIVOT_KEYS`` keys share a query, so the combinations stay few.
    """
    per_value: list[dict[str, Any]] = []
    for start in range(0, len(keys), PIVOT_KEYS):
        chosen = keys[start : start + PIVOT_KEYS]
        joins = " ".join(
            f"LEFT JOIN costkit_request_tags t{i} ON t{i}.request_id = r.request_id AND t{i}.key = :key{i}"
            for i in range(len(chosen))
        )
        values = ", ".join(f"t{i}.value" for i in range(len(chosen)))
        sql = f"""
            SELECT {values}, COUNT(*), SUM(r.input_tokens), SUM(r.cached_input_tokens),
                SUM(r.output_tokens), SUM(r.cost_nanousd)
            FROM costkit_requests r {joins}
            WHERE {_RANGE}
            GROUP BY {", ".join(str(i + 1) for i in range(len(chosen)))}
        """
        params = {**window.params(), **{f"key{i}": key for i, key in enumerate(chosen)}}
        for row in connection.execute(_statement(sql), params):
            sums = {n: _money(v) for n, v in zip(TOTAL_COLUMNS, row[len(chosen) :], strict=True)}
            per_value += [
                {"key": key, "value": value, **sums}
                for key, value in zip(chosen, row[: len(chosen)], strict=True)
                if value is not None  # (None: the request has no such tag)
            ]
    return summed_per_value(per_value)


def summed_per_value(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tag rows (``key``, ``value`` and the ``TOTAL_COLUMNS``) added up per key and value (integers:
    exact): several groups or several windows of one tag value as one row."""
    return summed_by(rows, ("key", "value"), TOTAL_COLUMNS)


def summed_cube(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cube rows of several windows added up per group (a day split between two windows is one row)."""
    return summed_by(rows, CUBE_COLUMNS[:5], CUBE_COLUMNS[5:])


def summed_by(
    rows: Iterable[dict[str, Any]], keys: Sequence[str], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """``rows`` added up per value of ``keys``: the ``columns`` summed (integers: exact), in the order
    each group first appears."""
    summed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        group = tuple(row[name] for name in keys)
        into = summed.get(group)
        if into is None:
            summed[group] = dict(row)
            continue
        for name in columns:
            into[name] += row[name]
    return list(summed.values())


def _rows(connection: Connection, window: Window, where: str, order: str) -> list[dict[str, Any]]:
    columns = ", ".join(f"r.{name}" for name in ROW_COLUMNS)
    sql = f"SELECT {columns} FROM costkit_requests r WHERE {_RANGE}{where} ORDER BY {order} LIMIT {TOP_ROWS}"
    statement = _statement(sql).columns(
        *(column(n, _TIME if n == "started_at" else None) for n in ROW_COLUMNS)
    )
    found = [
        dict(zip(ROW_COLUMNS, values, strict=True))
        for values in connection.execute(statement, window.params())
    ]
    for row in found:
        row["cost_nanousd"] = int(row["cost_nanousd"])
        row["stream"] = bool(row["stream"])
    _attach_tags(connection, found)
    return found


def _attach_tags(connection: Connection, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        row["tags"] = {}
    if not rows:
        return
    by_id = {row["request_id"]: row for row in rows}
    statement = text(
        "SELECT request_id, key, value FROM costkit_request_tags WHERE request_id IN :ids ORDER BY key"
    ).bindparams(bindparam("ids", expanding=True))
    for request_id, key, value in connection.execute(statement, {"ids": list(by_id)}):
        by_id[request_id]["tags"][key] = value


def most_expensive(connection: Connection, window: Window) -> list[dict[str, Any]]:
    """The period's ``TOP_ROWS`` most expensive requests, with their tags."""
    return _rows(connection, window, "", "r.cost_nanousd DESC, r.started_at, r.request_id")


def estimated_rows(connection: Connection, window: Window) -> list[dict[str, Any]]:
    """The period's most expensive rows whose usage costkit estimated (no provider count), with their tags."""
    return _rows(
        connection,
        window,
        " AND r.usage_source = 'estimated'",
        "r.cost_nanousd DESC, r.started_at, r.request_id",
    )


def problems(connection: Connection, window: Window) -> list[dict[str, Any]]:
    """Errors, blocked and partial requests grouped by status and error text (its first characters)."""
    sql = f"""
        SELECT r.status, substr(COALESCE(r.error, ''), 1, {ERROR_TEXT}) AS error_text, COUNT(*) AS n,
            SUM(r.cost_nanousd) AS cost, MIN(r.started_at) AS first_at, MAX(r.started_at) AS last_at
        FROM costkit_requests r
        WHERE {_RANGE} AND r.status <> 'ok'
        GROUP BY 1, 2
        ORDER BY n DESC, r.status, error_text
        LIMIT 50
    """
    found = []
    statement = _statement(sql).columns(
        column("status"), column("error_text"), column("n"), column("cost"), first_at=_TIME, last_at=_TIME
    )
    for status, error, count, cost, first, last in connection.execute(statement, window.params()):
        found.append(
            {
                "status": status,
                "error": error,
                "requests": int(count),
                "cost_nanousd": _money(cost),
                "first_at": first,
                "last_at": last,
            }
        )
    return found


PERCENTILES = (0.5, 0.95)
TIMING_COLUMNS = ("latency_us", "ttft_us")


def timings(connection: Connection, window: Window) -> dict[str, dict[str, int | None]]:
    """Nearest-rank p50 and p95 of latency and time to first token over the period's successful requests.

    ``{"latency_us": {"count": n, "p50": ..., "p95": ...}, "ttft_us": {...}}``; None where no row has one.
    """
    if connection.dialect.name == "postgresql":
        return _timings_in_sql(connection, window)
    return _timings_ranked(connection, window)


def _timings_in_sql(connection: Connection, window: Window) -> dict[str, dict[str, int | None]]:
    parts = []
    for name in TIMING_COLUMNS:
        parts.append(f"COUNT(r.{name})")
        parts += [f"percentile_disc({p}) WITHIN GROUP (ORDER BY r.{name})" for p in PERCENTILES]
    sql = f"SELECT {', '.join(parts)} FROM costkit_requests r WHERE {_RANGE} AND r.status = 'ok'"
    values = list(connection.execute(_statement(sql), window.params()).one())
    found: dict[str, dict[str, int | None]] = {}
    for index, name in enumerate(TIMING_COLUMNS):
        count, *ranks = values[index * 3 : index * 3 + 3]
        found[name] = {"count": int(count), **_named(ranks)}
    return found


def _named(ranks: Sequence[Any]) -> dict[str, int | None]:
    return {
        f"p{round(p * 100)}": None if v is None else int(v) for p, v in zip(PERCENTILES, ranks, strict=True)
    }


def _timings_ranked(connection: Connection, window: Window) -> dict[str, dict[str, int | None]]:
    """SQLite: one pass hands each column over as one comma-separated text, parsed by numpy in C
    (a million integers without a Python object each), and ranked there."""
    import numpy as np

    parts = []
    for name in TIMING_COLUMNS:
        parts += [f"COUNT(r.{name})", f"group_concat(r.{name})"]
    sql = f"SELECT {', '.join(parts)} FROM costkit_requests r WHERE {_RANGE} AND r.status = 'ok'"
    values = list(connection.execute(_statement(sql), window.params()).one())
    found: dict[str, dict[str, int | None]] = {}
    for index, name in enumerate(TIMING_COLUMNS):
        count, listed = int(values[index * 2]), values[index * 2 + 1]
        if count == 0:
            found[name] = {"count": 0, **_named([None] * len(PERCENTILES))}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns, and stops, at text that is not a whole number
            try:
                numbers = np.fromstring(listed, dtype=np.int64, sep=",")
            except (ValueError, DeprecationWarning):
                numbers = np.empty(0, dtype=np.int64)
        if numbers.size != count:
            raise LedgerError(f"the ledger's {name} column holds a value that is not a whole number")
        ranks = np.percentile(numbers, [p * 100 for p in PERCENTILES], method="inverted_cdf")
        found[name] = {"count": count, **_named([int(v) for v in ranks])}
    return found
