"""Budget counters in the ledger: every writer counts, exactly once, in the period each row belongs to.

These run on a real SQLite file and a real PostgreSQL schema. Rows go in through
``Ledger.record`` (the writer thread) or a spool replay, as they do in use; the
counters are read back with plain SQL and compared with ``Ledger.budget_status``,
which sums the rows themselves.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text

import costkit
from costkit.budgets.store import Claim, Refused
from costkit.ledger.errors import LedgerError
from costkit.ledger.records import record_of, spool_line
from tests.budget_helpers import counter, counters, register, reservations, start_python, store_of, usd
from tests.ledger_helpers import db_url, make_row, pg_schema, pg_url

__all__ = ["db_url", "pg_schema"]

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


def now() -> datetime:
    return datetime.now(UTC)


def row(request_id: str, cost: int, at: datetime | None = None, **tags: str) -> costkit.Row:
    return make_row(request_id=request_id, cost_nanousd=cost, started_at=at or now(), tags=tags)


def test_spend_before_and_after_registration_counts_once_in_the_current_period(db_url: str) -> None:
    with costkit.Ledger(db_url) as ledger:
        for r in (
            row("before-search", 1000, team="search"),
            row("before-ads", 2000, team="ads"),
            row("before-unpriced", 0, team="search"),
            row("last-year", 5000, now() - timedelta(days=400), team="search"),
        ):
            ledger.record(r)
        assert ledger.flush(10)
        search = costkit.Budget("search", "1", tags={"team": "search"})
        everything = costkit.Budget("everything", "1")
        register(ledger, search, everything)
        assert counter(db_url, "search") == (1000, 0)  # summed once, at registration
        assert counter(db_url, "everything") == (3000, 0)

        ledger.record(row("after-search", 300, team="search", user="ana"))
        ledger.record(row("after-none", 7, user="ana"))
        assert ledger.flush(10)
        assert counter(db_url, "search") == (1300, 0)
        assert counter(db_url, "everything") == (3307, 0)
        status = ledger.budget_status(search)
        assert (status.spent_usd, status.reserved_usd) == (usd(1300), 0)
        assert status.remaining_usd == Decimal("1") - usd(1300)
        assert ledger.budget_status("everything").spent_usd == usd(3307)
        register(ledger, search)  # again, unchanged: nothing is counted twice
        assert counter(db_url, "search") == (1300, 0)


def test_a_row_stored_again_or_replayed_from_the_spool_counts_once(db_url: str) -> None:
    with costkit.Ledger(db_url) as ledger:
        register(ledger, costkit.Budget("all", "1"))
        ledger.record(row("x", 1000))
        assert ledger.flush(10)
        # One batch holding a row already stored and a new one (SQLite must find out which is new).
        ledger.record(row("x", 1000))
        ledger.record(row("y", 500))
        assert ledger.flush(10)
        assert counter(db_url, "all") == (1500, 0)
        # A spool holding a committed row and a new one (what a SIGTERM spill can leave).
        lines = [spool_line(record_of(row(i, c), store_text=False)) for i, c in (("y", 500), ("z", 20))]
        ledger.spool.append(lines, fsync=True)
        assert ledger.replay().rows == 2
        assert counter(db_url, "all") == (1520, 0)
        assert ledger.budget_status("all").spent_usd == usd(1520)


def test_a_reservation_is_released_by_its_row_once_even_after_its_lease_ran_out(db_url: str) -> None:
    budget = costkit.Budget("b", usd(10_000))
    with costkit.Ledger(db_url) as ledger:
        register(ledger, budget)
        store = store_of(ledger)
        start = budget.bounds(now())[0]
        store.reserve("r1", [Claim(budget, start, 5000)], lease_s=60)
        assert counter(db_url, "b") == (0, 5000)
        ledger.record(row("r1", 3000))
        assert ledger.flush(10)
        assert counter(db_url, "b") == (3000, 0) and reservations(db_url) == []

        store.reserve("r2", [Claim(budget, start, 4000)], lease_s=0.05)
        time.sleep(0.1)  # r2's process is gone: its lease runs out
        store.reserve("r3", [Claim(budget, start, 6000)], lease_s=60)  # fits only once r2 is swept
        assert counter(db_url, "b") == (3000, 6000)
        ledger.record(row("r2", 4000))  # r2's row arrives late: its hold was already released
        assert ledger.flush(10)
        assert counter(db_url, "b") == (7000, 6000)
        assert [r[0] for r in reservations(db_url)] == ["r3"]
        with pytest.raises(Refused) as refused:
            store.reserve("r4", [Claim(budget, start, 1)], lease_s=60)
        assert (refused.value.spent_nanousd, refused.value.reserved_nanousd) == (7000, 6000)
        ledger.record(row("r3", 6000))
        assert ledger.flush(10)
        assert counter(db_url, "b") == (13_000, 0)
        assert ledger.budget_status(budget).spent_usd == usd(13_000)


WRITER = """
import sys, datetime, costkit
for url in sys.argv[1:]:
    with costkit.Ledger(url) as ledger:  # no budgets anywhere in this process
        ledger.record(costkit.Row(
            model="gpt-4.1", status="ok", input_tokens=10, output_tokens=5, usage_source="provider",
            cost_nanousd=60000, started_at=datetime.datetime.now(datetime.timezone.utc),
            tags={"team": "search"},
        ))
"""


def test_a_process_with_no_budgets_counts_toward_them(tmp_path: Path, pg_schema: str) -> None:
    urls = [f"sqlite:///{tmp_path / 'ledger.sqlite'}", pg_url(pg_schema)]
    budget = costkit.Budget("search", usd(100_000), tags={"team": "search"})
    ledgers = [costkit.Ledger(url) for url in urls]
    try:
        for ledger in ledgers:
            register(ledger, budget)
        child = start_python(WRITER, tmp_path, *urls)
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        for ledger, url in zip(ledgers, urls, strict=True):
            assert counter(url, "search") == (60_000, 0)
            with pytest.raises(Refused):
                store_of(ledger).reserve("next", [Claim(budget, budget.bounds(now())[0], 40_001)], 60)
            store_of(ledger).reserve("next", [Claim(budget, budget.bounds(now())[0], 40_000)], 60)
    finally:
        for ledger in ledgers:
            ledger.close()


def _hours(start: datetime, end: datetime) -> float:
    """Elapsed hours (in UTC: Python subtracts two times of one zone as wall-clock times)."""
    return (end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(hours=1)


def test_rows_count_in_the_berlin_month_and_day_they_started_in(db_url: str) -> None:
    month = costkit.Budget("month", "1", tz="Europe/Berlin")
    day = costkit.Budget("day", "1", period="day", tz="Europe/Berlin")
    last_second = datetime(2026, 3, 31, 23, 59, 59, tzinfo=BERLIN)
    with costkit.Ledger(db_url) as ledger:
        register(ledger, month, day)
        ledger.record(row("march", 100, last_second))
        ledger.record(row("april", 20, last_second + timedelta(seconds=1)))
        ledger.record(row("spring-early", 3, datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN)))
        ledger.record(row("spring-late", 4, datetime(2026, 3, 29, 23, 30, tzinfo=BERLIN)))
        ledger.record(row("fall-first-0230", 5, datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)))
        ledger.record(row("fall-second-0230", 6, datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN)))
        ledger.record(row("fall-late", 7, datetime(2026, 10, 25, 23, 59, 59, tzinfo=BERLIN)))
        ledger.record(row("day-after", 8, datetime(2026, 10, 26, 0, 0, tzinfo=BERLIN)))
        assert ledger.flush(10)

        months = counters(db_url, "month")
        assert months[datetime(2026, 2, 28, 23, tzinfo=UTC)] == (107, 0)  # March 1, 00:00 CET
        assert months[datetime(2026, 3, 31, 22, tzinfo=UTC)] == (20, 0)  # April 1, 00:00 CEST
        assert months[datetime(2026, 9, 30, 22, tzinfo=UTC)] == (26, 0)  # October 1, 00:00 CEST
        assert sum(spent for spent, _ in months.values()) == 107 + 20 + 26  # and the current month: 0
        days = counters(db_url, "day")
        assert days[datetime(2026, 3, 28, 23, tzinfo=UTC)] == (7, 0)  # the 23-hour day
        assert days[datetime(2026, 10, 24, 22, tzinfo=UTC)] == (18, 0)  # the 25-hour day
        assert days[datetime(2026, 10, 25, 23, tzinfo=UTC)] == (8, 0)

        march = ledger.budget_status(month, at=last_second)
        assert (march.period_start, march.period_end) == (
            datetime(2026, 3, 1, tzinfo=BERLIN),
            datetime(2026, 4, 1, tzinfo=BERLIN),
        )
        assert march.period_start.utcoffset() == timedelta(hours=1)
        assert march.period_end is not None and march.period_end.utcoffset() == timedelta(hours=2)
        assert march.spent_usd == usd(107)
        assert ledger.budget_status(month, at=last_second + timedelta(seconds=1)).spent_usd == usd(20)
        fall = ledger.budget_status(day, at=datetime(2026, 10, 25, 12, tzinfo=BERLIN))
        assert fall.period_end is not None and _hours(fall.period_start, fall.period_end) == 25
        assert fall.spent_usd == usd(18)
        spring = ledger.budget_status(day, at=datetime(2026, 3, 29, 12, tzinfo=BERLIN))
        assert spring.period_end is not None and _hours(spring.period_start, spring.period_end) == 23
        assert spring.spent_usd == usd(7)


def test_a_new_period_starts_at_zero_without_a_job(db_url: str) -> None:
    budget = costkit.Budget("daily", usd(1000), period="day")
    with costkit.Ledger(db_url) as ledger:
        register(ledger, budget)
        ledger.record(row("yesterday", 1000, now() - timedelta(days=1)))  # yesterday's cap, all spent
        assert ledger.flush(10)
        today = budget.bounds(now())[0]
        store_of(ledger).reserve("today", [Claim(budget, today, 1000)], 60)
        assert counters(db_url, "daily")[today] == (0, 1000)
        assert counters(db_url, "daily")[today - timedelta(days=1)] == (1000, 0)


def test_warnings_are_recorded_once_per_budget_threshold_and_period(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from costkit.budgets.events import listen

    soft = costkit.Budget("soft", usd(1000), hard=False, warn_at=(0.5, 1.0))
    heard: list[object] = []
    with costkit.Ledger(db_url) as first, costkit.Ledger(db_url) as second:
        listen(first._store, ["soft"], heard.append)
        register(first, soft)
        register(second, soft)
        first.record(row("a", 600))  # crosses 50%
        assert first.flush(10)
        second.record(row("b", 300))  # 90%: nothing new
        assert second.flush(10)
        second.record(row("c", 200))  # crosses 100%, in the other ledger
        assert second.flush(10)
        first.record(row("d", 900))  # far past: nothing new
        assert first.flush(10)
        events = first.budget_events()
    assert [(e.budget, e.threshold, e.spent_usd) for e in events] == [
        ("soft", Decimal("0.5"), usd(600)),
        ("soft", Decimal("1"), usd(1100)),
    ]
    assert [getattr(e, "threshold", None) for e in heard] == [
        Decimal("0.5")
    ]  # heard by the ledger that crossed
    warnings = [r.getMessage() for r in caplog.records if "reached" in r.getMessage()]
    assert len(warnings) == 2 and "reached 50% of its $0.000001" in warnings[0]


def test_a_budget_registered_while_rows_are_written_misses_none(db_url: str) -> None:
    """The PostgreSQL race: registration sums the period while another writer commits rows."""
    stop = threading.Event()
    with costkit.Ledger(db_url, batch_size=3) as writer, costkit.Ledger(db_url) as registrar:
        writer.record(row("warm-up", 1))
        assert writer.flush(10)

        def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                writer.record(row(f"w{n}", n))
                if n % 5 == 0:
                    writer.flush(10)

        thread = threading.Thread(target=write)
        thread.start()
        budgets = [costkit.Budget(f"b{i}", "1") for i in range(6)]
        try:
            for budget in budgets:
                time.sleep(0.03)
                register(registrar, budget)
        finally:
            stop.set()
            thread.join()
        assert writer.flush(10)
        total = registrar.budget_status(budgets[0]).spent_usd
        assert total > usd(10)
        for budget in budgets:
            spent, reserved = counter(db_url, budget.name)
            assert (usd(spent), reserved) == (total, 0), budget.name


def test_a_new_scope_under_the_same_name_is_counted_afresh(db_url: str) -> None:
    with costkit.Ledger(db_url) as ledger:
        ledger.record(row("s", 100, team="search"))
        ledger.record(row("a", 20, team="ads"))
        assert ledger.flush(10)
        register(ledger, costkit.Budget("team", "1", tags={"team": "search"}))
        assert counter(db_url, "team") == (100, 0)
        register(ledger, costkit.Budget("team", "2", tags={"team": "search"}))  # a new limit keeps the count
        assert counter(db_url, "team") == (100, 0)
        register(ledger, costkit.Budget("team", "2", tags={"team": "ads"}))
        assert counter(db_url, "team") == (20, 0)


def test_a_budget_this_machine_cannot_read_never_costs_a_row(db_url: str) -> None:
    engine = create_engine(db_url)
    with costkit.Ledger(db_url) as ledger:
        ledger.record(row("first", 1))
        assert ledger.flush(10)
        with engine.begin() as connection:  # registered by a machine that knows a zone this one lacks
            connection.execute(
                text(
                    "INSERT INTO costkit_budgets (name, limit_nanousd, period, tz, tags, hard, warn_at, "
                    "registered_at) VALUES ('mars', 5, 'day', 'Mars/Olympus_Mons', '{}', true, '1', :t)"
                ),
                {"t": now().replace(tzinfo=None) if db_url.startswith("sqlite") else now()},
            )
        register(ledger, costkit.Budget("earth", "1"))
        ledger.record(row("second", 2))
        assert ledger.flush(10)
        assert {r["request_id"] for r in ledger.rows()} == {"first", "second"}
        assert counter(db_url, "earth") == (3, 0)
        with pytest.raises(LedgerError, match="no budget named 'pluto'"):
            ledger.budget_status("pluto")
    engine.dispose()


def test_a_total_budget_counts_every_row_ever(db_url: str) -> None:
    from costkit.budgets.periods import EPOCH

    with costkit.Ledger(db_url) as ledger:
        ledger.record(row("long-ago", 40, datetime(1999, 12, 31, 23, 59, tzinfo=UTC)))
        assert ledger.flush(10)
        ever = costkit.Budget("ever", "1", period="total", tz="Europe/Berlin")
        register(ledger, ever)
        ledger.record(row("today", 2))
        assert ledger.flush(10)
        assert counters(db_url, "ever") == {EPOCH: (42, 0)}
        status = ledger.budget_status(ever)
        assert (status.spent_usd, status.period_end) == (usd(42), None)
        assert status.period_start == EPOCH and status.period_start.tzinfo == BERLIN
