"""Time ``costkit report`` on big ledgers, on SQLite and PostgreSQL (not run by pytest).

Ledgers are generated in SQL (a recursive CTE on SQLite, ``generate_series`` on
PostgreSQL), never through the writer: a month of traffic spread evenly over October
2026, three models, cached prompts, streams, errors, partial and blocked rows, and
three tags per request (team: 6 values, feature: 24, user: 2,000). Request ids have the
shape of the UUID version 7 ids costkit writes (32 hex characters: the millisecond the row
started, then hashed bits), so they follow time order as real ones do. Ledgers written
before costkit switched to them hold scattered uuid4 ids: the SQLite month with tags
is also timed on such a ledger (``legacy ids``: 32 hashed hex characters). The schema is
created by costkit itself (``costkit db upgrade``), so the indexes are the ledger's own.

Timed, each ``--runs`` times, medians reported:

* month: ``costkit.report(since=2026-10-01, until=2026-11-01)`` and ``Report.write()`` of
  every format (HTML included) on a 1,000,000-row ledger, by model alone and with
  ``by=[tag:team, tag:feature]`` (a join with the tag table); goal <= 3 s on each backend.
* day: the same for one day (2026-10-15) on a 10,000,000-row PostgreSQL ledger (ten
  months at the month's density, ending in October, so that day holds about 32,000 rows as
  in the 1M ledger); goal <= 1 s: the cost grows with the period's rows, not the ledger's.

The baseline, measured in the same run on the same ledger: one plain
``SELECT COUNT(*), SUM(cost_nanousd)`` over the period (the least any report must read).
Every run also checks the report's total against that exact sum. The PostgreSQL
ledgers live in a dedicated schema, dropped afterwards.

    .venv/bin/python bench/bench_report.py [--rows 1000000] [--big-rows 10000000] [--runs 5]
                                           [--no-postgres] [--no-big]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import Connection

import costkit
from costkit.ledger import migrate
from costkit.ledger.engine import make_engine
from costkit.ledger.location import resolve_url
from costkit.reports.report import Report

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
SECONDS = 31 * 86400  # October
BIG_MONTHS = 10
"""The big ledger is ten months at the month's density: the day it reports holds as many rows."""
MONTH = ("2026-10-01", "2026-11-01")
DAY = ("2026-10-15", "2026-10-16")
BY = ["tag:team", "tag:feature"]

# One expression per column, over the row number ``i`` (0..n-1); ``{span}`` spreads n rows over October.
# Prices: gpt-4.1 2000/500/8000, mini 400/100/1600, nano 100/25/400 nano-USD per token.
_MODEL = "CASE WHEN i % 10 < 7 THEN 'gpt-4.1' WHEN i % 10 < 9 THEN 'gpt-4.1-mini' ELSE 'gpt-4.1-nano' END"
_INPUT = "(300 + (i * 7919) % 6000)"
_CACHED = f"CASE WHEN i % 3 = 0 AND {_INPUT} >= 1024 THEN (({_INPUT} * 3 / 4) / 128) * 128 ELSE 0 END"
_OUTPUT = "(10 + (i * 104729) % 900)"
_STATUS = (
    "CASE WHEN i % 997 = 0 THEN 'blocked' WHEN i % 97 = 0 THEN 'error' "
    "WHEN i % 89 = 0 THEN 'partial' ELSE 'ok' END"
)
_RATE = {
    "in": "CASE WHEN i % 10 < 7 THEN 2000 WHEN i % 10 < 9 THEN 400 ELSE 100 END",
    "cached": "CASE WHEN i % 10 < 7 THEN 500 WHEN i % 10 < 9 THEN 100 ELSE 25 END",
    "out": "CASE WHEN i % 10 < 7 THEN 8000 WHEN i % 10 < 9 THEN 1600 ELSE 400 END",
}
_COST = (
    f"CASE WHEN i % 997 = 0 OR (i % 97 = 0) THEN 0 ELSE "
    f"({_INPUT} - {_CACHED}) * {_RATE['in']} + {_CACHED} * {_RATE['cached']} + {_OUTPUT} * {_RATE['out']} END"
)


def _columns(started: str, request_id: str, stream: str) -> str:
    return f"""
        {request_id}, NULL, {started}, NULL, {_MODEL}, 'platform.qubrid.com', {_STATUS},
        CASE WHEN i % 97 = 0 AND i % 997 <> 0 THEN 429 ELSE 200 END, {stream},
        {_INPUT}, {_CACHED}, {_OUTPUT},
        CASE WHEN (i % 97 = 0 OR i % 89 = 0 OR i % 997 = 0) THEN 'estimated' ELSE 'provider' END,
        {_INPUT} + (i % 5) - 2, {_COST},
        CASE WHEN i % 10 < 7 THEN 'gpt-4.1@2025-04-14' WHEN i % 10 < 9 THEN 'gpt-4.1-mini@2025-04-14'
             ELSE 'gpt-4.1-nano@2025-04-14' END,
        200000 + (i * 15485863) % 3000000, CASE WHEN i % 4 = 0 THEN 50000 + (i * 7) % 900000 END,
        NULL, CASE WHEN i % 97 = 0 AND i % 997 <> 0 THEN 'HTTP 429: rate limit reached' END, NULL, NULL, NULL
    """


_TAGS = (
    ("team", "'team-' || (i % 6)"),
    ("feature", "'feature-' || ((i / 7) % 24)"),
    ("user", "'user-' || ((i * 31) % 2000)"),
)


_HASH_A = "((i * 2654435761) % 4294967296)"
_HASH_B = "((i * 40503 + 12345) % 4294967296)"


def fill_sqlite(path: Path, rows: int, legacy_ids: bool = False) -> None:
    import sqlite3

    prepare(f"sqlite:///{path}")
    span = f"{SECONDS} * i / {rows}"
    started = f"strftime('%Y-%m-%d %H:%M:%S', {int(START.timestamp())} + {span}, 'unixepoch') || '.000000'"
    seq = f"WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows - 1})"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = OFF")
        if legacy_ids:  # uuid4: nothing in the id follows time
            request_id = (
                f"printf('%08x%08x%08x%08x', {_HASH_A}, {_HASH_B}, "
                "(i * 69069 + 1) % 4294967296, (i * 1103515245 + 12345) % 4294967296)"
            )
        else:  # UUID version 7: the row's millisecond, then hashed bits
            millisecond = f"({int(START.timestamp()) * 1000} + {SECONDS * 1000} * i / {rows})"
            request_id = f"printf('%012x7%03x%08x%08x', {millisecond}, i % 4096, {_HASH_A}, {_HASH_B})"
        columns = _columns(started, request_id, "i % 2 = 0")
        connection.execute(f"INSERT INTO costkit_requests {seq} SELECT {columns} FROM seq")
        for key, value in _TAGS:
            connection.execute(
                f"INSERT INTO costkit_request_tags {seq} SELECT {request_id}, '{key}', {value} FROM seq"
            )
        connection.execute("ANALYZE")


_TABLES = ("costkit_requests", "costkit_request_tags")
_CONSTRAINTS = text(
    "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype "
    "FROM pg_constraint c WHERE c.conrelid::regclass::text IN :tables AND c.contype IN ('p', 'f') "
    "ORDER BY c.contype"
).bindparams(bindparam("tables", expanding=True))
_INDEXES = text(
    "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
    "AND i.tablename IN :tables AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
).bindparams(bindparam("tables", expanding=True))


def _without_keys(connection: Connection) -> list[str]:
    """Drop the two tables' keys and indexes for a bulk load; the statements that make them again."""
    constraints = connection.execute(_CONSTRAINTS, {"tables": list(_TABLES)}).all()
    indexes = connection.execute(_INDEXES, {"tables": list(_TABLES)}).all()
    for table, name, _, _ in constraints:  # foreign key first (ordered 'f' before 'p')
        connection.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    for name, _ in indexes:
        connection.execute(text(f"DROP INDEX {name}"))
    primary = [f"ALTER TABLE {t} ADD CONSTRAINT {n} {d}" for t, n, d, kind in constraints if kind == "p"]
    foreign = [f"ALTER TABLE {t} ADD CONSTRAINT {n} {d}" for t, n, d, kind in constraints if kind == "f"]
    return [*primary, *(definition for _, definition in indexes), *foreign]


def fill_postgres(url: str, rows: int, months: int = 1) -> None:
    """Rows generated by PostgreSQL; the ledger's keys and indexes dropped for the load and made again
    (the same definitions, read from the catalogue), as a bulk load into any database is done."""
    prepare(url)
    engine = create_engine(url)
    # Spread over ``months`` periods of October's length, ending with October itself.
    begin = START.timestamp() - (months - 1) * SECONDS
    started = f"to_timestamp({begin}) + make_interval(secs => {months * SECONDS}::float8 * i / {rows})"
    series = f"FROM generate_series(0::bigint, {rows - 1}) AS i"
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL synchronous_commit = off"))
        connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        again = _without_keys(connection)
        millisecond = f"({int(begin * 1000)} + {months * SECONDS * 1000}::bigint * i / {rows})"
        request_id = (  # UUID version 7: the row's millisecond, then hashed bits
            f"lpad(to_hex({millisecond}), 12, '0') || '7' || lpad(to_hex(i % 4096), 3, '0') "
            f"|| lpad(to_hex({_HASH_A}), 8, '0') || lpad(to_hex({_HASH_B}), 8, '0')"
        )
        columns = _columns(started, request_id, "i % 2 = 0")
        connection.execute(text(f"INSERT INTO costkit_requests SELECT {columns} {series}"))
        for key, value in _TAGS:
            connection.execute(
                text(f"INSERT INTO costkit_request_tags SELECT {request_id}, '{key}', {value} {series}")
            )
        for statement in again:
            connection.execute(text(statement))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE costkit_requests"))
        connection.execute(text("VACUUM ANALYZE costkit_request_tags"))
    engine.dispose()


def prepare(url: str) -> None:
    """The ledger's own schema and indexes, made by costkit's migrations."""
    engine = make_engine(resolve_url(url))
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def exact_sum(url: str, since: str, until: str) -> tuple[float, int]:
    """The baseline: seconds for one COUNT/SUM over the period, and that exact sum."""
    from costkit.ledger.schema import UTCDateTime
    from costkit.reports.period import period_of

    period = period_of(datetime.fromisoformat(since).date(), datetime.fromisoformat(until).date(), "UTC")
    engine = make_engine(resolve_url(url))
    statement = text(
        "SELECT COUNT(*), SUM(cost_nanousd) FROM costkit_requests WHERE started_at >= :a AND started_at < :b"
    ).bindparams(bindparam("a", type_=UTCDateTime()), bindparam("b", type_=UTCDateTime()))
    try:
        with engine.connect() as connection:
            began = time.perf_counter()
            _, total = connection.execute(statement, {"a": period.since, "b": period.until}).one()
            return time.perf_counter() - began, int(total)
    finally:
        engine.dispose()


def timed(runs: int, action: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def measure(
    label: str, url: str, period: tuple[str, str], by: list[str], runs: int, goal: float, out: Path
) -> bool:
    def make() -> Report:
        made = costkit.report(url, since=period[0], until=period[1], by=by, budgets=[])
        made.write(out)
        return made

    make()  # warm: imports, plotly's templates, the database's cache
    median, made = timed(runs, make)
    baseline = statistics.median(exact_sum(url, *period)[0] for _ in range(runs))
    _, total = exact_sum(url, *period)
    assert isinstance(made, Report)
    exact = made.totals["cost_nanousd"] == total
    verdict = "OK" if median <= goal and exact else "MISSED"
    print(
        f"{label:<66} report+files p50 {median:6.3f} s (goal <= {goal:.0f} s)  "
        f"baseline SUM p50 {baseline:6.3f} s  ratio {median / baseline:5.1f}  "
        f"rows {made.totals['requests']:>9,}  total = SUM: {exact}  {verdict}",
        flush=True,
    )
    return verdict == "OK"


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(sql)


def bench_postgres(args: argparse.Namespace, directory: Path) -> bool:
    """The month on a 1M-row PostgreSQL ledger, then one day of a 10M-row one, in a schema dropped after."""
    ok = True
    schema = f"costkit_bench_{uuid.uuid4().hex[:10]}"
    pg_admin(f"CREATE SCHEMA {schema}")
    try:
        url = PG_URL.format(schema=schema)
        began = time.perf_counter()
        fill_postgres(url, args.rows)
        print(f"postgresql: {args.rows:,} rows generated in {time.perf_counter() - began:.1f} s", flush=True)
        for by in ([], BY):
            label = f"postgresql {args.rows:,} rows, month, by model{''.join(', ' + b for b in by)}"
            ok &= measure(label, url, MONTH, by, args.runs, 3, directory / "b")
        if not args.no_big:
            pg_admin(f"DROP SCHEMA {schema} CASCADE")
            pg_admin(f"CREATE SCHEMA {schema}")
            began = time.perf_counter()
            fill_postgres(url, args.big_rows, BIG_MONTHS)
            took = time.perf_counter() - began
            print(f"postgresql: {args.big_rows:,} rows generated in {took:.1f} s", flush=True)
            label = f"postgresql {args.big_rows:,} rows, one day, by model, {', '.join(BY)}"
            ok &= measure(label, url, DAY, BY, args.runs, 1, directory / "c")
    finally:
        pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-big", action="store_true")
    args = parser.parse_args()
    import pandas
    import plotly
    import sqlalchemy

    print(
        f"bench_report: medians of {args.runs} runs; {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}; "
        f"Python {platform.python_version()}, pandas {pandas.__version__}, plotly {plotly.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}; {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        if not args.no_sqlite:
            path = directory / "bench.sqlite"
            began = time.perf_counter()
            fill_sqlite(path, args.rows)
            print(f"sqlite: {args.rows:,} rows generated in {time.perf_counter() - began:.1f} s", flush=True)
            for by in ([], BY):
                label = f"sqlite {args.rows:,} rows, month, by model{''.join(', ' + b for b in by)}"
                ok &= measure(label, f"sqlite:///{path}", MONTH, by, args.runs, 3, directory / "a")
            path.unlink()
            began = time.perf_counter()
            fill_sqlite(path, args.rows, legacy_ids=True)
            print(f"sqlite: {args.rows:,} rows, legacy ids, generated in {time.perf_counter() - began:.1f} s")
            label = f"sqlite {args.rows:,} rows, legacy ids, month, by model, {', '.join(BY)}"
            ok &= measure(label, f"sqlite:///{path}", MONTH, BY, args.runs, 3, directory / "a")
        if not args.no_postgres:
            ok &= bench_postgres(args, directory)
    print(
        f"load average at the end {os.getloadavg()[0]:.2f}; {'all goals met' if ok else 'a goal was MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
