"""Leases: a live process keeps its reservations; a dead one's run out.

Every reservation expires (``expires_at``) one lease after it was made or last
extended. While its request is in flight, the process that made it extends it from
one background thread per ledger, every third of the lease, so a long stream never
loses its hold; once the request settles (its row is handed to the ledger) the
reservation is left to the writer, which deletes it with the row, or to its lease.
A process killed with its requests in flight extends nothing: its reservations run
out after one lease and the next reservation of the budget sweeps them away.

The same thread registers the budgets of new transports in the background (retrying,
from every second to every 30 seconds, while the database does not answer), so soft
budgets are counted without the request path ever waiting for it. The thread ends when
it has nothing left to do and starts again when it has, and for good once its ledger
closes (what was still pending is dropped then, without another attempt or warning).
A forked child starts with nothing held: what its parent holds is its parent's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence

from costkit.budgets.budget import Budget
from costkit.budgets.events import announce
from costkit.budgets.store import BudgetStore

log = logging.getLogger("costkit")

IDLE_S = 5.0
RETRY_S = 1.0
MAX_RETRY_S = 30.0


class LeaseKeeper:
    """Extends the open reservations of one ledger database and registers budgets in the background."""

    def __init__(self, store: BudgetStore) -> None:
        self.store = store
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, float] = {}  # request id -> its lease, seconds
        self._pending: list[Budget] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def hold(self, request_id: str, lease_s: float) -> None:
        """Keep extending ``request_id``'s reservations until ``release``."""
        with self._lock:
            shorter = not self._held or lease_s < min(self._held.values())
            self._held[request_id] = lease_s
            self._start()
        if shorter:
            self._wake.set()

    def release(self, request_id: str) -> None:
        with self._lock:
            self._held.pop(request_id, None)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def register_later(self, budgets: Sequence[Budget]) -> None:
        """Register ``budgets`` from the background thread (retried until the database answers)."""
        with self._lock:
            self._pending.extend(b for b in budgets if not self.store.registered(b))
            if self._pending:
                self._start()
        self._wake.set()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="costkit-budget-leases", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        from costkit.ledger import sigwatch

        sigwatch.leave_signals_to_the_main_thread()
        last_extended = time.monotonic()
        retry_s = RETRY_S
        while True:
            retry_s = min(retry_s * 2, MAX_RETRY_S) if self._register_pending() else RETRY_S
            with self._lock:
                if self.store.store.closed:
                    self._held.clear()
                    self._pending.clear()
                if not self._held and not self._pending:
                    self._thread = None  # nothing to keep: the next hold or registration starts one
                    return
                shortest = min(self._held.values(), default=None)
                retrying = bool(self._pending)
            interval = IDLE_S if shortest is None else shortest / 3
            due = last_extended + interval - time.monotonic()
            if due > 0:
                self._wake.wait(min(due, retry_s) if retrying else due)
                self._wake.clear()
                continue
            last_extended = time.monotonic()
            self._extend()

    def _register_pending(self) -> bool:
        """Register what is pending; True when some of it must be retried."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or self.store.store.closed:
            return False
        try:
            announce(self.store.store, self.store.ensure_registered(pending))
        except Exception as error:
            with self._lock:
                self._pending = pending + self._pending
            self._log_failure("could not register a budget yet; retrying", error)
            return True
        return False

    def _extend(self) -> None:
        with self._lock:
            by_lease: dict[float, list[str]] = {}
            for request_id, lease in self._held.items():
                by_lease.setdefault(lease, []).append(request_id)
        try:
            for lease, ids in by_lease.items():
                self.store.extend(ids, lease)
        except Exception as error:
            self._log_failure("could not extend the leases of budget reservations", error)
            return
        self._failing = False

    def _log_failure(self, message: str, error: BaseException) -> None:
        from costkit.ledger.engine import first_line

        if self.store.store.closed:  # its ledger closed meanwhile: nothing is retried, nothing to say
            return
        if not self._failing:
            log.warning("costkit: %s: %s", message, first_line(error))
        self._failing = True


_keepers: weakref.WeakKeyDictionary[BudgetStore, LeaseKeeper] = weakref.WeakKeyDictionary()
_keepers_lock = threading.Lock()


_fork_hook_installed = False


def keeper_for(store: BudgetStore) -> LeaseKeeper:
    """The one lease keeper of a ledger database in this process."""
    global _fork_hook_installed
    with _keepers_lock:
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True
        keeper = _keepers.get(store)
        if keeper is None:
            keeper = _keepers[store] = LeaseKeeper(store)
        return keeper


def _after_fork_in_child() -> None:
    global _keepers_lock
    _keepers_lock = threading.Lock()
    for keeper in list(_keepers.values()):
        pending = keeper._pending
        keeper._reset()
        keeper._pending = pending  # registered by the child's own thread, once something starts it
