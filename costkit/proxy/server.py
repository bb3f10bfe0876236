"""Running the proxy under uvicorn: one process, or ``--workers N`` sharing one socket.

Why uvicorn: it is the most used, best kept ASGI server, and with ``httptools`` (a C HTTP
parser) and ``uvloop`` it streamed fastest of the servers measured for this proxy (one bare
pass-through app on the fake upstream, one send per chunk: uvicorn+httptools+uvloop 53k events/s,
uvicorn+h11 41k, granian 2.8.9 32k; plain latency and first chunk within noise of each other).
Each worker is its own process (spawned by uvicorn's supervisor) with its own ledger writer and
upstream pool; a hard budget holds across them because its reservations live in the ledger database.

A SIGTERM to ``--workers N`` reaches the supervisor, which passes it to each worker; each then
shuts down as below, and the supervisor exits 0 once they all have.

Shutdown (SIGTERM or SIGINT): uvicorn stops accepting, lets in-flight requests finish for
up to ``grace`` seconds, then cancels the rest (each recorded ``partial``); the app then
closes its upstream pool and drains its ledger. A single process then exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn

from costkit.proxy.settings import SETTINGS_ENV, ProxySettings

LOG_FORMAT = "%(asctime)s costkit proxy[%(process)d] %(levelname)s %(message)s"


def logging_config() -> dict[str, Any]:
    """stderr only: one line per request from ``costkit.proxy``, uvicorn's own warnings and errors."""
    handler = {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {"stderr": handler},
        "loggers": {
            "costkit": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }


def uvicorn_config(settings: ProxySettings) -> uvicorn.Config:
    return uvicorn.Config(
        "costkit.proxy.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        lifespan="on",
        access_log=False,  # the app logs one line per request itself, without query strings
        proxy_headers=False,  # the caller's X-Forwarded-* headers go upstream untouched
        server_header=False,  # the upstream's Server and Date headers reach the caller, not uvicorn's
        date_header=False,
        timeout_graceful_shutdown=settings.grace,
        log_config=logging_config(),
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(settings: ProxySettings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down without losing a row."""
    os.environ[SETTINGS_ENV] = settings.to_env()  # read by each worker's app factory
    config = uvicorn_config(settings)
    if settings.workers == 1:
        # uvicorn re-raises the signal it shut down for; by then every row is in the ledger.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        server = uvicorn.Server(config)
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT, re-raised after the graceful shutdown
            server.run()
        if not server.started:
            sys.exit(1)  # uvicorn said why (the port is taken, the app failed to start)
        return
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()
    logging.getLogger("costkit.proxy").info("all workers stopped")
