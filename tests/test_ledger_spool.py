"""The spool: replay is idempotent, keeps what it cannot read, and is safe under concurrent use."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

from costkit.ledger import Ledger
from costkit.ledger.ledger import replay_spool
from costkit.ledger.records import record_of
from tests.ledger_helpers import (  # noqa: F401
    db_url,
    ids_in_ledger,
    make_row,
    pg_schema,
    postgres_url,
    run_costkit,
    sqlite_url,
)


def _spool_rows(url: str, spool: Path, ids: list[str]) -> None:
    """Put rows in the spool the way a failing ledger does: record them on a closed ledger."""
    book = Ledger(url, spool_dir=spool)
    book.close()
    for request_id in ids:
        book.record(make_row(request_id=request_id))


def test_replaying_a_spool_twice_adds_nothing(db_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    ids = [f"s{i}" for i in range(60)]
    _spool_rows(db_url, spool, ids)
    content = (spool / "spool.jsonl").read_bytes()
    assert content.count(b"\n") == 60

    first = run_costkit("ledger", "replay", "--db", db_url, "--spool-dir", str(spool), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["rows"] == 60
    assert Counter(ids_in_ledger(db_url)) == Counter(ids)
    assert not (spool / "spool.jsonl").exists()

    # A crash after commit but before the spool was trimmed leaves the same rows to replay again.
    (spool / "spool.jsonl").write_bytes(content)
    second = run_costkit("ledger", "replay", "--db", db_url, "--spool-dir", str(spool), "--json")
    assert json.loads(second.stdout)["rows"] == 60
    third = run_costkit("ledger", "replay", "--db", db_url, "--spool-dir", str(spool), "--json")
    assert json.loads(third.stdout)["rows"] == 0
    assert Counter(ids_in_ledger(db_url)) == Counter(ids)


def test_a_torn_spool_line_is_kept_aside_and_the_rest_replayed(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _spool_rows(sqlite_url, spool, ["a", "b"])
    with (spool / "spool.jsonl").open("ab") as stream:
        stream.write(b'{"request_id": "torn", "mod')  # a write cut short by a crash
    _, result = replay_spool(sqlite_url, spool)
    assert (result.rows, result.rejected) == (2, 1)
    assert sorted(ids_in_ledger(sqlite_url)) == ["a", "b"]
    [kept] = [json.loads(line) for line in (spool / "rejected.jsonl").read_text().splitlines()]
    assert kept["line"].startswith('{"request_id": "torn"') and "unreadable" in kept["error"]


def test_concurrent_appenders_and_replayers_lose_and_duplicate_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    book = Ledger(sqlite_url, spool_dir=spool_dir)
    book.close()
    spool = book.spool
    stop = threading.Event()
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        for i in range(400):
            spool.append_records([record_of(make_row(request_id=f"w{worker}-{i}"), False)], fsync=False)

    def replay() -> None:
        with Ledger(sqlite_url, spool_dir=spool_dir) as reader:
            while not stop.is_set():
                try:
                    reader.replay()
                except BaseException as error:  # surfaced below
                    errors.append(error)
                    return

    appenders = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    replayers = [threading.Thread(target=replay) for _ in range(2)]
    for thread in appenders + replayers:
        thread.start()
    for thread in appenders:
        thread.join()
    stop.set()
    for thread in replayers:
        thread.join()
    assert errors == []
    with Ledger(sqlite_url, spool_dir=spool_dir) as last:
        last.replay()
    got = Counter(ids_in_ledger(sqlite_url))
    assert got == Counter(f"w{n}-{i}" for n in range(4) for i in range(400))
    assert not spool.has_pending()


def test_a_forked_child_records_its_own_rows(sqlite_url: str) -> None:
    with Ledger(sqlite_url) as book:
        for i in range(10):
            book.record(make_row(request_id=f"parent-{i}"))
        pid = os.fork()
        if pid == 0:  # the child: its own writer thread, its own connections
            code = 1
            try:
                for i in range(10):
                    book.record(make_row(request_id=f"child-{i}"))
                code = 0 if book.flush(30) else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert book.flush(30)
    got = Counter(ids_in_ledger(sqlite_url))
    assert got == Counter([f"parent-{i}" for i in range(10)] + [f"child-{i}" for i in range(10)])


def test_a_spool_line_no_database_can_store_is_replayed_made_storable(
    postgres_url: str, tmp_path: Path
) -> None:
    """Lines an older costkit (or another process) spooled may hold NUL: PostgreSQL used to refuse them."""
    spool = tmp_path / "spool"
    _spool_rows(postgres_url, spool, ["fine"])
    line = json.loads((spool / "spool.jsonl").read_text())
    line.update(request_id="nul", model="gpt-4.1\x00", tags={"team": "a\x00b", "ok": "yes"})
    with (spool / "spool.jsonl").open("a") as stream:
        stream.write(json.dumps(line) + "\n")
    done = run_costkit("ledger", "replay", "--db", postgres_url, "--spool-dir", str(spool), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"spool": str(spool), "rows": 2, "rejected": 0}
    with Ledger(postgres_url, spool_dir=spool) as book:
        rows = {r["request_id"]: r for r in book.rows()}
    assert rows["nul"]["model"] == "gpt-4.1\ufffd" and rows["nul"]["tags"] == {"ok": "yes"}
    assert "Row.tags dropped" in rows["nul"]["notes"]


def test_replaying_a_spool_it_may_not_write_is_one_line(sqlite_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    _spool_rows(sqlite_url, spool, ["waiting"])
    spool.chmod(0o555)
    try:
        args = ("ledger", "replay", "--db", sqlite_url, "--spool-dir", str(spool))
        done = run_costkit(*args, unprivileged=True)
    finally:
        spool.chmod(0o700)
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert line.startswith("costkit: ") and str(spool) in line and "Permission denied" in line
    assert "waiting" in (spool / "spool.jsonl").read_text()  # kept for a replay that can write
