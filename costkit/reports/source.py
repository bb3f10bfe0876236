"""Which ledger a report reads, opened for reading only: nothing is created, migrated or written.

A ``Ledger`` the caller holds is read through its engine (call ``flush()`` first for
rows still in its queue); a URL or path is opened with the ledger's read-only engine.
An SQLite path that does not exist is an error naming it, except for the default
ledger of a machine that has not recorded anything yet, which reads as empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from costkit.ledger import migrate
from costkit.ledger.engine import first_line, make_read_engine
from costkit.ledger.errors import DatabaseDown, LedgerError
from costkit.ledger.location import ENV_DB_URL, default_sqlite_path, resolve_url, safe_url, sqlite_file

if TYPE_CHECKING:
    from costkit.ledger import Ledger

T = TypeVar("T")


def _is_fresh_default(url: URL) -> bool:
    path = sqlite_file(url)
    return not os.environ.get(ENV_DB_URL) and path == default_sqlite_path() and not path.exists()


@contextmanager
def _engine_for(source: Ledger | str | URL | None, url: URL) -> Iterator[Engine | None]:
    from costkit.ledger import Ledger

    if isinstance(source, Ledger):
        yield source.engine
        return
    path = sqlite_file(url)
    if path is not None and not path.exists():
        if source is None and _is_fresh_default(url):
            yield None  # a fresh machine: nothing recorded yet is an empty report, not an error
            return
        raise LedgerError(f"no ledger database at {path}")
    if path is not None and not path.is_file():
        raise LedgerError(f"{path} is not a ledger database file")
    engine = make_read_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def read_ledger(source: Ledger | str | URL | None, read: Callable[[Engine], T], empty: T) -> T:
    """``read(engine)`` on the ledger ``source`` names, or ``empty`` when it holds no schema yet.

    Raises ``LedgerError`` (one line) for a missing file, a schema this costkit does not read,
    and ``DatabaseDown`` when the database does not answer.
    """
    from costkit.ledger import Ledger

    url = source.url if isinstance(source, Ledger) else resolve_url(source)
    try:
        with _engine_for(source, url) as engine:
            if engine is None:
                return empty
            state = migrate.schema_state(engine)
            if state.current is None:
                return empty
            if not state.up_to_date:
                raise LedgerError(
                    f"the ledger is at schema {state.current}, this costkit reads {state.head}: "
                    "run `costkit db upgrade`"
                )
            return read(engine)
    except SQLAlchemyError as error:
        raise DatabaseDown(
            f"the ledger database {safe_url(url)} cannot be read: {first_line(error)}"
        ) from None
