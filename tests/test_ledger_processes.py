"""Real processes: several writers on one SQLite file, a PostgreSQL outage, and kill -9 in durable mode."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

from costkit.ledger import Ledger
from costkit.ledger.row import new_request_id
from tests.ledger_helpers import (  # noqa: F401
    TcpProxy,
    db_url,
    ids_in_ledger,
    make_row,
    pg_schema,
    pg_url,
    run_costkit,
    run_python,
    sqlite_url,
)

WRITER = """
import sys
from costkit.ledger import Ledger
from costkit.ledger.row import Row
from datetime import datetime, timezone

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
T = datetime(2025, 1, 1, tzinfo=timezone.utc)
book = Ledger(url, batch_size=100)
for i in range(count):
    book.record(Row(model="gpt-4.1", status="ok", request_id=f"{name}-{i}", started_at=T, cost_nanousd=1,
                    tags={"proc": name}))
    if i % 250 == 0:
        book.flush()  # interleave commits with the other processes
assert book.close(), "not everything reached the database"
"""


def test_four_processes_writing_one_fresh_sqlite_file_lose_nothing(sqlite_url: str) -> None:
    children = [run_python(WRITER, sqlite_url, f"p{n}", "1000") for n in range(4)]
    for child in children:
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert err == "", err  # nothing raised, nothing logged
    got = ids_in_ledger(sqlite_url)
    assert len(got) == 4000
    assert set(got) == {f"p{n}-{i}" for n in range(4) for i in range(1000)}


def _wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_postgres_outage_mid_run_loses_nothing_and_duplicates_nothing(pg_schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy()
    direct = pg_url(pg_schema)
    spool = tmp_path / "spool"
    try:
        book = Ledger(pg_url(pg_schema, proxy.port), spool_dir=spool, batch_size=50, max_retry_delay=0.3)
        before = [new_request_id() for _ in range(300)]
        for request_id in before:
            book.record(make_row(request_id=request_id))
        assert book.flush(30) is True

        proxy.cut()
        during = [new_request_id() for _ in range(400)]
        for request_id in during:
            book.record(make_row(request_id=request_id))
        assert book.flush(30) is False, "the database was unreachable, yet flush claimed success"
        assert (spool / "spool.jsonl").exists() or list(spool.glob("claimed-*.jsonl"))
        assert sorted(ids_in_ledger(direct)) == sorted(before)

        proxy.restore()
        # No flush, no replay call: the writer's own retries must bring the spooled rows in.
        assert _wait_for(lambda: len(ids_in_ledger(direct)) >= 700, 20), len(ids_in_ledger(direct))
        after = [new_request_id() for _ in range(100)]
        for request_id in after:
            book.record(make_row(request_id=request_id))
        assert book.close() is True
    finally:
        proxy.close()
    got = ids_in_ledger(direct)
    assert Counter(got).most_common(1)[0][1] == 1
    assert sorted(got) == sorted(before + during + after)
    assert not Ledger(direct, spool_dir=spool).spool.has_pending()


DURABLE_CHILD = """
import sys
from costkit.ledger import Ledger
from costkit.ledger.row import Row

book = Ledger(sys.argv[1], durable=True, batch_size=20)
i = 0
while True:
    row = Row(model="gpt-4.1", status="ok", cost_nanousd=i, tags={"run": "kill9"})
    book.record(row)
    print(row.request_id, flush=True)  # printed only after record() returned
    i += 1
"""


def test_kill_9_in_durable_mode_loses_no_recorded_row(db_url: str, tmp_path: Path) -> None:
    env_spool = {"XDG_DATA_HOME": str(tmp_path / "data")}  # where a PostgreSQL ledger keeps its spool
    from tests.ledger_helpers import child_env

    env = child_env(**env_spool)
    child = run_python(DURABLE_CHILD, db_url, env=env)
    printed: list[str] = []
    assert child.stdout is not None
    while len(printed) < 300:
        line = child.stdout.readline()
        if not line:
            break
        printed.append(line.strip())
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    printed += [line.strip() for line in child.stdout.read().splitlines() if line.strip()]
    assert len(printed) >= 300, child.stderr.read() if child.stderr else ""

    done = run_costkit("ledger", "replay", "--db", db_url, "--json", env=env)
    assert done.returncode == 0, done.stderr
    counts = Counter(ids_in_ledger(db_url))
    missing = [request_id for request_id in printed if counts[request_id] != 1]
    assert missing == [], f"{len(missing)} recorded rows lost after kill -9"
    assert max(counts.values()) == 1

    again = run_costkit("ledger", "replay", "--db", db_url, "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert Counter(ids_in_ledger(db_url)) == counts
