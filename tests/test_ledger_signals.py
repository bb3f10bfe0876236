"""SIGTERM loses no recorded row: multiprocessing pools, services stopped by systemd or Kubernetes.

Every test runs real processes and sends real signals. The handler spills what is
still in memory to the spool and chains to the handler that was there before it;
the next ledger on the database replays the spool.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from costkit.ledger import Ledger
from tests.ledger_helpers import (  # noqa: F401
    child_env,
    ids_in_ledger,
    run_python,
    spooled_ids,
    sqlite_url,
)

POOL = """
import multiprocessing, sys
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

book = Ledger(sys.argv[1], batch_size=1000)  # opened before the workers fork: they inherit it

def work(i):
    book.record(make_row(request_id=f"{sys.argv[2]}-{i}"))
    return i

if __name__ == "__main__":
    for start in (0, 40, 80):  # leaving the with-block SIGTERMs the workers
        tasks = list(range(start, start + 40))
        with multiprocessing.get_context("fork").Pool(4) as pool:
            assert pool.map(work, tasks) == tasks
    print("mapped", flush=True)
"""


def test_a_multiprocessing_pool_loses_no_row_when_it_terminates_its_workers(sqlite_url: str) -> None:
    child = run_python(POOL, sqlite_url, "task")
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.strip() == "mapped"
    # The parent's ledger replayed the workers' spills when it drained at exit.
    assert Counter(ids_in_ledger(sqlite_url)) == Counter(f"task-{i}" for i in range(120))


SLEPT_THROUGH = """
import multiprocessing, signal, sys, threading, time
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

book = Ledger(sys.argv[1], batch_size=100_000)
book.record(make_row(request_id="slept-through"))

def deliver_elsewhere():
    time.sleep(0.3)  # the main thread is asleep in the semaphore by now
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread, not the main one
    time.sleep(60)

threading.Thread(target=deliver_elsewhere, daemon=True).start()
print("waiting", flush=True)
multiprocessing.Semaphore(0).acquire()  # as a pool worker waits for its next task: no signal wakes it
print("woke without the signal", flush=True)
"""


def test_a_sigterm_the_main_thread_sleeps_through_is_still_handled(sqlite_url: str) -> None:
    """The main thread asleep in a C-level wait while the signal lands in another thread: nothing
    interrupts the wait, so without costkit's watch the handler never runs and the process never ends
    (a multiprocessing pool's exit then waits on such a worker forever)."""
    child = run_python(SLEPT_THROUGH, sqlite_url)
    out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGTERM, (out, err)
    assert out == "waiting\n"
    with Ledger(sqlite_url) as book:
        assert book.flush(30)
    assert ids_in_ledger(sqlite_url) == ["slept-through"]


RECORD_THEN_WAIT = """
import signal, sys, time
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

url, count, setup = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if setup == "app-handler-before":
    def stop(signum, frame):
        print("app handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, stop)
elif setup == "ignored":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
book = Ledger(url, batch_size=100_000)  # one big batch: most rows are still queued when the signal comes
if setup == "app-handler-after":
    signal.signal(signal.SIGTERM, lambda signum, frame: print("app handler ran", flush=True) or sys.exit(4))
    Ledger(url).close()  # a ledger opened later must not put costkit's handler back
for i in range(count):
    book.record(make_row(request_id=f"r{i}"))
print("recorded", flush=True)
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:  # an ignored SIGTERM lets it finish normally
    time.sleep(0.01)
print("finished normally", flush=True)
"""


def _record_then_sigterm(url: str, count: int, setup: str) -> tuple[int, list[str], str]:
    child = run_python(RECORD_THEN_WAIT, url, str(count), setup)
    assert child.stdout is not None
    first = child.stdout.readline()
    assert first == "recorded\n", first + (child.stderr.read() if child.stderr else "")
    child.send_signal(signal.SIGTERM)  # right after record() returned, before the writer caught up
    out, err = child.communicate(timeout=30)
    return child.returncode, out.splitlines(), err


def test_sigterm_right_after_recording_keeps_every_row_and_still_dies_by_the_signal(
    sqlite_url: str, tmp_path: Path
) -> None:
    code, lines, err = _record_then_sigterm(sqlite_url, 3000, "none")
    assert code == -signal.SIGTERM, err  # the default action still happens: "killed by SIGTERM"
    assert lines == []
    assert err == ""
    with Ledger(sqlite_url) as book:  # the next ledger on the database replays the spool
        assert book.flush(30)
    assert Counter(ids_in_ledger(sqlite_url)) == Counter(f"r{i}" for i in range(3000))
    assert spooled_ids(tmp_path / "ledger.sqlite.spool") == []


def test_sigterm_chains_to_the_applications_handler_installed_before(sqlite_url: str) -> None:
    code, lines, err = _record_then_sigterm(sqlite_url, 3000, "app-handler-before")
    assert code == 3, err  # the application's handler ran, after the spill, and chose the exit
    assert lines == ["app handler ran"]
    with Ledger(sqlite_url) as book:
        assert book.flush(30)
    assert len(set(ids_in_ledger(sqlite_url))) == 3000


def test_a_handler_the_application_installs_later_is_never_replaced(sqlite_url: str) -> None:
    code, lines, err = _record_then_sigterm(sqlite_url, 10, "app-handler-after")
    assert code == 4, err
    assert lines == ["app handler ran"]


def test_an_ignored_sigterm_stays_ignored(sqlite_url: str) -> None:
    code, lines, err = _record_then_sigterm(sqlite_url, 500, "ignored")
    assert code == 0, err
    assert lines == ["finished normally"]
    assert len(ids_in_ledger(sqlite_url)) == 500  # normal exit drained the queue


FORKED_CHILD = """
import os, signal, sys, time
from costkit.ledger import Ledger
from tests.ledger_helpers import make_row

book = Ledger(sys.argv[1], batch_size=100_000)
book.record(make_row(request_id="parent"))
read, write = os.pipe()
pid = os.fork()  # after the ledger was opened: the child inherits the writer and the handler
if pid == 0:
    for i in range(2000):
        book.record(make_row(request_id=f"child-{i}"))
    os.write(write, b"x")
    time.sleep(30)
    os._exit(0)
os.read(read, 1)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), flush=True)
assert book.flush(30)  # replays the child's spill
"""


def test_a_child_forked_after_the_ledger_opened_keeps_its_rows_on_sigterm(sqlite_url: str) -> None:
    child = run_python(FORKED_CHILD, sqlite_url)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == [str(-signal.SIGTERM)]
    assert Counter(ids_in_ledger(sqlite_url)) == Counter(["parent"] + [f"child-{i}" for i in range(2000)])


NOT_MAIN_THREAD = """
import signal, sys, threading
from costkit.ledger import Ledger

threading.Thread(target=lambda: Ledger(sys.argv[1]).close()).start()
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
book = Ledger(sys.argv[1])
print(signal.getsignal(signal.SIGTERM).__module__, flush=True)
"""


def test_the_handler_is_installed_only_from_the_main_thread(sqlite_url: str) -> None:
    child = run_python(NOT_MAIN_THREAD, sqlite_url)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == ["True", "costkit.ledger.lifecycle"]


@pytest.mark.parametrize("durable", [False, True])
def test_a_process_that_sigterms_itself_keeps_its_rows_in_either_mode(
    sqlite_url: str, tmp_path: Path, durable: bool
) -> None:
    code = (
        "import os, signal, sys\n"
        "from costkit.ledger import Ledger\n"
        "from tests.ledger_helpers import make_row\n"
        f"book = Ledger(sys.argv[1], durable={durable})\n"
        "for i in range(50):\n"
        "    book.record(make_row(request_id=f'd{i}'))\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    child = run_python(code, sqlite_url, env=child_env())
    _out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGTERM, err
    with Ledger(sqlite_url) as book:
        assert book.flush(30)
    assert Counter(ids_in_ledger(sqlite_url)) == Counter(f"d{i}" for i in range(50))
    assert spooled_ids(tmp_path / "ledger.sqlite.spool") == []
