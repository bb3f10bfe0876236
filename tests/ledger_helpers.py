"""Fixtures and real parts for the ledger tests: PostgreSQL schemas, SQLite files, a cuttable TCP proxy.

PostgreSQL must be reachable on 127.0.0.1:5432 (``.ci/run`` starts it): if it is
not, the tests that need it fail loudly; they never skip. Each test gets its own
randomly named schema, dropped afterwards, because other runs share the server.

The tests run as root, and root ignores file permission bits. ``WITHOUT_ROOT_POWERS``
runs a command as root minus the capabilities that override them (``setpriv`` from
util-linux drops them from the bounding set), so ``chmod 444`` and ``chmod 555``
really stop it, as they would stop any other user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from costkit.ledger.row import Row

REPO = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=test connect_timeout=5"
COSTKIT = Path(sys.executable).parent / "costkit"
HEAD_REVISION = "0004"
"""The newest migration: written out here, so a new one has to be acknowledged by the tests."""


def without_root_powers() -> list[str]:
    """The command prefix that runs a process as root without the capabilities that bypass permissions."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to test unwritable files as root")
    if os.geteuid() != 0:
        return []  # an ordinary user is stopped by permission bits anyway
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def pg_url(schema: str, port: int = PG_PORT) -> str:
    """A ledger URL for ``schema`` of the ``test`` database (through ``port``, e.g. a proxy)."""
    return f"postgresql+psycopg://postgres@{PG_HOST}:{port}/test?options=-csearch_path%3D{schema}"


def _pg_admin(sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
            connection.execute(sql)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL must be reachable at {PG_HOST}:{PG_PORT} for the ledger tests: {error}")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema with a random name, dropped after the test."""
    name = f"costkit_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        _pg_admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def missing_pg_schema() -> Iterator[str]:
    """A random schema name that does not exist yet; dropped after the test if something created it."""
    name = f"costkit_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        _pg_admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def postgres_url(pg_schema: str) -> str:
    return pg_url(pg_schema)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on a real SQLite file and on a real PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return pg_url(request.getfixturevalue("pg_schema"))


T0 = datetime(2025, 4, 14, 12, 0, 0, tzinfo=timezone.utc)


def make_row(**fields: Any) -> Row:
    """A realistic row: the OpenAI docs' cached-prompt example, priced at $0.003532."""
    values: dict[str, Any] = {
        "model": "gpt-4.1",
        "status": "ok",
        "started_at": T0,
        "finished_at": T0 + timedelta(milliseconds=850),
        "endpoint_host": "platform.qubrid.com",
        "http_status": 200,
        "input_tokens": 2006,
        "cached_input_tokens": 1920,
        "output_tokens": 300,
        "usage_source": "provider",
        "cost_nanousd": 3_532_000,
        "price_id": "gpt-4.1@2025-04-14",
        "latency_us": 850_000,
        "tags": {"team": "search"},
    }
    values.update(fields)
    return Row(**values)


def scalar(url: str, sql: str, **params: Any) -> Any:
    """One value from a fresh connection (not the ledger's own engine)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def ids_in_ledger(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [r[0] for r in connection.execute(text("SELECT request_id FROM costkit_requests"))]
    finally:
        engine.dispose()


def count_in_ledger(url: str) -> int:
    """Rows in the ledger, 0 while its tables do not exist yet (for polling a ledger being created)."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        return len(ids_in_ledger(url))
    except (OperationalError, ProgrammingError):
        return 0


def spooled_ids(spool_dir: Path) -> list[str]:
    """Request ids waiting in a spool directory (the active file and every claimed batch).

    A live writer renames and deletes spool files while they are read: read again until one
    pass sees every file it listed.
    """
    import json

    while True:
        ids: list[str] = []
        try:
            for path in sorted(spool_dir.glob("*.jsonl")):
                if path.name != "rejected.jsonl":
                    lines = path.read_text().splitlines()
                    ids += [json.loads(line)["request_id"] for line in lines if line.strip()]
        except FileNotFoundError:
            continue
        return ids


def wait_for(condition: Any, seconds: float) -> bool:
    """Poll ``condition()`` every 50 ms until it is true (True) or ``seconds`` pass (False)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("COSTKIT_DB_URL", None)
    env.update(extra)
    return env


def run_costkit(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``costkit`` console script (the one next to this Python).

    ``unprivileged``: without the powers that let root ignore file permissions.
    """
    if not COSTKIT.exists():
        pytest.fail(f"{COSTKIT} is missing: install the project (pip install -e .)")
    prefix = without_root_powers() if unprivileged else []
    return subprocess.run(
        [*prefix, str(COSTKIT), *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        timeout=timeout,
    )


def run_python(
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    unprivileged: bool = False,
) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` with this interpreter; the caller waits on it."""
    prefix = without_root_powers() if unprivileged else []
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or child_env(),
    )


class TcpProxy:
    """A real TCP forwarder on 127.0.0.1 to PostgreSQL that a test can cut, black-hole and restore.

    ``cut()`` closes the listening socket and every forwarded connection, so the
    ledger sees exactly what a crashed or unreachable server looks like
    (connection reset, then connection refused). ``blackhole()`` keeps accepting
    connections but never answers on them, like a host whose packets vanish (a
    client waits for its connect timeout). ``restore()`` forwards again, on the
    same port.
    """

    def __init__(self, target: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._blackhole = False
        self.port = 0
        self.restore()

    def blackhole(self) -> None:
        self.cut()
        self._blackhole = True
        self._listen()

    def restore(self) -> None:
        if self._blackhole:
            self.cut()
            self._blackhole = False
        if self._listener is None:
            self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((PG_HOST, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread: the port is free at once
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._blackhole:
                with self._lock:
                    self._sockets.append(client)  # held open, never read or answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
