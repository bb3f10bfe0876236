"""Responses still open: settled when the caller drops them, or at interpreter exit.

A response the caller never closes must still become a row, and never a $0 one
recorded after imports stopped working. ``track(owner, reader)`` keeps the reader
in a weak set and settles it when ``owner`` (the response's byte stream) is
garbage-collected; ``settle_open`` (a ``costkit.ledger.writer.before_drain``
callback, so it runs at exit before the ledger writers drain, while imports
still work) settles every reader still open as ``partial``. A reader settles
once: a later close is a no-op.
"""

from __future__ import annotations

import logging
import threading
import weakref

from costkit.intercept.responses import ResponseReader

log = logging.getLogger("costkit")

AT_EXIT = "stream still open at interpreter exit"
_open: weakref.WeakSet[ResponseReader] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def track(owner: object, reader: ResponseReader) -> None:
    """Settle ``reader`` when ``owner`` is collected unclosed, or at exit."""
    _open.add(reader)
    weakref.finalize(owner, _dropped, reader).atexit = False


def forget(reader: ResponseReader) -> None:
    _open.discard(reader)


def _dropped(reader: ResponseReader) -> None:
    if not reader.closed:
        try:
            reader.close(
                interrupted=None if reader.ended else "the response was dropped without being closed"
            )
        except Exception:
            log.exception("costkit: could not settle a dropped response")
    _open.discard(reader)


def settle_open() -> None:
    """Settle every response still open (interpreter exit): each becomes a ``partial`` row."""
    for reader in list(_open):
        try:
            reader.close(interrupted=AT_EXIT)
        except Exception:
            log.exception("costkit: could not settle an open response at exit")
    _open.clear()


def register_exit_settle() -> None:
    """Register ``settle_open`` to run before the ledger writers drain at exit (once per process)."""
    global _registered
    if _registered:
        return
    with _lock:
        if not _registered:
            from costkit.ledger.writer import before_drain

            before_drain(settle_open)
            _registered = True
