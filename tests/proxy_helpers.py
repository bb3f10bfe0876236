"""Real parts for the proxy tests: ``costkit proxy`` run as a real subprocess on a free port.

``ProxyProcess`` starts the installed ``costkit proxy`` command against a fake upstream,
waits until ``/costkit/health`` answers, and stops it with a real signal. Rows are read
back from the real ledger file (or PostgreSQL schema) the proxy wrote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from costkit.ledger import Ledger
from tests.conftest import COSTKIT, ROOT

INPUT, CACHED, OUTPUT = 2000, 500, 8000
"""nano-USD per token for gpt-4.1: $2.00 input, $0.50 cached input, $8.00 output per million."""
_VOLATILE = re.compile(rb'"(id|created|system_fingerprint)": ?("[^"]*"|\d+)')


def nano(input_tokens: int, cached: int, output: int) -> int:
    """The published prices, written out."""
    return (input_tokens - cached) * INPUT + cached * CACHED + output * OUTPUT


def reported(request: Any) -> tuple[int, int, int]:
    """(prompt, cached, completion) of the usage the fake upstream sent with ``request``."""
    usage = request.usage
    return usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"], usage["completion_tokens"]


def normalised(data: bytes) -> bytes:
    """A body with the values that differ between two answers of the same request blanked."""
    return _VOLATILE.sub(rb'"\1":"*"', data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child environment: its own data directory, no costkit settings of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTKIT_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **extra)
    return env


class ProxyProcess:
    """One ``costkit proxy`` process; ``base_url`` is what clients set (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, upstream_url: str, db_url: str, tmp_path: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.db_url = db_url
        self.log_path = tmp_path / f"proxy-{self.port}.log"
        self._log = self.log_path.open("wb")
        command = [COSTKIT, "proxy", "--upstream", upstream_url, "--port", str(self.port), "--db", db_url]
        self.process = subprocess.Popen(
            [*command, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=proxy_env(tmp_path, **env),
            cwd=tmp_path,
        )
        self.returncode: int | None = None
        self._wait_ready()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"costkit proxy exited {self.process.returncode}:\n{self.log()}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"costkit proxy did not answer in {timeout} s:\n{self.log()}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.origin}/costkit/health", timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the proxy and wait for it to exit; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        self.returncode = self.process.wait(timeout)
        self._log.close()
        return self.returncode

    def rows(self) -> list[dict[str, Any]]:
        """The rows the proxy wrote, oldest first (read after it stopped, or once its writer flushed)."""
        with Ledger(self.db_url) as ledger:
            return sorted(ledger.rows(), key=lambda r: r["started_at"])


@contextmanager
def running_proxy(
    upstream_url: str, db_url: str, tmp_path: Path, *args: str, **env: str
) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(upstream_url, db_url, tmp_path, *args, **env)
    try:
        yield proxy
    finally:
        if proxy.returncode is None:
            proxy.stop()


def wait_for_rows(proxy: ProxyProcess, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The proxy's rows once ``n`` of them are committed (its writer commits within ~50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        found = proxy.rows()
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


__all__ = [
    "ROOT",
    "ProxyProcess",
    "free_port",
    "nano",
    "normalised",
    "proxy_env",
    "reported",
    "running_proxy",
    "wait_for_rows",
]
