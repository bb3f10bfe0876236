"""Batched, idempotent inserts into the ledger tables: the only code that writes rows.

One batch is one transaction: ``INSERT ... ON CONFLICT (request_id) DO NOTHING``
executed many times through SQLAlchemy Core (no ORM unit of work), then the tags
the same way. A request id already in the ledger is skipped with its tags, so
replaying a batch adds nothing. If the database refuses some rows of a batch,
the batch is split in halves until the refused rows are alone; the others commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from costkit.ledger.engine import is_database_down
from costkit.ledger.errors import DatabaseDown, RowsRefused
from costkit.ledger.records import Record, insert_params
from costkit.ledger.schema import request_tags_table, requests_table


class Store:
    """Writes records to one database. Thread-safe: every call checks a connection out of the pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect_insert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert_requests = dialect_insert(requests_table).on_conflict_do_nothing(
            index_elements=["request_id"]
        )
        self._insert_tags = dialect_insert(request_tags_table).on_conflict_do_nothing(
            index_elements=["request_id", "key"]
        )

    def insert(self, records: list[Record]) -> None:
        """Commit ``records`` in one transaction, or raise ``DatabaseDown`` / ``RowsRefused``."""
        if not records:
            return
        rows, tags = insert_params(records)
        try:
            with self.engine.begin() as connection:
                connection.execute(self._insert_requests, rows)
                if tags:
                    connection.execute(self._insert_tags, tags)
        except Exception as error:
            if is_database_down(error):
                raise DatabaseDown(f"ledger database unavailable: {_first_line(error)}") from error
            raise RowsRefused(_first_line(error)) from error

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


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]
