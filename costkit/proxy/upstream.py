"""The proxy's connection to the upstream: aiohttp under httpx's transport interface.

costkit's ``AsyncTransport`` (the accounting) wraps an httpx transport. httpx's own reads an
HTTP/1.1 body through h11, in Python, one HTTP chunk at a time: a provider writes each stream
event as its own chunk, so h11 was over half of the proxy's time on a stream, and the proxy
relayed 0.77-0.80 of the events a direct client read. aiohttp parses HTTP in C (llhttp) and hands
over whatever has arrived; through ``httpx-aiohttp`` (the transport the ``openai`` SDK itself
offers for aiohttp) the proxy relays streams faster than a direct client reads them and adds
less time per request (``bench/bench_proxy.txt``).

Bytes pass as they are: no decompression (``auto_decompress=False``, so the caller's own client
decodes), and no headers of aiohttp's own (``User-Agent``, ``Accept``, ``Accept-Encoding``): the
upstream sees the caller's.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

MAX_CONNECTIONS = 1000
KEEPALIVE_S = 30.0


class UpstreamTransport(AiohttpTransport):
    """``AiohttpTransport`` with a refused connection told apart from a timeout.

    httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` to ``httpx.ConnectTimeout``; a
    port nobody listens on would then be answered 504 (timeout) instead of 502.
    """

    def __init__(self) -> None:
        super().__init__(client=self._session)

    @staticmethod
    def _session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S)
        return aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
                cause, (aiohttp.ServerTimeoutError, TimeoutError)
            ):
                raise httpx.ConnectError(str(exc), request=request) from cause
            raise
