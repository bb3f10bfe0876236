"""Engines for the ledger, and the one question the writer asks of a failure: is the database down?

Making an engine opens no connection and creates nothing: a URL that cannot be
right (no driver for it) fails here at once with ``LedgerError``; a database that
is down is found later, by whoever connects.

SQLite connections run in WAL mode with a busy timeout and ``synchronous=NORMAL``
(set on every new connection), so several processes can write one file at once:
writers queue on the lock instead of failing. PostgreSQL uses psycopg 3 with a
connect timeout (the URL's ``connect_timeout`` if it has one), and the pool pings
connections so a restarted server is found again without losing a batch.

``make_read_engine`` opens an existing SQLite ledger without ever writing to it or
creating anything, and changes no journal mode: ``mode=rw`` when this process may
write the file and its directory. Otherwise (a read-only file or directory, say an
archived copy): ``mode=ro`` when a ``-wal`` file exists (its committed rows must be
read, through the ``-shm`` index beside it), else ``immutable=1``, which reads the
file alone and creates no ``-wal``/``-shm`` that would be left behind, owned by the
reader, in someone else's directory. ``immutable`` trusts that no one writes the
file meanwhile: a writer starting in the middle of such a read is not seen.

Forked children must never close the SQLite connections they inherited (closing
any descriptor of a file drops every POSIX lock the process holds on it, the
child's own included): ``keep_inherited_connections`` keeps them referenced.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from costkit.ledger.errors import LedgerError
from costkit.ledger.location import safe_url, sqlite_file

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5

_open_sqlite: dict[int, Any] = {}
"""Every DBAPI connection our SQLite engines have open in this process, by id."""
_inherited: list[Any] = []
"""Connections inherited through fork: referenced for good, so they are never closed here."""


def _sqlite_pragmas(busy_timeout_ms: int, *, writes: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL itself may have to wait for another process.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if writes:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return on_connect


def _track_sqlite_connections(engine: Engine) -> None:
    def opened(dbapi_connection: Any, _record: Any) -> None:
        _open_sqlite[id(dbapi_connection)] = dbapi_connection

    def closed(dbapi_connection: Any, *_args: Any) -> None:
        _open_sqlite.pop(id(dbapi_connection), None)

    event.listen(engine, "connect", opened)
    event.listen(engine, "close", closed)
    event.listen(engine, "close_detached", closed)


def keep_inherited_connections() -> None:
    """In a forked child: keep every inherited SQLite connection referenced, never closed."""
    _inherited.extend(_open_sqlite.values())
    _open_sqlite.clear()


def _create(url: URL, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except exc.NoSuchModuleError:
        raise LedgerError(f"no SQLAlchemy dialect for {url.drivername!r} in {safe_url(url)}") from None
    except ImportError as error:
        hint = " (install 'costkit[postgres]')" if url.get_backend_name() == "postgresql" else ""
        raise LedgerError(f"the driver for {safe_url(url)} is not installed: {error}{hint}") from None


def make_engine(url: URL, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for a resolved ledger URL (see ``location.resolve_url``). Opens no connection.

    Raises ``LedgerError`` when no driver for the URL is installed.
    """
    if url.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            engine = _create(url, connect_args={"timeout": sqlite_busy_timeout_ms / 1000})
            _track_sqlite_connections(engine)
        else:
            # One shared connection, or every thread would see its own empty in-memory database.
            engine = _create(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms, writes=True))
        return engine
    connect_args: dict[str, Any] = {"application_name": "costkit"}
    if "connect_timeout" not in url.query:  # connect_args win over the URL: only fill in a default
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return _create(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args)


def sqlite_writable(path: Path) -> bool:
    """Whether this process may write an existing SQLite file and create its ``-wal``/``-shm`` beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def make_read_engine(url: URL, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """An engine that reads an existing ledger and never creates or changes anything.

    For an SQLite file: ``mode=rw`` (never creates the file) or, when the file or its
    directory is not writable, ``mode=ro``; no journal-mode switch. Other backends:
    the ordinary engine (connecting creates nothing there).
    """
    path = sqlite_file(url)
    if path is None:
        return make_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
    if sqlite_writable(path):
        options = "mode=rw"
    elif Path(f"{path}-wal").exists():
        options = "mode=ro"
    else:
        options = "mode=ro&immutable=1"
    target = f"file:{quote(str(path))}?{options}"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            target, uri=True, timeout=sqlite_busy_timeout_ms / 1000, check_same_thread=False
        )

    engine = _create(url, creator=connect)
    _track_sqlite_connections(engine)
    event.listen(engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms, writes=False))
    return engine


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


def first_line(error: BaseException) -> str:
    """The first line of a database error's own message (the DBAPI's, not SQLAlchemy's wrapper)."""
    text = str(getattr(error, "orig", None) or error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
