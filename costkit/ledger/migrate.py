"""Alembic, driven programmatically: no ``alembic.ini`` and no particular working directory needed.

The migration scripts are the installed package ``costkit._migrations`` (the
top-level ``migrations/`` folder of a source checkout). Every upgrade or
downgrade runs in one transaction that first takes a lock, so processes that
open a fresh database at the same moment migrate it once: SQLite with
``BEGIN IMMEDIATE``, PostgreSQL with a transaction-level advisory lock.

A database costkit has never migrated is created at head in one step from the
models (Alembic's recipe for a fresh database: ``create_all``, then ``stamp``), so
that old revisions' table names (0001 made ``requests``) never meet an application's
tables of that name. The models and the migration history agree (a test builds both
ways and compares them), so both paths give the same schema. Before that, an SQLite
file's directory is created, and a PostgreSQL schema named in the URL's
``search_path`` that does not exist yet is created (``CREATE SCHEMA IF NOT EXISTS``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from costkit.ledger.errors import LedgerError
from costkit.ledger.location import sqlite_file
from costkit.ledger.schema import VERSION_TABLE, Base

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


def _run_locked(engine: Engine, action: str, revision: str, *, by_migrations: bool = False) -> None:
    prepare_sqlite_path(engine)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            _create_search_path_schema(connection)
        config = alembic_config(connection)
        if action == "downgrade":
            command.downgrade(config, revision)
        elif revision == "head" and not by_migrations and current_revision(connection) is None:
            Base.metadata.create_all(connection)
            command.stamp(config, "head")
        else:
            command.upgrade(config, revision)
        connection.commit()


def prepare_sqlite_path(engine: Engine) -> None:
    """Create an SQLite file's directory (write paths only: reads never create anything).

    Raises ``LedgerError`` naming the directory when it cannot be created or written,
    and for an existing file this process may not write (nor create its ``-wal`` beside).
    """
    path = sqlite_file(engine.url)
    if path is None:
        return
    if path.exists():
        if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            raise LedgerError(f"the ledger database {path} is read-only here (it or its directory)")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LedgerError(
            f"cannot create the directory {path.parent} for the ledger database: {error.strerror or error}"
        ) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise LedgerError(f"cannot create the ledger database {path}: its directory is not writable")


def _create_search_path_schema(connection: Connection) -> None:
    """Create the first schema of ``search_path`` when none exists (tables would have nowhere to go)."""
    if connection.execute(text("SELECT current_schema()")).scalar() is not None:
        return
    path = str(connection.execute(text("SHOW search_path")).scalar() or "")
    names = [n.strip() for n in path.split(",") if n.strip() and n.strip() != '"$user"']
    if not names:
        raise LedgerError(
            "the database URL's search_path names no schema: add ?options=-csearch_path%3DSCHEMA"
        )
    name = names[0]
    name = name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name
    quote = connection.dialect.identifier_preparer.quote  # quotes only names that need it
    user = quote(str(connection.execute(text("SELECT current_user")).scalar()))
    quoted = quote(name)
    try:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
    except Exception as error:
        if getattr(getattr(error, "orig", None), "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise LedgerError(
            f"the schema {name!r} named in the database URL does not exist (or {user} may not use it) "
            f"and {user} may not create it: run `CREATE SCHEMA {quoted} AUTHORIZATION {user}` "
            "as an administrator"
        ) from None


def upgrade(engine: Engine, revision: str = "head", *, by_migrations: bool = False) -> None:
    """Migrate the database up to ``revision`` (default: head), holding the migration lock.

    A database costkit never migrated goes to head in one step from the models unless
    ``by_migrations`` asks for the whole migration history to run (the tests compare both).
    """
    _run_locked(engine, "upgrade", revision, by_migrations=by_migrations)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database down to ``revision`` (``base`` drops the ledger and its data)."""
    _run_locked(engine, "downgrade", revision)


def ensure_schema(engine: Engine) -> None:
    """Bring a fresh or older database to head; refuse one migrated by a newer costkit."""
    prepare_sqlite_path(engine)
    state = schema_state(engine)
    if state.up_to_date:
        return
    check_known(state)
    upgrade(engine, "head")


def check_known(state: SchemaState) -> None:
    """Raise ``LedgerError`` when the database is at a revision this costkit does not know."""
    script = ScriptDirectory.from_config(alembic_config())
    if state.current is not None and state.current not in {rev.revision for rev in script.walk_revisions()}:
        raise LedgerError(
            f"the ledger database is at revision {state.current}, unknown to this costkit "
            f"(head {state.head}): upgrade costkit"
        )
