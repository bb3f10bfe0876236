"""Forking while the parent's writer is mid-write: every child exits promptly and every row arrives.

A child that inherits an SQLite connection in the middle of a transaction, or
closes inherited connections (dropping its own POSIX locks on the file with
them), used to hang on ``database is locked`` at exit for a minute.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

from collections import Counter

from tests.ledger_helpers import ids_in_ledger, run_python, sqlite_url  # noqa: F401

FORK_WHILE_WRITING = """
import os, sys, threading, time
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

book = Ledger(sys.argv[1], batch_size=50)
forks = int(sys.argv[2])
stop = threading.Event()
streamed = []

def stream():  # a steady stream of rows: the writer is committing most of the time
    i = 0
    while not stop.is_set():
        book.record(make_row(request_id=f"parent-{i}"))
        i += 1
        if i % 5 == 0:
            time.sleep(0.001)
    streamed.append(i)

thread = threading.Thread(target=stream)
thread.start()
slowest = 0.0
for n in range(forks):
    time.sleep(0.01)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for i in range(5):
            book.record(make_row(request_id=f"child{n}-{i}"))
        sys.exit(0)  # a normal exit: atexit drains the child's writer
    deadline = start + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            sys.exit(f"child {n} still running after 10 s")
        time.sleep(0.005)
    assert os.waitstatus_to_exitcode(status) == 0, status
    slowest = max(slowest, time.monotonic() - start)
stop.set()
thread.join()
assert book.flush(30)
print(streamed[0], round(slowest, 2), flush=True)
"""


def test_forking_while_the_writer_commits_is_safe(sqlite_url: str) -> None:
    forks = 15  # main hung on one of the first 6 forks in each of 3 runs
    child = run_python(FORK_WHILE_WRITING, sqlite_url, str(forks))
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert "database is locked" not in err, err
    streamed, slowest = out.split()
    assert float(slowest) < 2.0, f"a child took {slowest}s to record 5 rows and exit"
    expected = [f"parent-{i}" for i in range(int(streamed))]
    expected += [f"child{n}-{i}" for n in range(forks) for i in range(5)]
    assert Counter(ids_in_ledger(sqlite_url)) == Counter(expected)
