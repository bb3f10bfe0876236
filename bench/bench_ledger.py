"""Ledger throughput and ``record`` latency, on SQLite and PostgreSQL (not run by pytest).

For each backend and run: a fresh, migrated database, N pre-built rows (two tags each)
passed to ``Ledger.record`` one by one on the caller's thread, timed with
``perf_counter_ns`` around every call, then ``flush()``. Rows per second is N
over the time from the first ``record`` to the end of ``flush``: sustained
throughput into the database. The baseline is the same rows inserted
synchronously through the ledger's own store (no queue, no thread), one
transaction per batch as large as the biggest the ledger's writer commits
(``batch_size``: the Ledger's default unless ``--batch-size``, passed to both),
measured in the same run: the ratio is then what the queue and the writer thread
cost or save, not a difference in batch size. Prints medians over the runs.

    .venv/bin/python bench/bench_ledger.py [--rows N] [--runs R] [--batch-size B] [--no-postgres] [--quick]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from costkit.ledger import Ledger
from costkit.ledger.records import record_of
from costkit.ledger.row import Row
from costkit.ledger.store import Store

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
GOALS = {"sqlite": 20_000, "postgresql": 10_000}
P99_GOAL_US = 50.0
LEDGER_BATCH_SIZE: int = inspect.signature(Ledger).parameters["batch_size"].default


def make_rows(n: int) -> list[Row]:
    start = datetime(2025, 4, 14, tzinfo=timezone.utc)
    return [
        Row(
            model="gpt-4.1",
            status="ok",
            started_at=start + timedelta(milliseconds=i),
            finished_at=start + timedelta(milliseconds=i + 850),
            endpoint_host="platform.qubrid.com",
            http_status=200,
            input_tokens=2006,
            cached_input_tokens=1920,
            output_tokens=300,
            usage_source="provider",
            cost_nanousd=3_532_000,
            price_id="gpt-4.1@2025-04-14",
            latency_us=850_000,
            tags={"team": f"t{i % 5}", "user": f"u{i % 17}"},
        )
        for i in range(n)
    ]


@contextmanager
def sqlite_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{Path(directory) / 'ledger.sqlite'}"


@contextmanager
def postgres_db() -> Iterator[str]:
    import psycopg

    schema = f"costkit_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PG_URL.format(schema=schema)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def run_ledger(url: str, rows: list[Row], batch_size: int) -> tuple[float, float, float]:
    """(rows/s through record+flush, p50 µs, p99 µs) for one fresh database."""
    with tempfile.TemporaryDirectory() as spool:
        book = Ledger(url, spool_dir=spool, batch_size=batch_size)
        if not book.flush():  # the writer has created the schema: neither side times the migration
            raise SystemExit("the ledger could not prepare its database")
        latencies = [0] * len(rows)
        clock = time.perf_counter_ns
        record = book.record
        begin = clock()
        for i, row in enumerate(rows):
            t = clock()
            record(row)
            latencies[i] = clock() - t
        if not book.flush():
            raise SystemExit("flush failed: the database did not take every row")
        elapsed = (clock() - begin) / 1e9
        book.close()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] / 1000
    p99 = latencies[int(len(latencies) * 0.99)] / 1000
    return len(rows) / elapsed, p50, p99


def run_baseline(url: str, rows: list[Row], batch_size: int) -> float:
    """Rows/s for synchronous inserts of the same rows through the ledger's store, ``batch_size`` a commit."""
    with tempfile.TemporaryDirectory() as spool:
        book = Ledger(url, spool_dir=spool)
        book.close()
    from costkit.ledger.engine import make_engine
    from costkit.ledger.location import resolve_url

    engine = make_engine(resolve_url(url))
    store = Store(engine)
    store.ensure_schema()  # checked (and connected) before the clock starts, as the ledger's writer is
    begin = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        store.insert([record_of(r, False) for r in rows[i : i + batch_size]])
    elapsed = time.perf_counter() - begin
    engine.dispose()
    return len(rows) / elapsed


def bench(name: str, database: Callable[[], contextmanager], n: int, runs: int, batch_size: int) -> bool:  # type: ignore[type-arg]
    rates, p50s, p99s, baselines = [], [], [], []
    for _ in range(runs):
        rows = make_rows(n)
        with database() as url:
            rate, p50, p99 = run_ledger(url, rows, batch_size)
        rows = make_rows(n)
        with database() as url:
            baselines.append(run_baseline(url, rows, batch_size))
        rates.append(rate)
        p50s.append(p50)
        p99s.append(p99)
    rate, base = statistics.median(rates), statistics.median(baselines)
    p50, p99 = statistics.median(p50s), statistics.median(p99s)
    ok = rate >= GOALS[name] and p99 <= P99_GOAL_US
    print(
        f"{name:<10} {rate:>10,.0f} rows/s (goal {GOALS[name]:,}; runs: "
        f"{', '.join(f'{r:,.0f}' for r in rates)})  baseline sync insert, {batch_size:,} a commit, "
        f"{base:>9,.0f} rows/s "
        f"(ratio {rate / base:.2f})  record p50 {p50:.1f} µs  p99 {p99:.1f} µs (goal ≤ {P99_GOAL_US:.0f})"
        f"  {'OK' if ok else 'MISSED'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=LEDGER_BATCH_SIZE,
        help=f"rows a transaction, for the ledger's writer and the baseline alike ({LEDGER_BATCH_SIZE:,})",
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 rows, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs = 10_000, 1
    print(
        f"bench_ledger: {args.rows:,} rows x {args.runs} runs, medians; batch size {args.batch_size:,} "
        f"for both the ledger and the baseline; Python {sys.version.split()[0]}"
    )
    ok = bench("sqlite", sqlite_db, args.rows, args.runs, args.batch_size)
    if not args.no_postgres:
        ok = bench("postgresql", postgres_db, args.rows, args.runs, args.batch_size) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
