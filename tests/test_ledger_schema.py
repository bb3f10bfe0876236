"""The ledger schema: models and migrations agree, migrations go up and down, constraints hold."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from costkit.ledger import Ledger, migrate
from costkit.ledger.engine import make_engine
from costkit.ledger.location import resolve_url
from costkit.ledger.schema import VERSION_TABLE, Base
from tests.ledger_helpers import (  # noqa: F401
    HEAD_REVISION,
    REPO,
    child_env,
    db_url,
    make_row,
    pg_schema,
    scalar,
)


def _diff(url: str) -> list[object]:
    engine = make_engine(resolve_url(url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(resolve_url(db_url))
    migrate.upgrade(engine, by_migrations=True)  # every revision from 0001, not the models' shortcut
    assert migrate.schema_state(engine).current == HEAD_REVISION
    assert _diff(db_url) == []
    # The comparison can fail: drop an index the models declare and it must be reported.
    with engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_costkit_request_tags_key_value"))
    engine.dispose()
    diff = _diff(db_url)
    assert [d[0] for d in diff] == ["add_index"], diff
    assert diff[0][1].name == "ix_costkit_request_tags_key_value"


def test_migrations_go_down_to_base_and_up_again(db_url: str) -> None:
    engine = make_engine(resolve_url(db_url))
    migrate.upgrade(engine)
    assert migrate.schema_state(engine).current == migrate.head_revision() == HEAD_REVISION
    with Ledger(db_url) as book:
        book.record(make_row())
        assert book.flush(10)
    assert scalar(db_url, "SELECT count(*) FROM costkit_requests") == 1

    migrate.downgrade(engine, "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {VERSION_TABLE}
    assert migrate.schema_state(engine).current is None

    migrate.upgrade(engine)
    with engine.connect() as connection:
        assert {"costkit_requests", "costkit_request_tags"} <= set(inspect(connection).get_table_names())
    assert scalar(db_url, "SELECT count(*) FROM costkit_requests") == 0
    engine.dispose()


def test_fresh_database_is_migrated_on_first_open(db_url: str) -> None:
    with Ledger(db_url):
        pass
    assert scalar(db_url, f"SELECT version_num FROM {VERSION_TABLE}") == HEAD_REVISION


@pytest.mark.parametrize("column, bad", [("status", "weird"), ("usage_source", "guessed")])
def test_check_constraints_refuse_unknown_status_and_usage_source(db_url: str, column: str, bad: str) -> None:
    with Ledger(db_url):
        pass
    values = {"status": "ok", "usage_source": "provider", column: bad}
    engine = create_engine(db_url)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO costkit_requests (request_id, started_at, model, endpoint_host, status, stream,"
                " input_tokens, cached_input_tokens, output_tokens, usage_source, cost_nanousd)"
                " VALUES ('r1', '2025-01-01 00:00:00', 'gpt-4.1', '', :status, false,"
                " 0, 0, 0, :usage_source, 0)"
            ),
            values,
        )
    engine.dispose()


def test_times_are_timezone_aware_utc_in_and_out(db_url: str) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    started = datetime(2025, 4, 14, 17, 30, 0, 123456, tzinfo=india)
    with Ledger(db_url) as book:
        book.record(make_row(request_id="tz", started_at=started, finished_at=started + timedelta(seconds=2)))
        assert book.flush(10)
        [row] = book.rows()
    assert row["started_at"] == started
    assert row["started_at"].utcoffset() == timedelta(0)
    assert row["started_at"].hour == 12 and row["started_at"].microsecond == 123456
    assert row["finished_at"] - row["started_at"] == timedelta(seconds=2)


def test_importing_the_row_contract_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, costkit.ledger.row, costkit.ledger\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n"
        "from costkit.ledger import Ledger\n"
        "assert 'sqlalchemy' in sys.modules\n"
        "import costkit\n"
        "assert costkit.Ledger is Ledger\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
    assert done.stdout.strip() == "ok", done.stderr


def test_migrations_ship_in_the_wheel_and_run_outside_the_source_tree(tmp_path: Path) -> None:
    """Build the real wheel (offline, with the dev extra's setuptools), unpack it, migrate from there."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(wheels),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("costkit-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert (site / "costkit/_migrations/env.py").is_file()
    assert (site / "costkit/_migrations/script.py.mako").is_file()
    assert list((site / "costkit/_migrations/versions").glob("0001_*.py"))

    code = (
        "import sys\n"
        "from costkit.ledger import Ledger\n"
        "from costkit.ledger.migrate import script_location\n"
        "assert str(script_location()).startswith(sys.argv[1]), script_location()\n"
        "with Ledger(sys.argv[2]) as book:\n"
        "    pass\n"
        "print(script_location())\n"
    )
    env = child_env(PYTHONPATH=str(site))
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code, str(site), f"sqlite:///{tmp_path / 'l.sqlite'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(site / "costkit" / "_migrations")
    assert (
        scalar(f"sqlite:///{tmp_path / 'l.sqlite'}", f"SELECT version_num FROM {VERSION_TABLE}")
        == HEAD_REVISION
    )


def test_upgrading_from_0001_keeps_rows_and_adds_notes(db_url: str) -> None:
    engine = make_engine(resolve_url(db_url))
    migrate.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO requests (request_id, started_at, model, endpoint_host, status, stream,"
                " input_tokens, cached_input_tokens, output_tokens, usage_source, cost_nanousd)"
                " VALUES ('old', :t, 'gpt-4.1', 'h', 'ok', false, 2006, 1920, 300, 'provider', 3532000)"
            ),
            {"t": datetime(2025, 4, 14, tzinfo=timezone.utc)},
        )
    migrate.upgrade(engine)
    engine.dispose()
    with Ledger(db_url) as book:
        book.record(make_row(request_id="new", notes="usage estimated: no usage in the response"))
        assert book.flush(10)
        rows = {r["request_id"]: r for r in book.rows()}
    assert rows["old"]["cost_nanousd"] == 3_532_000 and rows["old"]["notes"] is None
    assert rows["new"]["notes"] == "usage estimated: no usage in the response"
