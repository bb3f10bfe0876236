"""The background writer: rows leave the caller's thread through a bounded in-memory queue.

Contract:

* ``put`` never waits on the database. It appends to a deque (or, when the deque
  is full or the writer is closed, appends the row to the spool file itself), and
  in durable mode writes and fsyncs the row to the spool before returning.
* One daemon thread drains the deque in batches into the database. When the
  database does not answer, the batch goes to the spool (fsynced), later rows go
  straight to the spool, and the thread retries with exponential backoff by
  replaying the spool, which also picks up rows other processes left there.
* ``flush`` waits until every row put before it is committed (True) or on disk
  in the spool because the database is down (False). ``close`` flushes, stops
  the thread and spools anything left. Process exit closes every open writer
  (an ``atexit`` hook; the thread is a daemon, so it cannot keep a process alive).

Loss window of the default mode: rows still in the in-memory queue when the
process is killed (``kill -9``, SIGTERM without a handler, ``os._exit``) or the
machine loses power: at most about ``LINGER_S`` (50 ms) of rows when the writer
keeps up. Durable mode has no such window.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from costkit.ledger.errors import DatabaseDown
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
        self._init_state()
        self._replay_wanted = spool.has_pending()
        _live.add(self)
        _register_for_forks(self)
        self._start()

    def _init_state(self) -> None:
        self._queue: deque[Row] = deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._cycle_failed = False
        self._lock = threading.Lock()
        self._flushes: list[_Flush] = []
        self._held: list[Record] = []  # taken from the queue, not yet in the database or the spool
        self._finished = False
        self._accepting = True
        self._stopping = False
        self._down = False
        self._retry_at = 0.0
        self._delay = FIRST_RETRY_S
        self._replay_wanted = False

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="costkit-ledger-writer", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------------

    def put(self, row: Row) -> None:
        """Hand a checked row to the writer without waiting on the database."""
        if self.durable:
            self._put_durable(row)
            return
        queue = self._queue
        if self._accepting and len(queue) < self.queue_size:
            queue.append(row)
            if not self._wake.is_set():
                self._wake.set()
            if not self._accepting:  # close() raced us: make sure the row is not stranded
                self._spill_queue()
            return
        self.spool.append([spool_line(record_of(row, self.store_text))], fsync=False)
        self._want_replay()

    def _put_durable(self, row: Row) -> None:
        self.spool.append([spool_line(record_of(row, self.store_text))], fsync=True)
        self._want_replay()

    def _want_replay(self) -> None:
        self._replay_wanted = True
        if self._accepting:
            self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """True once every row put before the call is committed; False on timeout or if the DB is down."""
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

        Returns True when everything reached the database. Idempotent.
        """
        with self._lock:
            self._accepting = False
            self._stopping = True
        self._wake.set()
        self._urgent.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._spill_queue()
        _live.discard(self)
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
            self.spool.append([spool_line(record_of(r, self.store_text)) for r in rows], fsync=True)
            self._replay_wanted = True

    # -- the writer thread -------------------------------------------------------------------------

    def _timeout(self) -> float:
        if self._down:
            return max(0.0, self._retry_at - time.monotonic())
        return 0.0 if self._replay_wanted else IDLE_CHECK_S

    def _run(self) -> None:
        while True:
            self._wake.wait(self._timeout())
            self._wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
                stopping = self._stopping
            self._cycle_failed = False
            try:
                self._drain(len(self._queue) if not stopping else None)
                if flushes or stopping or self._replay_wanted or self._down or self._idle_check():
                    self._replay(force=bool(flushes) or stopping)
            except Exception:  # never let a bug kill the thread that holds the rows
                log.exception("costkit ledger writer: unexpected error; rows are kept and retried")
                self._mark_down()
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

    def _idle_check(self) -> bool:
        return not self._queue and self.spool.has_pending()

    def _drain(self, count: int | None) -> None:
        """Write ``count`` rows from the queue (all of them when None) to the database or the spool."""
        if self._held:
            held, self._held = self._held, []
            self._write(held)
        remaining = count
        queue = self._queue
        while remaining is None or remaining > 0:
            limit = self.batch_size if remaining is None else min(remaining, self.batch_size)
            rows: list[Row] = []
            try:
                while len(rows) < limit:
                    rows.append(queue.popleft())
            except IndexError:
                remaining = 0
            else:
                if remaining is not None:
                    remaining -= len(rows)
            if not rows:
                return
            self._write([record_of(r, self.store_text) for r in rows])

    def _write(self, records: list[Record]) -> None:
        if self._down and (self._stopping or time.monotonic() < self._retry_at):
            self._to_spool(records)
            return
        try:
            refused = self.store.insert_isolating(records)
        except DatabaseDown as error:
            self._to_spool(records)
            self._mark_down(error)
            return
        self._mark_up()
        if refused:
            self.spool.reject_records(refused)
            log.error(
                "costkit ledger: the database refused %d row(s), kept in %s",
                len(refused),
                self.spool.rejected,
            )

    def _to_spool(self, records: list[Record]) -> None:
        try:
            self.spool.append_records(records, fsync=True)
        except OSError:
            self._held.extend(records)  # kept in memory and retried: the disk may come back too
            raise
        self._replay_wanted = True

    def _replay(self, force: bool) -> None:
        if self._down and not force and time.monotonic() < self._retry_at:
            return
        self._replay_wanted = False
        try:
            self.spool.replay(self.store.insert_isolating, self.batch_size, wait=force)
        except DatabaseDown as error:
            self._replay_wanted = True
            self._mark_down(error)
            return
        self._mark_up()

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
            log.warning("costkit ledger: the database answers again; replaying the spool")
        self._down = False
        self._delay = FIRST_RETRY_S

    def _after_fork_in_child(self) -> None:
        # The parent still owns (and will write) the rows queued before the fork.
        self.store.engine.dispose(close=False)
        was_open = self._accepting
        self._init_state()
        self._replay_wanted = self.spool.has_pending()
        if was_open:
            self._start()
        else:
            self._accepting = False
            self._stopping = True


_live: set[Writer] = set()
_hooks_installed = False
_before_drain: list[Callable[[], None]] = []


def before_drain(callback: Callable[[], None]) -> None:
    """Call ``callback`` at interpreter exit, before the open writers drain (once per callback).

    For work still in flight that has rows to record, such as a response stream the caller
    never closed: settled here, while imports still work, its row reaches the drain.
    """
    _install_process_hooks()
    if callback not in _before_drain:
        _before_drain.append(callback)


def _run_before_drain() -> None:
    for callback in list(_before_drain):
        try:
            callback()
        except Exception:
            log.exception("costkit ledger: a callback before the exit drain failed")


def _close_all() -> None:
    """At interpreter exit (after non-daemon threads finished): drain every open writer."""
    _run_before_drain()
    for writer in list(_live):
        try:
            writer.close()
        except Exception:
            log.exception("costkit ledger: could not drain the writer at exit")


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer._after_fork_in_child()


def _install_process_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        _hooks_installed = True
        atexit.register(_close_all)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


def _register_for_forks(writer: Writer) -> None:
    _install_process_hooks()
    import multiprocessing.util

    # multiprocessing children leave through os._exit (no atexit): close in their exit finalizers.
    multiprocessing.util.register_after_fork(writer, _finalize_in_mp_child)


def _finalize_in_mp_child(writer: Writer) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(writer, writer.close, exitpriority=10)
