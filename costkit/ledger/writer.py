"""The background writer: rows leave the caller's thread through a bounded in-memory queue.

Contract:

* ``put`` never waits on the database and never raises. It appends to a deque
  (or, when the deque is full or the writer is closed, appends the row to the
  spool file itself), and in durable mode writes and fsyncs the row to the spool
  before returning. When the spool cannot be written either, the row stays in
  memory up to ``queue_size`` rows and is retried; beyond that it is dropped, which
  one error log says (the only way a row can be lost while the process lives).
* One daemon thread drains the deque in batches into the database. Its first act
  is to bring the schema to head; when the database does not answer (at start or
  later), batches go to the spool (fsynced), later rows go straight to the spool,
  and the thread retries with exponential backoff by replaying the spool, which
  also picks up rows other processes left there. A spool that cannot be read
  (locked, listed or renamed in) has a backoff of its own and does not mark the
  database down: new rows still go straight to it. Each outage is logged once.
* ``flush`` waits until every row put before it is committed (True) or on disk
  in the spool because the database is down (False). ``close`` flushes, stops
  the thread and spools anything left. ``lifecycle`` closes every open writer at
  interpreter exit, spills them on SIGTERM, and makes forking safe.

Loss window of the default mode: rows still in the in-memory queue when the
process is killed (``kill -9``, ``os._exit``, a SIGTERM while its default action
is not costkit's handler) or the machine loses power: at most about ``LINGER_S``
(50 ms) of rows when the writer keeps up. Durable mode has no such window.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque

from costkit.ledger import lifecycle, sigwatch
from costkit.ledger.errors import LedgerError
from costkit.ledger.lifecycle import before_drain as before_drain  # the public place to register
from costkit.ledger.records import Record, record_of, spool_line
from costkit.ledger.row import Row
from costkit.ledger.spool import Spool
from costkit.ledger.store import Store

log = logging.getLogger("costkit.ledger")

IDLE_CHECK_S = 30.0
"""How often an idle writer looks for rows other processes left in the spool."""
FIRST_RETRY_S = 0.05
LINGER_S = 0.05
"""How long an idle writer lets new rows gather before it writes them (flush and close cut it short)."""
SPILL_LOCK_WAIT_S = 0.5
"""How long the SIGTERM spill waits for the writer thread to finish taking a batch."""


class _Flush:
    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class Writer:
    """Moves rows to the database off the caller's thread; see the module docstring for the contract."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        *,
        store_text: bool,
        durable: bool,
        queue_size: int,
        batch_size: int,
        max_retry_delay: float,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or max_retry_delay <= 0:
            raise ValueError("queue_size and batch_size must be >= 1 and max_retry_delay > 0")
        self.store = store
        self.spool = spool
        self.store_text = store_text
        self.durable = durable
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.max_retry_delay = max_retry_delay
        self._fork_locked = False
        self._init_state()
        lifecycle.register(self)
        self._start()

    def _init_state(self) -> None:
        self._queue: deque[Row] = deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._cycle_failed = False
        self._lock = threading.Lock()
        self._flushes: list[_Flush] = []
        self._inflight: list[Record] = []  # the batch being written now (spilled on SIGTERM too)
        self._held: list[Record] = []  # reached neither the database nor the spool: retried from memory
        self._dropping = False  # rows are being dropped: said once
        self._spool_broken = False
        self._replay_broken = False
        self._finished = False
        self._accepting = True
        self._stopping = False
        self._down = False
        self._retry_at = 0.0
        self._delay = FIRST_RETRY_S
        self._replay_at = 0.0  # the spool's own retry clock: a spool that cannot be read is not the DB
        self._replay_delay = FIRST_RETRY_S
        self._replay_wanted = self.spool.has_pending()  # rows an earlier run (or another process) left

    @property
    def down(self) -> bool:
        """True while the database is known down: rows go to the spool until it answers again."""
        return self._down

    @property
    def queue_depth(self) -> int:
        """Rows in memory that are neither committed nor spooled yet (read without the lock)."""
        return len(self._queue) + len(self._inflight) + len(self._held)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="costkit-ledger-writer", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------------

    def put(self, row: Row) -> None:
        """Hand a checked row to the writer without waiting on the database; never raises."""
        queue = self._queue
        if lifecycle.terminating:  # the SIGTERM handler spills the queue right after its callbacks
            queue.append(row)
            return
        if self.durable:
            self._put_on_disk(row, fsync=True)
            return
        if self._accepting and len(queue) + len(self._held) < self.queue_size:
            queue.append(row)
            if not self._wake.is_set():
                self._wake.set()
            if not self._accepting:  # close() raced us: make sure the row is not stranded
                self._spill_queue()
            return
        self._put_on_disk(row, fsync=False)

    def _put_on_disk(self, row: Row, *, fsync: bool) -> None:
        try:
            self.spool.append([spool_line(record_of(row, self.store_text))], fsync=fsync)
        except OSError as error:
            self._spool_failed(error)
            if self._accepting and len(self._queue) + len(self._held) < self.queue_size:
                self._queue.append(row)  # kept in memory; the writer retries the database and the spool
                self._wake.set()
            else:
                self._drop()
            return
        self._want_replay()

    def _drop(self) -> None:
        if not self._dropping:
            self._dropping = True
            log.error(
                "costkit ledger: rows are being lost: the database, the spool %s and the in-memory "
                "queue (%d rows) are all unavailable",
                self.spool.directory,
                self.queue_size,
            )

    def _spool_failed(self, error: OSError) -> None:
        if not self._spool_broken:
            self._spool_broken = True
            log.warning(
                "costkit ledger: cannot write the spool %s (%s); rows are kept in memory and retried",
                self.spool.directory,
                error.strerror or error,
            )

    def _replay_failed(self, error: OSError) -> None:
        if not self._replay_broken:
            self._replay_broken = True
            log.warning(
                "costkit ledger: cannot replay the spool %s (%s); the rows there wait, and it is retried",
                self.spool.directory,
                error.strerror or error,
            )

    def _want_replay(self) -> None:
        self._replay_wanted = True
        if self._accepting:
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """True once every row put before the call, and every row in the spool, is committed.

        False on timeout, while the database is down, or while the spool cannot be replayed.
        """
        request = _Flush()
        with self._lock:
            if self._finished or not self._thread.is_alive():
                return not self._queue and not self._held and not self.spool.has_pending()
            self._flushes.append(request)
        self._wake.set()
        self._urgent.set()
        return request.done.wait(timeout) and request.ok

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting rows into memory, drain, stop the thread; later rows go to the spool.

        Returns True when everything reached the database, but for spool files another live
        process is replaying now: those are its to insert, and close does not wait for them
        (nor, at exit, does the drain). Idempotent. When ``timeout`` passes
        first (a slow or locked database), the queued rows and the batch being written are in
        the spool on return, so they survive the process exiting; replay stores each row once.
        """
        with self._lock:
            self._accepting = False
            self._stopping = True
        self._wake.set()
        self._urgent.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                # The join timed out with a batch in the database's hands: were the process to exit
                # now, it would never commit. A copy waits in the spool (replay stores a row once);
                # if the copy cannot be written, the thread still holds the batch.
                with contextlib.suppress(OSError):
                    self.spool.append_records(list(self._inflight), fsync=True)
        self._spill_queue()
        lifecycle.unregister(self)
        if self._held and not self._thread.is_alive():
            try:
                self.spool.append_records(self._held, fsync=True)
                self._held = []
            except OSError:
                log.error(
                    "costkit ledger: %d row(s) could reach neither the database nor the spool %s",
                    len(self._held),
                    self.spool.directory,
                )
        return not self._thread.is_alive() and not self._down and not self._replay_wanted

    def _spill_queue(self) -> None:
        rows: list[Row] = []
        while True:
            try:
                rows.append(self._queue.popleft())
            except IndexError:
                break
        if rows:
            records = [record_of(r, self.store_text) for r in rows]
            try:
                self.spool.append_records(records, fsync=True)
            except OSError as error:
                self._spool_failed(error)
                self._held.extend(records)
                return
            self._replay_wanted = True

    def spill_for_exit(self) -> None:
        """On SIGTERM: every row not known to be committed goes to the spool, fsynced, at once.

        No database work and no lock that the interrupted code may hold: the rows are
        written as one new spool file (``Spool.write_batch_file``). Rows being committed
        right now are spilled too; replay is idempotent, so a row is never stored twice.
        """
        taken = self._lock.acquire(timeout=SPILL_LOCK_WAIT_S)  # the writer may be taking a batch
        try:
            records = list(self._inflight) + list(self._held)
            while True:
                try:
                    records.append(record_of(self._queue.popleft(), self.store_text))
                except IndexError:
                    break
            if records:
                self.spool.write_batch_file([spool_line(r) for r in records])
                self._held = []
        finally:
            if taken:
                self._lock.release()
        if records:
            self._replay_wanted = True  # if the process lives on, the writer inserts them itself
            self._wake.set()

    # -- fork --------------------------------------------------------------------------------------

    def before_fork(self) -> None:
        """Wait for the transaction in flight (SQLite) so the child copies idle connections only."""
        self._fork_locked = False
        if self.store.engine.dialect.name == "sqlite":
            self._fork_locked = self.store.write_lock.acquire(timeout=lifecycle.FORK_WAIT_S)

    def after_fork_in_parent(self) -> None:
        if self._fork_locked:
            self._fork_locked = False
            self.store.write_lock.release()

    def after_fork_in_child(self) -> None:
        # The parent still owns (and will write) the rows queued before the fork. The inherited
        # connections are the parent's: referenced elsewhere, never closed or used here.
        self._fork_locked = False
        self.store.after_fork_in_child()
        self.spool.after_fork_in_child()
        self.store.engine.dispose(close=False)
        was_open = self._accepting
        self._init_state()
        if was_open:
            self._start()
        else:
            self._accepting = False
            self._stopping = True

    # -- the writer thread -------------------------------------------------------------------------

    def _timeout(self) -> float:
        if not self._down and not self._replay_wanted:
            return IDLE_CHECK_S
        due = max(self._retry_at if self._down else 0.0, self._replay_at if self._replay_wanted else 0.0)
        return max(0.0, due - time.monotonic())

    def _run(self) -> None:
        sigwatch.leave_signals_to_the_main_thread()
        self._prepare()
        while True:
            self._wake.wait(self._timeout())
            self._wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
                stopping = self._stopping
            self._cycle_failed = False
            try:
                self._drain(len(self._queue) if not stopping else None)
                if flushes or self._replay_wanted or self._down or self._idle_check() or stopping:
                    # On the way out, a database known to be down is not waited for again:
                    # the spool keeps the rows for the next ledger.
                    # Only a flush waits for spool files another replayer holds: they are that
                    # replayer's to insert, safe on disk, and an exit drain must not hang on them.
                    self._replay(force=bool(flushes) or (stopping and not self._down), wait=bool(flushes))
            except Exception as error:  # never let a bug kill the thread that holds the rows
                log.exception("costkit ledger writer: unexpected error; rows are kept and retried")
                self._mark_down(error)
            if stopping:
                with self._lock:
                    self._finished = True
                    flushes += self._flushes
                    self._flushes = []
            for request in flushes:
                request.ok = not self._cycle_failed
                request.done.set()
            if stopping:
                return
            if self._down:  # gather rows for a while instead of fsyncing the spool for each one
                self._urgent.wait(min(0.1, self._timeout()))
                self._urgent.clear()
            elif len(self._queue) < self.batch_size:
                # Let a trickle of rows gather into one transaction instead of one each:
                # a commit per request would cost the request threads GIL time.
                self._urgent.wait(LINGER_S)
                self._urgent.clear()

    def _prepare(self) -> None:
        """Bring the schema to head before anything else, so a fresh database is ready early."""
        try:
            self.store.ensure_schema()
        except LedgerError as error:
            self._mark_down(error)
        except Exception:
            log.exception("costkit ledger writer: unexpected error preparing the database")
            self._mark_down()

    def _idle_check(self) -> bool:
        return not self._queue and self.spool.has_pending()

    def _take_batch(self, limit: int) -> list[Record]:
        """Move up to ``limit`` queued rows to ``_inflight``, under the lock the SIGTERM spill takes."""
        queue = self._queue
        with self._lock:
            rows: list[Row] = []
            try:
                while len(rows) < limit:
                    rows.append(queue.popleft())
            except IndexError:
                pass
            self._inflight = [record_of(r, self.store_text) for r in rows]
            return self._inflight

    def _drain(self, count: int | None) -> None:
        """Write ``count`` rows from the queue (all of them when None) to the database or the spool."""
        if self._held:
            with self._lock:
                held, self._held = self._held, []
                self._inflight = held
            try:
                self._write(held)
            finally:
                self._inflight = []
        remaining = count
        while remaining is None or remaining > 0:
            limit = self.batch_size if remaining is None else min(remaining, self.batch_size)
            records = self._take_batch(limit)
            if not records:
                return
            if remaining is not None:
                remaining -= len(records)
            try:
                self._write(records)
            finally:
                self._inflight = []

    def _write(self, records: list[Record]) -> None:
        if self._down and (self._stopping or time.monotonic() < self._retry_at):
            self._to_spool(records)
            return
        try:
            refused = self.store.insert_isolating(records)
        except LedgerError as error:  # down, or a schema it cannot use yet: the rows wait in the spool
            self._to_spool(records)
            self._mark_down(error)
            return
        except Exception:  # a bug, not the database: the rows wait in the spool too, then it is logged
            self._to_spool(records)
            raise
        self._mark_up()
        if refused:
            try:
                self.spool.reject_records(refused)
            except OSError as error:
                self._spool_failed(error)
                log.error("costkit ledger: the database refused %d row(s): %s", len(refused), refused[0][1])
                return
            log.error(
                "costkit ledger: the database refused %d row(s), kept in %s",
                len(refused),
                self.spool.rejected,
            )

    def _to_spool(self, records: list[Record]) -> None:
        try:
            self.spool.append_records(records, fsync=True)
        except OSError as error:
            self._spool_failed(error)
            self._held.extend(records)  # kept in memory and retried: the disk may come back too
            self._cycle_failed = True
            return
        self._spool_broken = False
        self._replay_wanted = True

    def _replay(self, force: bool, wait: bool) -> None:
        if self._down and not force and (self._stopping or time.monotonic() < self._retry_at):
            return  # on the way out, a database known to be down is not waited for again
        if not force and time.monotonic() < self._replay_at:
            return  # the spool could not be read: it is tried again on its own clock
        self._replay_wanted = False
        try:
            replayed = self.spool.replay(self.store.insert_isolating, self.batch_size, wait=wait)
            if self._down and not replayed.rows:  # nothing replayed asked the database nothing: ask it
                self.store.ensure_schema()
                self.store.ping()
        except LedgerError as error:
            self._replay_wanted = True
            self._mark_down(error)
            return
        except OSError as error:  # the spool cannot be locked, read or renamed in: the database may be fine
            self._replay_wanted = True
            self._replay_failed(error)
            self._cycle_failed = True
            self._replay_at = time.monotonic() + self._replay_delay
            self._replay_delay = min(self._replay_delay * 2, self.max_retry_delay)
            return
        self._mark_up()
        self._replay_broken = False
        self._replay_at = 0.0
        self._replay_delay = FIRST_RETRY_S

    def _mark_down(self, error: BaseException | None = None) -> None:
        if not self._down:
            log.warning(
                "costkit ledger: %s; rows go to the spool %s until it answers", error, self.spool.directory
            )
        self._down = True
        self._cycle_failed = True
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.max_retry_delay)

    def _mark_up(self) -> None:
        if self._down:
            log.info("costkit ledger: the database answers again; replaying the spool")
        self._down = False
        self._delay = FIRST_RETRY_S
