"""Time a hard budget adds to a request, on SQLite and PostgreSQL, as the ledger grows (not run by pytest).

For each backend: one fresh database, grown step by step (default 10k, 100k, 1M rows,
seeded in batches of 5,000 through the ledger's own ``Store``, as its writer inserts them:
rows in the current month, so the budget covers every one of them). At each size, the
same chat-completions request (~30 prompt tokens, ``max_tokens`` 16) goes through two
``httpx`` clients sharing one ``Ledger``: ``costkit.Transport`` with no budget (the
baseline) and with a hard budget (reserve before sending, settle with the row). Both wrap
``httpx.MockTransport`` answering a canned provider response, so the network adds no
noise: what differs is only the budget's work on the request path. Requests alternate
between the two clients in pairs; medians are over all pairs. The budget's one-off
registration (which sums the current period once) is timed on its own.

    .venv/bin/python bench/bench_budgets.py [--sizes 10000,100000,1000000] [--pairs N]
                                            [--quick] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from sqlalchemy import text

import costkit
from costkit.budgets.store import budget_store
from costkit.ledger.records import record_of
from costkit.money import to_usd

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
GOALS_MS = {"sqlite": 1.0, "postgresql": 2.0}
BODY = json.dumps(
    {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "Summarise the quarterly spend report in one line."}],
        "max_tokens": 16,
        "stream": False,
    }
).encode()
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1744316542,
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Spend rose 4% on search.", "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 22, "completion_tokens": 7, "total_tokens": 29},
    }
).encode()
URL = "https://platform.qubrid.com/v1/chat/completions"
_COUNTER = text(
    "SELECT spent_nanousd FROM costkit_budget_periods WHERE budget = :b ORDER BY period_start DESC LIMIT 1"
)


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=ANSWER, headers={"content-type": "application/json"})


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


def seed(ledger: costkit.Ledger, start: int, stop: int) -> float:
    """Insert rows ``start``..``stop`` through the ledger's store; seconds taken."""
    now = datetime.now(timezone.utc)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = max((now - month).total_seconds() - 1, 1.0)
    began = time.perf_counter()
    for first in range(start, stop, 5000):
        rows = [
            costkit.Row(
                model="gpt-4.1",
                status="ok",
                request_id=f"seed-{i}",
                started_at=month + timedelta(seconds=span * i / 1_000_000 % span),
                input_tokens=2006,
                cached_input_tokens=1920,
                output_tokens=300,
                usage_source="provider",
                cost_nanousd=3_532_000,
                tags={"team": f"t{i % 5}"},
            )
            for i in range(first, min(first + 5000, stop))
        ]
        ledger._store.insert([record_of(r, False) for r in rows])
    return time.perf_counter() - began


def timed(client: httpx.Client) -> int:
    began = time.perf_counter_ns()
    response = client.post(URL, content=BODY, headers={"content-type": "application/json"})
    response.read()
    response.close()
    if response.status_code != 200:
        raise SystemExit(f"the request failed: {response.status_code}")
    return time.perf_counter_ns() - began


def measure(plain: httpx.Client, budgeted: httpx.Client, pairs: int) -> tuple[float, float]:
    """(median µs without, median µs with a budget) over ``pairs`` alternating pairs."""
    without, with_budget = [], []
    for i in range(pairs):
        if i % 2:
            without.append(timed(plain))
            with_budget.append(timed(budgeted))
        else:
            with_budget.append(timed(budgeted))
            without.append(timed(plain))
    return statistics.median(without) / 1000, statistics.median(with_budget) / 1000


def bench(name: str, database: object, sizes: list[int], pairs: int) -> bool:
    ok = True
    with database() as url, tempfile.TemporaryDirectory() as spool:  # type: ignore[operator]
        ledger = costkit.Ledger(url, spool_dir=spool)
        plain = httpx.Client(transport=costkit.Transport(httpx.MockTransport(answer), ledger=ledger))
        store = budget_store(ledger._store)
        seeded = 0
        for size in sizes:
            seconds = seed(ledger, seeded, size)
            seeded = size
            budget = costkit.Budget(f"bench-{size}", "1000000000")
            began = time.perf_counter()
            store.ensure_registered([budget])  # a new budget: it sums the current period once
            registration_ms = (time.perf_counter() - began) * 1000
            budgeted = httpx.Client(
                transport=costkit.Transport(httpx.MockTransport(answer), ledger=ledger, budgets=[budget])
            )
            measure(plain, budgeted, 50)  # warm both paths
            ledger.flush()
            base, hard = measure(plain, budgeted, pairs)
            budgeted.close()
            added_ms = (hard - base) / 1000
            goal = GOALS_MS[name]
            ok = ok and added_ms <= goal
            if not ledger.flush(60):
                raise SystemExit("flush failed")
            status = ledger.budget_status(budget)
            with ledger.engine.connect() as connection:
                counted = connection.execute(_COUNTER, {"b": budget.name}).scalar_one()
            agrees = to_usd(counted) == status.spent_usd
            print(
                f"{name:<10} {size:>9,} rows (seeded in {seconds:5.1f} s)  no budget p50 {base:6.0f} µs  "
                f"hard budget p50 {hard:6.0f} µs  added {added_ms * 1000:+5.0f} µs "
                f"(goal ≤ {goal * 1000:.0f})  "
                f"ratio {hard / base:.2f}  registration {registration_ms:7.1f} ms  "
                f"counter {'= rows' if agrees else 'DISAGREES'}  {'OK' if added_ms <= goal else 'MISSED'}",
                flush=True,
            )
            ok = ok and agrees
        plain.close()
        ledger.close()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="sizes 10k and 100k, 300 pairs")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    pairs = 300 if args.quick else args.pairs
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench_budgets: {pairs} alternating pairs a size, medians; Python {sys.version.split()[0]}; "
        f"{os.cpu_count()} cpus, load average {load:.2f} at start"
    )
    ok = bench("sqlite", sqlite_db, sizes, pairs)
    if not args.no_postgres:
        ok = bench("postgresql", postgres_db, sizes, pairs) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
