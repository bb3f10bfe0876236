"""`costkit db` and `costkit ledger`, run as the installed console script in a subprocess."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from costkit.ledger import Ledger
from tests.ledger_helpers import (  # noqa: F401
    HEAD_REVISION,
    T0,
    db_url,
    make_row,
    pg_schema,
    postgres_url,
    run_costkit,
    scalar,
    sqlite_url,
)

BIG = 2**53 + 1
COSTS = {"a": BIG, "b": 3_532_000, "c": 7}


def _fill(url: str) -> None:
    with Ledger(url) as book:
        for i, (request_id, cost) in enumerate(COSTS.items()):
            team = "search" if request_id != "b" else "ads"
            book.record(
                make_row(
                    request_id=request_id,
                    started_at=T0 + timedelta(days=i),
                    cost_nanousd=cost,
                    tags={"team": team},
                    x_metrics={"tps": 61.5} if request_id == "a" else None,
                )
            )
        assert book.flush(30)


def _assert_exact(pairs: list[tuple[int, str]]) -> None:
    """Each decimal string is plain notation and exactly its integer nano-USD amount."""
    assert pairs
    for nanousd, text in pairs:
        assert isinstance(text, str) and "E" not in text.upper(), text
        assert Decimal(text) == Decimal(nanousd).scaleb(-9), (nanousd, text)


def test_export_keeps_money_exact_in_csv_jsonl_and_parquet(sqlite_url: str, tmp_path: Path) -> None:
    _fill(sqlite_url)
    for fmt in ("csv", "jsonl", "parquet"):
        done = run_costkit("ledger", "export", "--db", sqlite_url, "-o", str(tmp_path / f"out.{fmt}"))
        assert done.returncode == 0, done.stderr

    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [(r["request_id"], r["cost_nanousd"], r["cost_usd"]) for r in rows] == [
        ("a", "9007199254740993", "9007199.254740993"),
        ("b", "3532000", "0.003532"),
        ("c", "7", "0.000000007"),
    ]
    _assert_exact([(int(r["cost_nanousd"]), r["cost_usd"]) for r in rows])
    assert json.loads(rows[0]["tags"]) == {"team": "search"}
    assert rows[0]["started_at"] == T0.isoformat()

    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["cost_nanousd"] for r in lines] == [BIG, 3532000, 7]
    _assert_exact([(r["cost_nanousd"], r["cost_usd"]) for r in lines])
    assert lines[0]["x_metrics"] == {"tps": 61.5} and lines[1]["tags"] == {"team": "ads"}

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("cost_nanousd").type) == "int64"
    assert str(table.schema.field("cost_usd").type) == "string"
    assert table.column("cost_nanousd").to_pylist() == [BIG, 3532000, 7]
    nanos, texts = table.column("cost_nanousd").to_pylist(), table.column("cost_usd").to_pylist()
    _assert_exact(list(zip(nanos, texts, strict=True)))
    assert table.column("tags").to_pylist()[1] == [("team", "ads")]
    assert table.column("started_at").to_pylist()[2] == T0 + timedelta(days=2)


def test_export_filters_by_time_and_tag_on_postgres(postgres_url: str) -> None:
    _fill(postgres_url)
    done = run_costkit(
        "ledger",
        "--db",
        postgres_url,
        "export",
        "--format",
        "jsonl",
        "--tag",
        "team=search",
        "--since",
        (T0 + timedelta(days=1)).date().isoformat(),
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["request_id"], r["cost_usd"]) for r in lines] == [("c", "0.000000007")]
    until = run_costkit("ledger", "export", "--db", postgres_url, "--until", "2025-04-15T12:00:00Z")
    assert [r["request_id"] for r in csv.DictReader(io.StringIO(until.stdout))] == ["a"]


def test_tail_prints_a_table_or_json_newest_last(sqlite_url: str) -> None:
    _fill(sqlite_url)
    table = run_costkit("ledger", "tail", "--db", sqlite_url, "-n", "2")
    assert table.returncode == 0, table.stderr
    header, first, second = table.stdout.splitlines()
    assert header.split()[:3] == ["started_at", "(UTC)", "model"]
    assert "0.003532" in first and "team=ads" in first
    assert "0.000000007" in second and "team=search" in second
    as_json = run_costkit("ledger", "tail", "--db", sqlite_url, "-n", "5", "--json")
    data = json.loads(as_json.stdout)
    assert [(r["request_id"], r["cost_nanousd"]) for r in data] == [("a", BIG), ("b", 3532000), ("c", 7)]
    _assert_exact([(r["cost_nanousd"], r["cost_usd"]) for r in data])


def test_db_upgrade_current_and_downgrade(db_url: str) -> None:
    fresh = run_costkit("db", "current", "--db", db_url, "--json")
    if db_url.startswith("sqlite"):  # a read command never creates the file it was asked about
        assert fresh.returncode == 2 and "no ledger database at" in fresh.stderr, fresh.stderr
    else:
        assert fresh.returncode == 0, fresh.stderr
        assert json.loads(fresh.stdout)["current"] is None
    up = run_costkit("db", "--db", db_url, "upgrade")
    assert up.returncode == 0, up.stderr
    state = json.loads(run_costkit("db", "current", "--db", db_url, "--json").stdout)
    assert state["current"] == state["head"] == HEAD_REVISION and state["up_to_date"] is True
    assert scalar(db_url, "SELECT count(*) FROM costkit_requests") == 0
    down = run_costkit("db", "downgrade", "base", "--yes", "--db", db_url)
    assert down.returncode == 0, down.stderr
    assert json.loads(run_costkit("db", "current", "--db", db_url, "--json").stdout)["current"] is None
    refused = run_costkit("db", "downgrade", "base", "--db", db_url)  # no --yes and no terminal to ask
    assert refused.returncode != 0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["ledger", "export", "--format", "xml"], "--format"),
        (["ledger", "export", "--since", "last tuesday"], "--since"),
        (["ledger", "tail", "--tag", "team"], "KEY=VALUE"),
        (["ledger", "tail", "--db", "mysql://u@127.0.0.1/x"], "unsupported database"),
        (["ledger", "tail", "--db", "postgresql://postgres@127.0.0.1:1/test"], "127.0.0.1"),
        (["db", "upgrade", "9999"], "9999"),
        (["ledger", "tail", "-n", "0"], "-n"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(sqlite_url: str, args: list[str], needle: str) -> None:
    if "--db" not in args:
        args = [*args, "--db", sqlite_url]
    done = run_costkit(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("costkit: ") and needle in lines[0], done.stderr
