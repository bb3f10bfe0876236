"""Engines for the ledger, and the one question the writer asks of a failure: is the database down?

SQLite connections run in WAL mode with a busy timeout and ``synchronous=NORMAL``
(set on every new connection), so several processes can write one file at once:
writers queue on the lock instead of failing. PostgreSQL uses psycopg 3 with a
connect timeout, and the pool pings connections so a restarted server is found
again without losing a batch.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from costkit.ledger.location import sqlite_file

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself may have to wait for another process.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return on_connect


def make_engine(url: URL, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for a resolved ledger URL (see ``location.resolve_url``). Opens no connection."""
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": sqlite_busy_timeout_ms / 1000})
        else:
            # One shared connection, or every thread would see its own empty in-memory database.
            engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms))
        return engine
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "costkit"}
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args)


def is_database_down(error: BaseException) -> bool:
    """True when ``error`` says the database did not answer, so the rows are fine and must be retried.

    False when the database answered and refused the rows themselves (integrity or
    data errors, values a bind processor cannot send): retrying those would never end.
    """
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return not isinstance(error, (exc.IntegrityError, exc.DataError))
    if isinstance(error, exc.StatementError):
        return False  # a bind processor refused a value: the row's fault, not the database's
    return isinstance(error, (exc.SQLAlchemyError, OSError))
