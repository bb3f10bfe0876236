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
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine

from costkit.ledger import Ledger
from costkit.ledger.writer import Writer
from tests.ledger_helpers import (  # noqa: F401
    db_url,
    ids_in_ledger,
    make_row,
    pg_schema,
    run_python,
    spooled_ids,
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
        book.record(make_row(request_id="stuck"))
        assert wait_for(lambda: stuck_in_the_database(writer), 10)
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
