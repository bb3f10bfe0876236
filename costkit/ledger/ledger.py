"""``Ledger``: record every request, never lose a row, read the totals back exactly.

Opening a ledger never connects: the writer thread prepares the database (creates
and migrates it) as its first act, and until it answers, rows wait in the spool.
Reading (``rows``, ``frame``, ``replay``) connects in the caller's thread and
raises ``DatabaseDown`` (one line) when the database does not answer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL, Engine

from costkit.ledger import migrate
from costkit.ledger.engine import first_line, is_database_down, make_engine, make_read_engine, sqlite_writable
from costkit.ledger.errors import DatabaseDown, LedgerError
from costkit.ledger.location import default_spool_dir, resolve_url, safe_url, sqlite_file
from costkit.ledger.query import TimeBound, frame_of, read_rows
from costkit.ledger.records import check_row, tidy_row
from costkit.ledger.row import Row
from costkit.ledger.spool import ReplayResult, Spool, rejection
from costkit.ledger.store import Store
from costkit.ledger.writer import Writer

T = TypeVar("T")

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from costkit.budgets.budget import Budget
    from costkit.budgets.events import BudgetEvent
    from costkit.budgets.status import BudgetStatus


class Ledger:
    """The spend ledger: one row per request in SQLite (default) or PostgreSQL.

    ``url``: an SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://user@host/db``)
    or a path to an SQLite file; default ``$COSTKIT_DB_URL``, else ``ledger.sqlite`` in
    the user data directory. A fresh database is migrated to the newest schema on open.

    ``record`` never waits on the database: rows go through a bounded in-memory queue
    (``queue_size`` rows, roughly 0.5 kB each; when it is full, ``record`` appends the
    row to the spool file itself) to a background thread that inserts them in batches
    (``batch_size``). When the database fails, rows go to an append-only spool on
    disk (``spool_dir``: next to the SQLite file, or in the user data dir) and are
    replayed, idempotently by ``request_id``, as soon as it answers again (retries
    back off up to ``max_retry_delay`` seconds). ``flush``, ``close`` and normal
    process exit drain the queue.

    Loss window: by default, rows still in the in-memory queue are lost if the
    process is killed (``kill -9``, ``os._exit``, a SIGTERM while costkit's handler is
    not installed: see ``costkit.ledger.lifecycle``) or the
    machine loses power before the writer takes them (normally milliseconds).
    With ``durable=True``, ``record`` appends the row to the spool and fsyncs it
    before returning (about one disk flush per call), so a recorded row survives
    even ``kill -9`` and power loss; it is inserted from there.

    Prompt and completion text are stored only with ``store_text=True``. No
    credentials are ever stored; printed URLs hide their password.

    Opening never waits on the database and never fails because it is down: the
    writer thread creates and migrates it as soon as it answers (logging one warning
    while it does not), and rows wait in the spool meanwhile. A URL that cannot be
    right (unknown backend, malformed, no driver installed) raises ``LedgerError`` at
    once. The read methods connect in the caller's thread and raise ``DatabaseDown``
    if the database does not answer. A read-only SQLite ledger can still be read.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        durable: bool = False,
        store_text: bool = False,
        spool_dir: str | os.PathLike[str] | None = None,
        queue_size: int = 100_000,
        batch_size: int = 5000,
        max_retry_delay: float = 10.0,
        migrate_schema: bool = True,
    ) -> None:
        self.url: URL = resolve_url(url)
        self.durable = durable
        self.store_text = store_text
        self.engine = make_engine(self.url)
        self.spool = Spool(Path(spool_dir) if spool_dir is not None else default_spool_dir(self.url))
        self._store = Store(self.engine, migrate_schema=migrate_schema)
        self._read_only_engine: Engine | None = None
        self._writer = Writer(
            self._store,
            self.spool,
            store_text=store_text,
            durable=durable,
            queue_size=queue_size,
            batch_size=batch_size,
            max_retry_delay=max_retry_delay,
        )
        self._closed = False

    def __repr__(self) -> str:
        return f"Ledger({safe_url(self.url)!r}, durable={self.durable})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def spool_dir(self) -> Path:
        return self.spool.directory

    @property
    def database_down(self) -> bool:
        """True while the writer finds the database down (rows wait in the spool until it answers)."""
        return self._writer.down

    @property
    def queue_depth(self) -> int:
        """Rows recorded but not yet committed or spooled (queued, or in the batch being written)."""
        return self._writer.queue_depth

    def spool_rows(self) -> int:
        """Rows waiting in the spool for the database (any process's); reads the spool files."""
        return self.spool.pending_rows()

    def reachable(self) -> bool:
        """Whether the database answers a ``SELECT 1`` now (waits at most its connect timeout)."""
        try:
            self._store.ping()
        except LedgerError:
            return False
        return True

    def record(self, row: Row) -> None:
        """Account one request. Returns without waiting on the database.

        What any upstream or header may put in a row is made storable, not refused:
        tags follow the one tag rule (``costkit.ledger.row.clean_tags``: valid tags are
        kept, the others dropped), NUL and unpaired surrogates in text become U+FFFD,
        ``x_metrics`` that is not plain JSON is dropped; each change is noted on the
        row (``row.notes``). Raises ``ValueError``/``TypeError`` at once if ``row``
        breaks the ``Row`` contract otherwise (unknown status, naive datetime, float or
        out-of-range money and counts, tags that are not a mapping); such a row is
        still written to ``rejected.jsonl`` in the spool directory. The ledger owns the
        row afterwards: do not change it. Recording a ``request_id`` that is already in
        the ledger stores nothing new.
        """
        if not isinstance(row, Row):
            raise TypeError(f"Ledger.record takes a costkit Row, not {type(row).__name__}")
        try:
            tidy_row(row)
            check_row(row)
        except ValueError as error:
            self._keep_refused(row, error)
            raise
        self._writer.put(row)

    def _keep_refused(self, row: Row, error: ValueError) -> None:
        """A row refused by ``record`` is still kept for a human in the spool's ``rejected.jsonl``."""
        data = {f.name: getattr(row, f.name) for f in fields(row)}
        if not self.store_text:
            data["prompt_text"] = data["completion_text"] = None
        # The caller gets the ValueError, which is the report that matters; keeping a copy is best effort.
        with contextlib.suppress(OSError, ValueError, TypeError):
            line = json.dumps(data, default=repr, skipkeys=True).encode()  # ASCII: any text survives
            self.spool.reject([rejection(line, f"refused by Ledger.record: {error}")])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row recorded before this call is committed.

        Returns True when they are all in the database; False if ``timeout``
        (seconds) passed first, the database is down (the rows are then safe in
        the spool and will be replayed), or rows in the spool cannot be read for
        replay yet.
        """
        return self._writer.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue, stop the writer and release connections. Idempotent.

        Rows recorded afterwards go straight to the spool (replayed by the next
        ledger on this database). Returns True when everything reached the database.
        """
        if self._closed:
            return not self.spool.has_pending()
        self._closed = True
        self._store.closed = True
        ok = self._writer.close(timeout)
        self.engine.dispose()
        if self._read_only_engine is not None:
            self._read_only_engine.dispose()
        return ok

    def replay(self) -> ReplayResult:
        """Insert everything waiting in the spool now (any process's); idempotent by ``request_id``.

        Raises ``DatabaseDown`` if the database does not answer; the spool is then kept.
        """
        self._store.ensure_schema()
        return self.spool.replay(self._store.insert_isolating, wait=True)

    def rows(
        self,
        since: TimeBound = None,
        until: TimeBound = None,
        tags: Mapping[str, str] | None = None,
        *,
        last: int | None = None,
    ) -> list[dict[str, Any]]:
        """Committed rows as dicts, oldest first (see ``frame``); ``last`` keeps the N most recent.

        Makes sure the schema exists first; raises ``DatabaseDown`` if the database does not answer.
        """
        engine = self._reading_engine()
        try:
            return read_rows(engine, since, until, tags, last=last)
        except (ValueError, TypeError):
            raise
        except Exception as error:
            if is_database_down(error):
                raise DatabaseDown(
                    f"the ledger database {safe_url(self.url)} is unavailable: {first_line(error)}"
                ) from error
            raise

    def _reading_engine(self) -> Engine:
        """The engine to read with: ours once the schema is ready, or a read-only one for a read-only file."""
        path = sqlite_file(self.url)
        if path is None or not path.exists() or sqlite_writable(path):
            self._store.ensure_schema()
            return self.engine
        if self._read_only_engine is None:
            engine = make_read_engine(self.url)
            try:
                state = migrate.schema_state(engine)
            except Exception as error:
                engine.dispose()
                raise LedgerError(f"cannot read the ledger {path}: {first_line(error)}") from error
            if not state.up_to_date:
                engine.dispose()
                raise LedgerError(
                    f"the read-only ledger {path} is at schema {state.current or 'none'}, this costkit "
                    f"reads {state.head}: upgrade it where it can be written (`costkit db upgrade`)"
                )
            self._read_only_engine = engine
        return self._read_only_engine

    def frame(
        self,
        since: TimeBound = None,
        until: TimeBound = None,
        tags: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """Committed rows as a DataFrame, oldest first, filtered in SQL.

        ``since`` (inclusive) and ``until`` (exclusive) bound ``started_at``: aware
        datetimes, or dates meaning midnight UTC. ``tags={"team": "search"}`` keeps
        rows carrying every given pair. Columns: every row field, ``tags`` (dict),
        ``cost_nanousd`` (int64) and ``cost_usd`` (exact ``Decimal``); times are UTC.
        Rows still in the queue or spool are not shown: ``flush()`` first.
        """
        return frame_of(self.rows(since, until, tags))

    def budget_status(self, budget: Budget | str, at: datetime | None = None) -> BudgetStatus:
        """Where ``budget`` (a ``costkit.Budget``, or the name of one registered here) stands at ``at``.

        ``.spent_usd`` is summed exactly from the period's matching rows, ``.reserved_usd`` from
        the reservations still within their lease, ``.remaining_usd`` is what is left;
        ``.period_start``/``.period_end`` are aware datetimes in the budget's zone. ``at``
        (aware; default now) picks the period. Committed rows only: ``flush()`` first.
        Raises ``DatabaseDown`` if the database does not answer.
        """
        from costkit.budgets.status import budget_status

        return self._read(lambda engine: budget_status(engine, budget, at))

    def budget_events(self, budget: str | None = None) -> list[BudgetEvent]:
        """The budget warnings recorded (a threshold crossed, once per budget, period and threshold)."""
        from costkit.budgets.status import budget_events

        return self._read(lambda engine: budget_events(engine, budget))

    def _read(self, read: Callable[[Engine], T]) -> T:
        engine = self._reading_engine()
        try:
            return read(engine)
        except (ValueError, TypeError, LedgerError):
            raise
        except Exception as error:
            if is_database_down(error):
                raise DatabaseDown(
                    f"the ledger database {safe_url(self.url)} is unavailable: {first_line(error)}"
                ) from error
            raise


def replay_spool(
    url: str | URL | None = None, spool_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, ReplayResult]:
    """Replay a database's spool now, without starting a writer: ``costkit ledger replay``.

    Returns the spool directory and what was replayed; raises ``DatabaseDown`` if the
    database does not answer (the spool is then kept). Idempotent by ``request_id``.
    With nothing waiting and no SQLite file yet, nothing is created.
    """
    resolved = resolve_url(url)
    spool = Spool(Path(spool_dir) if spool_dir is not None else default_spool_dir(resolved))
    path = sqlite_file(resolved)
    if path is not None and not path.exists() and not spool.has_pending():
        return spool.directory, ReplayResult()
    engine = make_engine(resolved)
    try:
        store = Store(engine)
        store.ensure_schema()
        return spool.directory, spool.replay(store.insert_isolating, wait=True)
    finally:
        engine.dispose()
