"""The writer's edges that mutation testing found unpinned: a close that times out, and what it leaves behind.

Each test here kills mutants of ``costkit/ledger/writer.py`` that the rest of the suite let live
(tests/MUTATION.md lists them). The database is made slow for real: another connection holds
SQLite's write lock (``BEGIN IMMEDIATE``) or a PostgreSQL session holds a lock on the requests
table, so the writer's insert waits inside the database driver, as it would behind a long
transaction of another process.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event

from costkit.ledger import Ledger, lifecycle
from costkit.ledger import writer as writer_module
from costkit.ledger.records import record_of, spool_line
from costkit.ledger.writer import IDLE_CHECK_S, SPILL_LOCK_WAIT_S, Writer
from tests.ledger_helpers import (  # noqa: F401
    TcpProxy,
    db_url,
    ids_in_ledger,
    make_row,
    pg_schema,
    pg_url,
    run_python,
    spooled_ids,
    sqlite_url,
    wait_for,
)

# make_row's usage, priced from GPT-4.1's list prices in nano-USD per token.
INPUT, CACHED, OUTPUT = 2006, 1920, 300
COST = (INPUT - CACHED) * 2000 + CACHED * 500 + OUTPUT * 8000


@contextlib.contextmanager
def write_locked(url: str) -> Iterator[None]:
    """Hold the ledger's write lock from another connection until the block ends (then roll back)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            if url.startswith("sqlite"):
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.exec_driver_sql("BEGIN")
                connection.exec_driver_sql("LOCK TABLE costkit_requests IN SHARE ROW EXCLUSIVE MODE")
            try:
                yield
            finally:
                connection.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def writer_of(book: Ledger) -> Writer:
    return book._writer


def stuck_in_the_database(writer: Writer) -> bool:
    """The writer thread has taken its batch and waits on the database with it."""
    return bool(writer._inflight) and not writer._queue


def warmed(url: str, spool: Path, **options: Any) -> tuple[Ledger, Writer]:
    """A ledger whose schema exists and whose writer is idle, after one committed row, ``warm``."""
    book = Ledger(url, spool_dir=spool, **options)
    book.record(make_row(request_id="warm"))
    assert book.flush(30) is True
    return book, writer_of(book)


def record_stuck(book: Ledger, **fields: Any) -> None:
    """Record the row ``stuck`` and wait until the writer holds it inside the (locked) database."""
    book.record(make_row(request_id="stuck", **fields))
    assert wait_for(lambda: stuck_in_the_database(writer_of(book)), 10)


def test_a_close_that_times_out_on_a_locked_database_leaves_the_queue_in_the_spool(
    db_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    queued = [f"q{i}" for i in range(40)]
    book = Ledger(db_url, spool_dir=spool, batch_size=1)
    book.record(make_row(request_id="warm"))
    assert book.flush(30) is True  # the schema exists, the writer is idle
    writer = writer_of(book)
    with write_locked(db_url):
        record_stuck(book)
        for request_id in queued:
            book.record(make_row(request_id=request_id))
        assert book.close(timeout=0.3) is False  # the writer is still waiting on the lock
        assert writer._thread.is_alive()
        # What close could not write is on disk now: were the process to exit here, it would survive.
        assert Counter(spooled_ids(spool)) >= Counter(queued)
    writer._thread.join(60)  # the lock is gone: the stuck batch commits and the thread ends
    assert not writer._thread.is_alive()
    with Ledger(db_url, spool_dir=spool) as again:
        assert again.flush(30) is True
        rows = again.rows()
    assert Counter(r["request_id"] for r in rows) == Counter(["warm", "stuck", *queued])  # once each
    assert {(r["input_tokens"], r["cached_input_tokens"], r["output_tokens"]) for r in rows} == {
        (INPUT, CACHED, OUTPUT)
    }
    assert {r["cost_nanousd"] for r in rows} == {COST}
    assert spooled_ids(spool) == []


CLOSE_THEN_EXIT = """
import sys, time
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

book = Ledger(sys.argv[1], spool_dir=sys.argv[2], batch_size=1)
book.record(make_row(request_id="stuck"))
deadline = time.monotonic() + 20
while not (book._writer._inflight and not book._writer._queue) and time.monotonic() < deadline:
    time.sleep(0.01)
for i in range(5):
    book.record(make_row(request_id=f"q{i}"))
print(book.close(timeout=0.3), flush=True)
"""


def test_rows_a_timed_out_close_leaves_behind_survive_the_process_exiting(
    db_url: str, tmp_path: Path
) -> None:
    """``close(timeout)`` then a normal exit: the batch stuck in the database and the queue both come back."""
    spool = tmp_path / "spool"
    with Ledger(db_url, spool_dir=spool) as book:  # the schema exists before the lock is taken
        assert book.flush(30) is True
    with write_locked(db_url):
        child = run_python(CLOSE_THEN_EXIT, db_url, str(spool))
        out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "False"
    assert ids_in_ledger(db_url) == []  # the child's insert never got the lock
    with Ledger(db_url, spool_dir=spool) as again:
        assert again.flush(30) is True
    assert Counter(ids_in_ledger(db_url)) == Counter(["stuck", *(f"q{i}" for i in range(5))])


KEPT_IN_MEMORY = "rows are kept in memory and retried"


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "costkit.ledger" and r.levelname == "ERROR"]


def spill_files(spool: Path) -> list[Path]:
    return sorted(spool.glob("claimed-*-spill.jsonl"))


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_sigterm_spill_writes_the_stuck_batch_and_the_queue_as_one_file_in_order(
    db_url: str, tmp_path: Path
) -> None:
    """``spill_for_exit`` (what the SIGTERM handler calls) with a batch stuck in a locked database."""
    spool = tmp_path / "spool"
    queued = [f"q{i}" for i in range(5)]
    book, writer = warmed(db_url, spool, batch_size=1, store_text=True)
    with write_locked(db_url):
        record_stuck(book, prompt_text="p-stuck")
        for request_id in queued:
            book.record(make_row(request_id=request_id, prompt_text=f"p-{request_id}"))
        writer.spill_for_exit()
        [spilled] = spill_files(spool)
        lines = lines_of(spilled)
        assert [line["request_id"] for line in lines] == ["stuck", *queued]  # oldest first
        assert [line["prompt_text"] for line in lines] == ["p-stuck", *(f"p-{q}" for q in queued)]
        assert {line["cost_nanousd"] for line in lines} == {COST}
        assert not (spool / "spool.jsonl").exists()  # the queue went into the spill, not through put
        book.record(make_row(request_id="after"))  # the process lives on: recording still works
    assert book.flush(30) is True  # the stuck batch commits, the spill and "after" are inserted
    assert book.close(30) is True
    assert Counter(ids_in_ledger(db_url)) == Counter(["warm", "stuck", *queued, "after"])
    assert spooled_ids(spool) == []


def test_the_sigterm_spill_does_not_wait_for_a_lock_the_interrupted_code_holds(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with Ledger(sqlite_url, spool_dir=spool) as book:
        writer = writer_of(book)
        with writer._lock:  # as if the signal had landed inside flush() or close()
            writer._queue.append(make_row(request_id="queued"))
            spiller = threading.Thread(target=writer.spill_for_exit)
            started = time.monotonic()
            spiller.start()
            spiller.join(10)
            waited = time.monotonic() - started
            assert not spiller.is_alive(), "the spill waited for the lock without end"
            [spilled] = spill_files(spool)
            assert [line["request_id"] for line in lines_of(spilled)] == ["queued"]
        assert waited >= SPILL_LOCK_WAIT_S * 0.9  # it did wait a little for the batch being taken
        assert book.flush(30) is True
    assert ids_in_ledger(sqlite_url) == ["queued"]


def test_a_durable_record_is_in_the_spool_when_it_returns_and_is_inserted_from_there(
    db_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    book = Ledger(db_url, spool_dir=spool, durable=True, store_text=True)
    with Ledger(db_url, spool_dir=spool) as warm:
        assert warm.flush(30) is True
    with write_locked(db_url):
        for i in range(3):
            book.record(make_row(request_id=f"d{i}", prompt_text=f"p{i}"))
            assert spooled_ids(spool)[-1] == f"d{i}"  # on disk before record returned
    assert Counter(spooled_ids(spool)) <= Counter(["d0", "d1", "d2"])
    assert book.flush(30) is True
    assert book.close(30) is True
    assert spooled_ids(spool) == []
    with Ledger(db_url, spool_dir=spool, store_text=True) as again:
        rows = {r["request_id"]: r for r in again.rows()}
    assert {k: (r["prompt_text"], r["cost_nanousd"]) for k, r in rows.items()} == {
        f"d{i}": (f"p{i}", COST) for i in range(3)
    }


def test_a_full_queue_sends_exactly_the_overflow_to_the_spool(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    book, _ = warmed(sqlite_url, spool, queue_size=3, batch_size=1)
    with write_locked(sqlite_url):
        record_stuck(book)
        for i in range(5):
            book.record(make_row(request_id=f"q{i}"))
        assert spooled_ids(spool) == ["q3", "q4"]  # three fit in the queue, the rest is on disk
    assert book.flush(30) is True
    assert book.close(30) is True
    assert Counter(ids_in_ledger(sqlite_url)) == Counter(["warm", "stuck", *(f"q{i}" for i in range(5))])


def test_a_recorded_row_is_committed_soon_without_flush_and_never_touches_the_spool(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with Ledger(sqlite_url, spool_dir=spool) as book:
        book.record(make_row(request_id="first"))
        assert book.flush(30) is True
        time.sleep(0.3)  # the writer is idle: it waits for the next row, not for its 30 s idle check
        book.record(make_row(request_id="second"))
        assert wait_for(lambda: len(ids_in_ledger(sqlite_url)) == 2, 10)
        assert book.queue_depth == 0
        time.sleep(0.3)  # a cycle no flush woke lingers for more rows, then waits again
        book.record(make_row(request_id="third"))
        assert wait_for(lambda: len(ids_in_ledger(sqlite_url)) == 3, 10)
        assert IDLE_CHECK_S >= 20  # so a row left for the idle check would have missed the waits above
    assert not spool.exists()  # the database kept up: nothing was ever spooled
    assert sorted(ids_in_ledger(sqlite_url)) == ["first", "second", "third"]


@pytest.mark.parametrize(
    "settings",
    [{"queue_size": 0}, {"batch_size": 0}, {"max_retry_delay": 0}, {"max_retry_delay": -1.0}],
)
def test_settings_that_could_not_work_are_refused(sqlite_url: str, settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"^queue_size and batch_size must be >= 1 and max_retry_delay > 0$"):
        Ledger(sqlite_url, **settings)  # type: ignore[arg-type]


def test_the_smallest_settings_work(sqlite_url: str) -> None:
    with Ledger(sqlite_url, queue_size=1, batch_size=1, max_retry_delay=0.5) as book:
        for i in range(3):
            book.record(make_row(request_id=f"r{i}"))
        assert book.flush(30) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["r0", "r1", "r2"]


def test_a_fork_waits_for_the_sqlite_transaction_in_flight_but_not_for_ever(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child must copy idle connections: the fork waits up to ``FORK_WAIT_S`` for the commit."""
    monkeypatch.setattr(lifecycle, "FORK_WAIT_S", 0.5)
    book, _ = warmed(sqlite_url, tmp_path / "spool", batch_size=1)
    with write_locked(sqlite_url):
        record_stuck(book)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        waited = time.monotonic() - started
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert 0.4 <= waited < 2.5, waited  # it waited for the transaction, and gave up at FORK_WAIT_S
    assert book.flush(30) is True  # the parent's writer still owns its lock: the stuck row commits
    assert book.close(30) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["stuck", "warm"]


def test_with_the_database_and_the_spool_both_gone_rows_are_held_then_dropped_and_each_loss_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only way a row is lost while the process lives (module docstring): said, once per kind."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 30.0)  # no retry during the test: one outage
    (tmp_path / "not-a-dir").write_text("")
    (tmp_path / "spool").write_text("")  # the spool directory's name is taken by a file: mkdir fails
    url = f"sqlite:///{tmp_path / 'not-a-dir' / 'ledger.sqlite'}"  # cannot be opened: the database is down
    caplog.set_level(logging.INFO, logger="costkit.ledger")
    book = Ledger(url, spool_dir=tmp_path / "spool", queue_size=2, max_retry_delay=60)
    book.record(make_row(request_id="r0"))
    writer = writer_of(book)
    assert wait_for(lambda: writer._held, 10)  # the writer met the broken spool first, with r0
    with writer._lock:  # the writer cannot move a row out of the queue meanwhile: the bound is exact
        for i in range(1, 10):
            book.record(make_row(request_id=f"r{i}"))  # never raises, whatever happens to the row
    assert book.close(30) is False
    spool = tmp_path / "spool"
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "costkit.ledger"]
    assert messages[:2] == [  # the outage is said first, by the writer's first act, then the spool's
        (
            "WARNING",
            f"costkit ledger: cannot create the directory {tmp_path / 'not-a-dir'} for the ledger database: "
            f"File exists; rows go to the spool {spool} until it answers",
        ),
        ("WARNING", f"costkit ledger: cannot write the spool {spool} (File exists); {KEPT_IN_MEMORY}"),
    ]
    lost = (
        "ERROR",
        f"costkit ledger: rows are being lost: the database, the spool {spool} and the in-memory queue "
        "(2 rows) are all unavailable",
    )
    assert messages.count(lost) == 1
    [final] = [m for m in messages if "could reach neither" in m[1]]
    count = int(final[1].removeprefix("costkit ledger: ").split(" ")[0])
    assert final == (
        "ERROR",
        f"costkit ledger: {count} row(s) could reach neither the database nor the spool {spool}",
    )
    assert count == 2  # the queue's worth (held r0 and one queued) was held to the end; the rest dropped
    assert not any("unexpected" in m[1] for m in messages), messages
    assert len(messages) == 4, messages  # nothing else, and nothing twice


def test_a_new_ledger_replays_what_an_earlier_one_left_in_the_spool_without_being_asked(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with Ledger(sqlite_url, spool_dir=spool) as first:
        assert first.flush(30) is True
    first.record(make_row(request_id="left"))  # after close: to the spool
    assert spooled_ids(spool) == ["left"]
    with Ledger(sqlite_url, spool_dir=spool):
        # No record, no flush: the writer replays at once, not at its idle check 30 s later.
        assert wait_for(lambda: ids_in_ledger(sqlite_url) == ["left"], 10)
    assert spooled_ids(spool) == []


def test_a_close_that_times_out_with_only_a_stuck_batch_says_false(sqlite_url: str, tmp_path: Path) -> None:
    book, writer = warmed(sqlite_url, tmp_path / "spool", batch_size=1)
    with write_locked(sqlite_url):
        record_stuck(book)
        assert book.close(timeout=0.2) is False  # nothing was queued, but "stuck" is not committed
    writer._thread.join(60)
    assert sorted(ids_in_ledger(sqlite_url)) == ["stuck", "warm"]


def test_a_closed_ledger_lets_its_writer_go(sqlite_url: str, tmp_path: Path) -> None:
    """Opening and closing ledgers in a long-lived process does not keep every writer alive."""
    book = Ledger(sqlite_url, spool_dir=tmp_path / "spool")
    book.record(make_row(request_id="one"))
    assert book.close(30) is True
    gone = weakref.ref(book._writer)
    del book
    gc.collect()
    assert gone() is None


def test_a_broken_spool_met_first_by_close_or_record_is_said_once_and_raises_nothing(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue close could not spill is held and still written once the database answers."""
    spool = tmp_path / "spool"
    book, writer = warmed(sqlite_url, spool, batch_size=1)
    spool.write_text("")  # from now on the spool cannot be written
    caplog.set_level(logging.WARNING, logger="costkit.ledger")
    with write_locked(sqlite_url):
        record_stuck(book)
        for i in range(3):
            book.record(make_row(request_id=f"q{i}"))
        assert book.close(timeout=0.2) is False  # the spill fails: the rows stay in memory
        book.record(make_row(request_id="late"))  # closed, and the spool is broken: dropped
    writer._thread.join(60)
    assert not writer._thread.is_alive()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "costkit.ledger"]
    assert messages == [
        (
            "WARNING",
            f"costkit ledger: cannot write the spool {spool} (File exists); rows are kept in memory "
            "and retried",
        ),
        (
            "ERROR",
            f"costkit ledger: rows are being lost: the database, the spool {spool} and the in-memory queue "
            "(100000 rows) are all unavailable",
        ),
    ]
    assert sorted(ids_in_ledger(sqlite_url)) == ["q0", "q1", "q2", "stuck", "warm"]


def test_a_row_recorded_after_close_into_a_broken_spool_raises_nothing(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    spool.write_text("")
    book = Ledger(sqlite_url, spool_dir=spool)
    assert book.close(30) is True
    caplog.set_level(logging.WARNING, logger="costkit.ledger")
    book.record(make_row(request_id="late"))  # the first spool failure is met in the caller's thread
    book.record(make_row(request_id="later"))
    messages = [m for r in caplog.records if r.name == "costkit.ledger" for m in [r.getMessage()]]
    assert messages == [
        f"costkit ledger: cannot write the spool {spool} (File exists); rows are kept in memory and retried",
        f"costkit ledger: rows are being lost: the database, the spool {spool} and the in-memory queue "
        "(100000 rows) are all unavailable",
    ]


def test_flush_says_false_while_rows_can_reach_neither_the_database_nor_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        writer_module, "FIRST_RETRY_S", 30.0
    )  # the next retry is far off: rows go to the spool
    (tmp_path / "not-a-dir").write_text("")
    (tmp_path / "spool").write_text("")
    book = Ledger(f"sqlite:///{tmp_path / 'not-a-dir' / 'ledger.sqlite'}", spool_dir=tmp_path / "spool")
    book.record(make_row(request_id="r0"))
    assert book.flush(10) is False
    assert book.flush(10) is False
    assert book.close(10) is False


class ConnectionCounter:
    """A TCP port on 127.0.0.1 that accepts connections and closes them at once, counting them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.count += 1
            client.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def test_a_database_that_does_not_answer_is_retried_with_backoff_not_hammered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="costkit")
    counter = ConnectionCounter()
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{counter.port}/test"
        book = Ledger(url, spool_dir=tmp_path / "spool", max_retry_delay=0.4)
        deadline = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < deadline:  # a steady trickle of requests while it is down
            book.record(make_row(request_id=f"r{i}"))
            i += 1
            time.sleep(0.01)
        attempts = counter.count
        book.close(10)
    finally:
        counter.close()
    # The first attempt, then retries 0.05, 0.1, 0.2 and every 0.4 s after it: 8 in 2 s. Rows that
    # come between retries go straight to the spool (trying each batch made 20 here, more on a faster
    # machine, which the bound catches).
    assert 3 <= attempts <= 12, attempts
    assert len(spooled_ids(tmp_path / "spool")) == i  # every row waits in the spool
    said = [r.getMessage() for r in caplog.records if "rows go to the spool" in r.getMessage()]
    assert len(said) == 1, said  # the outage is said once, with what the database answered
    assert f"the ledger database {url} is unavailable: " in said[0], said


def test_a_row_recorded_by_a_callback_during_the_sigterm_spill_is_spilled_too(
    sqlite_url: str, tmp_path: Path
) -> None:
    """``spill_all`` (the SIGTERM handler's work) runs the ``before_drain`` callbacks, then spills."""
    spool = tmp_path / "spool"
    book = Ledger(sqlite_url, spool_dir=spool, store_text=True)
    assert book.flush(30) is True

    def settle_a_stream() -> None:
        book.record(make_row(request_id="from-callback", prompt_text="settled late"))

    lifecycle.before_drain(settle_a_stream)
    try:
        with write_locked(sqlite_url):  # the writer cannot take the row to the database meanwhile
            lifecycle.spill_all()
            [spilled] = spill_files(spool)
            [line] = lines_of(spilled)
    finally:
        lifecycle._before_drain.remove(settle_a_stream)
    assert (line["request_id"], line["prompt_text"], line["cost_nanousd"]) == (
        "from-callback",
        "settled late",
        COST,
    )
    assert book.close(30) is True
    assert ids_in_ledger(sqlite_url) == ["from-callback"]


def test_rows_spooled_in_an_outage_are_replayed_soon_after_it_even_under_steady_traffic(
    pg_schema: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    proxy = TcpProxy()
    book = Ledger(pg_url(pg_schema, proxy.port), spool_dir=spool, max_retry_delay=0.2)
    try:
        book.record(make_row(request_id="warm"))
        assert book.flush(30) is True
        proxy.cut()
        down = [f"down{i}" for i in range(20)]
        for request_id in down:
            book.record(make_row(request_id=request_id))
        assert wait_for(lambda: sorted(spooled_ids(spool)) == sorted(down), 10)
        proxy.restore()
        stop = threading.Event()
        live: list[str] = []

        def traffic() -> None:  # requests keep coming: the queue is never empty for long
            while not stop.is_set():
                live.append(f"live{len(live)}")
                book.record(make_row(request_id=live[-1]))
                time.sleep(0)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            replayed = wait_for(lambda: set(down) <= set(ids_in_ledger(pg_url(pg_schema))), 10)
        finally:
            stop.set()
            sender.join()
        assert replayed, "the spooled rows waited for the traffic to stop"
        assert book.close(30) is True
    finally:
        book.close(30)
        proxy.close()
    got = Counter(ids_in_ledger(pg_url(pg_schema)))
    assert got == Counter(["warm", *down, *live])


def test_durable_records_into_a_broken_spool_are_kept_in_memory_up_to_the_queue_size(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    spool.write_text("")  # the spool cannot be written: durable rows fall back to the in-memory queue
    book, _ = warmed(sqlite_url, spool, durable=True, queue_size=2, batch_size=1)
    with write_locked(sqlite_url):
        record_stuck(book)
        book.record(make_row(request_id="q0"))
        book.record(make_row(request_id="q1"))
        assert errors(caplog) == []  # two rows fit in the queue
        book.record(make_row(request_id="q2"))  # the third does not: lost, and said
        assert errors(caplog) == [
            f"costkit ledger: rows are being lost: the database, the spool {spool} and the in-memory queue "
            "(2 rows) are all unavailable"
        ]
    assert book.flush(30) is True
    assert book.close(30) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["q0", "q1", "stuck", "warm"]


def test_a_ledger_closed_before_a_fork_stays_closed_in_the_child(sqlite_url: str, tmp_path: Path) -> None:
    """The child has no writer thread for a closed ledger: its rows go to the spool, not to memory."""
    spool = tmp_path / "spool"
    book = Ledger(sqlite_url, spool_dir=spool)
    assert book.close(30) is True
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            book.record(make_row(request_id="child"))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert spooled_ids(spool) == ["child"]


def test_a_spool_that_breaks_again_after_it_recovered_is_said_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 30.0)  # the database stays down, not retried
    (tmp_path / "not-a-dir").write_text("")
    spool = tmp_path / "spool"
    spool.write_text("")
    caplog.set_level(logging.WARNING, logger="costkit.ledger")
    book = Ledger(f"sqlite:///{tmp_path / 'not-a-dir' / 'ledger.sqlite'}", spool_dir=spool)
    book.record(make_row(request_id="r0"))
    assert wait_for(lambda: writer_of(book)._held, 10)  # first outage of the spool
    spool.unlink()  # the disk is back
    book.record(make_row(request_id="r1"))
    assert wait_for(lambda: spool.is_dir() and sorted(spooled_ids(spool)) == ["r0", "r1"], 10)
    spool.rename(tmp_path / "spool-kept")
    spool.write_text("")  # and gone again
    book.record(make_row(request_id="r2"))
    assert wait_for(lambda: writer_of(book)._held, 10)
    book.close(10)
    broken = [r.getMessage() for r in caplog.records if "cannot write the spool" in r.getMessage()]
    assert broken == [
        f"costkit ledger: cannot write the spool {spool} (File exists); {KEPT_IN_MEMORY}",
        f"costkit ledger: cannot write the spool {spool} (Not a directory); {KEPT_IN_MEMORY}",
    ]
    assert sorted(spooled_ids(tmp_path / "spool-kept")) == ["r0", "r1"]


def test_flush_after_close_says_whether_every_row_reached_the_database(tmp_path: Path) -> None:
    """``flush`` on a closed ledger answers at once, True only when nothing waits anywhere."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    book = Ledger(url, spool_dir=tmp_path / "spool")
    book.record(make_row(request_id="r0"))
    assert book.close(30) is True
    assert book.flush() is True
    assert book.flush(0) is True
    counter = ConnectionCounter()
    try:
        down = Ledger(
            f"postgresql+psycopg://postgres@127.0.0.1:{counter.port}/test", spool_dir=tmp_path / "s2"
        )
        down.record(make_row(request_id="r1"))
        down.close(10)
        assert spooled_ids(tmp_path / "s2") == ["r1"]
        assert down.flush() is False  # the row waits in the spool: not in the database
    finally:
        counter.close()
    book.record(make_row(request_id="late"))  # after close: straight to the spool
    assert book.flush() is False


def test_flush_with_a_timeout_returns_when_it_passes_though_the_database_is_locked(
    sqlite_url: str, tmp_path: Path
) -> None:
    book = Ledger(sqlite_url, spool_dir=tmp_path / "spool")
    book.record(make_row(request_id="warm"))
    assert book.flush(30) is True
    answers: list[bool] = []
    with write_locked(sqlite_url):
        book.record(make_row(request_id="waits"))
        flusher = threading.Thread(target=lambda: answers.append(book.flush(0.3)))
        began = time.monotonic()
        flusher.start()
        flusher.join(20)
        assert not flusher.is_alive() and answers == [False]
        assert time.monotonic() - began < 10
    assert book.flush(30) is True  # the lock is gone: the row commits
    book.close(30)
    assert sorted(ids_in_ledger(sqlite_url)) == ["waits", "warm"]


def test_a_database_lost_after_it_answered_is_said_once_with_its_error(
    pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="costkit")
    proxy = TcpProxy()
    spool = tmp_path / "spool"
    try:
        book = Ledger(pg_url(pg_schema, proxy.port), spool_dir=spool, max_retry_delay=0.2)
        book.record(make_row(request_id="before"))
        assert book.flush(30) is True
        proxy.cut()  # the server is gone: the pooled connection resets, a new one is refused
        book.record(make_row(request_id="during"))

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if "rows go to the spool" in r.getMessage()]

        # The writer spools the batch, then says the outage: wait for both (the spool file alone raced it)
        assert wait_for(lambda: spooled_ids(spool) == ["during"] and said(), 10), said()
        assert "ledger database unavailable: " in said()[0] and f"port {proxy.port}" in said()[0], said()
        proxy.restore()

        def back() -> list[str]:
            infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
            return [m for m in infos if "again" in m]

        # The next retry replays it, then says the database is back (after the spool empties: wait for both)
        assert wait_for(lambda: spooled_ids(spool) == [] and back(), 15), back()
        assert len(said()) == 1, said()  # through every retry of the outage, said once
        assert back() == ["costkit ledger: the database answers again; replaying the spool"]
        assert book.close(30) is True
    finally:
        proxy.close()
    assert sorted(ids_in_ledger(pg_url(pg_schema))) == ["before", "during"]


def _refusing(url: str) -> None:
    """Give the database a rule of its own, which costkit's checks cannot know: ``r17`` is refused."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "ALTER TABLE costkit_requests ADD CONSTRAINT no_r17 CHECK (request_id <> 'r17')"
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("spool_works", [True, False], ids=["spool", "spool-broken"])
def test_a_row_the_database_refuses_is_said_with_where_it_went_or_why(
    pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, spool_works: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="costkit")
    url = pg_url(pg_schema)
    spool = tmp_path / "spool"
    with Ledger(url, spool_dir=spool) as book:
        assert book.rows() == []  # the schema exists
        _refusing(url)
        if not spool_works:
            spool.write_text("")  # its name is taken by a file: the refused row cannot be kept aside
        for i in range(16, 19):
            book.record(make_row(request_id=f"r{i}"))
        assert book.flush(30) is True
    assert sorted(ids_in_ledger(url)) == ["r16", "r18"]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("costkit")]
    if spool_works:
        assert messages == [
            ("ERROR", f"costkit ledger: the database refused 1 row(s), kept in {spool / 'rejected.jsonl'}")
        ]
        [kept] = [json.loads(line) for line in (spool / "rejected.jsonl").read_text().splitlines()]
        assert json.loads(kept["line"])["request_id"] == "r17" and "no_r17" in kept["error"]
        return
    assert len(messages) == 2, messages
    assert messages[0] == (
        "WARNING",
        f"costkit ledger: cannot write the spool {spool} (File exists); {KEPT_IN_MEMORY}",
    )
    level, text = messages[1]
    assert level == "ERROR" and text.startswith("costkit ledger: the database refused 1 row(s): "), text
    assert "no_r17" in text  # the database's own reason, since the row could not be kept


def test_rows_another_process_leaves_in_the_spool_are_replayed_at_the_idle_check(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle writer looks at its spool now and then: what another process spooled reaches the database."""
    monkeypatch.setattr(writer_module, "IDLE_CHECK_S", 0.2)
    spool = tmp_path / "spool"
    book = Ledger(sqlite_url, spool_dir=spool)
    book.record(make_row(request_id="own"))
    assert book.flush(30) is True
    (tmp_path / "not-a-dir").write_text("")
    other = Ledger(f"sqlite:///{tmp_path / 'not-a-dir' / 'x.sqlite'}", spool_dir=spool, durable=True)
    other.record(make_row(request_id="other"))  # on disk in the shared spool when record returns
    other.close(10)
    assert wait_for(lambda: sorted(ids_in_ledger(sqlite_url)) == ["other", "own"], 10)
    assert book.close(30) is True
    assert spooled_ids(spool) == []


def test_the_writer_thread_says_whose_it_is_in_a_thread_dump(sqlite_url: str, tmp_path: Path) -> None:
    """py-spy, faulthandler and debuggers list threads by name: a writer thread must be recognisable."""
    book = Ledger(sqlite_url, spool_dir=tmp_path / "spool")
    try:
        thread = writer_of(book)._thread
        assert thread.name == "costkit-ledger-writer" and thread.daemon and thread.is_alive()
    finally:
        book.close(30)


def test_a_ledger_that_stores_text_keeps_it_in_what_a_timed_out_close_spills(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    book, writer = warmed(sqlite_url, spool, batch_size=1, store_text=True)
    with write_locked(sqlite_url):
        record_stuck(book, prompt_text="stuck prompt", completion_text="stuck answer")
        book.record(
            make_row(request_id="queued", prompt_text="queued prompt", completion_text="queued answer")
        )
        assert book.close(timeout=0.3) is False
    writer._thread.join(60)
    with Ledger(sqlite_url, spool_dir=spool, store_text=True) as again:
        assert again.flush(30) is True
        rows = {r["request_id"]: r for r in again.rows()}
    assert (rows["queued"]["prompt_text"], rows["queued"]["completion_text"]) == (
        "queued prompt",
        "queued answer",
    )
    assert (rows["stuck"]["prompt_text"], rows["stuck"]["completion_text"]) == (
        "stuck prompt",
        "stuck answer",
    )


def test_flush_while_the_database_is_down_tries_it_and_says_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush is a question about the database: asked while it is down, the answer is False."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 30.0)  # no retry of its own: only the flush asks
    counter = ConnectionCounter()
    try:
        book = Ledger(
            f"postgresql+psycopg://postgres@127.0.0.1:{counter.port}/test", spool_dir=tmp_path / "s"
        )
        book.record(make_row(request_id="r0"))
        assert wait_for(lambda: spooled_ids(tmp_path / "s") == ["r0"], 10)
        tried = counter.count
        assert book.flush(10) is False
        assert counter.count > tried  # the flush asked the database again rather than answer from memory
        book.close(10)
    finally:
        counter.close()


def test_an_idle_writer_sleeps(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between requests the writer thread waits on an event: no cycles, no look at the spool."""
    book = Ledger(sqlite_url, spool_dir=tmp_path / "spool")
    try:
        book.record(make_row(request_id="r0"))
        assert book.flush(30) is True
        time.sleep(0.3)  # the cycle that answered the flush lingers 50 ms, then the writer waits
        looks: list[float] = []
        has_pending = book.spool.has_pending
        monkeypatch.setattr(
            book.spool, "has_pending", lambda: looks.append(time.monotonic()) or has_pending()
        )
        time.sleep(1.0)
        assert looks == [], f"the idle writer looked at its spool {len(looks)} times in 1 s"
    finally:
        book.close(30)


def _failing_once(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Make ``Store.<name>`` raise a RuntimeError (a bug, not the database) the next time it is called."""
    from costkit.ledger.store import Store

    real = getattr(Store, name)
    left = [1]

    def failing_once(self: Store, *args: object) -> object:
        if left[0]:
            left[0] -= 1
            raise RuntimeError(f"a bug in {name}")
        return real(self, *args)

    monkeypatch.setattr(Store, name, failing_once)
    return left


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.getMessage(), str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records]


def test_a_bug_met_while_preparing_the_database_is_logged_and_the_rows_still_stored(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 0.05)
    _failing_once(monkeypatch, "ensure_schema")
    caplog.set_level(logging.ERROR, logger="costkit")
    with Ledger(sqlite_url, spool_dir=tmp_path / "spool") as book:
        book.record(make_row(request_id="r0"))
        assert wait_for(lambda: book.flush(5) is True, 15)
    assert ids_in_ledger(sqlite_url) == ["r0"]
    assert _said(caplog) == [
        ("costkit ledger writer: unexpected error preparing the database", "a bug in ensure_schema")
    ]


def test_a_bug_met_while_writing_a_batch_keeps_the_batch_and_says_so(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread survives any exception, and "rows are kept and retried" is true: none is lost."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 0.05)
    caplog.set_level(logging.WARNING, logger="costkit")
    with Ledger(sqlite_url, spool_dir=tmp_path / "spool") as book:
        book.record(make_row(request_id="warm"))
        assert book.flush(30) is True
        left = _failing_once(monkeypatch, "insert_isolating")
        book.record(make_row(request_id="r1"))
        assert wait_for(lambda: left == [0], 10)  # the batch holding r1 met the bug
        assert wait_for(lambda: book.flush(5) is True, 15)  # it waited in the spool; a retry stored it
    assert sorted(ids_in_ledger(sqlite_url)) == ["r1", "warm"]  # (it used to be dropped)
    said = _said(caplog)
    assert said[0] == (
        "costkit ledger writer: unexpected error; rows are kept and retried",
        "a bug in insert_isolating",
    )
    assert said[1][0].startswith("costkit ledger: a bug in insert_isolating; rows go to the spool "), said


def test_a_flush_asked_just_before_close_is_answered(sqlite_url: str, tmp_path: Path) -> None:
    """A flush and a close that reach the writer in one cycle: the flush still gets its answer."""
    book, writer = warmed(sqlite_url, tmp_path / "spool", batch_size=1)
    answers: list[bool] = []
    flusher = threading.Thread(target=lambda: answers.append(book.flush()))
    with write_locked(sqlite_url):
        record_stuck(book)
        flusher.start()  # waits: the writer is busy with "stuck"
        assert wait_for(lambda: writer._flushes, 10)
        assert book.close(timeout=0.2) is False  # the next cycle sees the flush and the close together
    flusher.join(30)
    assert not flusher.is_alive() and answers == [True]
    writer._thread.join(30)
    assert sorted(ids_in_ledger(sqlite_url)) == ["stuck", "warm"]


def test_a_batch_holds_at_most_batch_size_rows(sqlite_url: str, tmp_path: Path) -> None:
    book, writer = warmed(sqlite_url, tmp_path / "spool", batch_size=2)
    with write_locked(sqlite_url):
        with writer._lock:  # the writer cannot take a batch until all five are queued
            for i in range(5):
                book.record(make_row(request_id=f"r{i}"))
        assert wait_for(lambda: writer._inflight, 10)
        assert [r["request_id"] for r in writer._inflight] == ["r0", "r1"]
    assert book.close(30) is True
    assert len(ids_in_ledger(sqlite_url)) == 6


def _held_by_another_replayer(spool: Path, request_id: str) -> int:
    """A claimed spool file holding one row, locked as another process's replay would hold it (an fd)."""
    spool.mkdir(parents=True, exist_ok=True)
    temporary = spool / "writing-test.tmp"
    temporary.write_bytes(spool_line(record_of(make_row(request_id=request_id), False)))
    fd = os.open(temporary, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked before the name appears: no replay can take it first
    os.rename(temporary, spool / f"claimed-{time.time_ns():020d}-99999.jsonl")
    return fd


def test_a_flush_waits_for_a_spool_file_another_replayer_holds(sqlite_url: str, tmp_path: Path) -> None:
    """flush() is True only once every row is committed, a row another replayer is still inserting too."""
    spool = tmp_path / "spool"
    book, _ = warmed(sqlite_url, spool)
    fd = _held_by_another_replayer(spool, "held")
    try:
        assert book.flush(1.0) is False  # the file is still the other replayer's
        assert ids_in_ledger(sqlite_url) == ["warm"]
    finally:
        os.close(fd)  # the other replayer gives up without inserting: this writer does it
    assert book.flush(30) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["held", "warm"]
    assert book.close(30) is True


def test_close_leaves_a_spool_file_another_replayer_holds_to_it(sqlite_url: str, tmp_path: Path) -> None:
    """close (and so the exit drain) does not wait for a file another live process is replaying: its
    rows are safe on disk and that process's to insert. (The drain used to wait for it for ever.)"""
    spool = tmp_path / "spool"
    book, _ = warmed(sqlite_url, spool)
    fd = _held_by_another_replayer(spool, "other")
    try:
        book.record(make_row(request_id="mine"))
        began = time.monotonic()
        assert book.close(5) is True  # everything of this process's is in
        assert time.monotonic() - began < 2.5
        assert sorted(ids_in_ledger(sqlite_url)) == ["mine", "warm"]
    finally:
        os.close(fd)  # the other replayer is gone before it inserted: the next ledger's replay does it
    with Ledger(sqlite_url, spool_dir=spool) as later:
        assert later.flush(10) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["mine", "other", "warm"]


def test_a_database_lost_while_replaying_is_said_once_with_its_error(
    pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The replay can be the first to meet a database gone: the warning still says what happened."""
    caplog.set_level(logging.WARNING, logger="costkit")
    proxy = TcpProxy()
    spool = tmp_path / "spool"
    try:
        book, _ = warmed(pg_url(pg_schema, proxy.port), spool, max_retry_delay=0.2)
        proxy.cut()
        os.close(_held_by_another_replayer(spool, "other"))  # left by a process gone since
        assert book.flush(10) is False  # nothing queued: the replay meets the database first
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1, said
        assert said[0].startswith("costkit ledger: ledger database unavailable: "), said
        assert f"port {proxy.port}" in said[0], said
        proxy.restore()
        assert wait_for(lambda: book.flush(5) is True, 30)
        assert book.close(30) is True
    finally:
        proxy.close()
    assert sorted(ids_in_ledger(pg_url(pg_schema))) == ["other", "warm"]


def test_a_claimed_name_that_is_not_a_file_holds_up_no_replay(sqlite_url: str, tmp_path: Path) -> None:
    """A directory or a FIFO under a spool file's name holds no rows: replay passes it by, the rest goes on.

    (A directory used to fail the replay with the fd of its open() leaked, and that fd's lock then
    held every later replay, close and exit of the process for ever.)
    """
    spool = tmp_path / "spool"
    book, _ = warmed(sqlite_url, spool)
    (spool / f"claimed-{time.time_ns():020d}-99998.jsonl").mkdir(parents=True)
    os.mkfifo(spool / f"claimed-{time.time_ns():020d}-99999.jsonl")
    os.close(_held_by_another_replayer(spool, "spooled"))  # after them in replay's order
    assert book.spool_rows() == 1  # (a health check read the FIFO too: it waited there for ever)
    assert book.flush(10) is True
    assert book.flush(10) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["spooled", "warm"]
    assert book.close(10) is True


def test_a_spool_that_cannot_be_locked_is_said_once_as_a_spool_problem(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay meets the broken spool (a directory where its lock file goes): said once, as the spool's
    problem, with what the system said, never as a database outage; the database is not marked down."""
    caplog.set_level(logging.INFO, logger="costkit")
    spool = tmp_path / "spool"
    book, _ = warmed(sqlite_url, spool)
    (spool / "lock").mkdir(parents=True)
    assert book.flush(5) is False  # the spool's rows (any process's) are not known to be in
    assert book.flush(5) is False
    assert book.database_down is False
    said = f"costkit ledger: cannot replay the spool {spool} (Is a directory); the rows there wait, and it "
    said += "is retried"
    assert _said(caplog) == [(said, "")]
    book.record(make_row(request_id="after"))
    (spool / "lock").rmdir()
    assert wait_for(lambda: book.flush(5) is True, 30)
    assert _said(caplog) == [(said, "")]  # no "answers again": the database never went
    # Broken again after it worked (the spool keeps its lock file open now, so the disk fails instead):
    # a new outage of the spool, said again
    _replay_fails(monkeypatch, writer_of(book), times=None)
    assert book.flush(5) is False
    assert book.flush(5) is False
    again = f"costkit ledger: cannot replay the spool {spool} (Input/output error); the rows there wait, and "
    again += "it is retried"
    assert _said(caplog) == [(said, ""), (again, "")]
    monkeypatch.undo()
    assert book.close(10) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["after", "warm"]


def test_rows_reach_the_database_at_once_while_the_spool_cannot_be_replayed(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spool that cannot be read is not a database outage: new rows are not held back for a retry."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 30.0)  # any retry clock is far off
    spool = tmp_path / "spool"
    book, _ = warmed(sqlite_url, spool, max_retry_delay=60)
    (spool / "lock").mkdir(parents=True)
    assert book.flush(5) is False
    book.record(make_row(request_id="after"))
    assert wait_for(lambda: "after" in ids_in_ledger(sqlite_url), 10)  # (it waited 30 s in memory)
    assert book.database_down is False
    (spool / "lock").rmdir()
    assert book.close(10) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["after", "warm"]


def _costkit_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("costkit")]


BACK = "costkit ledger: the database answers again; replaying the spool"


def test_a_database_down_from_the_start_is_not_called_back_before_it_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty spool's replay asks the database nothing: a writer that knows the database is down asks
    it (the schema, then ``SELECT 1``) before it says it is back. It said so 50 ms after the start."""
    caplog.set_level(logging.INFO, logger="costkit")
    (tmp_path / "db").write_text("")  # a file where the database's directory goes: down from the start
    url = f"sqlite:///{tmp_path / 'db' / 'ledger.sqlite'}"
    book = Ledger(url, spool_dir=tmp_path / "spool", max_retry_delay=0.2)
    assert wait_for(lambda: book.database_down, 10)
    time.sleep(1.0)  # retries after 0.05, 0.1, 0.2 and every 0.2 s after it, nothing in the spool
    assert book.database_down is True
    assert book.flush(5) is False  # nothing is pending, but the database it would go to is down
    said = _costkit_said(caplog)
    assert len(said) == 1 and said[0].endswith(f"rows go to the spool {tmp_path / 'spool'} until it answers")
    (tmp_path / "db").unlink()
    assert wait_for(lambda: not book.database_down, 10)
    assert book.flush(5) is True
    assert _costkit_said(caplog)[1:] == [BACK]
    book.record(make_row(request_id="r0"))
    assert book.close(10) is True
    assert ids_in_ledger(url) == ["r0"]


def test_a_database_lost_with_the_spool_emptied_is_asked_before_it_is_called_back(
    pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema is ready, the database is gone, and the spool holds nothing (its file was taken away):
    the retry asks a ``SELECT 1`` rather than take an empty replay for an answer."""
    caplog.set_level(logging.INFO, logger="costkit")
    proxy = TcpProxy()
    spool = tmp_path / "spool"
    try:
        book, _ = warmed(pg_url(pg_schema, proxy.port), spool, max_retry_delay=0.2)
        proxy.cut()
        book.record(make_row(request_id="during"))
        assert wait_for(lambda: book.database_down and spooled_ids(spool) == ["during"], 10)
        taken = tmp_path / "taken"
        taken.mkdir()
        for path in spool.glob("*.jsonl"):
            path.rename(taken / path.name)
        time.sleep(1.0)  # retries every 0.2 s at most, each with nothing to replay
        assert book.database_down is True
        assert BACK not in _costkit_said(caplog)
        proxy.restore()
        assert wait_for(lambda: not book.database_down, 10)
        assert _costkit_said(caplog).count(BACK) == 1
        assert book.close(10) is True
    finally:
        proxy.close()
    assert ids_in_ledger(pg_url(pg_schema)) == ["warm"]


def test_a_flush_with_nothing_pending_asks_the_database_nothing(sqlite_url: str, tmp_path: Path) -> None:
    """A caught-up ledger answers a flush from its own state: the database is asked only when the writer
    knows it is down (an application may flush after every request)."""
    book, writer = warmed(sqlite_url, tmp_path / "spool")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(writer.store.engine, "before_cursor_execute", seen)
    try:
        for _ in range(3):
            assert book.flush(5) is True
    finally:
        event.remove(writer.store.engine, "before_cursor_execute", seen)
    assert statements == []
    assert book.close(10) is True


def _replay_fails(monkeypatch: pytest.MonkeyPatch, writer: Writer, times: int | None) -> list[float]:
    """Make the spool's replay fail with an I/O error ``times`` times (always when None); the list
    returned gets the time of every call."""
    calls: list[float] = []
    replay = writer.spool.replay

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        if times is None or len(calls) <= times:
            raise OSError(errno.EIO, "Input/output error")
        return replay(*args, **kwargs)

    monkeypatch.setattr(writer.spool, "replay", failing)
    return calls


def test_a_spool_that_cannot_be_replayed_from_the_start_is_said_once(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ledger whose very first replay fails (no replay has worked yet) says so, once, as the spool's."""
    caplog.set_level(logging.INFO, logger="costkit")
    spool = tmp_path / "spool"
    (spool / "lock").mkdir(parents=True)
    with Ledger(sqlite_url, spool_dir=spool, max_retry_delay=0.2) as book:
        book.record(make_row(request_id="r0"))
        assert book.flush(5) is False
        assert book.flush(5) is False
        assert ids_in_ledger(sqlite_url) == ["r0"]
        assert book.database_down is False
        (spool / "lock").rmdir()
        assert wait_for(lambda: book.flush(5) is True, 10)
    said = f"costkit ledger: cannot replay the spool {spool} (Is a directory); the rows there wait, and it "
    assert _said(caplog) == [(said + "is retried", "")]


def test_a_spool_retry_is_not_held_back_by_the_database_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database came back through a flush, long before its own retry was due: a spool that then
    fails is retried on the spool's clock (0.05 s), not when the database's retry would have been (30 s)."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 30.0)
    (tmp_path / "db").write_text("")  # a file where the database's directory goes: down from the start
    url = f"sqlite:///{tmp_path / 'db' / 'ledger.sqlite'}"
    book = Ledger(url, spool_dir=tmp_path / "spool", max_retry_delay=60)
    writer = writer_of(book)
    assert wait_for(lambda: book.database_down, 10)  # its retry is 30 s away
    book.record(make_row(request_id="r0"))  # waits in the spool
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 0.05)  # the clocks a success starts again
    (tmp_path / "db").unlink()
    assert book.flush(10) is True  # back, 30 s early
    calls = _replay_fails(monkeypatch, writer, times=1)
    writer._want_replay()
    assert wait_for(lambda: len(calls) >= 2, 5), calls  # the spool's retry, 0.05 s after its failure
    assert book.close(10) is True
    assert ids_in_ledger(url) == ["r0"]


def test_a_writer_with_the_database_and_the_spool_both_failing_sleeps_between_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the database down and the spool unreadable, the writer sleeps until the later of the two
    clocks: woken at the database's (already past), it would spin until the spool's came."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 0.05)
    (tmp_path / "db").write_text("")  # down from the start
    url = f"sqlite:///{tmp_path / 'db' / 'ledger.sqlite'}"
    book = Ledger(url, spool_dir=tmp_path / "s", max_retry_delay=1)
    writer = writer_of(book)
    calls = _replay_fails(monkeypatch, writer, times=None)
    cycles: list[int] = []
    drain = writer._drain

    def counted(count: int | None) -> None:
        cycles.append(0)
        drain(count)

    monkeypatch.setattr(writer, "_drain", counted)
    assert wait_for(lambda: calls, 10)  # the first retry met the spool too
    time.sleep(1.0)
    # Replays after 0.05, 0.1, 0.2, 0.4 and 0.8 s: a handful of cycles (spinning made over 10,000)
    assert len(cycles) <= 30, len(cycles)
    assert 2 <= len(calls) <= 8, calls
    book.close(10)


def test_a_spool_that_cannot_be_replayed_is_retried_on_a_backoff_of_its_own(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the spool stays unreadable the writer retries it with backoff (no busy loop, no flush
    needed); once it can be read, the rows another process left there reach the database unasked."""
    spool = tmp_path / "spool"
    book, writer = warmed(sqlite_url, spool, max_retry_delay=0.2)
    tries = _replay_fails(monkeypatch, writer, times=0)  # counted only: the lock below fails it
    (spool / "lock").mkdir(parents=True)
    os.close(_held_by_another_replayer(spool, "left"))  # rows another process left, not locked now
    writer._want_replay()
    time.sleep(1.5)
    # Retries after 0.05, 0.1, 0.2 and every 0.2 s after it: 7 or 8 in 1.5 s (a busy loop made thousands)
    assert 4 <= len(tries) <= 12, len(tries)
    assert ids_in_ledger(sqlite_url) == ["warm"]
    (spool / "lock").rmdir()
    assert wait_for(lambda: sorted(ids_in_ledger(sqlite_url)) == ["left", "warm"], 5)
    settled = len(tries)
    time.sleep(0.5)
    assert len(tries) == settled  # replayed: the retries stop
    assert book.close(10) is True


def test_rows_held_in_memory_are_in_flight_while_retried_and_not_after(
    pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that reached neither the database nor the spool are retried from memory: while the retry
    waits in the database they are the batch in flight (what a timed-out close or SIGTERM copies out),
    and once committed nothing is left in flight to copy again."""
    monkeypatch.setattr(writer_module, "FIRST_RETRY_S", 0.05)
    spool = tmp_path / "spool"
    spool.write_text("")  # the spool cannot be written
    proxy = TcpProxy()
    try:
        book, writer = warmed(pg_url(pg_schema, proxy.port), spool, max_retry_delay=0.2)
        proxy.cut()
        book.record(make_row(request_id="held"))
        assert wait_for(lambda: [r["request_id"] for r in writer._held] == ["held"], 10)
        with write_locked(pg_url(pg_schema)):
            proxy.restore()
            assert wait_for(lambda: stuck_in_the_database(writer) and not writer._held, 10)
            assert [r["request_id"] for r in writer._inflight] == ["held"]
        assert wait_for(lambda: "held" in ids_in_ledger(pg_url(pg_schema)), 10)
        assert wait_for(lambda: writer._inflight == [], 10)
        writer.spill_for_exit()  # a SIGTERM now: nothing is in flight or held, so nothing to spill
        assert book.close(30) is True
    finally:
        proxy.close()
    assert sorted(ids_in_ledger(pg_url(pg_schema))) == ["held", "warm"]


def test_a_flush_is_answered_while_rows_keep_arriving(sqlite_url: str, tmp_path: Path) -> None:
    """A flush waits for the rows queued before it, not for a queue that never empties: here every
    insert the writer makes brings a new row (a producer exactly as fast as the database)."""
    book, writer = warmed(sqlite_url, tmp_path / "spool", batch_size=1)
    produced: list[str] = []
    answered = threading.Event()

    def one_more(*_args: object) -> None:
        if not answered.is_set() and len(produced) < 5000:
            produced.append(f"p{len(produced)}")
            book.record(make_row(request_id=produced[-1]))

    event.listen(writer.store.engine, "before_cursor_execute", one_more)
    try:
        book.record(make_row(request_id="first"))
        assert book.flush(60) is True
    finally:
        answered.set()
        event.remove(writer.store.engine, "before_cursor_execute", one_more)
    assert len(produced) < 1000, len(produced)  # answered after the rows queued at its start (a few)
    assert book.close(30) is True
    assert sorted(ids_in_ledger(sqlite_url)) == sorted(["warm", "first", *produced])
