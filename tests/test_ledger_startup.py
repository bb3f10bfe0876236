"""Opening a ledger whose database is down, black-holed or unwritable: it opens at once and loses nothing.

Only a URL that cannot be right fails in the constructor; everything else is the
writer thread's problem, never the caller's: rows wait in the spool (or, when
even the spool cannot be written, in memory) and reach the database once it answers.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import pytest

from costkit.ledger import Ledger
from costkit.ledger.errors import DatabaseDown, LedgerError
from tests.ledger_helpers import (  # noqa: F401
    TcpProxy,
    child_env,
    count_in_ledger,
    ids_in_ledger,
    make_row,
    pg_schema,
    pg_url,
    run_costkit,
    run_python,
    spooled_ids,
    sqlite_url,
    wait_for,
)


def _ledger_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.records
    return [r.getMessage() for r in records if r.name == "costkit.ledger" and r.levelno >= logging.WARNING]


def _open_and_record(url: str, spool: Path, ids: list[str]) -> Ledger:
    """Open a ledger and record ``ids``, asserting that neither waits on the database."""
    start = time.perf_counter()
    book = Ledger(url, spool_dir=spool, max_retry_delay=0.2)
    opened = time.perf_counter() - start
    for request_id in ids:
        book.record(make_row(request_id=request_id))
    recorded = time.perf_counter() - start - opened
    assert opened < 0.5, f"Ledger() waited {opened:.2f}s on a database that does not answer"
    assert recorded < 0.5, f"record() waited {recorded:.2f}s for {len(ids)} rows"
    return book


def test_a_ledger_opens_at_once_on_a_refusing_postgres_and_replays_when_it_answers(
    pg_schema: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="costkit.ledger")
    proxy = TcpProxy()
    proxy.cut()  # nothing listens on the port: connection refused
    spool = tmp_path / "spool"
    ids = [f"early-{i}" for i in range(200)]
    try:
        book = _open_and_record(pg_url(pg_schema, proxy.port), spool, ids)
        assert wait_for(lambda: sorted(spooled_ids(spool)) == sorted(ids), 10), spooled_ids(spool)
        time.sleep(0.5)  # several retries fail meanwhile: still one warning
        [warning] = _ledger_warnings(caplog)
        assert f"127.0.0.1:{proxy.port}" in warning and str(spool) in warning

        proxy.restore()
        # No flush and no replay call: the writer migrates the fresh schema and replays by itself.
        assert wait_for(lambda: count_in_ledger(pg_url(pg_schema)) == len(ids), 15)
        book.record(make_row(request_id="late"))
        assert book.close() is True
    finally:
        proxy.close()
    assert sorted(ids_in_ledger(pg_url(pg_schema))) == sorted([*ids, "late"])
    assert spooled_ids(spool) == []
    assert len(_ledger_warnings(caplog)) == 1


def test_a_black_holed_postgres_costs_the_caller_no_wait(pg_schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy()
    proxy.blackhole()  # connections are accepted and never answered: only a timeout ends them
    spool = tmp_path / "spool"
    url = pg_url(pg_schema, proxy.port) + "&connect_timeout=2"
    ids = [f"bh-{i}" for i in range(100)]
    try:
        book = _open_and_record(url, spool, ids)
        # The writer thread, not the caller, waits out the connect timeout; then the rows are on disk.
        assert wait_for(lambda: sorted(spooled_ids(spool)) == sorted(ids), 10), spooled_ids(spool)
        start = time.perf_counter()
        book.record(make_row(request_id="while-hanging"))
        assert time.perf_counter() - start < 0.05
        # Closing waits out at most the connect attempt in progress, then leaves the rows spooled.
        other = Ledger(url, spool_dir=tmp_path / "other-spool", max_retry_delay=0.01)  # retries at once
        other.record(make_row(request_id="other"))
        assert wait_for(lambda: spooled_ids(tmp_path / "other-spool") == ["other"], 10)
        start = time.perf_counter()
        assert other.close() is False
        assert time.perf_counter() - start < 2.5, "close() waited for more than one connect timeout"
        assert spooled_ids(tmp_path / "other-spool") == ["other"]
        proxy.restore()
        assert wait_for(lambda: count_in_ledger(pg_url(pg_schema)) == len(ids) + 1, 20)
        assert book.close() is True
    finally:
        proxy.close()
    assert sorted(ids_in_ledger(pg_url(pg_schema))) == sorted([*ids, "while-hanging"])


def test_the_default_ledger_with_a_down_database_url_spools_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = TcpProxy()
    proxy.cut()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("COSTKIT_DB_URL", pg_url("public", proxy.port))
    try:
        start = time.perf_counter()
        book = Ledger()
        book.record(make_row(request_id="via-env"))
        assert time.perf_counter() - start < 0.5
        spool = book.spool_dir
        assert spool.is_relative_to(tmp_path / "data" / "costkit" / "spool")
        assert book.close() is False  # the database never answered: the row waits on disk
    finally:
        proxy.close()
    assert spooled_ids(spool) == ["via-env"]


def test_reading_a_down_database_raises_database_down_in_one_line(pg_schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy()
    proxy.cut()
    url = pg_url(pg_schema, proxy.port).replace("postgres@", "postgres:hunter2@")
    try:
        with Ledger(url, spool_dir=tmp_path / "spool") as book:
            for read in (book.rows, book.frame, book.replay):
                with pytest.raises(DatabaseDown) as caught:
                    read()
                message = str(caught.value)
                assert "\n" not in message and f"127.0.0.1:{proxy.port}" in message, message
                assert "hunter2" not in message
    finally:
        proxy.close()


def test_read_methods_create_the_schema_of_a_fresh_database_first(pg_schema: str) -> None:
    with Ledger(pg_url(pg_schema), migrate_schema=True) as book:
        assert book.rows() == []  # at once, even before the writer thread prepared the database
        assert book.frame().empty


@pytest.mark.parametrize(
    "url, needle",
    [
        ("mysql://u@127.0.0.1/x", "unsupported database"),
        ("postgresql+psycopg://u@127.0.0.1:notaport/db", "bad database URL"),
        ("postgresql+nosuchdriver://u@127.0.0.1/db", "nosuchdriver"),
        ("postgresql+pg8000://u@127.0.0.1/db", "not installed"),
    ],
)
def test_a_url_that_cannot_be_right_fails_in_the_constructor(url: str, needle: str) -> None:
    assert importlib.util.find_spec("pg8000") is None, "this test needs a driver that is not installed"
    start = time.perf_counter()
    with pytest.raises(LedgerError, match=needle) as caught:
        Ledger(url)
    assert time.perf_counter() - start < 1
    assert "\n" not in str(caught.value)


UNWRITABLE = """
import logging, os, sys
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
blocked, url = sys.argv[1], sys.argv[2]
book = Ledger(url, max_retry_delay=0.1)
for i in range(50):
    book.record(make_row(request_id=f"r{i}"))
assert book.flush(2) is False  # neither the database nor the spool can be written: kept in memory
print("blocked", flush=True)
os.chmod(blocked, 0o755)  # the disk comes back: the rows kept in memory reach the database
assert book.flush(10) is True, "the rows kept in memory never reached the database"
book.close()
print("done", flush=True)
"""


def test_an_unwritable_sqlite_directory_keeps_rows_in_memory_logs_once_and_recovers(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir(mode=0o555)
    blocked.chmod(0o555)
    url = f"sqlite:///{blocked / 'data' / 'ledger.sqlite'}"
    child = run_python(UNWRITABLE, str(blocked), url, unprivileged=True)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == ["blocked", "done"]
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert len(warnings) == 2, err  # one for the database, one for the spool it could not write
    assert any("cannot create the directory" in w and str(blocked / "data") in w for w in warnings), err
    assert sorted(ids_in_ledger(url)) == sorted(f"r{i}" for i in range(50))


def test_the_cli_says_in_one_line_that_the_data_directory_cannot_be_written(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    blocked.chmod(0o555)
    env = child_env(XDG_DATA_HOME=str(blocked))
    for args in (["db", "upgrade"], ["db", "current"]):
        done = run_costkit(*args, env=env, unprivileged=True)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith("costkit: ") and str(blocked / "costkit") in line, line
    # Reading needs no write: the default ledger no client created yet simply has no rows.
    tail = run_costkit("ledger", "tail", env=env, unprivileged=True)
    assert tail.returncode == 0, tail.stderr
    [line] = tail.stderr.splitlines()
    assert line.startswith("no rows in the ledger at ") and "not created yet" in line, line
    assert list(blocked.iterdir()) == []
