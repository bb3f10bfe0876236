"""Operations that must not surprise: downgrades, typos, read-only ledgers, hostile text, exported types."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest

from costkit.ledger import Ledger
from tests.ledger_helpers import (  # noqa: F401
    HEAD_REVISION,
    child_env,
    db_url,
    make_row,
    pg_schema,
    run_costkit,
    run_python,
    scalar,
    sqlite_url,
)


def _one_line(done: object) -> str:
    stderr = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 2, (done.stdout, stderr)  # type: ignore[attr-defined]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("costkit: "), stderr
    return str(lines[0])


def test_downgrade_without_a_revision_drops_nothing(db_url: str) -> None:
    with Ledger(db_url) as book:
        book.record(make_row(request_id="kept"))
        assert book.flush(10)
    line = _one_line(run_costkit("db", "downgrade", "--yes", "--db", db_url))
    assert "REVISION" in line and "base" in line and "-1" in line
    assert scalar(db_url, "SELECT request_id FROM costkit_requests") == "kept"

    step = run_costkit("db", "downgrade", "-1", "--yes", "--db", db_url)  # spelled out, it is allowed
    assert step.returncode == 0, step.stderr
    assert "at revision 0003" in step.stdout
    assert scalar(db_url, "SELECT request_id FROM costkit_requests") == "kept"
    with pytest.raises(Exception, match="costkit_budgets"):  # 0004's tables went down with it
        scalar(db_url, "SELECT count(*) FROM costkit_budgets")
    assert run_costkit("db", "upgrade", "--db", db_url).returncode == 0
    assert scalar(db_url, "SELECT request_id FROM costkit_requests") == "kept"


@pytest.mark.parametrize(
    "args",
    [
        ["ledger", "tail"],
        ["ledger", "export", "--format", "jsonl"],
        ["db", "current"],
        ["db", "downgrade", "base", "--yes"],
    ],
)
def test_a_mistyped_path_is_one_line_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    typo = tmp_path / "ledgr" / "deeper" / "ledger.sqlite"
    line = _one_line(run_costkit(*args, "--db", str(typo)))
    assert str(typo) in line
    assert list(tmp_path.iterdir()) == []


def test_reading_the_default_ledger_before_any_client_created_it_is_no_error(tmp_path: Path) -> None:
    """A newcomer's first `costkit ledger tail`: nothing recorded yet, exit 0, and nothing created."""
    env = child_env(XDG_DATA_HOME=str(tmp_path / "data"))
    tail = run_costkit("ledger", "tail", env=env)
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout == ""
    assert tail.stderr.strip().startswith("no rows in the ledger at ") and "not created yet" in tail.stderr
    exported = run_costkit("ledger", "export", "--format", "jsonl", env=env)
    assert (exported.returncode, exported.stdout) == (0, "")
    assert not (tmp_path / "data").exists()


def _filled(path: Path, journal: str = "wal") -> None:
    with Ledger(str(path)) as book:
        for i in range(3):
            book.record(make_row(request_id=f"ro-{i}", http_status=None if i == 0 else 200))
        assert book.flush(10)
    if journal != "wal":
        connection = sqlite3.connect(path)
        connection.execute(f"PRAGMA journal_mode = {journal}")
        connection.close()


READ_ROWS = """
import sys
from costkit.ledger import Ledger
book = Ledger(sys.argv[1])
print(" ".join(r["request_id"] for r in book.rows()), flush=True)
"""


@pytest.mark.parametrize("journal", ["wal", "delete"])
@pytest.mark.parametrize("locked", ["file", "file-and-directory"])
def test_a_read_only_ledger_can_still_be_read(tmp_path: Path, journal: str, locked: str) -> None:
    """Run as a process that file permissions stop (see ``without_root_powers``), as any user is."""
    folder = tmp_path / "archive"
    folder.mkdir()
    path = folder / "ledger.sqlite"
    _filled(path, journal)  # "delete": rollback-journal mode, e.g. a copy made with VACUUM INTO
    path.chmod(0o444)
    if locked == "file-and-directory":
        folder.chmod(0o555)
    before = sorted((p.name, p.read_bytes()) for p in folder.iterdir())
    try:
        tail = run_costkit("ledger", "tail", "--db", str(path), "--json", unprivileged=True)
        assert tail.returncode == 0, tail.stderr
        assert [r["request_id"] for r in json.loads(tail.stdout)] == ["ro-0", "ro-1", "ro-2"]
        export = run_costkit("ledger", "export", "--db", str(path), unprivileged=True)
        assert export.returncode == 0, export.stderr
        assert len(list(csv.DictReader(io.StringIO(export.stdout)))) == 3
        current = run_costkit("db", "current", "--db", str(path), "--json", unprivileged=True)
        assert json.loads(current.stdout)["current"] == HEAD_REVISION, current.stderr
        child = run_python(READ_ROWS, str(path), unprivileged=True)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.split() == ["ro-0", "ro-1", "ro-2"]
    finally:
        folder.chmod(0o755)
    assert sorted((p.name, p.read_bytes()) for p in folder.iterdir()) == before  # nothing created


def test_a_read_only_wal_ledger_with_its_wal_left_behind_can_be_read(tmp_path: Path) -> None:
    """A writer killed with -9 leaves -wal and -shm, root-owned: the reader must still see its rows."""
    folder = tmp_path / "archive"
    folder.mkdir()
    path = folder / "ledger.sqlite"
    code = (
        "import os, sys\n"
        "from costkit.ledger import Ledger\n"
        "from tests.ledger_helpers import make_row\n"
        "book = Ledger(sys.argv[1])\n"
        "book.record(make_row(request_id='in-wal'))\n"
        "assert book.flush(10)\n"
        "os._exit(0)\n"  # no checkpoint, no cleanup: the row lives only in the -wal file
    )
    child = run_python(code, str(path))
    assert child.wait(timeout=60) == 0, child.stderr.read() if child.stderr else ""
    assert (folder / "ledger.sqlite-wal").exists()
    for p in folder.iterdir():
        if p.is_file():
            p.chmod(0o444)
    folder.chmod(0o555)
    try:
        tail = run_costkit("ledger", "tail", "--db", str(path), "--json", unprivileged=True)
    finally:
        folder.chmod(0o755)
    assert tail.returncode == 0, tail.stderr
    assert [r["request_id"] for r in json.loads(tail.stdout)] == ["in-wal"]


HOSTILE_MODEL = "gpt-4.1\x1b[2J\x1b]0;pwned\x07\r"
HOSTILE_TAG = "ads\x1b[31m\u202eevil\x9b"


def test_tail_escapes_control_characters_from_upstreams_and_headers(sqlite_url: str, tmp_path: Path) -> None:
    with Ledger(sqlite_url) as book:
        book.record(make_row(request_id="hostile", model=HOSTILE_MODEL, tags={"team": HOSTILE_TAG}))
        assert book.flush(10)
    # A NUL stored by an older costkit (record() now replaces it) must not reach the terminal either.
    connection = sqlite3.connect(tmp_path / "ledger.sqlite")
    with connection:
        nul_model = "UPDATE costkit_requests SET model = model || char(0) WHERE request_id = 'hostile'"
        connection.execute(nul_model)
    connection.close()

    table = run_costkit("ledger", "tail", "--db", sqlite_url)
    assert table.returncode == 0, table.stderr
    for raw in ("\x1b", "\x07", "\r", "\x00", "\u202e", "\x9b"):
        assert raw not in table.stdout, repr(table.stdout)
    assert "gpt-4.1\\x1b[2J\\x1b]0;pwned\\x07\\r\\x00" in table.stdout
    assert "team=ads\\x1b[31m\\u202eevil\\x9b" in table.stdout

    as_json = run_costkit("ledger", "tail", "--db", sqlite_url, "--json")
    for raw in ("\x1b", "\x07", "\r", "\x00", "\u202e", "\x9b"):
        assert raw not in as_json.stdout
    [row] = json.loads(as_json.stdout)
    assert row["model"] == HOSTILE_MODEL + "\x00" and row["tags"] == {"team": HOSTILE_TAG}  # intact data


def test_exports_keep_nullable_counts_as_integers(sqlite_url: str, tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    with Ledger(sqlite_url) as book:
        book.record(make_row(request_id="a", http_status=None, latency_us=None, ttft_us=None))
        book.record(make_row(request_id="b", http_status=200, estimated_input_tokens=2010, ttft_us=120_000))
        assert book.flush(10)
    out = tmp_path / "out.parquet"
    assert run_costkit("ledger", "export", "--db", sqlite_url, "-o", str(out)).returncode == 0
    nullable = ("http_status", "latency_us", "ttft_us", "estimated_input_tokens")
    schema = pq.read_schema(out)
    assert {name: str(schema.field(name).type) for name in nullable} == dict.fromkeys(nullable, "int64")
    frame = pd.read_parquet(out)
    assert {name: str(frame[name].dtype) for name in nullable} == dict.fromkeys(nullable, "Int64")
    assert frame["http_status"].isna().tolist() == [True, False]
    assert int(frame["http_status"].iloc[1]) == 200 and int(frame["ttft_us"].iloc[1]) == 120_000
    assert str(frame["cost_nanousd"].dtype) == "int64"

    done = run_costkit("ledger", "export", "--db", sqlite_url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["http_status"], r["estimated_input_tokens"], r["ttft_us"]) for r in rows] == [
        ("", "", ""),
        ("200", "2010", "120000"),
    ]
    assert "200.0" not in done.stdout and "120000.0" not in done.stdout


def test_tail_reads_a_ledger_without_changing_its_journal_mode(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    _filled(path, "delete")
    assert run_costkit("ledger", "tail", "--db", str(path)).returncode == 0
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    connection.close()
    assert not os.path.exists(str(path) + "-wal")
