"""The append-only spool: where rows wait, on disk, while the database cannot take them.

Layout of a spool directory::

    lock                      flock()ed around every append and every claim (never around database work)
    spool.jsonl               the active file; appenders open it after taking the lock
    claimed-<ns>-<pid>.jsonl  a batch taken for replay: renamed from spool.jsonl under the lock
    claimed-<ns>-<pid>-spill.jsonl  a batch written whole by the SIGTERM spill (``write_batch_file``)
    writing-<pid>-<ns>.tmp    a batch file being written; renamed to claimed-... once fsynced
    rejected.jsonl            rows the database refused (with its error): kept for a human, never dropped

Replay claims the active file by renaming it (new appends start a new file), then
inserts each claimed file while holding an exclusive ``flock`` on it and deletes
it only after its rows are committed. Inserts are idempotent by request id, so a
replay interrupted anywhere (even by ``kill -9``) is simply done again: a spool
entry is removed only after its row is in the database, and replaying twice adds
nothing. Any number of threads and processes may append and replay at once.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from costkit.ledger.records import Record, record_from_line, spool_line

try:
    import fcntl
except ImportError:  # Windows: threads of one process still exclude each other
    fcntl = None  # type: ignore[assignment]

ACTIVE = "spool.jsonl"
REJECTED = "rejected.jsonl"
InsertBatch = Callable[[list[Record]], list[tuple[Record, str]]]
"""Inserts records and returns those the database refused, with its error; raises ``DatabaseDown``."""


@dataclass(slots=True)
class ReplayResult:
    """What one replay did: rows read from the spool, and how many of them the database refused."""

    rows: int = 0
    rejected: int = 0


def _open_file(path: Path) -> int | None:
    """``path`` opened for reading if it is a regular file, as every spool file costkit writes is;
    None if it is gone or is something else (a directory, a FIFO), which holds no rows. Opened
    non-blocking, so a FIFO by a spool file's name cannot stop the reader until a writer comes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:  # replayed and removed meanwhile
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


class Spool:
    """An append-only JSON-lines spool in ``directory`` (created on first use, mode 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.active = self.directory / ACTIVE
        self.rejected = self.directory / REJECTED
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._lock_pid = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._lock_fd is None or self._lock_pid != os.getpid():
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
                self._lock_pid = os.getpid()
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def append(self, lines: list[bytes], *, fsync: bool) -> None:
        """Append spool lines; with ``fsync`` they are on stable storage when this returns."""
        if not lines:
            return
        data = b"".join(lines)
        with self._locked():
            fd = os.open(self.active, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                created = os.fstat(fd).st_size == 0
                _write_all(fd, data)
                if fsync:
                    os.fsync(fd)
                    if created:
                        _fsync_dir(self.directory)
            finally:
                os.close(fd)

    def write_batch_file(self, lines: list[bytes]) -> Path:
        """Write spool lines as one new, complete batch file, fsynced; safe inside a signal handler.

        Takes no lock (the interrupted code may hold the spool's): the lines go to a
        temporary name that replay ignores and are renamed into place only once they are
        on disk, so a replayer sees the whole file or nothing.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = time.time_ns()
        temporary = self.directory / f"writing-{os.getpid()}-{stamp}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.directory / f"claimed-{stamp:020d}-{os.getpid()}-spill.jsonl"  # never a claim's name
        os.rename(temporary, final)
        _fsync_dir(self.directory)
        return final

    def after_fork_in_child(self) -> None:
        """A fresh thread lock: another thread of the parent may have held this one at the fork."""
        self._thread_lock = threading.Lock()

    def append_records(self, records: list[Record], *, fsync: bool) -> None:
        self.append([spool_line(r) for r in records], fsync=fsync)

    def has_pending(self) -> bool:
        """True when rows wait in the spool (any process's), i.e. a replay has work to do."""
        try:
            if self.active.stat().st_size > 0:
                return True
        except OSError:  # no active file: claimed files (an unfinished replay, a spill) may still wait
            pass
        try:
            return any(p.name.startswith("claimed-") for p in self.directory.iterdir())
        except OSError:  # missing, or not ours to read: nothing this process can replay
            return False

    def pending_rows(self) -> int:
        """How many rows wait in the spool (the active file and every claimed batch), for health checks."""
        count = 0
        try:
            names = [p for p in self.directory.iterdir() if p.name == ACTIVE or p.name.startswith("claimed-")]
        except OSError:
            return 0
        for path in names:
            try:
                fd = _open_file(path)
                if fd is None:
                    continue
                with os.fdopen(fd, "rb") as stream:
                    while chunk := stream.read(1 << 20):
                        count += chunk.count(b"\n")
            except OSError:  # unreadable
                continue
        return count

    def _claim_active(self) -> None:
        with self._locked():
            try:
                if self.active.stat().st_size == 0:
                    return
            except FileNotFoundError:
                return
            claimed = self.directory / f"claimed-{time.time_ns():020d}-{os.getpid()}.jsonl"
            os.rename(self.active, claimed)

    def replay(self, insert: InsertBatch, batch_size: int = 1000, *, wait: bool = False) -> ReplayResult:
        """Insert every spooled row, oldest first, removing each file once its rows are committed.

        A file another replayer holds is skipped (it is that replayer's to insert), or with
        ``wait`` waited for, so that its rows are known to be committed on return.

        Raises ``DatabaseDown`` (leaving the unfinished file for the next replay) if the
        database stops answering. Rows it refuses go to ``rejected.jsonl``.
        """
        result = ReplayResult()
        if not self.directory.is_dir():
            return result
        self._claim_active()
        for path in sorted(self.directory.glob("claimed-*.jsonl")):
            fd = _open_file(path)
            if fd is None:
                continue
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                if os.fstat(fd).st_nlink == 0:
                    continue  # another replayer finished it while we waited
                self._replay_file(fd, insert, batch_size, result)
                os.unlink(path)
            finally:
                os.close(fd)
        return result

    def _replay_file(self, fd: int, insert: InsertBatch, batch_size: int, result: ReplayResult) -> None:
        refused: list[bytes] = []
        batch: list[Record] = []
        with os.fdopen(os.dup(fd), "rb") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    batch.append(record_from_line(line))
                except (ValueError, TypeError) as error:
                    refused.append(rejection(line, f"unreadable spool line: {error}"))
                    continue
                if len(batch) >= batch_size:
                    refused.extend(self._insert(batch, insert, result))
                    batch = []
            if batch:
                refused.extend(self._insert(batch, insert, result))
        if refused:
            self.reject(refused)
            result.rejected += len(refused)

    @staticmethod
    def _insert(batch: list[Record], insert: InsertBatch, result: ReplayResult) -> list[bytes]:
        refused = insert(batch)
        result.rows += len(batch)
        return [rejection(spool_line(record), error) for record, error in refused]

    def reject(self, entries: list[bytes]) -> None:
        """Keep rejection entries (see ``rejection``) in ``rejected.jsonl``, fsynced."""
        with self._locked():
            fd = os.open(self.rejected, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                _write_all(fd, b"".join(entries))
                os.fsync(fd)
            finally:
                os.close(fd)

    def reject_records(self, refused: list[tuple[Record, str]]) -> None:
        if refused:
            self.reject([rejection(spool_line(record), error) for record, error in refused])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def rejection(line: bytes, error: str) -> bytes:
    """One ``rejected.jsonl`` entry: the error and the refused line as text."""
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    return (json.dumps({"error": error, "line": text}, ensure_ascii=False) + "\n").encode()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
