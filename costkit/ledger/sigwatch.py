"""Making sure the SIGTERM handler runs even when the main thread sleeps through the signal.

Python runs signal handlers in the main thread, between bytecodes. A SIGTERM that lands
just before the main thread blocks in a C-level wait (a ``multiprocessing`` pool worker
about to wait for its next task on a semaphore) only sets a flag that nothing reads: the
handler never runs, the process never ends, and the pool's exit waits for it forever.
(With the default action the kernel ends the process itself, so this only matters once a
Python handler is installed.)

The watch: the C-level handler writes each signal's number to a socket
(``signal.set_wakeup_fd``); a daemon thread reads it and, until the Python handler has run
(``handler_ran``), pokes the main thread with ``signal.pthread_kill``: a signal sent to that
thread interrupts its wait, and the wait's retry runs the handler. It is not installed when
another wakeup fd is in place (an asyncio loop keeps its own): the handler then works as
before, without the watch. A forked child gets a socket and a watcher of its own (the
parent's thread does not exist there, and the parent must never read the child's signals).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

POKE_AFTER_S = 0.05
"""How long the handler gets to run on its own before the main thread is poked."""
MAX_POKES = 200

_runs = 0  # how often the Python handler has started
_socket: socket.socket | None = None  # the read end of the socket the C handler writes to
_write_fd = -1
_pid = 0


def leave_signals_to_the_main_thread() -> None:
    """Block SIGTERM and SIGINT in the calling (background) thread, so the kernel hands them to a
    thread that does not block them: the main thread, where Python runs their handlers."""
    if hasattr(signal, "pthread_sigmask"):
        with contextlib.suppress(OSError, ValueError):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def handler_ran() -> None:
    """Called first thing by the Python SIGTERM handler."""
    global _runs
    _runs += 1


def start() -> None:
    """Start the watch in this process (main thread only); idempotent per process."""
    global _socket, _write_fd, _pid
    if _pid == os.getpid() or not hasattr(signal, "pthread_kill"):
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread, or no signals here
        reader.close()
        writer.close()
        return
    if previous not in (-1, _write_fd):  # someone else's (asyncio): leave it in place
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
        return
    if _socket is not None:  # a fork's copy of the parent's socket: never read it here
        with contextlib.suppress(OSError):
            _socket.close()
            os.close(_write_fd)
    _socket, _write_fd, _pid = reader, writer.detach(), os.getpid()
    threading.Thread(target=_watch, args=(reader,), name="costkit-signal-watch", daemon=True).start()


def after_fork_in_child() -> None:
    """A forked child: its own socket and watcher, if the parent had them."""
    if _socket is not None:
        start()


def _watch(reader: socket.socket) -> None:
    leave_signals_to_the_main_thread()
    main = threading.main_thread().ident
    seen = _runs
    while True:
        try:
            data = reader.recv(256)
        except OSError:
            return
        if not data:
            return
        if signal.SIGTERM not in data:
            continue
        for _ in range(MAX_POKES):
            if _runs > seen:
                break
            time.sleep(POKE_AFTER_S)
            if _runs > seen or main is None:
                break
            with contextlib.suppress(OSError, ValueError):
                signal.pthread_kill(main, signal.SIGTERM)  # interrupts the wait it sleeps in
        seen = _runs
        _drain(reader)  # our own pokes wrote bytes too: they are answered already


def _drain(reader: socket.socket) -> None:
    reader.setblocking(False)
    try:
        while reader.recv(256):
            pass
    except OSError:
        pass
    finally:
        reader.setblocking(True)
