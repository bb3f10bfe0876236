"""Batched, idempotent inserts into the ledger tables: the only code that writes rows.

One batch is one transaction: the requests, then their tags, each with
``ON CONFLICT DO NOTHING``, so a request id already in the ledger adds nothing
and replaying a batch is harmless. No ORM unit of work on this path:

* SQLite: the SQLAlchemy Core ``insert(...)`` compiled once, then executed many
  times (``executemany``) with parameter rows built here: the values SQLAlchemy's
  bind processors would send (UTC text times, 0/1, JSON text), without its
  per-row processing, which otherwise costs more than SQLite itself.
* PostgreSQL: one ``INSERT ... SELECT * FROM unnest(:col1::type[], ...)`` per
  table and batch, the column arrays bound as parameters. psycopg's executemany
  sends one statement per row; this sends one per batch, 1.7x the throughput.
  The statement is generated from the table metadata, so it follows the schema.

If the database refuses some rows of a batch, the batch is split in halves until
the refused rows are alone; the others commit.

Budgets: in the same transaction, after the insert, ``costkit.budgets.settle`` adds the
new rows' costs to the registered budgets' counters and settles their reservations
(one small read when no budget is registered). It must know which rows are new:
PostgreSQL's insert returns their ids; SQLite's ``executemany`` only counts them, so
when some of a batch were already there (a replay) and budgets are registered, the
batch is inserted again row by row, each row counted on its own.

Before its first write (and before any read through ``ensure_schema``), the store
brings the schema to head, once: opening a ledger connects to nothing, so a
database that is down at start costs no one a wait but the writer thread. Every
transaction runs under ``write_lock``, which the fork hook takes so that no
transaction is in flight when a process forks.
"""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, Table, TextClause, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from costkit.budgets.events import announce
from costkit.budgets.settle import Ambiguous, settle_batch
from costkit.ledger import migrate
from costkit.ledger.engine import first_line, is_database_down
from costkit.ledger.errors import DatabaseDown, LedgerError, RowsRefused
from costkit.ledger.location import safe_url
from costkit.ledger.records import Record, insert_params
from costkit.ledger.schema import REQUEST_COLUMNS, UTCDateTime, request_tags_table, requests_table

_TAG_COLUMNS = ("request_id", "key", "value")


class Store:
    """Writes records to one database. Thread-safe: every call checks a connection out of the pool.

    ``migrate_schema=False`` trusts the schema to be at head and never migrates it.
    """

    def __init__(self, engine: Engine, *, migrate_schema: bool = True) -> None:
        self.engine = engine
        self.closed = False
        """Set when the ledger that owns this store closes: background work for it stops."""
        self.write_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._schema_ready = not migrate_schema
        if engine.dialect.name == "postgresql":
            self._write = self._write_unnest
            self._unnest_requests = _unnest_insert(requests_table, "request_id", returning="request_id")
            self._unnest_tags = _unnest_insert(request_tags_table, "request_id, key")
        else:
            self._write = self._write_executemany
            self._sqlite_requests = _SqliteInsert(requests_table, ["request_id"])
            self._sqlite_tags = _SqliteInsert(request_tags_table, ["request_id", "key"])

    def _write_executemany(
        self, connection: Connection, records: list[Record], rows: list[Record], tags: list[Any], each: bool
    ) -> Sequence[Record] | None:
        """Insert a batch; the records inserted (not already there), or None when SQLite cannot say."""
        inserted: Sequence[Record] | None
        if each:
            insert = self._sqlite_requests.execute
            inserted = [r for r, row in zip(records, rows, strict=True) if insert(connection, [row])]
        else:
            count = self._sqlite_requests.execute(connection, rows)
            inserted = records if count == len(rows) else None
        if tags:
            self._sqlite_tags.execute(connection, tags)
        return inserted

    def _write_unnest(
        self, connection: Connection, records: list[Record], rows: list[Record], tags: list[Any], each: bool
    ) -> Sequence[Record] | None:
        arrays = {name: [row[name] for row in rows] for name in REQUEST_COLUMNS}
        arrays["x_metrics"] = [None if v is None else json.dumps(v) for v in arrays["x_metrics"]]
        new = set(connection.execute(self._unnest_requests, arrays).scalars())
        if tags:
            connection.execute(self._unnest_tags, {name: [t[name] for t in tags] for name in _TAG_COLUMNS})
        if len(new) == len(records):
            return records
        inserted = []
        for record in records:  # the first of a request id sent twice in one batch is the one inserted
            if record["request_id"] in new:
                new.discard(record["request_id"])
                inserted.append(record)
        return inserted

    def after_fork_in_child(self) -> None:
        """Fresh locks: another thread may have held them when the process forked."""
        self.write_lock = threading.Lock()
        self._schema_lock = threading.Lock()

    def ensure_schema(self) -> None:
        """Bring the schema to head, once per store (later calls return at once).

        Raises ``DatabaseDown`` (one line) if the database does not answer, and
        ``LedgerError`` if it answers but cannot be used (a newer revision, a schema
        that may not be created, a directory that cannot be written).
        """
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                with self.write_lock:
                    migrate.ensure_schema(self.engine)
            except LedgerError:
                raise
            except Exception as error:
                raise self._failure(error, "prepare") from error
            self._schema_ready = True

    def ping(self) -> None:
        """Ask the database a ``SELECT 1`` (waits at most its connect timeout).

        Raises ``DatabaseDown`` if it gets no answer, ``LedgerError`` if the answer is an error.
        """
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except Exception as error:
            raise self._failure(error, "use") from error

    def _failure(self, error: Exception, doing: str) -> LedgerError:
        """``error`` as one line naming the database: ``DatabaseDown`` if it did not answer."""
        where, why = safe_url(self.engine.url), first_line(error)
        if is_database_down(error):
            return DatabaseDown(f"the ledger database {where} is unavailable: {why}")
        return LedgerError(f"cannot {doing} the ledger database {where}: {why}")

    def insert(self, records: list[Record]) -> None:
        """Commit ``records`` in one transaction, or raise ``DatabaseDown`` / ``RowsRefused``.

        Also raises ``LedgerError`` (see ``ensure_schema``) when the schema cannot be made ready.
        """
        if not records:
            return
        self.ensure_schema()
        rows, tags = insert_params(records)
        try:
            try:
                events = self._insert(records, rows, tags, each=False)
            except Ambiguous:
                events = self._insert(records, rows, tags, each=True)
        except Exception as error:
            if is_database_down(error):
                raise DatabaseDown(f"ledger database unavailable: {first_line(error)}") from error
            raise RowsRefused(first_line(error)) from error
        if events:
            announce(self, events)

    def _insert(self, records: list[Record], rows: list[Record], tags: list[Any], *, each: bool) -> list[Any]:
        with self.write_lock, self.engine.begin() as connection:
            inserted = self._write(connection, records, rows, tags, each)
            return settle_batch(connection, records, inserted)

    def insert_isolating(self, records: list[Record]) -> list[tuple[Record, str]]:
        """Commit every record the database accepts; return the refused ones with the reason.

        Raises ``DatabaseDown`` if the database stops answering; what was committed stays committed.
        """
        try:
            self.insert(records)
            return []
        except RowsRefused as refused:
            if len(records) == 1:
                return [(records[0], str(refused))]
        middle = len(records) // 2
        return self.insert_isolating(records[:middle]) + self.insert_isolating(records[middle:])


def _sqlite_time(value: datetime | None) -> str | None:
    """What ``UTCDateTime`` stores on SQLite: naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _sqlite_bool(value: Any) -> int | None:
    return None if value is None else int(bool(value))


class _SqliteInsert:
    """``INSERT ... ON CONFLICT DO NOTHING`` compiled once from Core; rows sent as parameter lists."""

    def __init__(self, table: Table, conflict: list[str]) -> None:
        compiled = (
            sqlite.insert(table)
            .on_conflict_do_nothing(index_elements=conflict)
            .compile(dialect=sqlite.dialect())
        )
        self.sql = str(compiled)
        names = list(compiled.positiontup or ())
        self._values = operator.itemgetter(*names)
        self._converters: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(names):
            kind = table.c[name].type
            if isinstance(kind, UTCDateTime):
                self._converters.append((index, _sqlite_time))
            elif isinstance(kind, Boolean):
                self._converters.append((index, _sqlite_bool))
            elif isinstance(kind, JSON):
                self._converters.append((index, _sqlite_json))
        if len(names) == 1:
            raise ValueError("a single-column insert would make itemgetter return a scalar")

    def execute(self, connection: Connection, rows: list[Record]) -> int:
        """Insert ``rows``; how many were new (the others' keys were already there)."""
        values, converters = self._values, self._converters
        params = []
        for row in rows:
            item = list(values(row))
            for index, convert in converters:
                item[index] = convert(item[index])
            params.append(tuple(item))
        return int(connection.exec_driver_sql(self.sql, params).rowcount)


def _unnest_insert(table: Table, conflict: str, returning: str | None = None) -> TextClause:
    """``INSERT INTO t (cols) SELECT * FROM unnest(:c1::T1[], ...) ON CONFLICT (...) DO NOTHING``."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = []
    for column in table.columns:
        sql_type = column.type.compile(dialect=dialect)
        if isinstance(column.type, JSON):  # JSON travels as text and is parsed by the server
            arrays.append(f"CAST(CAST(:{column.name} AS TEXT[]) AS {sql_type}[])")
        else:
            arrays.append(f"CAST(:{column.name} AS {sql_type}[])")
    names = ", ".join(column.name for column in table.columns)
    return text(
        f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({', '.join(arrays)}) "
        f"ON CONFLICT ({conflict}) DO NOTHING" + (f" RETURNING {returning}" if returning else "")
    )
