"""costkit's own names: ``costkit_requests`` and ``costkit_request_tags`` beside an application's tables.

Migration 0003 moved the tables from ``requests``/``request_tags`` keeping every row,
index and constraint; a fresh database is built at head from the models, which must
give exactly what the migration history gives; a PostgreSQL schema named in the
URL is created when it is missing, or the error says how to create it.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from costkit.ledger import Ledger, migrate
from costkit.ledger.engine import make_engine
from costkit.ledger.location import resolve_url
from tests.ledger_helpers import (  # noqa: F401
    HEAD_REVISION,
    T0,
    _pg_admin,
    db_url,
    ids_in_ledger,
    make_row,
    missing_pg_schema,
    pg_schema,
    pg_url,
    run_costkit,
    scalar,
)

COSTKIT_TABLES = {
    "costkit_requests",
    "costkit_request_tags",
    "costkit_alembic_version",
    "costkit_budgets",
    "costkit_budget_periods",
    "costkit_budget_reservations",
    "costkit_budget_events",
}


def _shape(engine: Engine) -> dict[str, Any]:
    """Everything the schema is made of, by name: tables, columns, keys, indexes, checks."""
    with engine.connect() as connection:
        inspector = inspect(connection)
        shape: dict[str, Any] = {}
        for table in sorted(inspector.get_table_names()):
            shape[table] = {
                "columns": [
                    (c["name"], str(c["type"]).split("(")[0], c["nullable"])
                    for c in inspector.get_columns(table)
                ],
                "pk": (
                    inspector.get_pk_constraint(table)["name"],
                    inspector.get_pk_constraint(table)["constrained_columns"],
                ),
                "fks": sorted(
                    (
                        fk["name"],
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        fk["options"].get("ondelete"),
                    )
                    for fk in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)
                ),
                "checks": sorted(c["name"] for c in inspector.get_check_constraints(table)),
            }
        return shape


def _insert_at_0002(engine: Engine, request_id: str, tags: dict[str, str]) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO requests (request_id, started_at, model, endpoint_host, status, stream,"
                " input_tokens, cached_input_tokens, output_tokens, usage_source, cost_nanousd, notes)"
                " VALUES (:id, :t, 'gpt-4.1', 'h', 'ok', false, 2006, 1920, 300, 'provider', 3532000, 'n')"
            ),
            {"id": request_id, "t": datetime(2025, 4, 14, tzinfo=timezone.utc)},
        )
        for key, value in tags.items():
            connection.execute(
                text("INSERT INTO request_tags (request_id, key, value) VALUES (:id, :k, :v)"),
                {"id": request_id, "k": key, "v": value},
            )


def test_0003_moves_every_row_index_and_constraint_to_costkit_names_and_back(db_url: str) -> None:
    engine = make_engine(resolve_url(db_url))
    migrate.upgrade(engine, "0002")
    _insert_at_0002(engine, "old-1", {"team": "search", "user": "ana"})
    _insert_at_0002(engine, "old-2", {"team": "ads"})

    migrate.upgrade(engine)
    shape = _shape(engine)
    assert set(shape) == COSTKIT_TABLES
    requests, tags = shape["costkit_requests"], shape["costkit_request_tags"]
    assert requests["pk"] == ("pk_costkit_requests", ["request_id"])
    assert requests["indexes"] == [("ix_costkit_requests_started_at", ("started_at",))]
    assert requests["checks"] == ["ck_costkit_requests_status", "ck_costkit_requests_usage_source"]
    assert tags["pk"] == ("pk_costkit_request_tags", ["request_id", "key"])
    assert tags["fks"] == [
        (
            "fk_costkit_request_tags_request_id_costkit_requests",
            ("request_id",),
            "costkit_requests",
            "CASCADE",
        )
    ]
    assert tags["indexes"] == [("ix_costkit_request_tags_key_value", ("key", "value"))]
    engine.dispose()

    with Ledger(db_url) as book:
        rows = {r["request_id"]: r for r in book.rows()}
        assert rows["old-1"]["tags"] == {"team": "search", "user": "ana"} and rows["old-1"]["notes"] == "n"
        assert rows["old-2"]["cost_nanousd"] == 3_532_000
        assert list(book.frame(tags={"team": "ads"})["request_id"]) == ["old-2"]
    # The foreign key still cascades under its new name.
    engine = make_engine(resolve_url(db_url))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM costkit_requests WHERE request_id = 'old-2'"))
    assert scalar(db_url, "SELECT count(*) FROM costkit_request_tags") == 2

    migrate.downgrade(engine, "0002")
    back = _shape(engine)
    assert set(back) == {"requests", "request_tags", "costkit_alembic_version"}
    assert back["request_tags"]["fks"][0][:3] == (
        "fk_request_tags_request_id_requests",
        ("request_id",),
        "requests",
    )
    assert back["requests"]["indexes"] == [("ix_requests_started_at", ("started_at",))]
    assert scalar(db_url, "SELECT count(*) FROM request_tags WHERE request_id = 'old-1'") == 2
    engine.dispose()


def _two_databases(kind: str, tmp_path: Path) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'models.sqlite'}", f"sqlite:///{tmp_path / 'history.sqlite'}"
    names = [f"costkit_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        _pg_admin(f"CREATE SCHEMA {name}")
    return pg_url(names[0]), pg_url(names[1])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_fresh_database_built_from_the_models_is_the_one_the_migrations_build(
    kind: str, tmp_path: Path
) -> None:
    from_models, from_history = _two_databases(kind, tmp_path)
    try:
        with Ledger(from_models):
            pass
        history = make_engine(resolve_url(from_history))
        migrate.upgrade(history, by_migrations=True)
        models = make_engine(resolve_url(from_models))
        assert migrate.schema_state(models).current == HEAD_REVISION
        assert _shape(models) == _shape(history)
        models.dispose()
        history.dispose()
    finally:
        if kind == "postgresql":
            for url in (from_models, from_history):
                _pg_admin(f"DROP SCHEMA IF EXISTS {url.rsplit('%3D', 1)[1]} CASCADE")


APP_TABLES = (
    "CREATE TABLE requests (id INTEGER PRIMARY KEY, path TEXT NOT NULL)",
    "CREATE TABLE request_tags (id INTEGER PRIMARY KEY, label TEXT)",
    "INSERT INTO requests (id, path) VALUES (1, '/checkout'), (2, '/login')",
    "INSERT INTO request_tags (id, label) VALUES (7, 'mine')",
)


def test_costkit_creates_its_tables_beside_an_applications_own_and_never_touches_them(db_url: str) -> None:
    app = create_engine(db_url)
    with app.begin() as connection:
        for sql in APP_TABLES:
            connection.execute(text(sql))
    before = _shape(app)
    with Ledger(db_url) as book:
        book.record(make_row(request_id="ours", tags={"team": "search"}))
        assert book.flush(10)
        assert [r["request_id"] for r in book.rows()] == ["ours"]
    after = _shape(app)
    assert {t: after[t] for t in ("requests", "request_tags")} == before
    assert set(after) == {"requests", "request_tags"} | COSTKIT_TABLES
    with app.connect() as connection:
        assert connection.execute(text("SELECT id, path FROM requests ORDER BY id")).all() == [
            (1, "/checkout"),
            (2, "/login"),
        ]
        assert connection.execute(text("SELECT label FROM request_tags")).all() == [("mine",)]
    app.dispose()


def test_a_missing_postgres_schema_named_in_the_url_is_created_on_first_open(missing_pg_schema: str) -> None:
    url = pg_url(missing_pg_schema)
    with Ledger(url) as book:
        book.record(make_row(request_id="in-new-schema", started_at=T0))
        assert book.flush(10)
    assert ids_in_ledger(url) == ["in-new-schema"]
    assert scalar(url, "SELECT current_schema()") == missing_pg_schema


@pytest.fixture
def unprivileged_role() -> Any:
    """A PostgreSQL login role that may connect to ``test`` but not create schemas there."""
    name = f"costkit_nocreate_{uuid.uuid4().hex[:8]}"
    _pg_admin(f"CREATE ROLE {name} LOGIN")
    try:
        yield name
    finally:
        _pg_admin(f"DROP OWNED BY {name} CASCADE")  # the schema the test let it own, and its tables
        _pg_admin(f"DROP ROLE {name}")


def test_a_schema_that_may_not_be_created_is_one_line_that_says_how(
    missing_pg_schema: str, unprivileged_role: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_url(missing_pg_schema).replace("postgres@", f"{unprivileged_role}@")
    done = run_costkit("db", "upgrade", "--db", url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    fix = f"CREATE SCHEMA {missing_pg_schema} AUTHORIZATION {unprivileged_role}"
    assert line.startswith("costkit: ") and fix in line, line

    caplog.set_level(logging.WARNING, logger="costkit.ledger")
    with Ledger(url, spool_dir=tmp_path / "spool") as book:
        book.record(make_row(request_id="waits"))
        assert book.flush(5) is False
    assert any(fix in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]

    _pg_admin(f"CREATE SCHEMA {missing_pg_schema} AUTHORIZATION {unprivileged_role}")  # the fix it names
    with Ledger(url, spool_dir=tmp_path / "spool") as book:
        assert book.flush(10) is True
    assert ids_in_ledger(url) == ["waits"]
