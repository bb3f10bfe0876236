"""The process around the writers: interpreter exit, fork, and SIGTERM.

* **Exit**: an ``atexit`` hook runs the ``before_drain`` callbacks, then closes
  (drains) every open writer. ``multiprocessing`` children leave through
  ``os._exit``, so a ``multiprocessing`` finalizer does the same there (callbacks, then
  drain): a response such a child dropped unclosed still becomes a row.
* **Fork** (``os.register_at_fork``): before the fork, each writer's write lock is
  taken, so no SQLite transaction is in flight in the copied connections; after
  it, the parent carries on and the child keeps the inherited connections
  referenced (never closed, never used) and starts each writer afresh.
* **SIGTERM**: the first writer started in the main thread installs a handler,
  unless SIGTERM is ignored (``SIG_IGN``: nothing is at risk, and ignoring must
  survive ``exec``) or its handler was installed outside Python (it could not be
  chained). The handler runs the ``before_drain`` callbacks, spills every writer's
  queue and in-flight rows to the spool with ``fsync`` (no lock another thread
  might hold, no database work), then chains to the handler installed before it:
  a Python handler is called; the default is restored and the signal re-raised,
  so the process still dies "killed by SIGTERM". A handler the application installs
  later replaces this one and is never replaced back. Forked children inherit it.
  A SIGTERM that lands while the main thread is inside ``settling()`` (a response
  being turned into a row, or the exit drain) is held and delivered when that ends:
  the handler could not finish a row already marked settled. Other threads' settles
  get up to ``SETTLE_WAIT_S`` to land in the queue before the spill. ``sigwatch`` wakes
  a main thread that slept through the signal, so the handler always runs.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from costkit.ledger import sigwatch

log = logging.getLogger("costkit.ledger")

FORK_WAIT_S = 10.0
"""How long a fork waits for a writer's transaction to end before forking anyway."""


class Managed(Protocol):
    """What this module needs of a writer."""

    def close(self, timeout: float | None = None) -> bool: ...

    def spill_for_exit(self) -> None: ...

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


_live: set[Managed] = set()
_before_drain: list[Callable[[], None]] = []
_hooks_installed = False
_sigterm_installed = False
_previous_sigterm: Any = None
terminating = False
"""True while the SIGTERM handler runs: ``Writer.put`` then only appends to memory (spilled next)."""


def register(writer: Managed) -> None:
    """Track an open writer for exit, fork and SIGTERM; called from the thread that opens it."""
    _install_process_hooks()
    _live.add(writer)
    _install_sigterm_handler()
    import multiprocessing.util

    multiprocessing.util.register_after_fork(writer, _finalize_in_mp_child)


def unregister(writer: Managed) -> None:
    _live.discard(writer)


def before_drain(callback: Callable[[], None]) -> None:
    """Call ``callback`` at interpreter exit and on SIGTERM, before the open writers drain or spill.

    For work still in flight that has rows to record, such as a response stream the caller
    never closed: settled here, while imports still work, its row reaches the drain. A
    callback may run more than once (SIGTERM, then exit): recording the same request id
    twice stores it once.
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
    with settling():
        _run_before_drain()
        for writer in list(_live):
            try:
                writer.close()
            except Exception:
                log.exception("costkit ledger: could not drain the writer at exit")


def _before_fork() -> None:
    for writer in list(_live):
        writer.before_fork()


def _after_fork_in_parent() -> None:
    for writer in list(_live):
        writer.after_fork_in_parent()


def _after_fork_in_child() -> None:
    from costkit.ledger.engine import keep_inherited_connections

    mine = threading.get_ident()  # the other threads' marks are of threads the child does not have
    for ident in [i for i in list(_busy) if i != mine]:
        _busy.pop(ident, None)

    keep_inherited_connections()
    sigwatch.after_fork_in_child()
    for writer in list(_live):
        writer.after_fork_in_child()


def _install_process_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        _hooks_installed = True
        atexit.register(_close_all)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=_before_fork,
                after_in_parent=_after_fork_in_parent,
                after_in_child=_after_fork_in_child,
            )


_mp_exit_pid = 0


def _finalize_in_mp_child(_writer: Managed) -> None:
    """In a ``multiprocessing`` child: at its exit (``os._exit``, no atexit), do what atexit would.

    The ``before_drain`` callbacks run too, so a response the child dropped unclosed (garbage
    the cyclic collector has not reached yet) is settled before the writers drain.
    """
    global _mp_exit_pid
    if _mp_exit_pid == os.getpid():
        return
    _mp_exit_pid = os.getpid()
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _close_all, exitpriority=10)


def _install_sigterm_handler() -> None:
    """Install the handler once per process, from the main thread, over SIG_DFL or a Python handler."""
    global _sigterm_installed, _previous_sigterm
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None or previous == signal.SIG_IGN:
            _sigterm_installed = True  # not ours to change: see the module docstring
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no signals here (an embedded or sub-interpreter)
        return
    _previous_sigterm = previous
    _sigterm_installed = True
    sigwatch.start()  # so a main thread that sleeps through the signal is woken to handle it


def spill_all() -> None:
    """What the SIGTERM handler does before chaining: callbacks, then every writer to the spool."""
    global terminating
    terminating = True
    try:
        _run_before_drain()
        for writer in list(_live):
            try:
                writer.spill_for_exit()
            except Exception as error:  # never let one writer's failure stop the others or the chain
                _say(f"costkit ledger: could not spill rows on SIGTERM: {error}")
    finally:
        terminating = False


_busy: dict[int, int] = {}  # thread ident -> depth of settling sections it is inside
_deferred = False
SETTLE_WAIT_S = 1.0
"""How long the SIGTERM handler waits for other threads to finish a settle already under way."""


@contextlib.contextmanager
def settling() -> Iterator[None]:
    """Mark a section that turns in-flight work into rows (a response's settle, the exit drain).

    A SIGTERM that interrupts the main thread inside one is held until the section ends, then
    delivered: killing the process halfway would lose the row being made, and the handler
    cannot finish that row itself (it is marked settled already). Dict operations only, so
    a signal handler can read the marks without taking a lock.
    """
    global _deferred
    ident = threading.get_ident()
    _busy[ident] = _busy.get(ident, 0) + 1
    try:
        yield
    finally:
        depth = _busy.get(ident, 1) - 1
        if depth:
            _busy[ident] = depth
        else:
            _busy.pop(ident, None)
            if _deferred and ident == threading.main_thread().ident:
                _deferred = False
                os.kill(os.getpid(), signal.SIGTERM)  # now: the handler spills and chains


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _deferred
    sigwatch.handler_ran()
    main = threading.main_thread().ident
    if main is not None and _busy.get(main):
        _deferred = True  # the main thread is inside a settle: delivered when it ends
        return
    deadline = time.monotonic() + SETTLE_WAIT_S
    while any(ident != main for ident in list(_busy)) and time.monotonic() < deadline:
        time.sleep(0.005)  # another thread is making a row: let it land in the queue first
    spill_all()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _say(message: str) -> None:
    """One line on stderr without logging's locks, which the interrupted code may hold."""
    with contextlib.suppress(OSError):
        os.write(2, (message + "\n").encode("utf-8", "replace"))
