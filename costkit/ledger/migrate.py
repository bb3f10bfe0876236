"""Alembic, driven programmatically: no ``alembic.ini`` and no particular working directory needed.

The migration scripts are the installed package ``costkit._migrations`` (the
top-level ``migrations/`` folder of a source checkout). Every upgrade or
downgrade runs in one transaction that first takes a lock, so processes that
open a fresh database at the same moment migrate it once: SQLite with
``BEGIN IMMEDIATE``, PostgreSQL with a transaction-level advisory lock.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from costkit.ledger.errors import LedgerError
from costkit.ledger.schema import VERSION_TABLE

PG_LOCK_KEY = 0x636F73746B6974  # "costkit": serialises concurrent migrations of one database


def script_location() -> Path:
    """The directory holding ``env.py`` and ``versions/``: installed package first, then the source tree."""
    spec = importlib.util.find_spec("costkit._migrations")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "env.py").is_file():
                return Path(location)
    source_tree = Path(__file__).resolve().parents[2] / "migrations"
    if (source_tree / "env.py").is_file():
        return source_tree
    raise LedgerError("costkit's migrations are missing from this installation (costkit._migrations)")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` built in code; ``env.py`` runs on ``connection`` when one is given."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this installation knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise LedgerError("costkit's migrations have no head revision")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for a database costkit has never migrated."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    heads = context.get_current_heads()
    return heads[0] if heads else None


@dataclass(frozen=True, slots=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    with engine.connect() as connection:
        return SchemaState(current_revision(connection), head_revision())


def _run_locked(engine: Engine, action: str, revision: str) -> None:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        config = alembic_config(connection)
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        connection.commit()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: head), holding the migration lock."""
    _run_locked(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` drops the ledger and its data)."""
    _run_locked(engine, "downgrade", revision)


def ensure_schema(engine: Engine) -> None:
    """Bring a fresh or older database to head; refuse one migrated by a newer costkit."""
    state = schema_state(engine)
    if state.up_to_date:
        return
    script = ScriptDirectory.from_config(alembic_config())
    if state.current is not None and state.current not in {rev.revision for rev in script.walk_revisions()}:
        raise LedgerError(
            f"the ledger database is at revision {state.current}, unknown to this costkit "
            f"(head {state.head}): upgrade costkit"
        )
    upgrade(engine, "head")
