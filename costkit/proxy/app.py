"""The proxy's ASGI app: every request forwarded upstream through costkit's own ``AsyncTransport``.

The app sends with the Python interceptor's own transport (``costkit.intercept.AsyncTransport``
around pooled aiohttp connections, ``upstream.UpstreamTransport``), which counts, pre-flights,
budgets and records chat completions, adds and hides the usage chunk of streams, and passes
every other path through.
So the app only moves bytes: the caller's request (hop-by-hop headers dropped, see ``headers``)
goes up; the upstream's status, headers and body bytes come back as they came (still compressed
when the upstream compressed them), a stream in batches of what has arrived (``relay``). A
declared refusal becomes an OpenAI-shaped error (``errors``).

A stream whose caller goes away is closed at once and recorded ``partial``; a request still
running when the shutdown grace period is over is cancelled and recorded ``partial`` too (the
transport settles the row when the response is closed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from costkit.errors import RequestRefused
from costkit.intercept.transports import AsyncTransport
from costkit.ledger import Ledger
from costkit.proxy import accesslog
from costkit.proxy.errors import JSON_HEADERS, UNAUTHORIZED, refusal_answer, upstream_failure
from costkit.proxy.headers import request_headers, response_headers
from costkit.proxy.keys import KeyRing
from costkit.proxy.relay import ClientDisconnected, relay_plain, relay_stream
from costkit.proxy.settings import ProxySettings
from costkit.proxy.upstream import UpstreamTransport

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("costkit.proxy")

HEALTH_PATH = "/costkit/health"
HEALTH_SCHEMA = "costkit.proxy.health/1"
SETTLE_WAIT_S = 5.0
"""At shutdown, how long the app waits for cancelled requests to settle before closing the ledger."""
# Generous: a long answer may take minutes to start, and the caller's own timeout usually ends it first.
UPSTREAM_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
_TIMEOUT = {"timeout": UPSTREAM_TIMEOUT.as_dict()}
_MAX_LOGGED_PATH = 200


class ProxyApp:
    """The ASGI app for one worker process: its own ledger, upstream client and keys."""

    def __init__(self, settings: ProxySettings) -> None:
        from costkit.budgets.config import load_budgets

        self.settings = settings
        self.keys = KeyRing.load(settings.keys) if settings.keys is not None else None
        budgets = load_budgets(settings.config) if settings.config is not None else []
        self.ledger = Ledger(settings.db)
        # The transport, not an AsyncClient around it: a client would keep a cookie jar shared by
        # every caller (and growing), and its auth, redirect and cookie steps cost ~0.2 ms a request.
        self.transport = AsyncTransport(
            UpstreamTransport(),
            ledger=self.ledger,
            budgets=budgets or None,
            hooks=[accesslog.RowCatcher()],
        )
        base = urlsplit(settings.upstream)
        self._origin = f"{base.scheme}://{base.netloc}"
        self._base = self._origin + base.path.rstrip("/")
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"] == HEALTH_PATH and scope["method"] in ("GET", "HEAD"):
                await self._health(send)
                return
            self.in_flight += 1
            self._idle.clear()
            try:
                await self._forward(scope, receive, send)
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- forwarding ---------------------------------------------------------------------------------

    def _url(self, scope: Scope) -> str:
        """The proxy's ``/v1`` is the upstream base URL; any other path goes to the upstream's origin."""
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        raw = path.decode("latin-1")
        url = self._base + raw[3:] if raw == "/v1" or raw.startswith("/v1/") else self._origin + raw
        query: bytes = scope.get("query_string", b"")
        return f"{url}?{query.decode('latin-1')}" if query else url

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        slot = accesslog.Slot()
        accesslog.current.set(slot)  # this request's task (and the threads it starts) see this slot
        # The path as sent (percent-encoded, so a %0A cannot forge a log line), without its query.
        path = (scope.get("raw_path") or b"").decode("latin-1")[:_MAX_LOGGED_PATH] or scope["path"]
        try:
            await self._exchange(scope, receive, send, method, slot)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when the grace period is over; the row is
            # settled (partial) already, and ending the task here spares the log a traceback.
            log.warning("%s %s cancelled at shutdown, after the grace period", method, path)
        finally:
            accesslog.log_request(method, path, slot.status, time.perf_counter() - started, slot.row)

    async def _exchange(
        self, scope: Scope, receive: Receive, send: Send, method: str, slot: accesslog.Slot
    ) -> None:
        headers = request_headers(scope["headers"])
        if self.keys is not None:
            key = self.keys.match(scope["headers"])
            if key is None:
                slot.status = await _answer(send, 401, UNAUTHORIZED)  # nothing forwarded
                return
            headers = [(n, v) for n, v in headers if n.lower() != b"authorization"]
            if key.upstream_authorization is not None:
                headers.append((b"Authorization", key.upstream_authorization))
            if key.tags:  # last, so the key's tags win over any the caller sends
                headers.append((b"X-Costkit-Tags", key.tags_header))
        body = await _read_body(receive)
        if body is None:
            slot.status = 499  # the caller left before its request was whole: nothing forwarded
            return
        request = httpx.Request(method, self._url(scope), headers=headers, content=body, extensions=_TIMEOUT)
        try:
            response = await self.transport.handle_async_request(request)
        except RequestRefused as refusal:  # recorded as blocked by the accounting core
            slot.status = await _answer(send, *refusal_answer(refusal))
            return
        except httpx.TimeoutException as exc:  # recorded as an error row by the transport
            slot.status = await _answer(send, *upstream_failure(True, type(exc).__name__))
            return
        except httpx.HTTPError as exc:
            slot.status = await _answer(send, *upstream_failure(False, type(exc).__name__))
            return
        slot.status = response.status_code
        try:
            await self._relay(response, receive, send)
        finally:
            await response.aclose()  # settles the row (partial if the body was not read to its end)

    async def _relay(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response.headers.raw, rechunked=streaming),
            }
        )
        try:
            if streaming:
                await relay_stream(response, receive, send)
            else:
                await relay_plain(response, send)
        except ClientDisconnected:
            await response.aclose()  # here, so the row notes why the read ended
        except httpx.HTTPError as exc:
            # The upstream broke off mid-body: the caller's response ends broken too (no final
            # chunk), as it would have without the proxy; the row is partial.
            log.warning("upstream broke off a response (%s)", type(exc).__name__)

    # -- health ---------------------------------------------------------------------------------------

    async def _health(self, send: Send) -> None:
        reachable, depth, spooled = await asyncio.get_running_loop().run_in_executor(None, self._ledger_state)
        body = {
            "schema": HEALTH_SCHEMA,
            "status": "ok" if reachable else "degraded",
            "pid": os.getpid(),
            "in_flight": self.in_flight,
            "ledger": {"queue_depth": depth, "spool_rows": spooled, "database_reachable": reachable},
        }
        await _answer(send, 200, json.dumps(body).encode())

    def _ledger_state(self) -> tuple[bool, int, int]:
        """(database reachable, rows waiting in memory, rows waiting in the spool)."""
        return self.ledger.reachable(), self.ledger.queue_depth, self.ledger.spool_rows()

    # -- lifespan -------------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def close(self) -> None:
        """Let cancelled requests settle their rows, close the upstream pool, drain the ledger."""
        try:
            await asyncio.wait_for(self._idle.wait(), SETTLE_WAIT_S)
        except asyncio.TimeoutError:
            log.error("%d request(s) had not settled at shutdown", self.in_flight)
        await self.transport.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self.ledger.close)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the caller disconnected first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def _answer(send: Send, status: int, body: bytes) -> int:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return status


def app_from_env() -> ProxyApp:
    """The app for one worker, from ``$COSTKIT_PROXY_SETTINGS`` (uvicorn's factory).

    The proxy drains its ledger itself at shutdown, after the grace period: so uvicorn's
    SIGTERM handler stays in charge, not the one the ledger installs when it opens (which
    would move queued rows to the spool at the first signal).
    """
    in_main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if in_main else None
    app = ProxyApp(ProxySettings.from_env())
    if before is not None and signal.getsignal(signal.SIGTERM) is not before:
        signal.signal(signal.SIGTERM, before)
    log.info(
        "pid %d serving %s for %s (ledger %r%s)",
        os.getpid(),
        "/v1",
        app.settings.upstream,
        app.ledger,
        f", {len(app.keys)} local keys" if app.keys is not None else "",
    )
    return app
