"""A hard budget holds under concurrency: threads, asyncio tasks and processes, on SQLite and PostgreSQL.

Each request costs exactly its worst case (``tests/budget_helpers.py``), and the budget
admits exactly ten of them: of fifty sent at once through the ``openai`` SDK, exactly
ten may reach the server, whatever the interleaving. A process killed with its request
in flight leaves a reservation that runs out after one lease; a live process keeps its
own by extending it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

import costkit
from tests.budget_helpers import (
    BODY,
    WORST,
    admitting,
    counter,
    reservations,
    start_python,
    upstream,
    usd,
)
from tests.ledger_helpers import db_url, pg_schema, pg_url

__all__ = ["db_url", "pg_schema", "upstream"]

SENT, ADMITTED = 50, 10
_SPENT_AND_RESERVED = text(
    "SELECT spent_nanousd + reserved_nanousd FROM costkit_budget_periods WHERE budget = :b"
)


def _watch_counter(url: str, name: str, limit: int, stop: threading.Event, seen: list[int]) -> None:
    """Sample spent + reserved while the requests run: it may never pass the limit."""
    engine = create_engine(url)
    try:
        while True:
            done = stop.is_set()  # one last sample after the requests are all answered
            try:
                with engine.connect() as connection:
                    row = connection.execute(_SPENT_AND_RESERVED, {"b": name}).first()
            except (OperationalError, ProgrammingError):  # the first transport has not made the tables yet
                row = None
            if row is not None:
                seen.append(int(row[0]))
            if done:
                return
            time.sleep(0.002)
    finally:
        engine.dispose()


def _check_outcome(
    url: str, ledger: costkit.Ledger, budget: costkit.Budget, upstream, results: list[str]
) -> None:
    assert results.count("ok") == ADMITTED, results
    assert results.count("refused") == SENT - ADMITTED, results
    assert len(upstream.requests) == ADMITTED
    assert ledger.flush(30)
    rows = ledger.rows()
    assert sorted(r["status"] for r in rows) == ["blocked"] * (SENT - ADMITTED) + ["ok"] * ADMITTED
    assert {r["cost_nanousd"] for r in rows if r["status"] == "ok"} == {WORST}
    status = ledger.budget_status(budget)
    assert status.spent_usd == usd(ADMITTED * WORST) <= budget.usd
    assert status.reserved_usd == 0
    assert counter(url, budget.name) == (ADMITTED * WORST, 0)
    assert reservations(url) == []


def test_fifty_threads_under_a_budget_for_ten_send_exactly_ten(db_url: str, upstream) -> None:
    budget = admitting(ADMITTED)
    with costkit.Ledger(db_url) as ledger:
        client = costkit.wrap(
            openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
            ledger=ledger,
            budgets=[budget],
        )
        start = threading.Barrier(SENT)

        def send(_: int) -> str:
            start.wait()
            try:
                client.chat.completions.create(**BODY)
            except costkit.BudgetExceeded as refusal:
                assert refusal.request_usd == usd(WORST)
                assert refusal.spent_usd + refusal.reserved_usd + refusal.request_usd > refusal.limit_usd
                return "refused"
            return "ok"

        stop, seen = threading.Event(), []
        watcher = threading.Thread(
            target=_watch_counter, args=(db_url, budget.name, budget.limit_nanousd, stop, seen)
        )
        watcher.start()
        try:
            with ThreadPoolExecutor(SENT) as pool:
                results = list(pool.map(send, range(SENT)))
        finally:
            stop.set()
            watcher.join()
        _check_outcome(db_url, ledger, budget, upstream, results)
        assert seen and max(seen) <= budget.limit_nanousd
        assert max(seen) == ADMITTED * WORST  # the ten held at once, or spent: never more


def test_fifty_asyncio_tasks_under_a_budget_for_ten_send_exactly_ten(db_url: str, upstream) -> None:
    budget = admitting(ADMITTED)

    async def main(ledger: costkit.Ledger) -> list[str]:
        client = costkit.wrap(
            openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
            ledger=ledger,
            budgets=[budget],
        )

        async def send() -> str:
            try:
                await client.chat.completions.create(**BODY)
            except costkit.BudgetExceeded:
                return "refused"
            return "ok"

        try:
            return list(await asyncio.gather(*(send() for _ in range(SENT))))
        finally:
            await client.close()

    with costkit.Ledger(db_url) as ledger:
        results = asyncio.run(main(ledger))
        _check_outcome(db_url, ledger, budget, upstream, results)


CHILD = """
import json, os, sys, threading, openai, costkit
base_url, count, limit, body = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
costkit.preflight(body, exact=True)  # the tokenizer loaded before the start
for url in sys.stdin.readline().split():  # one round per database, each started by the test
    budget = costkit.Budget("cap", limit)
    ledger = costkit.Ledger(url)
    client = costkit.wrap(
        openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0), ledger=ledger, budgets=[budget]
    )
    results = []
    def send():
        try:
            client.chat.completions.create(**body)
            results.append("ok")
        except costkit.BudgetExceeded:
            results.append("refused")
    threads = [threading.Thread(target=send) for _ in range(count)]
    print("ready", flush=True)
    sys.stdin.readline()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ledger.close(30)  # every row committed
    print(json.dumps(results), flush=True)
os._exit(0)  # the ledgers are closed: skip the slow interpreter teardown (4 processes on 2 cores)
"""


def test_fifty_requests_from_four_processes_under_a_budget_for_ten_send_exactly_ten(
    upstream, tmp_path: Path, pg_schema: str
) -> None:
    """One set of four processes, one round on SQLite and one on PostgreSQL (they start slowly)."""
    budget = admitting(ADMITTED)
    urls = [f"sqlite:///{tmp_path / 'ledger.sqlite'}", pg_url(pg_schema)]
    shares = [13, 13, 12, 12]
    children = [
        start_python(CHILD, tmp_path, upstream.base_url, str(n), str(budget.usd), json.dumps(BODY))
        for n in shares
    ]

    def tell_all(line: str) -> None:
        for child in children:
            assert child.stdin is not None
            child.stdin.write(line + "\n")
            child.stdin.flush()

    def answers() -> list[str]:
        lines = []
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if not line:
                child.kill()
                pytest.fail(f"a child process failed: {child.stderr.read() if child.stderr else ''}")
            lines.append(line)
        return lines

    try:
        tell_all(" ".join(urls))
        for url in urls:
            assert answers() == ["ready"] * len(children)
            upstream.reset()
            tell_all("go")  # all four at once
            results = [r for line in answers() for r in json.loads(line)]
            with costkit.Ledger(url) as ledger:
                _check_outcome(url, ledger, budget, upstream, results)
        for child in children:
            child.communicate(timeout=60)
            assert child.returncode == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


KILLED = """
import json, sys, threading, openai, costkit
base_url, limit, body, urls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
clients = [
    costkit.wrap(
        openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0),
        ledger=costkit.Ledger(url),
        budgets=[costkit.Budget("cap", limit)],
    )
    for url in urls
]
def send(client):
    client.chat.completions.create(
        **body, extra_headers={"X-Fake-Scenario": "slow", "X-Fake-Delay-Ms": "60000"}
    )
threads = [threading.Thread(target=send, args=(client,)) for client in clients]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_a_killed_process_reservation_runs_out_after_its_lease(
    upstream, tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process holding a reservation in an SQLite and a PostgreSQL ledger is killed with ``SIGKILL``."""
    lease = 2.0
    monkeypatch.setenv("COSTKIT_BUDGET_LEASE_SECONDS", str(lease))
    budget = admitting(1)
    urls = [f"sqlite:///{tmp_path / 'ledger.sqlite'}", pg_url(pg_schema)]
    ledgers = [costkit.Ledger(url) for url in urls]
    clients = [
        costkit.wrap(
            openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
            ledger=ledger,
            budgets=[budget],
        )
        for ledger in ledgers
    ]
    child = start_python(
        KILLED,
        tmp_path,
        upstream.base_url,
        str(budget.usd),
        json.dumps(BODY),
        *urls,
        COSTKIT_BUDGET_LEASE_SECONDS=str(lease),
    )
    try:
        upstream.wait_for_requests(2, timeout=60)  # reserved in both, and in flight
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        killed_at = time.monotonic()
        for client in clients:  # its holds are still there: nobody may take their room
            with pytest.raises(costkit.BudgetExceeded) as refused:
                client.chat.completions.create(**BODY)
            assert (refused.value.spent_usd, refused.value.reserved_usd) == (0, usd(WORST))
        for url in urls:
            ((_, name, amount),) = reservations(url)
            assert (name, amount) == ("cap", WORST)
        for client in clients:
            while True:  # the dead process's hold runs out within one lease; nobody extends it
                try:
                    client.chat.completions.create(**BODY)
                    break
                except costkit.BudgetExceeded:
                    assert time.monotonic() - killed_at < lease + 5, "the killed process's hold never ran out"
                    time.sleep(0.1)
        assert time.monotonic() - killed_at > lease / 3  # it did hold for a while
        assert len(upstream.requests) == 4
        for ledger, url in zip(ledgers, urls, strict=True):
            assert ledger.flush(10)
            assert counter(url, "cap") == (WORST, 0)
            assert reservations(url) == []
    finally:
        if child.poll() is None:
            child.kill()
        for ledger in ledgers:
            ledger.close()


def test_a_long_request_keeps_its_hold_past_the_lease(
    db_url: str, upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = 0.6
    monkeypatch.setenv("COSTKIT_BUDGET_LEASE_SECONDS", str(lease))
    budget = admitting(1)
    with costkit.Ledger(db_url) as ledger:
        slow = costkit.wrap(
            openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
            ledger=ledger,
            budgets=[budget],
        )
        other = costkit.wrap(
            openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
            ledger=ledger,
            budgets=[budget],
        )
        outcome: list[object] = []
        flight = threading.Thread(
            target=lambda: outcome.append(
                slow.chat.completions.create(
                    **BODY, extra_headers={"X-Fake-Scenario": "slow", "X-Fake-Delay-Ms": "2000"}
                )
            )
        )
        flight.start()
        try:
            upstream.wait_for_requests(1, timeout=30)
            time.sleep(3 * lease)  # three leases: a hold nobody extended would be gone
            with pytest.raises(costkit.BudgetExceeded) as refused:
                other.chat.completions.create(**BODY)
            assert refused.value.reserved_usd == usd(WORST)
        finally:
            flight.join(30)
        assert outcome and len(upstream.requests) == 1
        assert ledger.flush(10)
        assert counter(db_url, "cap") == (WORST, 0)


def test_an_asyncio_client_waits_for_its_reservation_off_the_event_loop(tmp_path: Path, upstream) -> None:
    """While another connection holds the SQLite write lock for a second, the reservation waits in a
    worker thread: the event loop keeps running, and the request still carries ``costkit.tags``."""
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    search = admitting(5, "search", tags={"team": "search"})

    async def main(ledger: costkit.Ledger) -> tuple[int, float]:
        client = costkit.wrap(
            openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0),
            ledger=ledger,
            budgets=[search],
        )
        with costkit.tags(team="search"):
            await client.chat.completions.create(**BODY)  # registers the budget
            assert ledger.flush(10)
            blocker = sqlite3.connect(path, timeout=30)
            blocker.execute("BEGIN IMMEDIATE")
            ticks, done = 0, asyncio.Event()

            async def tick() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            async def release() -> None:
                await asyncio.sleep(1.0)  # never runs while the loop is blocked
                blocker.rollback()
                blocker.close()

            ticker, releaser = asyncio.create_task(tick()), asyncio.create_task(release())
            began = time.monotonic()
            await client.chat.completions.create(**BODY)
            waited = time.monotonic() - began
            done.set()
            await asyncio.gather(ticker, releaser)
        await client.close()
        return ticks, waited

    with costkit.Ledger(f"sqlite:///{path}") as ledger:
        ticks, waited = asyncio.run(main(ledger))
        assert waited >= 0.9 and ticks >= 40, (waited, ticks)
        assert ledger.flush(10)
        assert counter(f"sqlite:///{path}", "search") == (2 * WORST, 0)
