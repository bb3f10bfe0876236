"""The writer: rows leave through a queue, reach the database once, and survive a full queue and exit."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from costkit.ledger import Ledger
from costkit.ledger.row import new_request_id
from tests.ledger_helpers import (  # noqa: F401
    db_url,
    ids_in_ledger,
    make_row,
    pg_schema,
    postgres_url,
    run_python,
    scalar,
    sqlite_url,
)


def test_recorded_rows_and_tags_are_committed_by_flush(db_url: str) -> None:
    ids = [new_request_id() for _ in range(700)]
    with Ledger(db_url, batch_size=128) as book:
        for i, request_id in enumerate(ids):
            book.record(make_row(request_id=request_id, tags={"team": "search", "job": f"j{i % 7}"}))
        assert book.flush(timeout=30) is True
        assert sorted(ids_in_ledger(db_url)) == sorted(ids)
    assert scalar(db_url, "SELECT count(*) FROM costkit_request_tags") == 2 * len(ids)
    job_j3 = "SELECT count(*) FROM costkit_request_tags WHERE key = 'job' AND value = 'j3'"
    assert scalar(db_url, job_j3) == 100
    assert scalar(db_url, "SELECT sum(cost_nanousd) FROM costkit_requests") == 700 * 3_532_000


def test_a_request_id_recorded_twice_is_stored_once(db_url: str) -> None:
    with Ledger(db_url) as book:
        book.record(make_row(request_id="dup", cost_nanousd=1))
        assert book.flush(10)
        book.record(make_row(request_id="dup", cost_nanousd=2, tags={"team": "other"}))
        book.record(make_row(request_id="other"))
        assert book.flush(10)
    assert sorted(ids_in_ledger(db_url)) == ["dup", "other"]
    assert scalar(db_url, "SELECT cost_nanousd FROM costkit_requests WHERE request_id = 'dup'") == 1
    assert scalar(db_url, "SELECT value FROM costkit_request_tags WHERE request_id = 'dup'") == "search"


def test_prompt_and_completion_text_are_stored_only_when_opted_in(sqlite_url: str, tmp_path: Path) -> None:
    secret = "my prompt about the merger"
    with Ledger(sqlite_url) as book:
        book.record(make_row(request_id="plain", prompt_text=secret, completion_text="answer"))
        book.close()
        book.record(make_row(request_id="spooled", prompt_text=secret))  # after close: to the spool
    spool = (tmp_path / "ledger.sqlite.spool" / "spool.jsonl").read_text()
    assert "spooled" in spool and secret not in spool
    with Ledger(sqlite_url, store_text=True) as book:
        book.record(make_row(request_id="kept", prompt_text="opted in", completion_text="answer"))
        assert book.flush(10)
        texts = {r["request_id"]: (r["prompt_text"], r["completion_text"]) for r in book.rows()}
    assert texts == {"plain": (None, None), "spooled": (None, None), "kept": ("opted in", "answer")}
    assert secret.encode() not in (tmp_path / "ledger.sqlite").read_bytes()


def test_a_full_queue_spills_to_the_spool_and_loses_nothing(sqlite_url: str, tmp_path: Path) -> None:
    ids = [new_request_id() for _ in range(2000)]
    with Ledger(sqlite_url, queue_size=4, batch_size=50) as book:
        for request_id in ids:
            book.record(make_row(request_id=request_id))
        assert book.flush(timeout=30) is True
        spool = tmp_path / "ledger.sqlite.spool"
        assert spool.is_dir(), "the queue never overflowed: the test did not exercise the spill path"
        assert not book.spool.has_pending()
    got = ids_in_ledger(sqlite_url)
    assert len(got) == len(set(got)) == len(ids)
    assert set(got) == set(ids)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"status": "done"}, "status"),
        ({"usage_source": "guess"}, "usage_source"),
        ({"cost_nanousd": 0.5}, "cost_nanousd"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"started_at": datetime(2025, 1, 1)}, "started_at"),
        ({"tags": [("team", "search")]}, "tags"),  # not a mapping: a bad tag is dropped, this is not a tag
        ({"request_id": ""}, "request_id"),
        ({"input_tokens": 2**31}, "input_tokens"),  # PostgreSQL's integer would refuse it later
    ],
)
def test_rows_breaking_the_contract_are_refused_at_once_and_kept_aside(
    sqlite_url: str, tmp_path: Path, change: dict, message: str
) -> None:
    with Ledger(sqlite_url) as book:
        with pytest.raises(ValueError, match=message):
            book.record(make_row(**{"response_id": "chatcmpl-kept", **change}))
        assert book.flush(10)
    assert ids_in_ledger(sqlite_url) == []
    [kept] = (tmp_path / "ledger.sqlite.spool" / "rejected.jsonl").read_text().splitlines()
    assert json.loads(json.loads(kept)["line"])["response_id"] == "chatcmpl-kept"
    assert message in json.loads(kept)["error"]


def test_rows_recorded_after_close_are_replayed_by_the_next_ledger(sqlite_url: str) -> None:
    book = Ledger(sqlite_url)
    book.record(make_row(request_id="before"))
    assert book.close() is True
    book.record(make_row(request_id="after"))
    assert ids_in_ledger(sqlite_url) == ["before"]
    with Ledger(sqlite_url) as again:
        assert again.flush(10) is True
    assert sorted(ids_in_ledger(sqlite_url)) == ["after", "before"]


EXIT_WITHOUT_CLOSE = """
import sys, threading, atexit
from costkit.ledger import Ledger
from costkit.ledger.row import Row
from datetime import datetime, timezone

book = Ledger(sys.argv[1], batch_size=64)
T = datetime(2025, 1, 1, tzinfo=timezone.utc)
for i in range(3000):
    book.record(Row(model="gpt-4.1", status="ok", request_id=f"main-{i}", started_at=T, cost_nanousd=i))

def late_worker():  # a non-daemon thread still recording after the main thread returned
    import time
    time.sleep(0.3)
    for i in range(500):
        book.record(Row(model="gpt-4.1", status="ok", request_id=f"late-{i}", started_at=T))

threading.Thread(target=late_worker).start()
print("main done", flush=True)
"""


def test_normal_exit_without_close_drains_the_queue(sqlite_url: str) -> None:
    child = run_python(EXIT_WITHOUT_CLOSE, sqlite_url)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "main done"
    assert "Traceback" not in err
    got = ids_in_ledger(sqlite_url)
    assert len(got) == 3500
    assert set(got) == {f"main-{i}" for i in range(3000)} | {f"late-{i}" for i in range(500)}
    assert scalar(sqlite_url, "SELECT sum(cost_nanousd) FROM costkit_requests") == sum(range(3000))


def test_rows_the_database_refuses_are_kept_aside_and_the_rest_commit(
    postgres_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    with Ledger(postgres_url, store_text=True, spool_dir=spool) as book:
        assert book.rows() == []  # the schema exists: now give the database a rule of its own
        from sqlalchemy import create_engine, text

        engine = create_engine(postgres_url)
        with engine.begin() as connection:
            connection.execute(
                text("ALTER TABLE costkit_requests ADD CONSTRAINT no_r17 CHECK (request_id <> 'r17')")
            )
        engine.dispose()
        for i in range(40):  # that one row is refused, its 39 batch mates are not
            book.record(make_row(request_id=f"r{i}", prompt_text=f"prompt {i}"))
        assert book.flush(30) is True
    assert sorted(ids_in_ledger(postgres_url)) == sorted(f"r{i}" for i in range(40) if i != 17)
    [rejection] = [json.loads(line) for line in (spool / "rejected.jsonl").read_text().splitlines()]
    assert json.loads(rejection["line"])["request_id"] == "r17"
    assert "no_r17" in rejection["error"]


TOO_LONG = "x" * 201


def test_record_keeps_the_valid_tags_drops_the_others_and_says_so_on_the_row(db_url: str) -> None:
    shared = {"team": "search", "job": TOO_LONG, "user": 42, TOO_LONG: "v", "": "empty", "n": "a\x00b"}
    with Ledger(db_url) as book:
        book.record(make_row(request_id="t", tags=shared))
        book.record(make_row(request_id="u", tags=shared, notes="usage estimated"))
        assert book.flush(10)
        rows = {r["request_id"]: r for r in book.rows()}
    assert shared["job"] == TOO_LONG and len(shared) == 6  # the caller's dict is not changed
    assert rows["t"]["tags"] == {"team": "search", "user": "42"}
    notes = rows["t"]["notes"].split("; ")
    assert len(notes) == 4 and all("from Row.tags dropped" in n for n in notes), notes
    assert any("'job'" in n and "longer than 200" in n for n in notes)
    assert any("NUL" in n for n in notes)
    assert rows["u"]["notes"].startswith("usage estimated; tag ")


def test_text_no_database_can_hold_is_made_storable_and_noted(db_url: str, tmp_path: Path) -> None:
    """NUL (PostgreSQL text) and unpaired surrogates (no UTF-8 at all) from a hostile upstream."""
    with Ledger(db_url, store_text=True, spool_dir=tmp_path / "spool") as book:
        book.record(
            make_row(
                request_id="hostile",
                model="gpt-4.1\x00evil",
                error="upstream said \ud800",
                prompt_text="a\x00b",
                x_metrics={"tps": float("nan")},
                tags={"team": "x\udfff"},
            )
        )
        book.close()  # the spool, too, must take such a row: recorded after close, it goes there
        book.record(make_row(request_id="spooled", model="m\ud800", tags={"k": "v\x00"}))
    with Ledger(db_url, store_text=True, spool_dir=tmp_path / "spool") as book:
        assert book.flush(10) is True
        rows = {r["request_id"]: r for r in book.rows()}
    hostile = rows["hostile"]
    assert (hostile["model"], hostile["error"], hostile["prompt_text"]) == (
        "gpt-4.1\ufffdevil",
        "upstream said \ufffd",
        "a\ufffdb",
    )
    assert hostile["x_metrics"] is None and hostile["tags"] == {}
    assert "x_metrics dropped" in hostile["notes"] and "model: NUL" in hostile["notes"]
    assert rows["spooled"]["model"] == "m\ufffd" and rows["spooled"]["tags"] == {}
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


def test_record_does_not_wait_for_a_slow_database(sqlite_url: str) -> None:
    from sqlalchemy import create_engine, text

    with Ledger(sqlite_url) as book:
        book.record(make_row(request_id="warm"))
        assert book.flush(10)
        blocker = create_engine(sqlite_url, connect_args={"isolation_level": None})
        with blocker.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # hold the write lock: the writer must wait
            connection.execute(
                text(
                    "INSERT INTO costkit_requests SELECT 'x' || request_id, response_id, started_at,"
                    " finished_at, model, endpoint_host, status, http_status, stream,"
                    " input_tokens, cached_input_tokens, output_tokens, usage_source,"
                    " estimated_input_tokens, cost_nanousd, price_id, latency_us, ttft_us,"
                    " x_metrics, error, prompt_text, completion_text, notes FROM costkit_requests"
                )
            )
            start = time.perf_counter()
            for i in range(500):
                book.record(make_row(request_id=f"w{i}"))
            elapsed = time.perf_counter() - start
            time.sleep(0.3)
            assert scalar(sqlite_url, "SELECT count(*) FROM costkit_requests") == 1  # still blocked
            connection.exec_driver_sql("COMMIT")
        blocker.dispose()
        assert elapsed < 0.5, f"record waited on the locked database: {elapsed:.3f}s for 500 rows"
        assert book.flush(30)
    assert scalar(sqlite_url, "SELECT count(*) FROM costkit_requests") == 502


def test_before_drain_callbacks_record_into_the_exit_drain(sqlite_url: str) -> None:
    """A row recorded by a ``before_drain`` callback at interpreter exit reaches the database."""
    code = (
        "import sys\n"
        "from costkit.ledger import Ledger\n"
        "from costkit.ledger.writer import before_drain\n"
        "from tests.ledger_helpers import make_row\n"
        "book = Ledger(sys.argv[1])\n"
        "before_drain(lambda: book.record(make_row(request_id='at-exit')))\n"
    )
    done = run_python(code, sqlite_url)
    _out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    assert ids_in_ledger(sqlite_url) == ["at-exit"]
